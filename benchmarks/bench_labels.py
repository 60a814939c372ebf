"""Label quality on TREC's 50 fine question types: the binary concept labels against ground truth.

Concepts describe the fine types (one short description per type, written here; the three "other" types have
none); TREC's 5,952 questions are embedded with the product's embedder (all-MiniLM-L6-v2) and every rule
labels the same score matrix. An item truly shows a concept when its fine label is the concept's type.

Rules: today's (Otsu per concept, floor 0.2, which is 0.2 in practice), the best single global threshold picked
in hindsight on the reported items, the item's top-k, and the product's rule (annotation/labels.py, computed from
the streamed histograms exactly as a build does): label-free (as for unlabelled items), with the class context of
a labelled build (the build's labels are TREC's 6 coarse classes; each concept belongs to its coarse class), and
with CB-LLM's ACC (class margin 100). The cut ``z`` and the class margin are chosen on the train questions and
reported on the test questions (and on all). Prints a Markdown table for benchmarks/README.md; skips when ../shared/data is
absent.

    python benchmarks/bench_labels.py          # TREC fine types
    python benchmarks/bench_labels.py awa2     # AwA2: dense attributes, the rule's hard case

AwA2 (../shared/data/awa2) is the opposite regime: 50 animal classes as items ("a photo of a zebra"), their 85
human-annotated attributes as concepts, about 31 attributes true per class (37 %), where a rule built for rare
positives under-labels; it reports the same rules and the label_z a user would lower to.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec"

CONCEPTS = {
    "ABBR:abb": "asks for the abbreviation of a name",
    "ABBR:exp": "asks what an abbreviation stands for",
    "DESC:def": "asks for the definition of a term",
    "DESC:desc": "asks for a description of something",
    "DESC:manner": "asks how something is done",
    "DESC:reason": "asks why something happens",
    "ENTY:animal": "asks about an animal",
    "ENTY:body": "asks about a part of the body",
    "ENTY:color": "asks for a colour",
    "ENTY:cremat": "asks about a book, film, song or other creative work",
    "ENTY:currency": "asks for a currency",
    "ENTY:dismed": "asks about a disease or medicine",
    "ENTY:event": "asks about an event",
    "ENTY:food": "asks about a food or drink",
    "ENTY:instru": "asks about a musical instrument",
    "ENTY:lang": "asks for a language",
    "ENTY:letter": "asks for a letter of the alphabet",
    "ENTY:plant": "asks about a plant",
    "ENTY:product": "asks about a product",
    "ENTY:religion": "asks about a religion",
    "ENTY:sport": "asks about a sport or game",
    "ENTY:substance": "asks about a substance or element",
    "ENTY:symbol": "asks for a symbol or sign",
    "ENTY:techmeth": "asks for a technique or method",
    "ENTY:termeq": "asks for the term for something",
    "ENTY:veh": "asks about a vehicle",
    "ENTY:word": "asks about a word",
    "HUM:desc": "asks who a person is",
    "HUM:gr": "asks for a group or organisation of people",
    "HUM:ind": "asks for the name of a person",
    "HUM:title": "asks for a person's title or job",
    "LOC:city": "asks for a city",
    "LOC:country": "asks for a country",
    "LOC:mount": "asks for a mountain",
    "LOC:state": "asks for a state or province",
    "NUM:code": "asks for a code or phone number",
    "NUM:count": "asks how many",
    "NUM:date": "asks for a date or year",
    "NUM:dist": "asks for a distance",
    "NUM:money": "asks for a price or amount of money",
    "NUM:ord": "asks for a rank or position",
    "NUM:perc": "asks for a percentage",
    "NUM:period": "asks how long something lasts",
    "NUM:speed": "asks for a speed",
    "NUM:temp": "asks for a temperature",
    "NUM:volsize": "asks for a size, area or volume",
    "NUM:weight": "asks for a weight",
}


def load():
    texts, fine, split = [], [], []
    for name, part in (("TREC.train", "train"), ("TREC.test", "test")):
        for line in (DATA / name).read_bytes().decode("latin-1").splitlines():
            if line.strip():
                label, text = line.split(" ", 1)
                texts.append(text.strip())
                fine.append(label)
                split.append(part)
    return texts, np.array(fine), np.array(split)


def f1s(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    tp = (pred & truth).sum(0)
    return 2 * tp / np.maximum(pred.sum(0) + truth.sum(0), 1)


def prf(pred, truth):
    tp = (pred & truth).sum(0)
    return tp / np.maximum(pred.sum(0), 1), tp / np.maximum(truth.sum(0), 1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(out, np.argsort(-scores, axis=1)[:, :k], True, axis=1)
    return out


def awa2() -> int:
    root = DATA.parent / "awa2"
    if not root.exists():
        print(f"skipped: {root} is absent")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.annotation.labels import from_histograms
    from conceptkit.pipelines.annotation.thresholds import otsu_thresholds, score_histograms

    classes = [line.split()[1].replace("+", " ") for line in (root / "classes.txt").read_text().splitlines() if line.strip()]
    attributes = [line.split()[1].replace("+", " ") for line in (root / "predicates.txt").read_text().splitlines()
                  if line.strip()]
    truth = np.loadtxt(root / "predicate-matrix-binary.txt").astype(bool)
    embedder = TextEmbedder("packaged:all-MiniLM-L6-v2", threads=2)
    scores = embedder.encode([f"a photo of a {c}" for c in classes]) @ embedder.encode(attributes).T
    hist = score_histograms(scores)
    glob = max((f1s(scores >= x, truth).mean(), x) for x in np.arange(-0.2, 0.8, 0.01))
    rows = {"today (Otsu, floor 0.2)": scores >= otsu_thresholds(hist)[None, :],
            f"global threshold in hindsight ({glob[1]:.2f})": scores >= glob[1],
            "top-31 (the true count per item, in hindsight)": top_k(scores, 31)}
    for z in (3.0, 1.0, 0.5, 0.0):
        rows[f"conceptkit rule, label_z {z}" + (" (default)" if z == 3.0 else "")] = \
            from_histograms(hist, z=z).decide(scores)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"\nMachine: {platform.node()} ({os.cpu_count()} cores), {stamp}; `python benchmarks/bench_labels.py awa2`; "
          f"{len(classes)} classes as items, {len(attributes)} attributes, {truth.sum(1).mean():.1f} true per item")
    print("\n| rule | macro F1 | labels per item |")
    print("|---|---|---|")
    for name, pred in rows.items():
        print(f"| {name} | {f1s(pred, truth).mean():.3f} | {pred.sum(1).mean():.1f} |")
    return 0


def main() -> int:
    if sys.argv[1:] == ["awa2"]:
        return awa2()
    if not DATA.exists():
        print(f"skipped: {DATA} is absent")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    sys.path.insert(0, str(ROOT))
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.annotation.labels import from_histograms
    from conceptkit.pipelines.annotation.thresholds import otsu_thresholds, score_histograms
    from sklearn.metrics import roc_auc_score

    texts, fine, split = load()
    names = list(CONCEPTS)
    embedder = TextEmbedder("packaged:all-MiniLM-L6-v2", threads=2)
    scores = embedder.encode(texts) @ embedder.encode([CONCEPTS[n] for n in names]).T
    truth = fine[:, None] == np.array(names)[None, :]
    hist = score_histograms(scores)  # over every item, as the build's calibration pass
    auc = np.mean([roc_auc_score(truth[:, j], scores[:, j]) for j in range(len(names))])

    coarse = [f.split(":")[0] for f in fine]
    concept_classes = [[n.split(":")[0]] for n in names]

    def rule(z=3.0, margin=None):
        return from_histograms(hist, z=z).with_classes(concept_classes, margin)

    train, test = split == "train", split == "test"
    lab_train = [c for c, m in zip(coarse, train) if m]
    grid = np.round(np.arange(2.0, 4.01, 0.25), 2)
    fit = {z: f1s(rule(z).decide(scores[train]), truth[train]).mean() for z in grid}
    z_best = max(fit, key=fit.get)
    fit_margin = {(z, m): f1s(rule(z, m).decide(scores[train], lab_train), truth[train]).mean()
                  for z in (2.5, 3.0) for m in (1.0, 1.5, 2.0, 3.0)}
    zm_best = max(fit_margin, key=fit_margin.get)
    rows = []
    for part, mask in (("test", test), ("all", train | test)):
        s, t = scores[mask], truth[mask]
        labels = [c for c, m in zip(coarse, mask) if m]
        today = s >= otsu_thresholds(hist)[None, :]
        glob = max((f1s(s >= x, t).mean(), x) for x in np.arange(0.0, 0.8, 0.01))
        chosen = rule(z_best).decide(s)
        free = rule().decide(s)
        context = rule(3.0, 2.0).decide(s, labels)
        context_fit = rule(*zm_best).decide(s, labels)
        acc = rule(3.0, 100.0).decide(s, labels)
        rows.append((part, {
            "today (Otsu, floor 0.2)": (f1s(today, t).mean(), today.sum(1).mean()),
            "global threshold in hindsight (best single cut on these items)": (glob[0], (s >= glob[1]).sum(1).mean(), glob[1]),
            **{f"top-{k}": (f1s(top_k(s, k), t).mean(), k) for k in (1, 3, 5)},
            "conceptkit rule, label-free (double z >= 3; unlabelled items)": (f1s(free, t).mean(), free.sum(1).mean()),
            f"conceptkit rule, label-free, z chosen on train ({z_best})": (f1s(chosen, t).mean(), chosen.sum(1).mean()),
            "**conceptkit rule, default (z 3, class margin 2; labelled items)**": (f1s(context, t).mean(),
                                                                                 context.sum(1).mean()),
            f"conceptkit rule, z and margin chosen on train {zm_best}": (f1s(context_fit, t).mean(),
                                                                         context_fit.sum(1).mean()),
            "conceptkit rule with ACC (class margin 100)": (f1s(acc, t).mean(), acc.sum(1).mean()),
        }))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print(f"\nMachine: {platform.node()} ({os.cpu_count()} cores), {stamp}; "
          f"`python benchmarks/bench_labels.py`; {len(texts)} questions, {len(names)} concepts, "
          f"mean ROC AUC of the raw scores {auc:.3f}; z chosen on train questions: "
          + ", ".join(f"{z}: {v:.3f}" for z, v in fit.items()) + "; (z, margin) on train: "
          + ", ".join(f"{k}: {v:.3f}" for k, v in fit_margin.items()))
    print("\n| rule | macro F1 (test, 500) | macro F1 (all, 5,952) | labels per item (all) |")
    print("|---|---|---|---|")
    for name in rows[0][1]:
        extra = f" (cuts {rows[0][1][name][2]:.2f} / {rows[1][1][name][2]:.2f})" if len(rows[0][1][name]) > 2 else ""
        print(f"| {name}{extra} | {rows[0][1][name][0]:.3f} | {rows[1][1][name][0]:.3f} | {rows[1][1][name][1]:.2f} |")
    p, r = prf(rule(3.0, 2.0).decide(scores, coarse), truth)
    p0, r0 = prf(scores >= otsu_thresholds(hist)[None, :], truth)
    print("\nPer concept (all questions): precision / recall, today and the default rule")
    print("\n| concept | items | today P / R | rule P / R |")
    print("|---|---|---|---|")
    for j in np.argsort(-truth.sum(0)):
        print(f"| {CONCEPTS[names[j]]} | {truth[:, j].sum()} | {p0[j]:.2f} / {r0[j]:.2f} | {p[j]:.2f} / {r[j]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
