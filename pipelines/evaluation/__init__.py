"""Evaluation stage: a run (and optionally other test items) in, bottleneck accuracies against baselines out.

splits (few-shot draws, leakage) -> models (the classifiers every row shares) -> run (reads the run, embeds test
items, fits every row, writes ``eval/eval.json``, ``eval/weights.parquet``) -> report (one self-contained HTML).
"""
