"""How far can a linear bottleneck of m concepts over a frozen encoder go with all the data? An upper bound.

A concept score here is cos(item, concept) with both unit-norm, i.e. a linear function of the item's embedding,
so m concept scores are a rank-<= m linear map of the embedding and the bottleneck sees at most an m-dimensional
subspace of what the black box sees. This script fits the classifier of ``conceptkit eval`` (standardised
features, ``LogisticRegression(C=1)``, ``pipelines/evaluation/models.py``) on all train items of a built run
against its test file, with these features:

- black box: the item embeddings (all dimensions);
- the run's concepts: its m concept scores (what ``conceptkit eval``'s all-data bottleneck row uses);
- the embedding projected onto the span of the m concept vectors (the same subspace, an orthonormal basis);
- the embedding's top r principal components of the train items, r = m and larger: the best r-dimensional linear
  subspace by variance, i.e. what m well-placed concepts could at most keep (in that sense);
- the concept scores and their cubes (Label-free CBM's cos^3), to test whether a per-concept nonlinearity helps;
- with ``--tune-c C ...``: the black box and the concept scores with the classifier's C chosen on a validation
  fifth of the train items (the test split never consulted), beside C = 1: whether eval's fixed C hides a gap
  or makes one;
- with ``--pool``: m of the run's accepted candidates chosen (greedy orthogonal matching pursuit, using the train
  labels) to span the directions of the black box's own classifier, with 1- and 4-shot accuracy beside the
  all-data one: what the candidate pool allows for all data when the choice may look at the answer.

In: a run directory built with labels (``benchmarks/bench_eval.py`` makes them) and its test CSV (id, text,
label). Out: a Markdown table on stdout. Example:

    python benchmarks/bench_bottleneck_bound.py benchmarks/.cache/eval/runs/dbpedia-items \
        benchmarks/.cache/eval/dbpedia/test.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("test", type=Path, help="CSV with id, text, label (the file given to conceptkit eval --test)")
    parser.add_argument("--ranks", type=int, nargs="*", default=[300],
                        help="principal-component counts beyond the run's concept count (default 300)")
    parser.add_argument("--pool", action="store_true",
                        help="also choose concepts from the accepted pool to span the black box's directions")
    parser.add_argument("--tune-c", type=float, nargs="*", metavar="C",
                        help="also fit the black box and the concept scores with C chosen on a stratified fifth of "
                             "the train split from these values (eval uses C = 1); the test split is not consulted")
    args = parser.parse_args(argv)
    if not args.run.is_dir() or not args.test.is_file():
        print(f"skipped: {args.run} or {args.test} is missing (build it with benchmarks/bench_eval.py)")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.evaluation import models
    from conceptkit.pipelines.evaluation.run import _annotations
    from conceptkit.pipelines.runs.run import open_run

    run = open_run(args.run)
    classes = list(run.manifest["input"]["classes"])
    index = {c: i for i, c in enumerate(classes)}
    concepts = run.concepts()
    vectors = np.asarray(concepts.column("embedding").to_pylist(), dtype=np.float32)
    table = _annotations(run.path, len(vectors))
    split, labels, texts = (table.column(c).to_pylist() for c in ("split", "label", "text"))
    train = [i for i, (s, lab) in enumerate(zip(split, labels)) if s == "train" and lab is not None]
    with args.test.open(encoding="utf-8", newline="") as f:
        test_rows = list(csv.DictReader(f))
    seen = {texts[i] for i in train}  # as conceptkit eval does: a test item whose text is in the train split is out
    test_rows = [r for r in test_rows if r["text"] not in seen]
    model = TextEmbedder(run.embedding_model)
    cache = str(run.cache_dir() / "embeddings")
    e_train = model.encode_cached([texts[i] for i in train], cache)[0]
    e_test = model.encode_cached([r["text"] for r in test_rows], cache)[0]
    y_train = np.array([index[labels[i]] for i in train])
    y_test = np.array([index[r["label"]] for r in test_rows])

    def accuracy(a: np.ndarray, b: np.ndarray) -> float:
        a, b = models.standardise(a, b)
        return float(np.mean(models.fit_predict(a, y_train, b) == y_test))

    m = len(vectors)
    s_train, s_test = e_train @ vectors.T, e_test @ vectors.T
    basis = np.linalg.svd(vectors, full_matrices=False)[2]  # orthonormal rows spanning the concepts
    components = np.linalg.svd(e_train - e_train.mean(axis=0), full_matrices=False)[2]
    rows = [
        (f"black box ({e_train.shape[1]} embedding dimensions)", e_train.shape[1], accuracy(e_train, e_test)),
        (f"the run's {m} concept scores", m, accuracy(s_train, s_test)),
        ("embedding projected onto the concepts' span", basis.shape[0], accuracy(e_train @ basis.T, e_test @ basis.T)),
        ("concept scores and their cubes (cos^3)", 2 * m,
         accuracy(np.hstack([s_train, s_train**3]), np.hstack([s_test, s_test**3]))),
    ]
    for r in sorted({m, *args.ranks}):
        if r <= components.shape[0]:
            top = components[:r]
            rows.append((f"top {r} principal components of the embedding", r, accuracy(e_train @ top.T, e_test @ top.T)))
    print(f"{args.run.name}: {len(train)} train items, {len(test_rows)} test items, {len(classes)} classes; "
          f"{platform.machine()} {os.cpu_count()} cores; {datetime.now(timezone.utc):%Y-%m-%d}; "
          f"command: python {' '.join(sys.argv)}\n")
    print("| features (all train items, LogisticRegression C=1 on standardised features) | dimensions | test accuracy |")
    print("|---|---:|---:|")
    for name, dims, acc in rows:
        print(f"| {name} | {dims} | {acc:.4f} |")
    if args.tune_c:
        print(f"\n| all train items, C chosen on a validation fifth of them from {args.tune_c} | chosen C | "
              "validation accuracy | test accuracy (refit on all train items) | test accuracy at C = 1 |\n"
              "|---|---:|---:|---:|---:|")
        for name, a, b in ((f"black box ({e_train.shape[1]} dimensions)", e_train, e_test),
                           (f"the run's {m} concept scores", s_train, s_test)):
            row = models.tuned_row(name, a, y_train, b, y_test, grid=args.tune_c)  # what `conceptkit eval --tune-c` does
            print(f"| {name} | {row.extra['C']:g} | {row.extra['validation_accuracy']:.4f} | {row.accuracy_mean:.4f} | "
                  f"{accuracy(a, b):.4f} |")
    if args.pool:
        import pyarrow.parquet as pq

        candidates = pq.read_table(run.path / "candidates.parquet", columns=["concept", "status"]).to_pydict()
        pool = sorted({c for c, st in zip(candidates["concept"], candidates["status"]) if st == "accepted"})
        chosen = span_directions(model.encode(pool), e_train, y_train, m)
        print(f"\n| {m} concepts, 10 seeds | 1-shot | 4-shot | all |\n|---|---:|---:|---:|")
        for name, vec in (("the run's selection", vectors),
                          (f"spanning the black box's directions, from {len(pool)} accepted candidates", chosen)):
            acc = {r.shots: r.accuracy_mean for r in models.few_shot_rows(
                name, e_train @ vec.T, y_train, e_test @ vec.T, y_test, n_classes=len(classes), shots=(1, 4))}
            print(f"| {name} | {acc[1]:.3f} | {acc[4]:.3f} | {acc['all']:.3f} |")
    return 0


def span_directions(pool: np.ndarray, x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    """``m`` rows of ``pool`` picked greedily (orthogonal matching pursuit) to span the class directions of a
    logistic regression fitted on ``x`` (centred): each step takes the candidate whose part outside the current
    span best explains what is left of the directions."""
    import warnings

    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = LogisticRegression(C=1.0, max_iter=2000).fit(x - x.mean(axis=0), y).coef_
    w = w - w.mean(axis=0)
    chosen: list[int] = []
    basis = np.zeros((pool.shape[1], 0))
    for _ in range(min(m, len(pool))):
        left = w - (w @ basis) @ basis.T
        outside = np.linalg.norm(pool - (pool @ basis) @ basis.T, axis=1).clip(1e-6)
        score = np.linalg.norm(left @ pool.T, axis=0) / outside
        score[chosen] = -1.0
        chosen.append(int(np.argmax(score)))
        basis = np.linalg.qr(pool[chosen].T)[0]
    return pool[chosen]


if __name__ == "__main__":
    raise SystemExit(main())
