"""Annotation stage: concepts and items in, per-item concept scores and binary labels out.

thresholds (per-concept calibration), refresh (annotate new or changed items of an existing run).
"""
