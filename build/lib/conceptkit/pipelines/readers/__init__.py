"""Readers: the items file (Parquet, CSV, JSONL) in, validated item rows and rejects out.
"""
