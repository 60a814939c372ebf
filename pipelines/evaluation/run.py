"""``conceptkit eval RUN``: is this concept set any good? Bottleneck accuracy against baselines on held-out items.

In: a run directory with labelled items and a ``test`` split (``build --holdout``), or ``test_file`` (other items,
embedded with the run's model through the run's embedding cache). Out: ``RUN/eval/`` (or ``out``):
``eval.json`` (``results`` rows: model, shots, accuracy mean/sd, seeds, n_features; leakage, rejects, the sparse
model's NEC, confusion matrix, per-class accuracy, explanations, concept-label metrics where people reviewed),
``weights.parquet`` (the sparse model: concept, class, weight) and ``report.html``; each written atomically.

Every row uses the same items, splits and classifier (``models``): the run's concepts (its stored scores), the
same with CB-LLM's automatic concept correction of the train split (``bottleneck_acc``: a concept not proposed
for the item's class is zeroed before fitting), the sparse bottleneck, the black box (raw embeddings), random phrases from a fixed generic vocabulary (as many as the
run has concepts, a new draw per seed), zero-shot class names, and every ``compare`` concept set.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.pipelines.evaluation import models
from conceptkit.schemas.annotations import score_matrix, stored_schema

logger = logging.getLogger(__name__)

# Generic words that describe no class in particular: the random-concept baseline draws phrases from these.
GENERIC_WORDS = (
    "thing object item piece part side place area point way case fact kind sort type form shape size level state "
    "time moment period day year number amount group set line list order change result reason idea thought "
    "question answer example detail feature aspect element factor matter issue subject topic theme pattern style "
    "method process system structure condition quality value quantity degree range scale series sequence stage "
    "step start end middle top bottom front back left right inside outside surface edge corner center general "
    "common usual normal simple basic certain particular specific main major minor small large long short high low "
    "old new early late recent past present future first last next other same different similar various several "
    "many few whole entire single double"
).split()


class EvalError(ValueError):
    """The evaluation cannot run (no labels, no test items, unknown labels only, ...); a user error, exit 2."""


@dataclass
class EvalResult:
    out: Path
    results: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)


def random_phrases(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    words = np.asarray(GENERIC_WORDS)
    return [" ".join(rng.choice(words, size=2, replace=False)) for _ in range(n)]


def read_compare(path: str | os.PathLike[str]) -> tuple[str, list[str]]:
    """(name, concepts) from a .txt (one per line), .json (a list, or {class: [...]}) or a concepts.parquet."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"--compare {path}: no such file")
    try:
        if path.suffix == ".parquet":
            concepts = pq.read_table(path, columns=["concept"]).column("concept").to_pylist()
        elif path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            concepts = [c for v in data.values() for c in v] if isinstance(data, dict) else list(data)
        else:
            concepts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError, KeyError, pa.ArrowInvalid) as exc:
        raise EvalError(f"--compare {path}: unreadable ({' '.join(str(exc).split())[:160]})") from None
    concepts = list(dict.fromkeys(str(c).strip() for c in concepts if str(c).strip()))
    if not concepts:
        raise EvalError(f"--compare {path}: no concepts in it")
    name = path.parent.name if path.name == "concepts.parquet" else path.stem
    return name, concepts


def _annotations(run_dir: Path, n_concepts: int) -> pa.Table:
    from conceptkit.schemas.io import read_table

    return read_table(run_dir / "annotations", stored_schema(run_dir / "annotations", n_concepts))


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    test_file: str | os.PathLike[str] | None = None,
    test_columns: dict[str, str | None] | None = None,
    compare: Sequence[str | os.PathLike[str]] = (),
    seeds: int = 10,
    shots: Sequence[int] = models.SHOTS,
    nec: int = 5,
    out: str | os.PathLike[str] | None = None,
    embedder=None,
    report: bool = True,
    tune_c: bool = False,
) -> EvalResult:
    """Evaluate a run (see the module docstring); raises ``EvalError`` for what the user can fix."""
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.runs.run import RunNotFound, open_run

    started = time.perf_counter()
    try:
        run = open_run(run_dir)
    except RunNotFound as exc:
        raise EvalError(str(exc)) from None
    if seeds < 1:
        raise EvalError(f"--seeds must be >= 1, got {seeds}")
    out_dir = Path(out) if out is not None else run.path / "eval"
    _check_out(out_dir)
    classes = list(run.manifest.get("input", {}).get("classes", []))
    if not run.manifest.get("input", {}).get("labelled"):
        raise EvalError(f"{run.path}: the run's items have no labels; evaluation needs labelled items")
    class_index = {c: i for i, c in enumerate(classes)}
    concepts = run.concepts()
    names = concepts.column("concept").to_pylist()
    concept_emb = np.asarray(concepts.column("embedding").to_pylist(), dtype=np.float32)
    table = _annotations(run.path, len(names))
    splits = np.asarray(table.column("split").to_pylist())
    labels = table.column("label").to_pylist()
    is_train = (splits == "train") & np.array([lab is not None for lab in labels])
    if not is_train.any():
        raise EvalError(f"{run.path}: no labelled items in the train split")
    emb_cfg = run.config.get("embedding", {})
    model = embedder or TextEmbedder(run.embedding_model, device=emb_cfg.get("device", "cpu"),
                                     backend=emb_cfg.get("backend", "torch"))
    cache = str(run.cache_dir() / "embeddings") if run.config.get("embedding", {}).get("cache", True) else None
    texts = table.column("text").to_pylist()
    item_ids = table.column("item_id").to_pylist()
    scores = score_matrix(table)  # the run's shipped scores, read once
    train_idx = np.flatnonzero(is_train)
    train_emb = model.encode_cached([texts[i] for i in train_idx], cache)[0]
    y_train = np.array([class_index[labels[i]] for i in train_idx])
    train_scores = scores[train_idx]
    notes: list[str] = []
    leakage = 0
    rejected: dict[str, int] = {}
    if test_file is None:
        test_idx = np.flatnonzero((splits == "test") & np.array([lab is not None for lab in labels]))
        if len(test_idx) == 0:
            raise EvalError(f"{run.path}: no labelled items in a test split; build with --holdout F (default 0.2) "
                            "or give --test FILE")
        test_texts = [texts[i] for i in test_idx]
        y_test = np.array([class_index[labels[i]] for i in test_idx])
        test_scores = scores[test_idx]
        test_emb = model.encode_cached(test_texts, cache)[0]
        test_source = f"{run.path} (split test)"
        test_ids = [item_ids[i] for i in test_idx]
    else:
        test_ids, test_texts, test_labels, rejected = _read_test(run, test_file, test_columns or {})
        train_ids = {item_ids[i] for i in train_idx}
        train_texts = {texts[i] for i in train_idx}
        keep = [k for k, (i, t) in enumerate(zip(test_ids, test_texts)) if i not in train_ids and t not in train_texts]
        leakage = len(test_ids) - len(keep)
        if leakage:
            notes.append(f"{leakage} test items share an id or text with the run's train split: excluded")
        test_ids = [test_ids[k] for k in keep]
        test_texts = [test_texts[k] for k in keep]
        y_test = np.array([class_index[test_labels[k]] for k in keep])
        if len(y_test) == 0:
            raise EvalError(f"{test_file}: no test item left after removing {leakage} that leak from the train split")
        test_emb = model.encode_cached(test_texts, cache)[0]
        test_scores = test_emb @ concept_emb.T
        test_source = str(test_file)
    n_classes = len(classes)
    logger.info("eval %s: %d train items, %d test items (%s), %d concepts, %d seeds", run.path, len(y_train),
                len(y_test), test_source, len(names), seeds)

    rows: list[models.Row] = []
    rows += models.few_shot_rows("bottleneck", train_scores, y_train, test_scores, y_test, n_classes=n_classes,
                                 shots=shots, seeds=seeds)
    # CB-LLM's automatic concept correction (ACC): in the train split, a concept not proposed for the item's
    # class is zeroed before the bottleneck is fitted (test items keep their scores: their class is unknown).
    concept_classes = concepts.column("classes").to_pylist()
    associated = np.array([[classes[y] in cs for cs in concept_classes] for y in range(n_classes)], dtype=bool)
    acc_train = np.where(associated[y_train], train_scores, 0.0).astype(np.float32)
    rows += models.few_shot_rows("bottleneck_acc", acc_train, y_train, test_scores, y_test, n_classes=n_classes,
                                 shots=shots, seeds=seeds)
    sparse = models.sparse_model(train_scores, y_train, test_scores, y_test, n_classes=n_classes, nec=nec)
    rows.append(models.Row("sparse", "all", sparse.accuracy, 0.0, 1, len(names),
                           extra={"nec": round(sparse.nec, 2), "nec_target": nec}))
    rows += models.few_shot_rows("black_box", train_emb, y_train, test_emb, y_test, n_classes=n_classes,
                                 shots=shots, seeds=seeds)
    if tune_c:  # all data with C chosen on a validation fifth of the train split, for the concepts and the black box
        rows.append(models.tuned_row("bottleneck_tuned_c", train_scores, y_train, test_scores, y_test))
        rows.append(models.tuned_row("black_box_tuned_c", train_emb, y_train, test_emb, y_test))
    rows += _random_rows(model, train_emb, y_train, test_emb, y_test, n=len(names), n_classes=n_classes,
                         shots=shots, seeds=seeds)
    class_emb = model.encode([c for c in classes])
    zero = models.zero_shot(test_emb, class_emb)
    rows.append(models.Row("zero_shot", 0, float(np.mean(zero == y_test)), 0.0, 1, n_classes))
    for path in compare:
        name, phrases = read_compare(path)
        emb = model.encode(phrases)
        rows += models.few_shot_rows(f"compare:{name}", train_emb @ emb.T, y_train, test_emb @ emb.T, y_test,
                                     n_classes=n_classes, shots=shots, seeds=seeds)
    for row in rows:
        notes += [f"{row.model} {row.shots}: {n}" for n in row.notes]

    predictions = sparse.predictions
    standard_train, standard_test = models.standardise(train_scores, test_scores)
    bottleneck_all = models.fit_predict(standard_train, y_train, standard_test)
    matrix = models.confusion(y_test, bottleneck_all, n_classes)
    per_class = {c: (float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None)
                 for i, c in enumerate(classes)}
    explanations = _explanations(sparse, names, classes, train_scores, test_scores, test_ids, test_texts, predictions)
    summary = {
        "run": str(run.path), "run_id": run.manifest.get("run_id"), "test": test_source,
        "n_train": int(len(y_train)), "n_test": int(len(y_test)), "n_concepts": len(names), "classes": classes,
        "seeds": seeds, "shots": list(shots), "leakage_excluded": leakage, "test_rejects": rejected,
        "sparse": {"nec_target": nec, "nec": round(sparse.nec, 3), "C": sparse.c, "accuracy": sparse.accuracy},
        "confusion_matrix": matrix.tolist(), "per_class_accuracy": per_class, "explanations": explanations,
        "concept_labels": _concept_label_metrics(run.path, names, table, scores),
        "generation": _generation_record(run),
        "notes": notes, "seconds": round(time.perf_counter() - started, 2),
    }
    results = [r.as_dict() for r in rows]
    _write(out_dir, results, summary, sparse, names, classes)
    if report:
        from conceptkit.pipelines.evaluation.report import write_report

        write_report(out_dir / "report.html", run=run, results=results, summary=summary,
                     train_scores=train_scores, y_train=y_train, concepts=concepts)
    return EvalResult(out=out_dir, results=results, summary=summary)


def _read_test(run, test_file, columns) -> tuple[list[str], list[str], list[str], dict[str, int]]:
    from conceptkit.pipelines.config import ItemsConfig
    from conceptkit.pipelines.readers.items import InputError, load_items

    classes = set(run.manifest["input"]["classes"])
    cfg = ItemsConfig.model_validate({**run.config.get("items", {}), "path": str(test_file), "classes_file": None,
                                      "holdout": 0.0, **{k: v for k, v in columns.items() if v is not None}})
    try:
        table = load_items(cfg).table
    except InputError as exc:
        if "label column" in str(exc) and "is empty" not in str(exc):
            raise EvalError(f"{test_file}: test items need labels ({exc})") from None
        raise EvalError(str(exc)) from None
    rejected: dict[str, int] = {}
    ids, texts, labels = [], [], []
    for item_id, text, label in zip(*(table.column(c).to_pylist() for c in ("item_id", "text", "label"))):
        reason = ("missing_label" if label is None else "unknown_label" if label not in classes
                  else "empty_text" if not (text or "").strip() else None)
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        ids.append(item_id)
        texts.append(text)
        labels.append(label)
    if not ids:
        raise EvalError(f"{test_file}: no usable test item ({', '.join(f'{n} {r}' for r, n in rejected.items())}); "
                        f"labels must be among the run's classes: {', '.join(sorted(classes))[:200]}")
    return ids, texts, labels, rejected


def _random_rows(model, train_emb, y_train, test_emb, y_test, *, n, n_classes, shots, seeds) -> list[models.Row]:
    """Random generic phrases, as many as the run has concepts: a new draw per seed, each scored like concepts."""
    per_seed: dict[Any, list[float]] = {}
    notes: dict[Any, list[str]] = {}
    for seed in range(seeds):
        emb = model.encode(random_phrases(n, seed))
        for row in models.few_shot_rows("random", train_emb @ emb.T, y_train, test_emb @ emb.T, y_test,
                                        n_classes=n_classes, shots=shots, seeds=1):
            if row.seeds:
                per_seed.setdefault(row.shots, []).append(row.accuracy_mean)
            notes.setdefault(row.shots, row.notes)
    out = []
    for k in [*shots, "all"]:
        accs = per_seed.get(k, [])
        out.append(models.Row("random", k, float(np.mean(accs)) if accs else float("nan"),
                              float(np.std(accs)) if accs else float("nan"), len(accs), n, notes=notes.get(k, [])))
    return out


def _explanations(sparse, names, classes, train_scores, test_scores, test_ids, test_texts, predictions) -> dict:
    top = {}
    for c, cls in enumerate(classes):
        order = np.argsort(-sparse.weights[c])
        top[cls] = [{"concept": names[j], "weight": round(float(sparse.weights[c, j]), 4)}
                    for j in order[:5] if sparse.weights[c, j] > 0]
    _, standard = models.standardise(train_scores, test_scores)
    items = []
    for k in range(min(8, len(test_ids))):
        c = int(predictions[k])
        contribution = sparse.weights[c] * standard[k]
        order = np.argsort(-contribution)[:3]
        items.append({"item_id": test_ids[k], "text": test_texts[k][:300], "predicted": classes[c],
                      "top_concepts": [{"concept": names[j], "contribution": round(float(contribution[j]), 3)}
                                       for j in order if contribution[j] > 0]})
    return {"top_concepts_per_class": top, "test_items": items}


def _concept_label_metrics(run_dir: Path, names: list[str], table: pa.Table, scores: np.ndarray) -> dict | None:
    """Per-concept precision / recall / F1 of the binary labels and ROC AUC of the scores against human
    verdicts (item and concept review), when ``verified.parquet`` exists. The labels are the run's label rule
    now: after a pull, with the thresholds fitted from people's answers."""
    path = run_dir / "verified.parquet"
    if not path.exists():
        return None
    from conceptkit.schemas.io import read_table
    from conceptkit.schemas.verified import VERIFIED

    verified = [r for r in read_table(path, VERIFIED).to_pylist()
                if r["item_id"] is not None and r["concept_id"] is not None and r["label"] in ("present", "absent")]
    position = {i: k for k, i in enumerate(table.column("item_id").to_pylist())}
    from conceptkit.pipelines.annotation.labels import LabelRuleError, for_run

    try:
        decided = for_run(run_dir, names).decide(scores, table.column("label").to_pylist())
    except LabelRuleError:  # a run built before the label rule: its stored labels
        decided = np.zeros(scores.shape, dtype=bool)
        for k, ids in enumerate(table.column("concept_ids").to_pylist()):
            decided[k, ids] = True
    out = {}
    for j, name in enumerate(names):
        pairs = [(r["label"] == "present", position[r["item_id"]]) for r in verified
                 if r["concept_id"] == j and r["item_id"] in position]
        if not pairs:
            continue
        truth = np.array([p for p, _ in pairs])
        predicted = np.array([bool(decided[k, j]) for _, k in pairs])
        tp = int(np.sum(truth & predicted))
        precision = tp / predicted.sum() if predicted.sum() else None
        recall = tp / truth.sum() if truth.sum() else None
        f1 = (2 * precision * recall / (precision + recall)) if precision and recall else None
        auc = None
        if 0 < truth.sum() < len(truth):
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(truth, scores[[k for _, k in pairs], j]))
        out[name] = {"n": len(pairs), "precision": precision, "recall": recall, "f1": f1, "roc_auc": auc}
    return out


EVAL_MARKER = ".conceptkit-eval"


def _generation_record(run) -> dict:
    """Where the run's concepts came from (its manifest and candidates): selected concepts per source, what the
    filters removed, and the generation rounds."""
    from conceptkit.schemas.candidates import CANDIDATES
    from conceptkit.schemas.io import read_table

    by_source: dict[str, int] = {}
    try:
        candidates = read_table(run.path / "candidates.parquet", CANDIDATES)
        for source, selected in zip(candidates.column("source").to_pylist(), candidates.column("selected").to_pylist()):
            if selected:
                by_source[source] = by_source.get(source, 0) + 1
    except (OSError, ValueError):  # an older run (candidates v1) has no sources
        pass
    m = run.manifest
    return {"selected_by_source": by_source, "filtered": m.get("filtered", {}), "rounds": m.get("rounds", []),
            "llm_tokens": (m.get("llm") or {}).get("prompt_tokens", 0) + (m.get("llm") or {}).get("completion_tokens", 0)}


def _check_out(out_dir: Path) -> None:
    """Write only into a new or empty directory, or one an earlier eval wrote (its marker): never over a user's
    own report.html or eval.json."""
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / EVAL_MARKER).is_file())):
        raise EvalError(f"--out {out_dir}: exists and is not a conceptkit eval directory (no {EVAL_MARKER}); "
                        "nothing was written. Choose a new directory")


def _write(out_dir: Path, results, summary, sparse, names, classes) -> None:
    from conceptkit.schemas.io import write_text_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVAL_MARKER).write_text(json.dumps({"conceptkit": "eval"}) + "\n")
    write_text_atomic(out_dir / "eval.json", json.dumps({"results": results, **summary}, indent=2,
                                                        ensure_ascii=False, allow_nan=False) + "\n")
    rows = [{"concept": names[j], "class": classes[c], "weight": float(sparse.weights[c, j])}
            for c in range(len(classes)) for j in np.flatnonzero(sparse.weights[c])]
    table = pa.table({"concept": pa.array([r["concept"] for r in rows], pa.string()),
                      "class": pa.array([r["class"] for r in rows], pa.string()),
                      "weight": pa.array([r["weight"] for r in rows], pa.float32())})
    tmp = out_dir / ".weights.parquet.tmp"
    pq.write_table(table, tmp)
    tmp.replace(out_dir / "weights.parquet")


def format_eval(result: EvalResult) -> str:
    """The accuracy table (mean +- sd per model and shot count) and where the files are."""
    table: dict[str, dict[Any, str]] = {}
    for r in result.results:
        cell = "  -  " if r["seeds"] == 0 else f"{r['accuracy_mean']:.3f}" + (
            f"±{r['accuracy_sd']:.3f}" if r["seeds"] > 1 else "")
        table.setdefault(r["model"], {})[r["shots"]] = cell
    columns = [*result.summary["shots"], "all"]
    width = max(len(m) for m in table) + 2
    lines = [f"conceptkit eval: {result.summary['run']} on {result.summary['test']}: {result.summary['n_train']} "
             f"train / {result.summary['n_test']} test items, {result.summary['n_concepts']} concepts, "
             f"{result.summary['seeds']} seeds",
             "  " + "model".ljust(width) + "".join(f"{str(c) + '-shot' if c != 'all' else 'all':>14}" for c in columns)]
    for model, cells in table.items():
        if model == "zero_shot":
            lines.append("  " + model.ljust(width) + f"{cells[0]:>14}  (class names only)")
            continue
        lines.append("  " + model.ljust(width) + "".join(f"{cells.get(c, ''):>14}" for c in columns))
    sparse = result.summary["sparse"]
    lines.append(f"  sparse: NEC {sparse['nec']:.1f} (target {sparse['nec_target']}), accuracy {sparse['accuracy']:.3f}")
    for note in result.summary["notes"]:
        lines.append(f"  note: {note}")
    lines.append(f"  outputs     {result.out}/eval.json, weights.parquet, report.html "
                 f"({result.summary['seconds']:.1f} s)")
    return "\n".join(lines)
