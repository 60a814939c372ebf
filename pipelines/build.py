"""``conceptkit build``: checks the input, makes sure an LLM answers, runs the Beam graph, writes the manifest.

In: a ``BuildConfig``. Out: a committed run directory (see README "Run directory") and a ``BuildSummary``.
Everything user-caused (bad files, configs, endpoints) fails before the run directory is touched; the graph
writes into a staged directory that is swapped into place only after the item accounting checks out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from conceptkit import __version__
from conceptkit.pipelines.config import BuildConfig, ConfigError
from conceptkit.pipelines.readers.items import load_items
from conceptkit.pipelines.generation.endpoint import public_url, redact
from conceptkit.pipelines.generation.client import ChatClient, ClientSettings, LLMCache, check_endpoint
from conceptkit.pipelines.generation.parse import answer_parses
from conceptkit.pipelines.generation.prompts import build_requests
from conceptkit.pipelines.runs.guard import OutputRefused, RunLock, check_output_dir, is_run_dir
from conceptkit.pipelines.runs.staging import StagedRun

logger = logging.getLogger(__name__)

STAGES = ("read", "generate", "filter", "embed_items", "select", "index", "annotate", "write")


class UserError(ValueError):
    """Something the user can fix (input, config, endpoint); the CLI exits 2 with the message."""


class RunError(RuntimeError):
    """The run itself failed (exit 1); nothing was committed."""


@dataclass
class BuildSummary:
    out: Path
    run_id: str
    counts: dict[str, int] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    review: dict[str, Any] | None = None  # human review carried from the run this build replaced
    per_class: dict[str, int] = field(default_factory=dict)  # concepts picked for each class
    # concepts each class holds: picked for it, or picked for another class that also proposed them (a shared
    # concept counts toward the budget of k of every class it belongs to)
    held_per_class: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)  # "status:reason" -> candidates
    k_per_class: int | None = None
    review_used: dict[str, Any] | None = None  # review data this selection applied (select --use-review)
    discriminability: str | None = None  # what selection measured: "items", "labo" or "none" (no labels)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "conceptkit": __version__}
    for dist in ("apache-beam", "torch", "sentence-transformers", "faiss-cpu", "pyarrow", "openai", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _with_local_dask(cfg: BuildConfig, stack: ExitStack) -> BuildConfig:
    """Start a dask.distributed LocalCluster on 127.0.0.1 for this build; the config then points at it."""
    from dask.distributed import LocalCluster

    cluster = stack.enter_context(
        LocalCluster(n_workers=cfg.runner.dask_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None)
    )
    logger.info("started a local Dask cluster with %d workers at %s", cfg.runner.dask_workers, cluster.scheduler_address)
    return cfg.model_copy(update={"runner": cfg.runner.model_copy(update={"dask_scheduler": cluster.scheduler_address})})


# Measured (config.py): the embedded server's aggregate decode rate grows to 16 slots and is flat from there to
# 48, so a build's requests all decode at once up to 32 slots (no second wave), and never fewer than 16 slots.
EMBEDDED_SLOTS, EMBEDDED_MAX_SLOTS = 16, 32
REMOTE_CONCURRENCY = 8


def llm_concurrency(cfg: BuildConfig, n_requests: int = 0) -> int:
    """Requests in flight: ``llm.concurrency``; unset, as many as the build's requests between 16 and 32 for the
    embedded server, 8 for a remote endpoint."""
    if cfg.llm.concurrency is not None:
        return cfg.llm.concurrency
    if cfg.llm.base_url is None:
        return min(max(n_requests, EMBEDDED_SLOTS), EMBEDDED_MAX_SLOTS)
    return REMOTE_CONCURRENCY


def embedded_slots(cfg: BuildConfig, n_requests: int = 0) -> int:
    """The embedded server's parallel slots: the LLM concurrency, 1 to 32."""
    return min(max(llm_concurrency(cfg, n_requests), 1), EMBEDDED_MAX_SLOTS)


def llm_settings(cfg: BuildConfig, n_requests: int = 0) -> tuple[ClientSettings, bool]:
    """Client settings for a build of ``n_requests`` requests, and whether they point at the embedded model."""
    from conceptkit.pipelines.generation.server import MODEL_NAME, base_url

    embedded = cfg.llm.base_url is None
    if not embedded and not cfg.llm.model:
        raise UserError("--llm-model is required with --llm-base-url (the model name the endpoint serves)")
    cache = cfg.cache_path() / "llm.sqlite" if cfg.llm.cache else None
    model = MODEL_NAME if embedded else cfg.llm.model
    price = cfg.llm.prices.get(model)
    extra = {k: v for k, v in (("frequency_penalty", cfg.llm.frequency_penalty),
                               ("presence_penalty", cfg.llm.presence_penalty)) if v is not None}
    return (
        ClientSettings(
            base_url=base_url(cfg.llm.embedded_port) if embedded else cfg.llm.base_url,
            model=model,
            api_key_env=cfg.llm.api_key_env,
            temperature=cfg.llm.temperature,
            max_tokens=cfg.llm.max_tokens,
            seed=cfg.llm.seed,
            concurrency=llm_concurrency(cfg, n_requests),
            timeout_s=cfg.llm.timeout_s or (900.0 if embedded else 120.0),
            max_retries=cfg.llm.max_retries,
            max_retry_after_s=cfg.llm.max_retry_after_s,
            cache_path=str(cache) if cache else None,
            refresh_cache=cfg.llm.refresh_cache,
            requests_per_minute=cfg.llm.requests_per_minute,
            tokens_per_minute=cfg.llm.tokens_per_minute,
            prompt_price=price.prompt_per_million if price else 0.0,
            completion_price=price.completion_per_million if price else 0.0,
            # Each worker process enforces the ceiling on its own calls; the driver's estimate guards the total.
            max_cost=cfg.llm.max_cost,
            extra_params=extra,
            # The embedded server's slots (as many as the concurrency) start with the prompts' shared prefix.
            prime_slots=embedded_slots(cfg, n_requests) if embedded and cfg.llm.share_prefix else 0,
        ),
        embedded,
    )


def _check_backend(cfg: BuildConfig, loaded) -> None:
    """Before any work: the ONNX backends run text models of the mean-pooled kind, on the CPU (exported here,
    once, so every worker finds the file)."""
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.annotators.onnx_backend import BackendError

    if loaded.modality != "text":
        raise UserError(f"embedding backend {cfg.embedding.backend!r} embeds texts only; image items need "
                        "--embedding-backend torch")
    try:
        TextEmbedder.from_config(cfg.embedding).dimension
    except BackendError as exc:
        raise UserError(str(exc)) from None


def mined_candidates(cfg: BuildConfig, loaded) -> list[dict]:
    """Candidate rows (``source="mined"``) from the labelled train-split texts; none for images, unlabelled items
    or ``generation.mine_per_class: 0``."""
    if not cfg.generation.mine_per_class or loaded.modality != "text" or not loaded.labelled:
        return []
    from conceptkit.pipelines.generation.mining import candidate_rows, mine_phrases
    from conceptkit.pipelines.readers.items import labelled_train

    rows = labelled_train(loaded)
    phrases = mine_phrases([text for _, text, _ in rows], [label for _, _, label in rows], loaded.classes,
                           per_class=cfg.generation.mine_per_class, max_words=cfg.generation.mine_max_words,
                           min_items=cfg.generation.mine_min_items)
    logger.info("mined %d candidate phrases from %d labelled train items", len(phrases), len(rows))
    return candidate_rows(phrases)


def run_build(cfg: BuildConfig, *, argv: list[str] | None = None, cached_only: bool = False) -> BuildSummary:
    """Run a whole build; raises ``UserError`` (nothing written) or ``RunError`` (nothing committed).

    Before any work: ``out`` must be new, empty or a conceptkit run that holds none of the build's inputs
    (``guard.check_output_dir``), and no other command may be writing it (``guard.RunLock``, held to the end)."""
    try:
        out = cfg.out_dir()
        check_output_dir(out, inputs=[cfg.items.path, cfg.items.classes_file, cfg.cache_path()])
        with RunLock(out) as lock:
            if lock.removed:
                logger.info("removed %d directories left beside %s by an interrupted command: %s", len(lock.removed),
                            out, ", ".join(p.name for p in lock.removed))
            return _run_build(cfg, out, argv=argv, cached_only=cached_only)
    except (ConfigError, OutputRefused) as exc:
        raise UserError(str(exc)) from None


def _run_build(cfg: BuildConfig, out: Path, *, argv: list[str] | None, cached_only: bool) -> BuildSummary:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        loaded = load_items(cfg.items)
    except (ConfigError, ValueError) as exc:
        raise UserError(str(exc)) from None
    if cfg.embedding.backend != "torch":
        _check_backend(cfg, loaded)
    if cfg.llm.api_key_env and not os.environ.get(cfg.llm.api_key_env):
        raise UserError(f"environment variable {cfg.llm.api_key_env} (named by --llm-api-key-env) is not set")
    custom = [(t.id, t.template) for t in cfg.generation.templates]
    from conceptkit.pipelines.generation.rounds import class_examples, run_rounds, train_sample

    gen = cfg.generation
    sample = train_sample(cfg, loaded) if gen.examples_per_class or gen.rounds > 1 else None
    examples = class_examples(sample, gen.examples_per_class, gen.example_chars)
    requests = build_requests(  # batching's refusals come at config load (GenerationConfig)
        loaded.classes, family=cfg.generation.family, domain=cfg.generation.domain,
        n=cfg.generation.concepts_per_prompt, samples=cfg.llm.samples, extra_templates=custom,
        few_shot=[(ex.class_name, ex.concepts) for ex in cfg.generation.few_shot],
        examples=examples, classes_per_request=gen.classes_per_request,
    )
    mined = mined_candidates(cfg, loaded)
    review = None
    if cfg.selection.review_from:
        from conceptkit.pipelines.review.apply import ReviewDataError, has_review, load_review

        if not has_review(cfg.selection.review_from):
            raise UserError(f"{cfg.selection.review_from}: no review data (verified.parquet or "
                            "human_candidates.parquet); pull some with `conceptkit ls pull` first")
        try:
            review = load_review(cfg.selection.review_from, list(loaded.classes))
        except ReviewDataError as exc:
            raise UserError(str(exc)) from None
        mined = list(mined) + review.candidates
        logger.info("using review data of %s: %s", cfg.selection.review_from, review.record())
    settings, embedded = llm_settings(cfg, len(requests))
    need_llm = True
    if settings.cache_path and not settings.refresh_cache and Path(settings.cache_path).exists():
        probe = ChatClient(settings)
        need_llm = not LLMCache(settings.cache_path).has_all([probe.key_for(r.messages(), r.sample) for r in requests])
    if need_llm and cached_only:
        raise UserError("some LLM requests of this config are not in the cache; run `conceptkit build` instead")
    timings["preflight"] = time.perf_counter() - started
    # The random part keeps two builds of one name within a second apart (and runs of equal names elsewhere).
    run_id = f"{out.name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"

    with ExitStack() as stack:
        started_llm = []

        def ensure_llm() -> None:
            """Start the embedded model (or check the endpoint) once, the first time an answer is not cached."""
            if started_llm:
                return
            if cached_only:
                raise UserError("some LLM requests of this config are not in the cache; run `conceptkit build` instead")
            t = time.perf_counter()
            if embedded:
                from conceptkit.pipelines.generation.server import EmbeddedModelError, EmbeddedServer

                cfg.cache_path().mkdir(parents=True, exist_ok=True)
                try:
                    stack.enter_context(EmbeddedServer(cfg.llm.embedded_port, log_path=cfg.cache_path() / "llm-server.log",
                                                       parallel=embedded_slots(cfg, len(requests))))
                except EmbeddedModelError as exc:
                    raise UserError(str(exc)) from None
            else:
                try:
                    check_endpoint(settings.base_url)
                except ConnectionError as exc:
                    raise UserError(str(exc)) from None
            started_llm.append(True)
            timings["llm_startup"] = timings.get("llm_startup", 0.0) + time.perf_counter() - t

        timings["llm_startup"] = 0.0
        if need_llm:
            ensure_llm()
        rounds = []
        if gen.rounds > 1 and sample is not None:
            t, startup_before = time.perf_counter(), timings.get("llm_startup", 0.0)
            client = ChatClient(settings)
            client.accept = answer_parses
            requests, rounds = run_rounds(cfg, loaded.classes, requests, sample, client, ensure_llm)
            # a model started during the rounds counts as llm_startup, not twice
            timings["rounds"] = time.perf_counter() - t - (timings.get("llm_startup", 0.0) - startup_before)
        logger.info("building %s: %d items, %d classes, %d LLM requests (%s)", out, loaded.table.num_rows,
                    len(loaded.classes), len(requests), "some uncached" if need_llm else "all cached")

        if cfg.runner.runner == "dask" and not cfg.runner.dask_scheduler:
            cfg = _with_local_dask(cfg, stack)
        run = stack.enter_context(StagedRun(out))
        staged = run.path("_staging", "items.parquet")
        staged.parent.mkdir(parents=True)
        import pyarrow.parquet as pq

        pq.write_table(loaded.table, staged, row_group_size=cfg.annotation.rows_per_shard)
        n_groups = pq.ParquetFile(staged).num_row_groups
        from conceptkit.pipelines.transforms import run_pipeline

        t = time.perf_counter()
        try:
            metrics = run_pipeline(
                cfg, staged_items=str(staged), n_row_groups=n_groups, n_items=loaded.table.num_rows, classes=loaded.classes, requests=requests,
                settings=settings, run_dir=run.tmp, run_id=run_id, modality=loaded.modality, mined=mined,
                review=review,
            )
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except Exception as exc:  # the runner wraps worker errors; report the cause in one line
            raise RunError(f"pipeline failed: {' '.join(str(exc).split())[:500]}") from exc
        finally:
            from conceptkit.pipelines.annotation.units import release_from_device

            release_from_device(str(run.path("_staging", "units")))  # GPU copies of units, if any are left
        timings["pipeline"] = time.perf_counter() - t
        embedded_here = sample.embedded if sample else 0
        if embedded_here and "items_embedding_cached" in metrics:  # embedded before the graph (sample), not cached
            metrics["items_embedded"] = metrics.get("items_embedded", 0) + embedded_here
            metrics["items_embedding_cached"] -= embedded_here
        metrics["rounds"] = [r.as_dict() for r in rounds]
        from conceptkit.pipelines.review.tasks import join_task_files

        join_task_files(run.path("_staging", "tasks"), run.path("labelstudio", "tasks.json"))
        selection_path = run.path("_staging", "selection.json")
        metrics["selection"] = json.loads(selection_path.read_text()) if selection_path.exists() else None
        shutil.rmtree(run.path("_staging"))
        summary = _finish(run, cfg, loaded, requests, settings, metrics, timings, run_id, argv, started)
        if is_run_dir(out):
            _carry_review(out, run, summary)
        from conceptkit.pipelines.runs.card import write_dataset_card

        write_dataset_card(run.tmp)
        run.commit(run_id)
    summary.out = out
    return summary


def _finish(run, cfg, loaded, requests, settings, metrics, timings, run_id, argv, started) -> BuildSummary:
    """Check the accounting, write config.xml and the manifest into the staged run."""
    import pyarrow.parquet as pq

    from conceptkit.pipelines.review.tasks import item_review_config
    from conceptkit.schemas.concepts import CONCEPTS
    from conceptkit.schemas.io import read_table
    from conceptkit.schemas.llm_calls import LLM_CALLS
    from conceptkit.schemas.rejects import REJECTS

    concepts = read_table(run.path("concepts.parquet"), CONCEPTS)
    rejects = read_table(run.path("rejects.parquet"), REJECTS)
    if concepts.num_rows == 0:
        kept = _keep_failure(run, cfg, run_id)
        raise RunError(f"no concept survived generation and filtering ({_reason_counts(rejects, 'generate')}); "
                       f"the rejects are kept in {kept}")
    calls = read_table(run.path("llm_calls.parquet"), LLM_CALLS).to_pylist()
    latencies = sorted(c["latency_s"] for c in calls if not c["cached"] and c["error"] != "budget_exceeded")
    shard_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in run.path("annotations").glob("*.parquet"))
    item_rejects = sum(1 for s in rejects.column("stage").to_pylist() if s == "items")
    if shard_rows == 0:
        kept = _keep_failure(run, cfg, run_id)
        raise RunError(f"every item was rejected ({_reason_counts(rejects, 'items')}); the rejects are kept in {kept}")
    n_in = loaded.table.num_rows
    if shard_rows + item_rejects != n_in:
        raise RunError(f"item accounting failed: {n_in} items in, {shard_rows} annotated + {item_rejects} rejected")
    (run.path("labelstudio")).mkdir(exist_ok=True)
    from conceptkit.pipelines.review.tasks import concept_groups

    groups = concept_groups(concepts.select(["concept_id", "concept", "picked_for"]).to_pylist())
    (run.path("labelstudio", "config.xml")).write_text(item_review_config(groups=groups))
    _stage_timings(timings, metrics, started)
    from conceptkit.schemas.candidates import CANDIDATES

    candidates = read_table(run.path("candidates.parquet"), CANDIDATES)
    status = candidates.column("status").to_pylist()
    from collections import Counter

    filtered = Counter(f"{s}:{r}" for s, r in zip(status, candidates.column("reason").to_pylist()) if s != "accepted")
    per_class = Counter(concepts.column("picked_for").to_pylist())
    per_class = {c: per_class.get(c, 0) for c in loaded.classes}
    held = Counter(c for classes in concepts.column("classes").to_pylist() for c in set(classes))
    held_per_class = {c: held.get(c, 0) for c in loaded.classes}
    counts = {
        "items_in": n_in,
        "items_annotated": shard_rows,
        "items_rejected": item_rejects,
        "classes": len(loaded.classes),
        "llm_requests": len(requests),
        "candidates_proposed": len(status),
        "candidates_mined": candidates.column("source").to_pylist().count("mined"),
        "candidates_accepted": status.count("accepted"),
        "candidates_merged": status.count("merged"),
        "candidates_rejected": status.count("rejected"),
        "concepts_selected": concepts.num_rows,
        "rejects": rejects.num_rows,
        **_label_counts(run.path("annotations")),
    }
    if "items_embedded" in metrics or "items_embedding_cached" in metrics:  # runner metrics (not on Dask)
        counts["items_embedded"] = metrics.get("items_embedded", 0)
        counts["items_embedding_cached"] = metrics.get("items_embedding_cached", 0)
    # Counted from the written outputs, not runner metrics, so every runner reports the same numbers.
    answered = [c for c in calls if c["error"] != "budget_exceeded"]
    llm = {
        "endpoint": public_url(settings.base_url),
        "model": settings.model,
        "calls": sum(not c["cached"] for c in answered),
        "cache_hits": sum(c["cached"] for c in answered),
        "errors": sum(c["error"] is not None for c in answered),
        "retries": sum(c["retries"] for c in calls),
        "unparseable": sum(1 for r in rejects.to_pylist() if r["stage"] == "generate" and not r["reason"].startswith(("http_", "timeout", "connection", "budget"))),
        "prompt_tokens": sum(c["prompt_tokens"] for c in calls),
        "completion_tokens": sum(c["completion_tokens"] for c in calls),
        "budget_stops": len(calls) - len(answered),
        "latency_s": {f"p{q}": round(_percentile(latencies, q), 3) for q in (50, 90, 99)} if latencies else None,
        "cost_usd": round(sum(c["cost_usd"] for c in calls), 6),
        "max_cost_usd": cfg.llm.max_cost,
    }
    rounds = metrics.get("rounds") or []
    if rounds:  # the rounds' calls ran before the graph, which then found them cached
        made = sum(r["calls"] for r in rounds)
        llm["calls"] += made
        llm["cache_hits"] -= made
        llm["prompt_tokens"] += sum(r["prompt_tokens"] for r in rounds)
        llm["completion_tokens"] += sum(r["completion_tokens"] for r in rounds)
        llm["cost_usd"] = round(llm["cost_usd"] + sum(settings.cost(r["prompt_tokens"], r["completion_tokens"])
                                                      for r in rounds), 6)
    manifest = {
        "run_id": run_id,
        "lineage": _lineage(run.out),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [redact(a) for a in argv] if argv else argv,
        "config": cfg.public_dict(),
        "input": {"path": loaded.path, "sha256": _file_sha256(loaded.path), "rows": n_in, "classes": list(loaded.classes),
                  "labelled": loaded.labelled},
        "versions": _versions(),
        "models": {"llm": {"endpoint": llm["endpoint"], "model": settings.model}, "embedding": cfg.embedding.model},
        "counts": counts,
        "selection": metrics.get("selection"),
        # what review data this selection applied (select --use-review), or None
        "review_used": (metrics.get("selection") or {}).get("review"),
        "llm": llm,
        "concepts_per_class": per_class,
        "concepts_held_per_class": held_per_class,
        "rounds": rounds,
        "filtered": dict(filtered.most_common()),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {
            "candidates": "candidates.parquet",
            "concepts": "concepts.parquet",
            "annotations": "annotations/",
            "rejects": "rejects.parquet",
            "llm_calls": "llm_calls.parquet",
            "index": "index/",
            "labelstudio": "labelstudio/",
        },
    }
    run.path("manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return BuildSummary(out=run.out, run_id=run_id, counts=counts, llm=llm, timings_s=manifest["timings_s"],
                        per_class=per_class, held_per_class=held_per_class, filtered=dict(filtered),
                        k_per_class=cfg.selection.k_per_class,
                        review_used=manifest["review_used"],
                        discriminability=(metrics.get("selection") or {}).get("discriminability"))


def _lineage(out: Path) -> str:
    """The run's identity across rebuilds (it names the run's Label Studio projects): kept from the run being
    replaced, new for a new directory."""
    try:
        old = json.loads((out / "manifest.json").read_text()).get("lineage") if is_run_dir(out) else None
    except (OSError, ValueError):
        old = None
    return old or uuid.uuid4().hex[:16]


def _carry_review(out: Path, run: StagedRun, summary: BuildSummary) -> None:
    """Human review of the run being replaced goes into the new one (re-keyed; nothing dropped)."""
    from conceptkit.pipelines.review.carry import carry_forward

    carried = carry_forward(out, run.tmp)
    if carried is None:
        return
    manifest = json.loads(run.path("manifest.json").read_text())
    manifest["review_carried"] = carried
    run.path("manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    summary.review = carried


def _reason_counts(rejects, stage: str) -> str:
    """``12 x http_401, 2 x timeout`` for one stage's rejects, most frequent first."""
    from collections import Counter

    counts = Counter(r for s, r in zip(rejects.column("stage").to_pylist(), rejects.column("reason").to_pylist())
                     if s == stage)
    return ", ".join(f"{n} x {reason}" for reason, n in counts.most_common()) or f"no {stage} rejects"


def _keep_failure(run: StagedRun, cfg: BuildConfig, run_id: str) -> Path:
    """Copy what explains a failed build (rejects, LLM calls, candidates) out of the staged run, which is about to
    be discarded, to ``<cache>/failed/<run_id>/``."""
    kept = cfg.cache_path() / "failed" / run_id
    kept.mkdir(parents=True, exist_ok=True)
    for name in ("rejects.parquet", "llm_calls.parquet", "candidates.parquet"):
        if run.path(name).exists():
            shutil.copy2(run.path(name), kept / name)
    return kept


def _stage_timings(timings: dict[str, float], metrics: dict[str, Any], started: float) -> None:
    """Split the pipeline's wall time into the stages measured where the work happened (Beam counters), plus
    ``runner`` (scheduling, serialisation, waiting: what no stage accounts for); with ``other`` (staging the items,
    accounting, the manifest) the parts add up to ``total``. A runner without metrics (Dask) reports ``pipeline`` whole."""
    pipeline = timings.pop("pipeline")
    stages = {stage: metrics[f"{stage}_ms"] / 1000 for stage in STAGES if f"{stage}_ms" in metrics}
    if stages and sum(stages.values()) <= pipeline:
        timings.update(stages)
        timings["runner"] = pipeline - sum(stages.values())
    else:  # no metrics, or stage times summed over parallel workers exceed the wall time
        timings["pipeline"] = pipeline
    timings["other"] = time.perf_counter() - started - sum(timings.values())
    timings["total"] = time.perf_counter() - started


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _label_counts(directory: Path) -> dict[str, int]:
    """Binary label totals of the annotation shards (one column read per shard)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    positives = unlabelled = 0
    for shard in directory.glob("*.parquet"):
        lengths = pc.list_value_length(pq.read_table(shard, columns=["concept_ids"]).column("concept_ids"))
        positives += int(pc.sum(lengths).as_py() or 0)
        unlabelled += int(pc.sum(pc.equal(lengths, 0)).as_py() or 0)
    return {"label_pairs": positives, "items_without_labels": unlabelled}


def _per_class_lines(summary: BuildSummary) -> list[str]:
    """What each class got: concepts picked for it (+ shared ones picked for another class that also proposed
    them); a warning for classes holding fewer than k, a note for classes holding more (only pinned concepts
    can push a class past k)."""
    if not summary.per_class:
        return []
    held = {c: max(summary.held_per_class.get(c, n), n) for c, n in summary.per_class.items()}
    lines = ["  per class   " + ", ".join(f"{c} {n}" + (f" (+{held[c] - n} shared)" if held[c] > n else "")
                                         for c, n in summary.per_class.items())]
    k = summary.k_per_class
    if k and any(h < k for h in held.values()):
        lines.append(f"  warning     fewer than k={k} concepts for: "
                     + ", ".join(f"{c} ({h})" for c, h in held.items() if h < k))
    if k and any(h > k for h in held.values()):
        over = [h for h in held.values() if h > k]
        lines.append(f"  note        {len(over)} classes hold more than k={k} concepts (up to {max(over)}): concepts "
                     "pinned in review are kept beyond the budget of the other classes they belong to")
    return lines


def format_summary(summary: BuildSummary) -> str:
    c, llm, t = summary.counts, summary.llm, summary.timings_s
    lines = [
        f"conceptkit build: run {summary.run_id} written to {summary.out}/",
        f"  items       {c['items_in']} in, {c['items_annotated']} annotated, {c['items_rejected']} rejected"
        f" ({c['classes']} classes)",
        f"  llm         {llm['calls']} calls, {llm['cache_hits']} cache hits, {llm['errors']} errors, "
        f"{llm['retries']} retries, {llm['prompt_tokens']}+{llm['completion_tokens']} tokens, "
        f"~{llm['cost_usd']:.4f} USD ({llm['model']})"
        + (f", {llm['completion_tokens'] / gen_s:.1f} completion tokens/s" if (gen_s := t.get("generate", 0.0)
                                                                                + t.get("rounds", 0.0)) > 1
           and llm["calls"] else "")
        + (f", latency p50/p90/p99 {llm['latency_s']['p50']}/{llm['latency_s']['p90']}/{llm['latency_s']['p99']} s"
           if llm["latency_s"] else ""),
        f"  candidates  {c['candidates_proposed']} proposed ({c.get('candidates_mined', 0)} mined from the items), "
        f"{c['candidates_accepted']} accepted, "
        f"{c['candidates_merged']} merged, {c['candidates_rejected']} rejected",
        f"  concepts    {c['concepts_selected']} selected"
        + {"items": " (discriminability on the train items)", "labo": " (LaBo's discriminability from class means)",
           "none": " (coverage only: no labelled items)"}.get(summary.discriminability or "", "")
        + f"; {c['rejects']} rows in rejects.parquet",
        *([f"  labels      {c['label_pairs']} binary labels, {c['label_pairs'] / max(c['items_annotated'], 1):.2f} "
           f"per item; {c['items_without_labels']} items with none (label rule: labels.json)"]
          if "label_pairs" in c else []),
        *([f"  filters     " + ", ".join(f"{n} {k.replace(':', ' ')}" for k, n in summary.filtered.items())]
          if summary.filtered else []),
        *_per_class_lines(summary),
        *([f"  review used {summary.review_used['source']}: verdicts "
           + (", ".join(f"{n} {v}" for v, n in summary.review_used["verdicts"].items()) or "none")
           + f", {summary.review_used['human_candidates']} human candidates, "
           f"{summary.review_used['weighted_concepts']} concepts weighted by reviewed precision, "
           f"{summary.review_used['pinned_added']} pinned concepts added"] if summary.review_used else []),
        *([f"  review      {summary.review['verified']} human judgements carried from the replaced run "
           f"({summary.review['matched']} match this run, {summary.review['unmatched']} kept unmatched in "
           "verified.parquet)"] if summary.review else []),
        "  time (s)    " + ", ".join(f"{k} {v:.1f}" for k, v in t.items() if round(v, 1) or k == "total")
        + " (the parts add up to the total)",
        f"  outputs     {summary.out}/{{candidates,concepts,rejects,llm_calls}}.parquet, annotations/, index/, "
        "labelstudio/, manifest.json, README.md (dataset card)",
    ]
    return "\n".join(lines)
