"""Beam wiring of the build: thin DoFns around the pure stage modules, composed by ``BuildConcepts``.

Each DoFn owns its client or model from ``setup()`` and counts outcomes with ``Metrics``; stage time is counted
in milliseconds under ``<stage>_ms``. Sinks write into the staged run directory: small tables once, annotations as
Parquet shards (one per bundle or ``rows_per_shard`` rows, each written atomically); ``CommitShards`` deletes
shards that no surviving bundle reported (a retried bundle's leftovers), so every runner ends with exactly the
committed rows. This is the only module that imports ``apache_beam``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from conceptkit.pipelines.annotation.units import (load_unit_table, release_from_device, save_and_keep, shard_table,
                                                   unit_scorer)
from conceptkit.pipelines.config import AnnotationConfig, EmbeddingConfig, FilterConfig, SelectionConfig
from conceptkit.pipelines.generation.client import ClientSettings
from conceptkit.pipelines.generation.parse import ParseError, answer_parses, max_concepts_per_answer, parse_answer
from conceptkit.pipelines.generation.prompts import ConceptRequest
from conceptkit.pipelines.readers.items import image_rules

logger = logging.getLogger(__name__)
NS = "conceptkit"


def counter(name: str):
    return Metrics.counter(NS, name)


@contextmanager
def timed(stage: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        counter(f"{stage}_ms").inc(int((time.perf_counter() - started) * 1000))


RAW_CHARS = 20_000  # what a reject keeps of the offending text


def reject(stage: str, key: str, reason: str, detail: str | None = None, raw: str | None = None) -> dict:
    """A rejects.parquet row; ``detail`` and ``raw`` are capped (a 20 MB answer is evidence enough at 20 KB)."""
    return {"stage": stage, "key": key, "reason": reason, "detail": detail[:1000] if detail else detail,
            "raw": raw[:RAW_CHARS] if raw else raw}


class ReadItemGroup(beam.DoFn):
    """Row group index -> one batch: the item rows of that row group of the staged items file.

    Batches are formed here, not with ``BatchElements``: Beam 2.77's DaskRunner drops what a DoFn emits from
    ``finish_bundle``, which is where ``BatchElements`` emits its last batch.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, group: int):
        import pyarrow.parquet as pq

        with timed("read"):
            rows = pq.ParquetFile(self.path).read_row_group(group).to_pylist()
        counter("items_read").inc(len(rows))
        yield group, rows


class ValidateItems(beam.DoFn):
    """(unit, item rows) -> ("valid", (unit, the usable rows)) and ("rejects", reject row) for each other row."""

    def __init__(self, classes: Sequence[str], max_text_chars: int, image=None) -> None:
        self.classes = frozenset(classes)
        self.max_text_chars = max_text_chars
        self.image = image  # readers.items.ImageRules for image items

    def process(self, element: tuple[int, list[dict]]):
        from conceptkit.pipelines.readers.items import validate_row

        group, rows = element
        valid = []
        for row in rows:
            reason = validate_row(row, classes=self.classes, max_text_chars=self.max_text_chars, image=self.image)
            if reason is None:
                valid.append(row)
            else:
                counter("items_rejected").inc()
                yield "rejects", reject("items", str(row.get("item_id")), reason, raw=(row.get("text") or "")[:2000])
        counter("items_valid").inc(len(valid))
        if valid:
            yield "valid", (group, valid)


class _Progressing(beam.DoFn):
    """A DoFn that reports its work through one ``Progress`` (``total`` items of ``progress_unit``), opened in
    ``setup`` and closed (its last line) in ``teardown``."""

    progress_desc = ""
    progress_unit = "item"

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self.progress = None

    def setup(self) -> None:
        from conceptkit.pipelines.progress import Progress

        self.progress = Progress(self.total, self.progress_desc, unit=self.progress_unit)

    def teardown(self) -> None:
        if self.progress is not None:
            self.progress.close()


class _WithBackground(_Progressing):
    """A ``_Progressing`` DoFn whose file writes run on a ``Background`` (``self._background``, made in
    ``setup``): ``finish_bundle`` waits for them, timed as ``background_stage``, so a bundle ends only when its
    files exist and a failed write fails the bundle; ``teardown`` closes it."""

    background_stage = "write"
    _background = None

    def finish_bundle(self) -> None:
        if self._background is not None:
            with timed(self.background_stage):
                self._background.wait()

    def teardown(self) -> None:
        if self._background is not None:
            self._background.close()
        super().teardown()


class GenerateCandidates(_Progressing):
    """A chunk of concept requests -> ("candidates"|"rejects"|"calls", row); the calls run concurrently."""

    progress_desc, progress_unit = "generate", "request"

    def __init__(self, settings: ClientSettings, total: int = 0) -> None:
        super().__init__(total)
        self.settings = settings
        self.client = None

    def setup(self) -> None:
        from conceptkit.pipelines.generation.client import ChatClient

        super().setup()
        self.client = ChatClient(self.settings)
        self.client.accept = answer_parses

    def process(self, chunk: list[dict]):
        requests = [ConceptRequest(**{**r, "few_shot": tuple((c, tuple(x)) for c, x in r["few_shot"]),
                                      "examples": tuple(r["examples"]), "batch": tuple(r["batch"]),
                                      "contrast_examples": tuple(r["contrast_examples"])}) for r in chunk]
        jobs = [(r.messages(), r.schema(), r.sample) for r in requests]
        with timed("generate"):
            results = self.client.run_many(jobs, on_done=lambda _: self.progress.update(1))
        cached = sum(r.cached for r in results)
        logger.info("generated candidates for %d requests (%d from the cache, %d errors): %s",
                    len(results), cached, sum(r.error is not None for r in results),
                    ", ".join(sorted({c for r in requests for c in r.classes})))
        for request, result in zip(requests, results):
            yield "calls", {  # a batched call names its classes as a JSON list
                "key": result.key, "prompt_id": request.prompt_id,
                "class_name": json.dumps(list(request.batch), ensure_ascii=False) if request.batch else request.class_name,
                "sample": request.sample, "cached": result.cached, "error": result.error, "status": result.status,
                "retries": result.retries, "latency_s": 0.0 if result.cached else result.latency_s,
                "prompt_tokens": 0 if result.cached else result.prompt_tokens,
                "completion_tokens": 0 if result.cached else result.completion_tokens,
                "cost_usd": 0.0 if result.cached else self.settings.cost(result.prompt_tokens, result.completion_tokens),
                "response_mode": result.response_mode,
            }
            if result.error == "budget_exceeded":
                counter("llm_budget_stops").inc()
            elif result.cached:
                counter("llm_cache_hits").inc()
            else:
                counter("llm_calls").inc()
            counter("llm_retries").inc(result.retries)
            if not result.cached:
                counter("llm_prompt_tokens").inc(result.prompt_tokens)
                counter("llm_completion_tokens").inc(result.completion_tokens)
                Metrics.distribution(NS, "llm_latency_ms").update(int(result.latency_s * 1000))
            key = "+".join(request.classes) + f"/{request.prompt_id}/{request.sample}"
            if result.error:
                counter("llm_errors").inc()
                yield "rejects", reject("generate", key, result.error, result.detail, raw=result.content)
                continue
            try:
                per_class, missing = parse_answer(result.content, request.classes, batched=bool(request.batch))
            except ParseError as exc:
                counter("llm_unparseable").inc()
                yield "rejects", reject("generate", key, exc.reason, str(exc), raw=result.content)
                continue
            for name in missing:  # a batched answer without this class's list: the other classes' lists stand
                yield "rejects", reject("generate", f"{name}/{request.prompt_id}/{request.sample}", "missing_class",
                                        f"the batched answer has no concept list for {json.dumps(name)}",
                                        raw=result.content)
            for name, concepts in per_class.items():
                yield from self._candidates(request, name, concepts, result.content)

    def _candidates(self, request: ConceptRequest, name: str, concepts: list[str], raw: str):
        cap = max_concepts_per_answer(request.n)
        if len(concepts) > cap:
            yield "rejects", reject("generate", f"{name}/{request.prompt_id}/{request.sample}", "too_many_concepts",
                                    f"{len(concepts)} concepts for {request.n} asked; kept the first {cap}", raw=raw)
            concepts = concepts[:cap]
        counter("candidates_proposed").inc(len(concepts))
        for position, concept in enumerate(concepts):
            yield "candidates", {
                "position": position,
                "raw": concept,
                "classes": [name],
                "prompt_id": request.prompt_id,
                "prompt": request.question,
                "model": self.settings.model,
                "sample": request.sample,
            }


class EmbedItems(_WithBackground):
    """A list of item rows -> ("batch", ids, labels, texts and unit-norm embeddings) and ("rejects", row) for
    images that cannot be read. Image items carry their file path in ``text``."""

    progress_desc = "embed items"

    def __init__(self, cfg: EmbeddingConfig, cache_dir: str | None, units_dir: str, modality: str = "text",
                 total: int = 0) -> None:
        super().__init__(total)
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.units_dir = units_dir
        self.modality = modality
        self.embedder = None

    def setup(self) -> None:
        from conceptkit.annotators.embedding import TextEmbedder

        from conceptkit.pipelines.annotation.units import Background

        super().setup()
        self.embedder = TextEmbedder.from_config(self.cfg)
        self._background = Background(1, "conceptkit-units")  # a unit is written while the next one is embedded
        # The model loads on first use, inside process(): its load time counts as embed_items, not runner time.

    def _embed_images(self, rows: list[dict]):
        from conceptkit.annotators.embedding import load_image
        images, keys, kept = {}, [], []
        for row in rows:
            try:
                image, key = load_image(row["text"])
            except (OSError, ValueError) as exc:
                counter("items_rejected").inc()
                yield "rejects", reject("items", str(row["item_id"]), "unreadable_image",
                                        " ".join(str(exc).split())[:300], raw=row["text"])
                continue
            images[key] = image
            keys.append(key)
            kept.append(row)
        if not kept:
            return
        emb, computed = self.embedder.encode_cached(
            keys, self.cache_dir, encode=lambda missing: self.embedder.encode_images([images[k] for k in missing]))
        yield "embedded", (kept, emb, computed)

    def process(self, element: tuple[int, list[dict]]):
        group, rows = element
        with timed("embed_items"):
            if self.modality == "image":
                embedded = None
                for kind, value in self._embed_images(rows):
                    if kind == "rejects":
                        yield kind, value
                    else:
                        embedded = value
                if embedded is None:
                    return
                rows, emb, computed = embedded
            else:
                emb, computed = self.embedder.encode_cached(
                    [r["text"] for r in rows], self.cache_dir,
                    encode=lambda missing: self.embedder.encode(missing, on_batch=self.progress.update))
        self.progress.update(len(rows) - computed)
        counter("items_embedded").inc(computed)
        counter("items_embedding_cached").inc(len(rows) - computed)
        logger.info("embedded %d items (%d from the cache)", len(rows), len(rows) - computed)
        batch = {
            "item_id": [r["item_id"] for r in rows],
            "label": [r["label"] for r in rows],
            "text": [r["text"] for r in rows],
            "split": [r["split"] for r in rows],
            "embedding": emb,
        }
        with timed("write"):
            self._background.submit(save_and_keep, self.units_dir, group, batch, self.cfg.device)
        yield "batch", batch
        yield "unit", group


class ScoreHistograms(beam.DoFn):
    """A staged unit + the concept set -> (concepts x bins) histogram of the unit's scores."""

    def __init__(self, units_dir: str, device: str | None = None) -> None:
        self.units_dir = units_dir
        self.device = device
        self._scorer_key = None
        self._scorer = None

    def process(self, group: int, selection: dict):
        from conceptkit.pipelines.annotation.scoring import UnitScorer, engine_for

        if not selection["concepts"]:
            return
        with timed("annotate"):
            if self._scorer_key != id(selection):
                engine, device = engine_for(self.device)
                self._scorer = UnitScorer(selection["matrix"], top_k=1, engine=engine, device=device)
                self._scorer_key = id(selection)
            _, emb = load_unit_table(self.units_dir, group, device=self.device)
            yield self._scorer.histograms(emb)


def calibrate(histograms: list[np.ndarray], n_concepts: int, selection: dict, cfg: AnnotationConfig):
    """Summed histograms + the concept set -> the run's label rule (per-concept statistics and each concept's
    classes; see annotation/labels.py)."""
    from conceptkit.pipelines.annotation.labels import from_histograms
    from conceptkit.pipelines.annotation.thresholds import BINS

    total = np.zeros((n_concepts, BINS), dtype=np.int64)
    for h in histograms:
        total += h
    rule = from_histograms(total, z=cfg.label_z)
    classes = [c["classes"] for c in selection["concepts"]]
    if len(classes) != n_concepts:  # no concept selected: the build stops later with its own error
        return rule
    return rule.with_classes(classes, cfg.class_margin)


def with_thresholds(selection: dict, rule) -> list[dict]:
    floor = rule.concept_floor()
    return [dict(c, threshold=float(floor[c["concept_id"]])) for c in selection["concepts"]]


class WriteRule(beam.DoFn):
    """The label rule -> ``labels.json`` in the run."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def process(self, rule):
        from conceptkit.pipelines.annotation.labels import save

        yield str(save(self.run_dir, rule))


def evidence_key(item_id: Any) -> int:
    """A stable pseudo-random key of an item: each class's evidence sample is its items with the smallest keys,
    whatever the runner, the bundles or the item order."""
    return int.from_bytes(hashlib.blake2b(str(item_id).encode(), digest_size=8).digest(), "big")


def class_sums(batch: dict, evidence_per_class: int = 0):
    """(label, (sum of embeddings, count, evidence)) for each label in a batch's train items; ``evidence`` is
    [(key, embedding)] of the batch's ``evidence_per_class`` items of that label with the smallest
    ``evidence_key``.

    Unlabelled items, and items of any other split (held out for evaluation), are never selection evidence."""
    sums: dict[str, list] = {}
    for item_id, label, split_name, vec in zip(batch["item_id"], batch["label"], batch["split"], batch["embedding"]):
        if label is None or split_name != "train":
            continue
        acc = sums.setdefault(label, [np.zeros_like(vec, dtype=np.float64), 0, []])
        acc[0] += vec
        acc[1] += 1
        if evidence_per_class:
            acc[2].append((evidence_key(item_id), np.asarray(vec, dtype=np.float32)))
    for label, (total, count, evidence) in sums.items():
        yield label, (total, count, heapq.nsmallest(evidence_per_class, evidence, key=lambda e: e[0]))


def add_sums(values, evidence_per_class: int = 0) -> tuple[np.ndarray, int, list] | None:
    """``class_sums`` values of one label merged: sums and counts added, the evidence samples merged to the
    ``evidence_per_class`` smallest keys (associative, so any runner's combining order gives the same sample)."""
    total, count, evidence = None, 0, []
    for vec, n, sample in values:
        total = vec.copy() if total is None else total + vec
        count += n
        evidence.extend(sample)
    if total is None:
        return None
    return total, count, heapq.nsmallest(evidence_per_class, evidence, key=lambda e: e[0])


class FilterCandidates(beam.DoFn):
    """All candidate rows -> {candidates: [Candidate], accepted: [...], embeddings} after both filter passes."""

    def __init__(self, filters: FilterConfig, embedding: EmbeddingConfig, classes: Sequence[str],
                 cache_dir: str | None, domain: str = "") -> None:
        self.filters = filters
        self.domain = domain
        self.embedding = embedding
        self.cache_dir = cache_dir
        self.classes = list(classes)
        self.embedder = None

    def setup(self) -> None:
        from conceptkit.annotators.embedding import TextEmbedder

        self.embedder = TextEmbedder.from_config(self.embedding)

    def process(self, rows: list[dict]):
        from conceptkit.pipelines.selection.filters import Candidate, filter_candidates

        with timed("filter"):
            candidates = [Candidate(**row) for row in rows]
            accepted, emb = filter_candidates(candidates, self.classes, self.filters, self.embedder, self.cache_dir,
                                              domain=self.domain)
        counter("candidates_accepted").inc(len(accepted))
        counter("candidates_merged").inc(sum(c.status == "merged" for c in candidates))
        counter("candidates_rejected").inc(sum(c.status == "rejected" for c in candidates))
        yield {"candidates": candidates, "accepted": accepted, "embeddings": emb}


class SelectConcepts(beam.DoFn):
    """Filtered candidates + class embedding sums -> {candidates rows, concept rows, selection summary, rejects}."""

    def __init__(self, cfg: SelectionConfig, classes: Sequence[str], generic_spread: float = 0.0, review=None) -> None:
        self.cfg = cfg
        self.classes = list(classes)
        self.generic_spread = generic_spread
        self.review = review  # ReviewInput (pipelines/review/apply.py) or None

    def process(self, filtered: dict, sums: dict):
        from conceptkit.pipelines.selection.stage import select_concepts

        with timed("select"):
            means, evidence = {}, {}
            for label, (total, count, sample) in (sums or {}).items():
                mean = total / max(count, 1)
                means[label] = (mean / (np.linalg.norm(mean) or 1.0)).astype(np.float32)
                if sample:
                    evidence[label] = np.stack([vec for _, vec in sample])
            covered = {c for cand in filtered["accepted"] for c in cand.classes}
            rejects = [
                reject("select", c, "no_concepts", "no candidate concept survived generation and filtering")
                for c in self.classes
                if c not in covered
            ]
            if filtered["accepted"]:
                concepts, summary = select_concepts(
                    filtered["accepted"], filtered["embeddings"], self.classes, class_means=means, cfg=self.cfg,
                    generic_spread=self.generic_spread, review=self.review, class_evidence=evidence,
                )
            else:
                concepts, summary = [], {"selected": 0, "candidates": 0}
            summary["evidence_items"] = int(sum(count for _, count, _ in (sums or {}).values()))
        counter("concepts_selected").inc(len(concepts))
        yield {
            "candidates": [c.to_row() for c in filtered["candidates"]],
            "concepts": concepts,
            # (concepts, d) float32 in concept_id order: built once here, read by index, histograms and annotate.
            "matrix": np.array([c["embedding"] for c in concepts], dtype=np.float32),
            "selection": summary,
            "rejects": rejects,
        }


class WriteIndex(beam.DoFn):
    def __init__(self, directory: str, model: str, cfg) -> None:
        self.directory = directory
        self.model = model
        self.cfg = cfg  # IndexConfig

    def process(self, selection: dict):
        from conceptkit.annotators.index import ConceptIndex

        concepts = selection["concepts"]
        if not concepts:
            return
        with timed("index"):
            index = ConceptIndex.build(
                selection["matrix"],
                np.array([c["concept_id"] for c in concepts]),
                model=self.model,
                concepts=[c["concept"] for c in concepts],
                **self.cfg.model_dump(),
            )
            index.save(self.directory)
        yield index.description["count"]


class AnnotateBatch(_WithBackground):
    """A staged unit + the concept set + the label rule -> the unit's annotation shard as one Arrow table; writes
    the unit's review tasks as JSON Lines into ``tasks_dir`` (joined into tasks.json at the end). Scoring runs on
    ``device`` (annotation/scoring.py: numpy on the CPU, torch on a CUDA device); rows are built column-wise,
    never one Python dict per item."""

    progress_desc = "annotate"
    background_stage = "annotate"  # the wait for the review task files

    def __init__(self, cfg: AnnotationConfig, run_id: str, units_dir: str, tasks_dir: str, index_cfg=None,
                 total: int = 0, device: str | None = None) -> None:
        super().__init__(total)
        self.cfg = cfg
        self.run_id = run_id
        self.units_dir = units_dir
        self.tasks_dir = tasks_dir
        self.index_cfg = index_cfg
        self.device = device
        self._scorer_key = None
        self._scorer = None

    def _scorer_for(self, selection: dict):
        key = id(selection)
        if self._scorer_key != key:
            self._scorer = unit_scorer(selection, self.device, top_k=self.cfg.top_k,
                                       score_dtype=self.cfg.score_dtype, index_cfg=self.index_cfg)
            self._scorer_key = key
        return self._scorer

    def setup(self) -> None:
        from conceptkit.pipelines.annotation.scoring import engine_for
        from conceptkit.pipelines.annotation.units import Background, task_workers

        super().setup()
        # Review tasks are formatted on a thread while the next unit is scored; on the GPU path in worker
        # processes (task_workers), as formatting holds the GIL the scoring loop needs (benchmarks/README.md,
        # "GPU: the build's annotation path").
        cuda = engine_for(self.device)[0] == "torch"
        self._background = Background(task_workers(cuda), "conceptkit-tasks", processes=cuda)

    def process(self, group: int, selection: dict, rule):
        from conceptkit.pipelines.annotation.units import task_fields, write_task_file

        if not selection["concepts"]:
            return
        with timed("annotate"):
            unit, emb = load_unit_table(self.units_dir, group, device=self.device)
            scored = self._scorer_for(selection).annotate(emb, unit.column("label").to_pylist(), rule)
            release_from_device(self.units_dir, group)
            shard = shard_table(unit, scored, self.cfg.score_layout)
            self._background.submit(write_task_file, Path(self.tasks_dir) / f"unit-{group:07d}.jsonl",
                                    [c["concept"] for c in selection["concepts"]], self.run_id,
                                    task_fields(unit, scored))
        self.progress.update(shard.num_rows)
        yield shard
        counter("items_annotated").inc(shard.num_rows)


class WriteShards(beam.DoFn):
    """A unit's annotation table -> one Parquet shard per split in ``directory``
    (``<split>-<id>.parquet``, so a split is a file pattern for Hugging Face ``data_files``); yields each file
    name once in place. Shards are written on a few threads (``ShardWriter``) while the next unit is scored;
    ``finish_bundle`` waits for them, so a bundle ends only when its files exist (CommitShards, after the
    combine, sees them all) and a failed write fails the bundle."""

    def __init__(self, directory: str, score_dtype: str = "float32", score_layout: str = "list") -> None:
        self.directory = directory
        self.score_dtype = score_dtype
        self.score_layout = score_layout
        self._writer = None

    def setup(self) -> None:
        from conceptkit.pipelines.annotation.units import ShardWriter

        self._writer = ShardWriter(self.directory, self.score_dtype, score_layout=self.score_layout)

    def process(self, rows, n_concepts: int):
        with timed("write"):
            written = self._writer.write(rows, n_concepts)
        for name, count in written:
            logger.info("annotated %d items into %s", count, name)
            yield name

    def finish_bundle(self) -> None:
        with timed("write"):
            self._writer.wait()

    def teardown(self) -> None:
        if self._writer is not None:
            self._writer.close()


class CommitShards(beam.DoFn):
    """The list of reported shard names -> removes any other shard in the directory; yields the kept count."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def process(self, names: list[str]):
        keep = set(names)
        for path in Path(self.directory).glob("*.parquet"):
            if path.name not in keep:
                logger.warning("removing unreported shard %s (left by a retried bundle)", path.name)
                path.unlink()
        for path in Path(self.directory).glob(".*.tmp"):
            path.unlink()
        yield len(keep)


class WriteJson(beam.DoFn):
    """A JSON-able value -> a file, atomically."""

    def __init__(self, path: str) -> None:
        self.path = path

    def process(self, value):
        import json

        from conceptkit.schemas.io import write_text_atomic

        write_text_atomic(self.path, json.dumps(value, indent=2, default=float) + "\n")
        yield self.path


class WriteTable(beam.DoFn):
    """A list of rows -> one Parquet file under the given schema."""

    def __init__(self, path: str, schema) -> None:
        self.path = path
        self.schema = schema

    def process(self, rows: list[dict]):
        from conceptkit.schemas.io import write_table

        with timed("write"):
            write_table(self.path, rows, self.schema)
        yield self.path


class _Outputs(dict):
    """Attribute access to the PCollections of ``split``."""

    __getattr__ = dict.__getitem__


def split(pcoll, label: str, kinds: Sequence[str]) -> _Outputs:
    """(kind, value) pairs -> one PCollection of values per kind.

    Used instead of tagged outputs: Beam 2.77's DaskRunner delivered every tagged output to the main output.
    """
    return _Outputs(
        {kind: pcoll | f"{label}.{kind}" >> beam.FlatMap(lambda kv, k=kind: [kv[1]] if kv[0] == k else []) for kind in kinds}
    )


def request_chunk_size(n_requests: int, runner, concurrency: int) -> int:
    """LLM requests per Beam element: one chunk per worker of the direct or Dask runner, so in one process every
    request joins one queue and the server's slots stay full until the last answer (chunks of 2 x concurrency
    ran one after another, each ending with idle slots while its slowest answers finished); 2 x concurrency for
    another Beam runner, whose parallelism is not known here."""
    workers = {"direct": runner.direct_num_workers, "dask": runner.dask_workers}.get(runner.runner)
    return max(-(-n_requests // workers) if workers else max(concurrency * 2, 8), 1)


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def build_pipeline(
    pipeline: beam.Pipeline,
    *,
    staged_items: str,
    n_row_groups: int,
    n_items: int = 0,
    classes: Sequence[str],
    requests: Sequence[ConceptRequest],
    settings: ClientSettings,
    cfg,  # BuildConfig
    run_dir: Path,
    run_id: str,
    modality: str = "text",
    mined: Sequence[dict] = (),
    review=None,
) -> None:
    """Compose the whole build as one graph writing into ``run_dir`` (the staged run directory)."""
    from dataclasses import asdict

    from conceptkit.schemas.candidates import CANDIDATES
    from conceptkit.schemas.concepts import CONCEPTS
    from conceptkit.schemas.llm_calls import LLM_CALLS
    from conceptkit.schemas.rejects import REJECTS

    p = pipeline
    embedding_cache = str(cfg.cache_path() / "embeddings") if cfg.embedding.cache else None
    items = (
        p
        | "RowGroups" >> beam.Create(list(range(n_row_groups)))
        | "Reshuffle" >> beam.Reshuffle()
        | "ReadItems" >> beam.ParDo(ReadItemGroup(staged_items))
        | "ValidateItems" >> beam.ParDo(ValidateItems(classes, cfg.items.max_text_chars, image_rules(cfg.items)))
    )
    items = split(items, "Items", ("valid", "rejects"))
    chunk = request_chunk_size(len(requests), cfg.runner, settings.concurrency)
    generated = (
        p
        | "Requests" >> beam.Create(_chunks([asdict(r) for r in requests], chunk))
        | "GenerateCandidates" >> beam.ParDo(GenerateCandidates(settings, total=len(requests)))
    )
    generated = split(generated, "Generated", ("candidates", "rejects", "calls"))
    done = [
        generated.calls
        | "AllCalls" >> beam.combiners.ToList()
        | "SortCalls" >> beam.Map(lambda rows: sorted(rows, key=lambda r: (r["class_name"], r["prompt_id"], r["sample"])))
        | "WriteCalls" >> beam.ParDo(WriteTable(str(run_dir / "llm_calls.parquet"), LLM_CALLS))
    ]
    candidates = generated.candidates
    if mined:
        candidates = (candidates, p | "Mined" >> beam.Create(list(mined))) | "AllSources" >> beam.Flatten()
    filtered = (
        candidates
        | "AllCandidates" >> beam.combiners.ToList()
        | "FilterCandidates" >> beam.ParDo(FilterCandidates(cfg.filters, cfg.embedding, classes, embedding_cache,
                                                              cfg.generation.domain))
    )
    units_dir = str(run_dir / "_staging" / "units")
    tasks_dir = str(run_dir / "_staging" / "tasks")
    embedded = items.valid | "EmbedItems" >> beam.ParDo(
        EmbedItems(cfg.embedding, embedding_cache, units_dir, modality, total=n_items))
    embedded = split(embedded, "Embedded", ("batch", "rejects", "unit"))
    embed_rejects, units, embedded = embedded.rejects, embedded.unit, embedded.batch
    from conceptkit.pipelines.selection.stage import evidence_size

    evidence = evidence_size(cfg.selection, len(classes))
    sums = (
        embedded
        | "ClassSums" >> beam.FlatMap(class_sums, evidence_per_class=evidence)
        | "SumPerClass" >> beam.CombinePerKey(add_sums, evidence_per_class=evidence)
    )
    selection = filtered | "SelectConcepts" >> beam.ParDo(SelectConcepts(cfg.selection, classes, cfg.filters.generic_spread, review), sums=beam.pvalue.AsDict(sums))
    done.append(
        selection
        | "SelectionSummary" >> beam.Map(lambda s: s["selection"])
        | "WriteSelection" >> beam.ParDo(WriteJson(str(run_dir / "_staging" / "selection.json")))
    )
    done.append(selection | "WriteIndex" >> beam.ParDo(WriteIndex(str(run_dir / "index"), cfg.embedding.model, cfg.index)))
    done.append(
        selection
        | "CandidateRows" >> beam.Map(lambda s: s["candidates"])
        | "WriteCandidates" >> beam.ParDo(WriteTable(str(run_dir / "candidates.parquet"), CANDIDATES))
    )
    n_concepts = selection | "CountConcepts" >> beam.Map(lambda s: max(len(s["concepts"]), 1))
    # After selection, units are read back from the staging directory one at a time (see save_unit).
    thresholds = (
        units
        | "ScoreHistograms" >> beam.ParDo(ScoreHistograms(units_dir, cfg.embedding.device), selection=beam.pvalue.AsSingleton(selection))
        | "AllHistograms" >> beam.combiners.ToList()
        | "Calibrate" >> beam.Map(calibrate, n_concepts=beam.pvalue.AsSingleton(n_concepts),
                                  selection=beam.pvalue.AsSingleton(selection), cfg=cfg.annotation)
    )
    done.append(thresholds | "WriteRule" >> beam.ParDo(WriteRule(str(run_dir))))
    done.append(
        selection
        | "ConceptRows" >> beam.Map(with_thresholds, rule=beam.pvalue.AsSingleton(thresholds))
        | "WriteConcepts" >> beam.ParDo(WriteTable(str(run_dir / "concepts.parquet"), CONCEPTS))
    )
    annotated = units | "Annotate" >> beam.ParDo(
        AnnotateBatch(cfg.annotation, run_id, units_dir, tasks_dir, cfg.index, total=n_items,
                      device=cfg.embedding.device),
        selection=beam.pvalue.AsSingleton(selection), rule=beam.pvalue.AsSingleton(thresholds),
    )
    shard_dir = str(run_dir / "annotations")
    done.append(
        annotated
        | "WriteShards" >> beam.ParDo(WriteShards(shard_dir, cfg.annotation.score_dtype, cfg.annotation.score_layout),
                                      n_concepts=beam.pvalue.AsSingleton(n_concepts))
        | "ShardNames" >> beam.combiners.ToList()
        | "CommitShards" >> beam.ParDo(CommitShards(shard_dir))
    )
    selection_rejects = selection | "SelectionRejects" >> beam.FlatMap(lambda s: s["rejects"])
    done.append(
        (items.rejects, embed_rejects, generated.rejects, selection_rejects)
        | "FlattenRejects" >> beam.Flatten()
        | "AllRejects" >> beam.combiners.ToList()
        | "SortRejects" >> beam.Map(lambda rows: sorted(rows, key=lambda r: (r["stage"], r["key"], r["reason"])))
        | "WriteRejects" >> beam.ParDo(WriteTable(str(run_dir / "rejects.parquet"), REJECTS))
    )
    # One terminal step downstream of every sink. Beam 2.77's DaskRunner computes only the last transform's
    # task graph, so a sink on a branch that does not feed the last step never runs there (this is why a
    # plain WriteToText wrote nothing on it).
    _ = (
        [d | f"Sink{i}.str" >> beam.Map(str) for i, d in enumerate(done)]
        | "AllSinks" >> beam.Flatten()
        | "SinksDone" >> beam.combiners.Count.Globally()
    )


IN_PROCESS_RUNNER = "apache_beam.runners.portability.fn_api_runner.fn_runner.FnApiRunner"


def pipeline_options(cfg):
    """Beam options for ``cfg.runner``: Beam's in-process FnApiRunner by default.

    Not ``DirectRunner``: in Beam 2.77 that first tries the PrismRunner, which downloads a Prism binary from
    GitHub and runs it, and falls back to the FnApiRunner only when that fails. Naming the FnApiRunner (what the
    direct runner ends up running anyway) means no download is ever attempted."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from conceptkit.pipelines.config import ConfigError

    if cfg.runner.runner == "direct":
        args = [f"--runner={IN_PROCESS_RUNNER}", f"--direct_num_workers={cfg.runner.direct_num_workers}"]
        if cfg.runner.direct_num_workers > 1:
            args.append("--direct_running_mode=multi_processing")
        return PipelineOptions(args)
    if cfg.runner.runner == "dask":
        if not cfg.runner.dask_scheduler:
            raise ConfigError("runner.dask_scheduler is not set (give --dask-scheduler, or let build start --dask-workers N)")
        return PipelineOptions(
            ["--runner=apache_beam.runners.dask.dask_runner.DaskRunner", f"--dask_client_address={cfg.runner.dask_scheduler}"]
        )
    if cfg.runner.runner == "beam":
        if not any(a.startswith("--runner") for a in cfg.runner.beam_args):
            raise ConfigError("runner.runner 'beam' needs --runner=... among runner.beam_args (--beam-arg)")
        return PipelineOptions(list(cfg.runner.beam_args))
    raise ConfigError(f"runner.runner {cfg.runner.runner!r} is not supported; use 'direct', 'dask' or 'beam'")


def collect_metrics(result) -> dict[str, int]:
    """Our counters (summed over steps) and the LLM latency distribution from a finished pipeline."""
    out: dict[str, int] = {}
    try:
        query = result.metrics().query()
    except NotImplementedError:  # Beam 2.77's DaskRunner collects no metrics; counts come from the outputs
        return out
    for c in query["counters"]:
        if c.key.metric.namespace == NS:
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or c.attempted or 0)
    for d in query["distributions"]:
        if d.key.metric.namespace == NS and d.key.metric.name == "llm_latency_ms":
            dist = d.committed or d.attempted
            if dist and dist.count:
                out["llm_latency_ms_mean"] = int(dist.sum / dist.count)
                out["llm_latency_ms_max"] = int(dist.max)
    return out


def run_pipeline(cfg, **graph_args) -> dict[str, int]:
    """Build the graph (``build_pipeline`` arguments), run it to completion, return its metrics."""
    pipeline = beam.Pipeline(options=pipeline_options(cfg))
    build_pipeline(pipeline, cfg=cfg, **graph_args)
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        client = getattr(result, "client", None)  # the DaskRunner opens a dask Client and never closes it
        if client is not None:
            client.close()
    return collect_metrics(result)
