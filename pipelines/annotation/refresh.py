"""Incremental refresh of a run, and the check of a run directory that it (and the build DAG) relies on.

``refresh_run(run_dir, items_path)`` annotates new or changed items against the run's *existing* concept set: no LLM
call, no concept regeneration, no Beam. In: a committed run directory (README "Run directory") and an items file
with the run's columns, either the whole current dataset or only new rows. An item is identified by its id and a
content hash of its text and label:

- unchanged (same id, same hash as when it was annotated): left alone, not embedded;
- new id, or known id with a different hash: embedded with the run's embedding model and annotated with the run's
  concepts, index and ``top_k``; a changed item's old annotation row is removed, so each item stays in
  ``annotations/`` exactly once (new rows go to a new shard; shards that lose rows are rewritten);
- a row that fails item validation goes to ``rejects.parquet`` (stage ``items``) and leaves ``annotations/``;
- items of the run absent from the file are kept (a file of new rows is a valid input).

``item_hashes.parquet`` (added to the run directory) records the hash of every annotated item for the next refresh.
A run without it takes its baseline from the build's input file when that file still has the sha256 recorded in
``manifest.json``; otherwise every item in the file counts as changed (correct, only not incremental).
Review tasks in ``labelstudio/tasks.json`` are replaced for the re-annotated items; ``manifest.json`` gets the new
counts and a ``refreshes`` entry. All of it is written into a staged copy of the run (hard links, so untouched
files cost nothing) that is swapped into place in one step (``StagedRun``); when nothing is new or changed,
nothing is written. If another writer (a Label Studio pull) changes the run meanwhile, nothing is committed
and ``RunChangedError`` says to retry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.pipelines.config import BuildConfig
from conceptkit.pipelines.readers.items import SPLIT_NAME, InputError, image_rules, load_items, validate_row
from conceptkit.pipelines.runs.staging import StagedRun
from conceptkit.schemas.annotations import annotations_schema, as_stored, score_storage_of, shard_name, shard_split, stored_schema
from conceptkit.schemas.base import named_schema
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import check_schema, read_table, write_table, write_text_atomic
from conceptkit.schemas.rejects import REJECTS

logger = logging.getLogger(__name__)

HASHES_FILE = "item_hashes.parquet"
# TODO(schemas): move to schemas/item_hashes.py with a golden test once schemas/ owners agree on the table.
ITEM_HASHES = named_schema(
    "item_hashes",
    1,
    [pa.field("item_id", pa.string(), nullable=False), pa.field("content_hash", pa.string(), nullable=False)],
)
CONTRACT = ("candidates.parquet", "concepts.parquet", "annotations", "rejects.parquet", "index/concepts.faiss",
            "index/index.json", "labelstudio/config.xml", "labelstudio/tasks.json", "manifest.json")


class RunCheckError(ValueError):
    """A run directory does not hold what the run directory contract promises; the message lists every problem."""


class RunChangedError(RuntimeError):
    """Something else wrote to the run directory while it was being refreshed (e.g. a Label Studio pull); retry."""


@dataclass
class RefreshSummary:
    out: Path
    changed: bool
    counts: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)


def content_hash(text: str, label: str | None, split: str = "train") -> str:
    """Hash of what an annotation depends on: the text (embedding), the label and the split (copied into the row)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(text.encode("utf-8"))
    digest.update(b"\x1f" + (label.encode("utf-8") if label is not None else b"\x00"))
    if split != "train":  # a train item hashes as before splits existed
        digest.update(b"\x1f" + split.encode("utf-8"))
    return digest.hexdigest()


def _annotation_ids(run_dir: Path, n_concepts: int) -> dict[str, list[str]]:
    """Shard name -> item ids, reading only the id column (after checking each shard's schema)."""
    schema = stored_schema(run_dir / "annotations", n_concepts)
    out: dict[str, list[str]] = {}
    for shard in sorted((run_dir / "annotations").glob("*.parquet")):
        check_schema(pq.read_schema(shard), schema, where=str(shard))
        out[shard.name] = pq.read_table(shard, columns=["item_id"]).column("item_id").to_pylist()
    return out


def check_run(run_dir: str | os.PathLike[str]) -> dict[str, int]:
    """Check a run directory against the contract; return its counts or raise ``RunCheckError`` listing problems.

    Every contract file exists and reads back with its schema; each item is annotated at most once and the
    annotated + rejected items add up to the manifest's ``items_in``; index and concepts agree.
    """
    from conceptkit.annotators.index import ConceptIndex

    run_dir = Path(run_dir)
    missing = [name for name in CONTRACT if not (run_dir / name).exists()]
    if missing:
        raise RunCheckError(f"{run_dir}: missing {', '.join(missing)}")
    problems: list[str] = []
    manifest = json.loads((run_dir / "manifest.json").read_text())
    concepts = read_table(run_dir / "concepts.parquet", CONCEPTS)
    from conceptkit.schemas.candidates import CANDIDATES

    candidates = read_table(run_dir / "candidates.parquet", CANDIDATES)
    rejects = read_table(run_dir / "rejects.parquet", REJECTS)
    shards = _annotation_ids(run_dir, concepts.num_rows)
    ids = [i for shard in shards.values() for i in shard]
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} duplicate item ids in annotations/")
    item_rejects = [k for s, k in zip(rejects.column("stage").to_pylist(), rejects.column("key").to_pylist())
                    if s == "items"]
    if set(item_rejects) & set(ids):
        problems.append(f"{len(set(item_rejects) & set(ids))} items both annotated and rejected")
    counts = manifest.get("counts", {})
    if len(ids) + len(item_rejects) != counts.get("items_in"):
        problems.append(f"{len(ids)} annotated + {len(item_rejects)} rejected != items_in {counts.get('items_in')}")
    index = ConceptIndex.load(run_dir / "index")
    if index.description["count"] != concepts.num_rows:
        problems.append(f"index holds {index.description['count']} concepts, concepts.parquet {concepts.num_rows}")
    tasks = json.loads((run_dir / "labelstudio" / "tasks.json").read_text())
    if len(tasks) != len(ids):
        problems.append(f"{len(tasks)} review tasks for {len(ids)} annotated items")
    if problems:
        raise RunCheckError(f"{run_dir}: " + "; ".join(problems))
    return {
        "candidates": candidates.num_rows,
        "concepts": concepts.num_rows,
        "annotation_shards": len(shards),
        "items_annotated": len(ids),
        "items_rejected": len(item_rejects),
        "rejects": rejects.num_rows,
        "review_tasks": len(tasks),
    }


def _baseline(run_dir: Path, manifest: dict[str, Any], cfg: BuildConfig) -> dict[str, str]:
    """item_id -> content hash of the annotated items, as far as it is known."""
    if (run_dir / HASHES_FILE).exists():
        table = read_table(run_dir / HASHES_FILE, ITEM_HASHES)
        return dict(zip(table.column("item_id").to_pylist(), table.column("content_hash").to_pylist()))
    source = manifest.get("input", {})
    path = Path(source.get("path") or "")
    if not path.is_file() or _file_sha256(path) != source.get("sha256"):
        logger.warning("%s: no %s and the build input %s changed or is gone; every item given counts as changed",
                       run_dir, HASHES_FILE, path)
        return {}
    table = load_items(cfg.items.model_copy(update={"path": str(path)})).table
    return {i: content_hash(t, lab, s) for i, t, lab, s in zip(*(table.column(c).to_pylist()
                                                                for c in ("item_id", "text", "label", "split")))}


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` into ``dst`` as hard links (every later write replaces a file, never edits one in place)."""

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:  # a filesystem without hard links: a real copy is only slower
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link, dirs_exist_ok=True)


def _tree_state(directory: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (inode, mtime) of every file: any write by rename or in place changes it."""
    return {str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def _replace_text(path: Path, text: str) -> None:
    """Write a file by rename, so a hard link to the old content (the committed run) is left untouched."""
    write_text_atomic(path, text)


def refresh_run(
    run_dir: str | os.PathLike[str],
    items_path: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    columns: dict[str, str | None] | None = None,
    embedder=None,
) -> RefreshSummary:
    """Annotate the new or changed items of ``items_path`` (default: the build's input) against the run's concepts.

    ``split`` puts every item of the file into that split (default: the file's split column, else ``train``);
    ``columns`` overrides the run's ``id_column`` / ``text_column`` / ``label_column`` for this file (None values
    keep the run's). ``embedder`` (a ``TextEmbedder``) replaces the run's model, e.g. one already loaded; raises
    ``RunCheckError`` when the run directory is not a complete run, ``conceptkit.pipelines.readers.items.InputError``
    for an unusable items file and ``RunBusy`` while another command writes the run.
    """
    from conceptkit.pipelines.runs.guard import RunLock

    if not Path(run_dir).is_dir():
        raise RunCheckError(f"{run_dir}: no such run directory")
    with RunLock(Path(run_dir)):  # one writer per run: a second build, refresh or annotate is refused (RunBusy)
        return _refresh_run(run_dir, items_path, split=split, columns=columns, embedder=embedder)


def _refresh_run(
    run_dir: str | os.PathLike[str],
    items_path: str | os.PathLike[str] | None = None,
    *,
    split: str | None = None,
    columns: dict[str, str | None] | None = None,
    embedder=None,
) -> RefreshSummary:
    from conceptkit.annotators.embedding import TextEmbedder, annotate
    from conceptkit.annotators.index import ConceptIndex

    started = time.perf_counter()
    run_dir = Path(run_dir)
    state = _tree_state(run_dir)
    check_run(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    cfg = BuildConfig.model_validate(manifest["config"])
    labelled = bool(manifest["input"].get("labelled"))
    classes = tuple(manifest["input"]["classes"])
    items_path = Path(items_path) if items_path is not None else Path(manifest["input"]["path"])
    # A file of new rows need not hold every class: only an unlabelled run needs its classes file.
    update = {"path": str(items_path), "classes_file": None if labelled else cfg.items.classes_file,
              **{k: v for k, v in (columns or {}).items() if v is not None}}
    if split is not None:
        if not SPLIT_NAME.fullmatch(split):
            raise InputError(f"split {split!r}: split names are letters, digits and underscores (e.g. test)")
    items_cfg = cfg.items.model_copy(update={**update, "holdout": 0.0})
    loaded = load_items(items_cfg)

    concepts = read_table(run_dir / "concepts.parquet", CONCEPTS)
    shards = _annotation_ids(run_dir, concepts.num_rows)
    annotated = {item_id: shard for shard, ids in shards.items() for item_id in ids}
    if split is not None or not loaded.has_split_column:
        # --split puts every item there; otherwise an item keeps the split it was annotated in (the build's
        # held-out test items stay test) and a new one gets the file's default.
        known = {} if split is not None else {i: shard_split(name) for name, ids in shards.items() for i in ids}
        column = [split if split is not None else known.get(i, s) for i, s in
                  zip(loaded.table.column("item_id").to_pylist(), loaded.table.column("split").to_pylist())]
        loaded = replace(loaded, table=loaded.table.set_column(
            loaded.table.column_names.index("split"), "split", pa.array(column, pa.string())))
    baseline = _baseline(run_dir, manifest, cfg)
    rejects = read_table(run_dir / "rejects.parquet", REJECTS)
    rejected_before = {k: r for s, k, r in zip(*(rejects.column(c).to_pylist() for c in ("stage", "key", "reason")))
                       if s == "items"}

    todo: list[dict[str, Any]] = []
    new_rejects: list[dict[str, Any]] = []
    counts = {"items_in": loaded.table.num_rows, "new": 0, "changed": 0, "unchanged": 0, "rejected": 0}
    for row in loaded.table.to_pylist():
        reason = validate_row(row, classes=frozenset(classes), max_text_chars=cfg.items.max_text_chars,
                              image=image_rules(items_cfg))
        if reason is not None:
            if rejected_before.get(row["item_id"]) != reason or row["item_id"] in annotated:
                new_rejects.append({"stage": "items", "key": str(row["item_id"]), "reason": reason,
                                    "detail": "refresh", "raw": (row.get("text") or "")[:2000]})
                counts["rejected"] += 1
            continue
        row["content_hash"] = content_hash(row["text"], row["label"], row["split"])
        if row["item_id"] not in annotated:
            counts["new"] += 1
        elif baseline.get(row["item_id"]) != row["content_hash"]:
            counts["changed"] += 1
        else:
            counts["unchanged"] += 1
            continue
        todo.append(row)
    counts["embedded"] = len(todo)
    if not todo and not new_rejects:
        logger.info("%s: nothing new or changed in %s (%d items unchanged)", run_dir, items_path, counts["unchanged"])
        return RefreshSummary(out=run_dir, changed=False, counts=counts,
                              timings_s={"total": round(time.perf_counter() - started, 3)})

    t = time.perf_counter()
    if todo and embedder is None:
        embedder = TextEmbedder.from_config(cfg.embedding)
    from conceptkit.pipelines.runs.run import open_run

    embedding_cache = str(open_run(run_dir).cache_dir() / "embeddings") if cfg.embedding.cache else None
    embeddings = embedder.encode_cached([r["text"] for r in todo], embedding_cache)[0] if todo else None
    timings = {"embed_items": time.perf_counter() - t}
    t = time.perf_counter()
    rows: list[dict[str, Any]] = []
    dtype, layout = score_storage_of(run_dir / "annotations")  # new shards keep the run's score dtype and layout
    if todo:
        concept_emb = np.asarray(concepts.column("embedding").to_pylist(), dtype=np.float32)
        index = ConceptIndex.load(run_dir / "index")
        top_ids, top_scores, scores = annotate(embeddings, concept_emb, top_k=cfg.annotation.top_k, index=index)
        # The run's label rule stays fixed (with its human thresholds): refreshed items are labelled like the rest.
        from conceptkit.pipelines.annotation.labels import LabelRuleError, for_run

        try:
            rule = for_run(run_dir, concepts.column("concept").to_pylist())
        except LabelRuleError as exc:
            raise RunCheckError(str(exc)) from None
        scores = as_stored(scores, dtype)  # labelled on what the shard keeps, like the build
        present = rule.decide(scores, [r["label"] for r in todo])
        rows = [{"item_id": r["item_id"], "text": r["text"], "label": r["label"], "split": r["split"],
                 "top_concept_ids": top_ids[i].tolist(),
                 "top_scores": top_scores[i].tolist(), "concept_ids": np.flatnonzero(present[i]).tolist(),
                 "scores": scores[i].tobytes() if layout == "packed" else scores[i]} for i, r in enumerate(todo)]
    timings["annotate"] = time.perf_counter() - t

    t = time.perf_counter()
    touched = {r["item_id"] for r in todo} | {r["key"] for r in new_rejects}
    with StagedRun(run_dir) as run:
        _link_tree(run_dir, run.tmp)
        _rewrite_shards(run.path("annotations"), shards, touched, concepts.num_rows)
        for split_name in sorted({r["split"] for r in rows}):
            write_table(run.path("annotations", shard_name(split_name)), [r for r in rows if r["split"] == split_name],
                        annotations_schema(concepts.num_rows, dtype, layout), row_group_size=8192)
        kept_rejects = [r for r in rejects.to_pylist() if not (r["stage"] == "items" and r["key"] in touched)]
        all_rejects = kept_rejects + new_rejects
        write_table(run.path("rejects.parquet"), all_rejects, REJECTS)
        hashes = {i: h for i, h in baseline.items() if i in annotated and i not in touched}
        hashes.update({r["item_id"]: r["content_hash"] for r in todo})
        write_table(run.path(HASHES_FILE), [{"item_id": i, "content_hash": h} for i, h in sorted(hashes.items())],
                    ITEM_HASHES)
        n_tasks = _rewrite_tasks(run.path("labelstudio", "tasks.json"), todo, rows, touched,
                                 concepts.column("concept").to_pylist(), manifest["run_id"])
        n_annotated = len(annotated) - len(touched & set(annotated)) + len(rows)
        n_item_rejects = sum(1 for r in all_rejects if r["stage"] == "items")
        timings["write"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        manifest["counts"].update(items_in=n_annotated + n_item_rejects, items_annotated=n_annotated,
                                  items_rejected=n_item_rejects, rejects=len(all_rejects))
        manifest["outputs"]["item_hashes"] = HASHES_FILE
        manifest.setdefault("refreshes", []).append({
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": {"path": str(items_path), "sha256": _file_sha256(items_path)},
            "counts": counts,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
        })
        _replace_text(run.path("manifest.json"), json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        from conceptkit.pipelines.runs.card import write_dataset_card

        write_dataset_card(run.tmp)  # its counts follow the shards
        if n_tasks != n_annotated:
            raise RuntimeError(f"refresh accounting failed: {n_tasks} review tasks for {n_annotated} items")
        # Checked as late as possible; a writer in the moment between check and swap still loses its write.
        if _tree_state(run_dir) != state:
            raise RunChangedError(f"{run_dir} changed while it was being refreshed; nothing was committed, retry")
        run.commit()
    logger.info("%s: refreshed from %s: %d new, %d changed, %d unchanged, %d rejected", run_dir, items_path,
                counts["new"], counts["changed"], counts["unchanged"], counts["rejected"])
    return RefreshSummary(out=run_dir, changed=True, counts=counts,
                          timings_s={k: round(v, 3) for k, v in timings.items()})


def _rewrite_shards(directory: Path, shards: dict[str, list[str]], drop: set[str], n_concepts: int) -> None:
    """Rewrite the shards that hold a dropped item without it (a shard left empty is removed)."""
    schema = stored_schema(directory, n_concepts)
    for name, ids in shards.items():
        if drop.isdisjoint(ids):
            continue
        table = read_table(directory / name, schema)
        keep = [i not in drop for i in ids]
        if any(keep):
            write_table(directory / name, table.filter(pa.array(keep)), schema, row_group_size=8192)
        else:
            (directory / name).unlink()


def _rewrite_tasks(path: Path, todo: list[dict], rows: list[dict], drop: set[str], concepts: list[str],
                   run_id: str) -> int:
    """Replace the review tasks of the re-annotated or newly rejected items; returns the task count."""
    from conceptkit.pipelines.review.tasks import item_task, write_tasks
    from conceptkit.schemas.labelstudio import Task

    tasks = [Task.model_validate(t) for t in json.loads(path.read_text()) if t["data"]["item_id"] not in drop]
    for item, row in zip(todo, rows):
        tasks.append(item_task(item_id=item["item_id"], text=item["text"], label=item["label"],
                               top_ids=row["top_concept_ids"], top_scores=row["top_scores"], concepts=concepts,
                               run_id=run_id, ticked=list(row["concept_ids"])))
    tasks.sort(key=lambda task: task.data.item_id)
    return write_tasks(path, tasks)
