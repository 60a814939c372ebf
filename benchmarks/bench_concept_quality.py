"""Concept quality: a linear probe on item-concept similarities (the bottleneck) against one on raw embeddings.

In: a labelled dataset from ../shared/data (``dbpedia``: the DBpedia-14 sample, val.csv as the training pool and
test.csv as the test set; ``trec``: TREC coarse question types, TREC.train / TREC.test). Out: a Markdown table on
stdout (paste it into benchmarks/README.md) and JSON results under benchmarks/.cache/quality/<dataset>/.

Steps. ``build``: ``run_build`` on a small labelled build split (``--build-per-class`` items per class from the
training pool, seed 0) with the embedded LLM; every LLM answer is cached in benchmarks/.cache/llm/llm.sqlite, so a
rerun costs no LLM time. ``eval``: embeds the training pool and the test set (cached .npy), then fits
``StandardScaler + LogisticRegression`` (fixed C=1, no tuning) at 1, 4, 16 examples per class (mean and std over
``--seeds`` draws) and on the whole training pool, for these feature sets:

- black box: the 384-d item embedding;
- generated (selected): cosine(item, concept) for the concepts in concepts.parquet (LLM + filters + selection;
  selection uses the class means of the build split, so it has seen ``--build-per-class`` labels per class);
- generated (all accepted): the same for every accepted candidate (LLM + filters only, no label used);
- random generic, at the budget of each generated set: concepts drawn without replacement from ``GENERIC_VOCAB``
  (common English nouns and short phrases listed below, chosen without looking at any dataset), a fresh draw per
  seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = ROOT / "benchmarks" / ".cache"
LLM_CACHE = CACHE / "llm"
DATA = ROOT.parent / "shared" / "data"
EMBEDDING_MODEL = "packaged:all-MiniLM-L6-v2"
LLM_PORT = 8791

# Generic vocabulary for the random baseline: everyday nouns and short phrases, written for this benchmark
# without looking at any dataset. Lines starting with '~' hold two-word phrases.
def _vocab() -> list[str]:
    """Single nouns from the first block, two-word phrases from the lines written as adjective noun pairs."""
    words: list[str] = []
    for line in _VOCAB_TEXT.strip().splitlines():
        tokens = line.split()
        if line.startswith("~"):  # a line of two-word phrases
            tokens = tokens[1:]
            words.extend(" ".join(tokens[i : i + 2]) for i in range(0, len(tokens) - 1, 2))
        else:
            words.extend(tokens)
    return sorted(set(words))


_VOCAB_TEXT = """
table chair window door kitchen garden street river mountain forest beach city house apartment office market
shop restaurant hotel station bridge road car bus bicycle boat truck dog cat horse bird fish cow sheep chicken tree
flower grass leaf rock sand water fire ice snow rain wind sun moon star sky cloud letter pen pencil paper computer
phone television radio camera clock watch key lock bag box bottle cup plate knife fork spoon bread cheese apple
orange coffee tea milk sugar salt rice soup meat egg cake chocolate money price bank card ticket shirt shoe hat coat
dress jacket glove ring song guitar piano drum painting picture photo game ball player doctor teacher student worker
farmer police soldier child baby mother father family friend neighbor crowd meeting party wedding birthday holiday
weekend morning evening night winter summer autumn year month week hour minute color shape size weight noise smell
taste voice word sentence question answer idea plan problem reason result change mistake chance choice habit memory
dream fear hope love anger joy health illness medicine energy light shadow metal wood plastic stone
~ small town busy street quiet room hot weather cold water fresh air long walk short trip heavy box bright light
~ loud noise soft pillow sharp knife round table green field red car blue sky open door empty bottle full moon
~ high wall deep lake narrow path wide river fast car slow train new phone old photo clean shirt dirty floor
~ wet road dry leaves warm coat cool breeze sweet fruit bitter coffee daily routine public park local shop
~ kitchen table front door back yard parking lot phone call text message coffee cup water bottle paper bag
~ dinner plate rainy day sunny morning late night early bird good news bad luck big smile small talk
"""
GENERIC_VOCAB = _vocab()

DBPEDIA_DOMAIN = "Wikipedia article abstracts"
TREC_DOMAIN = "questions people ask, classified by the type of answer they expect"
TREC_NAMES = {"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "human",
              "LOC": "location", "NUM": "numeric value"}


def humanize(name: str) -> str:
    """'MeanOfTransportation' -> 'mean of transportation' (the class names the LLM sees)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()


def load_dataset(name: str) -> dict:
    """{classes, domain, train: (texts, labels), test: (texts, labels)} with labels as class-name strings."""
    if name == "dbpedia":
        root = DATA / "dbpedia14_sample"
        ids = {}
        for line in (root / "meta.txt").read_text().splitlines():
            m = re.match(r"^(\d+):\s*(\S+)\s*$", line)
            if m:
                ids[m.group(1)] = humanize(m.group(2))

        def read(split: str):
            with (root / f"{split}.csv").open(encoding="utf-8", newline="") as f:
                rows = [r for r in csv.reader(f) if len(r) >= 2 and r[1].strip()]
            return [r[1] for r in rows], [ids[r[0]] for r in rows]

        classes = [ids[k] for k in sorted(ids, key=int)]
        return {"classes": classes, "domain": DBPEDIA_DOMAIN, "train": read("val"), "test": read("test")}
    if name == "trec":
        root = DATA / "trec"

        def read(fname: str):
            texts, labels = [], []
            for line in (root / fname).read_text(encoding="latin-1").splitlines():
                label, _, text = line.partition(" ")
                if text.strip():
                    texts.append(text.strip())
                    labels.append(TREC_NAMES[label.split(":")[0]])
            return texts, labels

        return {"classes": list(TREC_NAMES.values()), "domain": TREC_DOMAIN, "train": read("TREC.train"),
                "test": read("TREC.test")}
    raise SystemExit(f"unknown dataset {name!r}; choose dbpedia or trec")


def per_class_sample(labels: list[str], classes: list[str], k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    picked = [rng.choice(np.flatnonzero(labels_arr == c), size=k, replace=False) for c in classes]
    return np.concatenate(picked)


def build_config(*, items: Path, out: Path, family: str, domain: str, concepts_per_prompt: int, k_per_class: int,
                 classes_file: Path | None = None, label_column: str | None = "label", classes_per_request: int = 1):
    from conceptkit.pipelines.config import load_config

    overrides = {
        "out": str(out),
        "cache_dir": str(LLM_CACHE),
        "items": {"path": str(items), "id_column": "id", "text_column": "text", "label_column": label_column,
                  "classes_file": str(classes_file) if classes_file else None},
        "llm": {"embedded_port": LLM_PORT, "concurrency": 4, "temperature": 0.7, "seed": 0, "max_tokens": 320,
                "timeout_s": 1800.0},  # a loaded 2-core machine can take minutes per answer; a timeout wastes it
        "generation": {"family": family, "domain": domain, "concepts_per_prompt": concepts_per_prompt,
                       "classes_per_request": classes_per_request},
        "selection": {"k_per_class": k_per_class},
    }
    return load_config(None, overrides)


def run_logged_build(cfg, summary_path: Path) -> dict:
    """``run_build`` and a JSON record of its summary (wall time, counts, LLM accounting)."""
    from conceptkit.pipelines.build import run_build

    started = time.perf_counter()
    summary = run_build(cfg, argv=sys.argv)
    record = {"wall_s": round(time.perf_counter() - started, 1), "counts": summary.counts, "llm": summary.llm,
              "timings_s": summary.timings_s, "out": str(summary.out)}
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def build(name: str, *, per_class: int, k_per_class: int) -> dict:
    ds = load_dataset(name)
    work = CACHE / "quality" / name
    work.mkdir(parents=True, exist_ok=True)
    texts, labels = ds["train"]
    idx = per_class_sample(labels, ds["classes"], per_class, seed=0)
    items = work / "build_items.csv"  # derived from the shared data; lives only in the gitignored cache
    with items.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i in idx:
            w.writerow([f"train-{i}", texts[i], labels[i]])
    classes_file = work / "classes.txt"
    classes_file.write_text("\n".join(ds["classes"]) + "\n")
    cfg = build_config(items=items, out=work / "run", family="text", domain=ds["domain"], concepts_per_prompt=12,
                       k_per_class=k_per_class, classes_file=classes_file)
    return run_logged_build(cfg, work / "build_summary.json")


def embed_cached(texts: list[str], path: Path) -> np.ndarray:
    if path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            return emb
    from conceptkit.annotators.embedding import TextEmbedder

    emb = TextEmbedder(EMBEDDING_MODEL, threads=int(os.environ.get("BENCH_THREADS", "1"))).encode(texts)
    np.save(path, emb)
    return emb


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    model.fit(x_train, y_train)
    return float((model.predict(x_test) == y_test).mean())


def evaluate(name: str, *, shots: list[int], seeds: int) -> dict:
    import pyarrow.parquet as pq

    from conceptkit.annotators.embedding import TextEmbedder

    ds = load_dataset(name)
    work = CACHE / "quality" / name
    run = work / "run"
    (train_texts, train_labels), (test_texts, test_labels) = ds["train"], ds["test"]
    t = time.perf_counter()
    x_train = embed_cached(train_texts, work / "train_emb.npy")
    x_test = embed_cached(test_texts, work / "test_emb.npy")
    embed_s = time.perf_counter() - t
    y_train, y_test = np.asarray(train_labels), np.asarray(test_labels)

    concepts = pq.read_table(run / "concepts.parquet").to_pydict()
    selected = np.asarray(concepts["embedding"], dtype=np.float32)
    cands = pq.read_table(run / "candidates.parquet").to_pydict()
    accepted_names = [c for c, s in zip(cands["concept"], cands["status"]) if s == "accepted"]
    embedder = TextEmbedder(EMBEDDING_MODEL)
    accepted = embedder.encode(accepted_names)
    vocab = embedder.encode(GENERIC_VOCAB)

    def draws(n: int) -> list[np.ndarray]:
        if n > len(GENERIC_VOCAB):
            return []
        return [vocab[np.random.default_rng(1000 + s).choice(len(GENERIC_VOCAB), n, replace=False)]
                for s in range(seeds)]

    feature_sets = {
        "black box (item embedding)": [None],
        f"generated, selected ({len(selected)} concepts)": [selected],
        f"random generic ({len(selected)} concepts)": draws(len(selected)),
        f"generated, all accepted ({len(accepted)} concepts)": [accepted],
        f"random generic ({len(accepted)} concepts)": draws(len(accepted)),
    }
    results: dict[str, dict[str, list[float]]] = {}
    for label, variants in feature_sets.items():
        if not variants:
            continue
        row: dict[str, list[float]] = {}
        for k in shots + [0]:  # 0: the whole training pool
            accs = []
            for s in range(seeds if k else 1):
                concept_emb = variants[s % len(variants)]
                idx = per_class_sample(train_labels, ds["classes"], k, seed=100 + s) if k else np.arange(len(y_train))
                ftr = x_train[idx] if concept_emb is None else x_train[idx] @ concept_emb.T
                fte = x_test if concept_emb is None else x_test @ concept_emb.T
                accs.append(probe_accuracy(ftr, y_train[idx], fte, y_test))
            row["all" if k == 0 else str(k)] = accs
        results[label] = row
        print(f"# {label}: " + ", ".join(f"{k}={np.mean(v):.3f}" for k, v in row.items()), file=sys.stderr, flush=True)
    record = {"dataset": name, "n_train_pool": len(y_train), "n_test": len(y_test), "seeds": seeds,
              "embed_s": round(embed_s, 1), "results": results, "selected_concepts": concepts["concept"],
              "n_accepted": len(accepted_names)}
    (work / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def table(record: dict, shots: list[int]) -> str:
    cols = [str(k) for k in shots] + ["all"]
    head = "| features | " + " | ".join(f"{c}/class" if c != "all" else f"all ({record['n_train_pool']})"
                                      for c in cols) + " |"
    lines = [head, "|---|" + "---:|" * len(cols)]
    for label, row in record["results"].items():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{np.mean(v):.3f}" if len(v) == 1 else f"{np.mean(v):.3f} ± {np.std(v):.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["build", "eval", "all"])
    parser.add_argument("--dataset", choices=["dbpedia", "trec"], default="dbpedia")
    parser.add_argument("--build-per-class", type=int, default=16)
    parser.add_argument("--k-per-class", type=int, default=8)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    if args.stage in ("build", "all"):
        record = build(args.dataset, per_class=args.build_per_class, k_per_class=args.k_per_class)
        print(json.dumps(record, indent=2), file=sys.stderr)
    if args.stage in ("eval", "all"):
        record = evaluate(args.dataset, shots=args.shots, seeds=args.seeds)
        print(f"Dataset {args.dataset}: train pool {record['n_train_pool']}, test {record['n_test']}; test accuracy, "
              f"mean ± std over {args.seeds} seeds for k/class; {platform.machine()} {os.cpu_count()} cores; "
              f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}\n")
        print(table(record, args.shots))


if __name__ == "__main__":
    main()
