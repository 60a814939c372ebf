"""A run directory: staging and atomic swap-in, reading a finished run, its dataset card, search and inspection.
"""
