"""AwA2 attribute coverage: do a class's generated concepts point at the attributes humans marked for it?

In: ../shared/data/awa2 (classes.txt, predicates.txt, predicate-matrix-binary.txt: 50 animals x 85 attributes).
``build``: ``run_build`` with the embedded LLM on one synthetic item per class ("a photograph of a <animal>", so
that the build has items to select and annotate with), prompt family ``--family`` (default lfcbm), domain "animal
photographs"; answers cached in benchmarks/.cache/llm/llm.sqlite. ``eval``: for each class c and attribute a,
score(a) = max over c's concepts of cosine(concept, attribute name) (all-MiniLM-L6-v2); ROC AUC of these 85 scores
against c's binary human labels; mean over classes. Out: a Markdown table on stdout; JSON under
benchmarks/.cache/awa2/.

Concept sets compared, per class:
- generated, accepted: every candidate that passed the filters and belongs to c (a near-duplicate merged into a
  concept adds its class to that concept, so shared concepts count for every class that proposed them);
- generated, selected: the concepts in concepts.parquet tagged with c;
- another class's concepts: the accepted concepts of a different AwA2 class (a fixed derangement per seed), which
  tells class-specific knowledge apart from "animal-ish words";
- random generic: as many concepts as c's accepted set, drawn from the generic vocabulary of
  bench_concept_quality.py (seeds averaged);
- class name only: score(a) = cosine(class name, attribute), no concepts at all;
- oracle from the accepted pool: a greedy choice of at most ``--k-per-class`` of c's accepted concepts that
  maximises this AUC using c's human labels. No label-free selection can do better from the same pool, so it
  tells what the generated pool allows apart from what the selection picks.

Attribute names are embedded with a few concatenated words spelled out (``READABLE``); the mapping is fixed and
the same for every method.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_concept_quality import CACHE, DATA, EMBEDDING_MODEL, GENERIC_VOCAB, build_config, run_logged_build  # noqa: E402

AWA2 = DATA / "awa2"
WORK = CACHE / "awa2"
READABLE = {
    "toughskin": "tough skin", "longleg": "long legs", "longneck": "long neck", "chewteeth": "chewing teeth",
    "meatteeth": "meat-eating teeth", "buckteeth": "buck teeth", "strainteeth": "strainer teeth", "flys": "flies",
    "quadrapedal": "quadrupedal", "newworld": "new world", "oldworld": "old world", "nestspot": "nest spot",
}
SEEDS = 5


def read_awa2() -> tuple[list[str], list[str], np.ndarray]:
    def names(path: Path) -> list[str]:
        return [line.split()[1].replace("+", " ") for line in path.read_text().splitlines() if line.strip()]

    classes, attributes = names(AWA2 / "classes.txt"), names(AWA2 / "predicates.txt")
    matrix = np.loadtxt(AWA2 / "predicate-matrix-binary.txt", dtype=np.int8)
    assert matrix.shape == (len(classes), len(attributes)), matrix.shape
    return classes, attributes, matrix


def pick_classes(classes: list[str], n: int) -> list[str]:
    if n >= len(classes):
        return classes
    idx = sorted(np.random.default_rng(0).choice(len(classes), n, replace=False))
    return [classes[i] for i in idx]


def run_dir(family: str, n: int, batch: int) -> Path:
    return WORK / (f"{family}-{n}" + (f"-batch{batch}" if batch > 1 else ""))


def build(*, n_classes: int, family: str, per_prompt: int, k_per_class: int, batch: int = 1) -> dict:
    classes, _, _ = read_awa2()
    chosen = pick_classes(classes, n_classes)
    out = run_dir(family, len(chosen), batch)
    out.mkdir(parents=True, exist_ok=True)
    items = out / "items.csv"
    with items.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i, c in enumerate(chosen):
            w.writerow([f"awa2-{i}", f"a photograph of a {c}", c])
    cfg = build_config(items=items, out=out / "run", family=family, domain="animal photographs",
                       concepts_per_prompt=per_prompt, k_per_class=k_per_class, classes_per_request=batch)
    return run_logged_build(cfg, out / "build_summary.json")


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def evaluate(*, n_classes: int, family: str, k: int = 10, batch: int = 1) -> dict:
    import pyarrow.parquet as pq

    from conceptkit.annotators.embedding import TextEmbedder

    classes, attributes, matrix = read_awa2()
    chosen = pick_classes(classes, n_classes)
    run = run_dir(family, len(chosen), batch) / "run"
    emb = TextEmbedder(EMBEDDING_MODEL)
    attr = emb.encode([READABLE.get(a, a) for a in attributes])
    labels = {c: matrix[classes.index(c)] for c in chosen}

    cands = pq.read_table(run / "candidates.parquet").to_pydict()
    accepted: dict[str, list[str]] = {c: [] for c in chosen}
    for concept, status, cls in zip(cands["concept"], cands["status"], cands["classes"]):
        if status == "accepted":
            for c in cls:
                accepted[c].append(concept)
    concepts = pq.read_table(run / "concepts.parquet").to_pydict()
    selected: dict[str, list[str]] = {c: [] for c in chosen}
    for concept, cls in zip(concepts["concept"], concepts["classes"]):
        for c in cls:
            selected[c].append(concept)
    vocab = emb.encode(GENERIC_VOCAB)
    names = dict(zip(chosen, emb.encode(chosen)))

    def score(concept_emb: np.ndarray) -> np.ndarray:
        return (concept_emb @ attr.T).max(axis=0)

    def oracle(concept_emb: np.ndarray, y: np.ndarray) -> float:
        sims, picked, best = concept_emb @ attr.T, [], 0.0
        for _ in range(min(k, len(sims))):
            gain, j = max((auc(sims[picked + [j]].max(axis=0), y), j) for j in range(len(sims)) if j not in picked)
            if gain <= best:
                break
            best, picked = gain, picked + [j]
        return best

    per_class: dict[str, dict[str, float]] = {}
    for i, c in enumerate(chosen):
        row = {"n_accepted": len(accepted[c]), "n_selected": len(selected[c])}
        acc_emb = emb.encode(accepted[c]) if accepted[c] else None
        if acc_emb is not None:
            row["generated, accepted"] = auc(score(acc_emb), labels[c])
            row["oracle from the accepted pool"] = oracle(acc_emb, labels[c])
        if selected[c]:
            row["generated, selected"] = auc(score(emb.encode(selected[c])), labels[c])
        others, rand = [], []
        for s in range(SEEDS):
            other = chosen[(i + 1 + s) % len(chosen)]  # shift by s+1: never the class itself
            if accepted[other]:
                others.append(auc(score(emb.encode(accepted[other])), labels[c]))
            n = max(len(accepted[c]), 1)
            draw = np.random.default_rng(1000 * s + i).choice(len(GENERIC_VOCAB), n, replace=False)
            rand.append(auc(score(vocab[draw]), labels[c]))
        row["another class's concepts"] = float(np.mean(others)) if others else float("nan")
        row["random generic"] = float(np.mean(rand))
        row["class name only"] = auc(names[c] @ attr.T, labels[c])
        per_class[c] = row
    methods = ["generated, accepted", "generated, selected", "another class's concepts", "random generic",
               "class name only", "oracle from the accepted pool"]
    summary = {}
    for m in methods:
        vals = np.array([per_class[c][m] for c in chosen if m in per_class[c]], dtype=float)
        vals = vals[~np.isnan(vals)]
        summary[m] = {"mean": float(vals.mean()), "std": float(vals.std()), "classes": int(len(vals))}
    record = {"family": family, "classes": chosen, "summary": summary, "per_class": per_class,
              "accepted_per_class_mean": float(np.mean([len(accepted[c]) for c in chosen])),
              "selected_per_class_mean": float(np.mean([len(selected[c]) for c in chosen]))}
    (run_dir(family, len(chosen), batch) / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["build", "eval", "all"])
    parser.add_argument("--classes", type=int, default=20, help="how many of the 50 classes (seeded choice)")
    parser.add_argument("--family", choices=["lfcbm", "labo"], default="lfcbm")
    parser.add_argument("--per-prompt", type=int, default=10)
    parser.add_argument("--k-per-class", type=int, default=8)
    parser.add_argument("--classes-per-request", type=int, default=1, help="generation.classes_per_request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.stage in ("build", "all"):
        print(json.dumps(build(n_classes=args.classes, family=args.family, per_prompt=args.per_prompt,
                               k_per_class=args.k_per_class, batch=args.classes_per_request), indent=2), file=sys.stderr)
    if args.stage in ("eval", "all"):
        record = evaluate(n_classes=args.classes, family=args.family, k=args.k_per_class, batch=args.classes_per_request)
        print(f"AwA2, {len(record['classes'])} classes, family {args.family}; mean concepts per class: "
              f"{record['accepted_per_class_mean']:.1f} accepted, {record['selected_per_class_mean']:.1f} selected; "
              f"{platform.machine()} {os.cpu_count()} cores; {datetime.now(timezone.utc).strftime('%Y-%m-%d')}\n")
        print("| concepts per class | mean ROC AUC over classes | std | classes |")
        print("|---|---:|---:|---:|")
        for m, v in record["summary"].items():
            print(f"| {m} | {v['mean']:.3f} | {v['std']:.3f} | {v['classes']} |")


if __name__ == "__main__":
    main()
