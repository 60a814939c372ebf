"""``conceptkit ls``: serve a local Label Studio, push a run's review tasks, pull verified labels back.

``ls_serve``, ``ls_push`` and ``ls_pull`` are what the CLI and the Airflow DAGs call; ``register(subparsers)`` adds
the ``ls`` command group to the ``conceptkit`` parser.

Push reads a run directory (``manifest.json``, ``concepts.parquet``, ``annotations/``, ``labelstudio/tasks.json``)
and brings one Label Studio project per (run name, review mode) up to date; it records the project in
``review.json``. Pull exports every project of the run and writes, each atomically and in this order:

- ``verified.parquet``: the people's judgements (``conceptkit.schemas.verified.VERIFIED``), the current state of the
  projects pulled, plus the rows of projects not pulled this time (nothing is dropped unless its project says so);
- ``human_candidates.parquet``: concepts typed by reviewers and concept-list edits, source = human;
- ``merged.parquet``: human labels over model labels in ``final``, with re-fitted per-concept thresholds;
- ``review.json``: projects, the last pull's counts, and the ``review`` metrics (model vs human, agreement).

Nothing is written until every export has been read, so an interrupted pull leaves the previous outputs as they
were, and repeating it gives what an uninterrupted pull would have.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from conceptkit.annotators.labelstudio import (
    DEFAULT_TOKEN_ENV,
    LabelStudioClient,
    LabelStudioAuthError,
    LabelStudioError,
    LocalLabelStudio,
    RetryPolicy,
    human_candidate_rows,
    push_tasks,
    verified_rows,
)
from conceptkit.pipelines.annotation.labels import LabelRule, LabelRuleError, for_run
from conceptkit.pipelines.review.tasks import (
    concept_controls,
    concept_groups,
    is_concept_control,
    concept_list_tasks,
    concept_task,
    examples_html,
    item_push_task,
    merge_labels,
    review_config,
    select_uncertain_diverse,
    task_json,
    uncertainty,
)
from conceptkit.schemas.annotations import score_matrix, stored_schema
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import SchemaMismatch, read_table, write_table
from conceptkit.schemas.labelstudio import REVIEW_MODES, Task
from conceptkit.schemas.verified import HUMAN_CANDIDATES, MERGED, VERIFIED

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "LABEL_STUDIO_URL"


class ReviewError(ValueError):
    """A user error: a missing or unusable run directory, a bad argument; the message names it."""


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class RunData:
    path: Path
    name: str
    run_id: str
    lineage: str  # the run's identity across rebuilds (manifest ``lineage``): what names its projects
    concepts: list[dict[str, Any]]  # concepts.parquet rows without embeddings, in concept_id order
    item_ids: list[str]
    labels: list[str | None]  # the items' classes, in item_ids order
    scores: np.ndarray  # (items x concepts)
    tasks: dict[str, Task]  # item_id -> the run's item task (text, candidate concepts, pre-ticks)
    rule: LabelRule  # the run's label rule with the human thresholds of the last pull (annotation/labels.py)

    @property
    def model_version(self) -> str:
        """The predictions' version: the run id, plus a digest of the human thresholds once a pull fitted some
        (so the next push brings the re-fitted pre-ticks as a new prediction that Label Studio shows)."""
        if not self.rule.refits:
            return self.run_id
        digest = hashlib.sha256(json.dumps(sorted(self.rule.refits.items())).encode()).hexdigest()[:8]
        return f"{self.run_id}+review-{digest}"

    @property
    def concept_names(self) -> list[str]:
        return [c["concept"] for c in self.concepts]

    def candidates(self) -> list[list[int]]:
        ids = {c: i for i, c in enumerate(self.concept_names)}
        return [[ids[c] for c in self.tasks[item].data.concept_scores] for item in self.item_ids]

    def predicted(self) -> set[tuple[str, int]]:
        """The (item, concept) pairs the label rule says are shown: the same decision as the binary labels and
        the pre-ticks."""
        rows, cols = np.nonzero(self.rule.decide(self.scores, self.labels))
        return {(self.item_ids[i], int(c)) for i, c in zip(rows, cols)}


def load_run(run: str | os.PathLike[str]) -> RunData:
    """Read what review needs from a run directory; a missing or inconsistent part is a ``ReviewError``."""
    path = Path(run)
    if not (path / "manifest.json").is_file():
        raise ReviewError(f"{path}: not a run directory (no manifest.json); build one with `conceptkit build`")
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        run_id = manifest["run_id"]
        # Runs built before lineages existed: their absolute path (never the folder's base name alone).
        lineage = manifest.get("lineage") or hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        concepts = read_table(path / "concepts.parquet", CONCEPTS).drop_columns(["embedding"]).to_pylist()
        annotations = read_table(path / "annotations", stored_schema(path / "annotations", len(concepts)))
        raw_tasks = json.loads((path / "labelstudio" / "tasks.json").read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError, SchemaMismatch) as exc:
        raise ReviewError(f"{path}: unusable run directory: {exc}") from None
    if [c["concept_id"] for c in concepts] != list(range(len(concepts))):
        raise ReviewError(f"{path}/concepts.parquet: concept_id is not 0..{len(concepts) - 1} in order")
    tasks = {}
    for raw in raw_tasks:
        task = Task.model_validate(raw)
        tasks[task.data.item_id] = task
    item_ids = annotations.column("item_id").to_pylist()
    missing = [i for i in item_ids if i not in tasks]
    if missing:
        raise ReviewError(f"{path}/labelstudio/tasks.json: no task for {len(missing)} annotated items, e.g. {missing[0]!r}")
    scores = score_matrix(annotations)
    try:
        rule = for_run(path, [c["concept"] for c in concepts])
    except LabelRuleError as exc:
        raise ReviewError(str(exc)) from None
    return RunData(path=path, name=path.resolve().name, run_id=run_id, lineage=lineage, concepts=concepts,
                   item_ids=item_ids, labels=annotations.column("label").to_pylist(), scores=scores, tasks=tasks,
                   rule=rule)


def project_marker(lineage: str, mode: str) -> str:
    """What identifies a run's project on the server: its whole description, matched exactly (a rebuild of the
    run keeps its lineage and so its projects; another run of the same folder name has its own)."""
    return f"conceptkit lineage={lineage} review={mode}"


def _check_recorded_project(data: RunData, mode: str, project: dict[str, Any] | None, server: str) -> None:
    """The project review.json says this run pushed to must still be the one the marker finds."""
    recorded = _read_json(data.path / "review.json").get("projects", {}).get(mode)
    if not recorded or recorded.get("url") != server:
        return
    found = project["id"] if project else None
    if found != recorded.get("project_id"):
        raise ReviewError(f"{data.path}: review.json records {mode} project {recorded.get('project_id')} at {server}, "
                          f"but the server's project for this run is {found}; not touching either")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from conceptkit.schemas.io import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


# ---------------------------------------------------------------- push


def _reviewed_items(run: RunData, mode: str) -> set[str]:
    """Items people already judged in ``mode`` (verified.parquet): a budgeted push picks among the others."""
    path = run.path / "verified.parquet"
    if not path.exists():
        return set()
    rows = read_table(path, VERIFIED).select(["item_id", "review"]).to_pylist()
    return {r["item_id"] for r in rows if r["review"] == mode and r["item_id"] is not None}


def concept_examples(run: RunData, margins: np.ndarray, *, n: int = 3) -> dict[int, str]:
    """Per concept, HTML with the ``n`` highest-scoring items and the ``n`` items nearest the labelling cut."""
    out = {}
    texts = [run.tasks[i].data.text for i in run.item_ids]
    for cid in range(len(run.concepts)):
        top = np.argsort(-run.scores[:, cid], kind="stable")[:n]
        near = [i for i in np.argsort(np.abs(margins[:, cid]), kind="stable") if i not in set(top)][:n]
        out[cid] = examples_html([texts[i] for i in top], [texts[i] for i in near])
    return out


PICKS = ("uncertain", "random")


def _choose(pick: str, margins: np.ndarray, vectors: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """``budget`` row indices: uncertain then diverse (active learning), or a seeded uniform sample (an unbiased
    estimate of label quality)."""
    if pick == "random":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(len(margins), size=min(budget, len(margins)), replace=False))
    return select_uncertain_diverse(margins, vectors, budget, seed=seed)


def review_tasks(run: RunData, mode: str, *, budget: int | None = None, seed: int = 0,
                 pick: str = "uncertain") -> list[Task]:
    """The tasks a push sends for ``mode``: all of them, or ``budget`` among items nobody has judged yet, chosen
    by ``pick``: uncertainty (the distance to the label rule's cut, re-fitted concepts included) and diversity,
    or at random."""
    if mode not in REVIEW_MODES:
        raise ReviewError(f"--review must be one of {', '.join(REVIEW_MODES)}; got {mode!r}")
    if pick not in PICKS:
        raise ReviewError(f"--pick must be one of {', '.join(PICKS)}; got {pick!r}")
    if budget is not None and budget < 1:
        raise ReviewError(f"--budget must be >= 1, got {budget}")
    margins = run.rule.margins(run.scores, run.labels)
    if mode == "concept-list":
        rows = run.concepts if budget is None else sorted(run.concepts, key=lambda c: (c["gain"], c["concept_id"]))
        return concept_list_tasks(rows[:budget] if budget else rows, run_id=run.run_id,
                                  examples=concept_examples(run, margins))
    present = margins >= 0
    names = run.concept_names
    open_rows = np.arange(len(run.item_ids))
    if budget is not None:
        done = _reviewed_items(run, mode)
        open_rows = np.array([i for i, item in enumerate(run.item_ids) if item not in done], dtype=np.int64)
    if mode == "item":
        groups = concept_groups(run.concepts)
        least = np.abs(margins).min(axis=1) if len(names) else np.zeros(len(run.item_ids))
        chosen = open_rows
        if budget is not None and len(open_rows):
            chosen = open_rows[_choose(pick, least[open_rows], run.scores[open_rows], budget, seed)]
        out = []
        for i in chosen:
            data = run.tasks[run.item_ids[i]].data
            out.append(item_push_task(item_id=data.item_id, text=data.text, label=data.label,
                                      ticked=[names[c] for c in np.flatnonzero(present[i])], groups=groups,
                                      score=uncertainty(least[i]), run_id=run.model_version))
        return out
    candidates = run.candidates()
    keep = set(open_rows.tolist())
    pairs = [(i, c) for i, cands in enumerate(candidates) if i in keep for c in cands]
    chosen = range(len(pairs))
    if budget is not None and pairs:
        rows = np.array([i for i, _ in pairs], dtype=np.int64)
        chosen = _choose(pick, np.array([abs(margins[i, c]) for i, c in pairs]), run.scores[rows], budget, seed)
    out = []
    for k in chosen:
        i, c = pairs[k]
        item_id = run.item_ids[i]
        data = run.tasks[item_id].data
        out.append(concept_task(item_id=item_id, text=data.text, label=data.label, concept=names[c],
                                concept_id=c, score=float(run.scores[i, c]), predicted=bool(present[i, c]),
                                run_id=run.model_version, doubt=uncertainty(margins[i, c])))
    return out


VIEW_TITLE = "conceptkit review"
_RAW = ["tasks:data.task_key", "tasks:data.fingerprint", "tasks:data", "tasks:predictions_results",
        "tasks:annotations_results", "tasks:annotations_ids", "tasks:predictions_model_versions", "tasks:file_upload",
        "tasks:storage_filename", "tasks:inner_id", "tasks:updated_by", "tasks:draft_exists"]
HIDDEN_COLUMNS = {
    "item": _RAW + ["tasks:data.concept_scores", "tasks:data.options"],
    "concept": _RAW + ["tasks:data.concept_id"],
    "concept-list": _RAW + ["tasks:data.class_concepts", "tasks:data.examples", "tasks:data.concept_id",
                            "tasks:data.text"],
}

DEFAULT_INSTRUCTIONS = {
    "item": "<p>Read the item. Tick every concept of the list that the item shows, whatever class the concept is "
            "listed under, and untick every pre-ticked concept it does not show. A concept is shown when a careful "
            "reader would agree the item has it, not when it is merely related. Type concepts the list lacks in the "
            "box, one per line. Skip an item you cannot judge.</p>",
    "concept": "<p>Does the item show the concept? <b>present</b>: a careful reader would agree it has it; "
               "<b>absent</b>: it does not, or is merely related; <b>unsure</b>: the item does not say.</p>",
    "concept-list": "<p>Is this concept a good one for the class? <b>keep</b>: it describes items of the class and "
                    "tells them apart; <b>reject</b>: vague, wrong or true of every class; <b>edit</b>: the idea "
                    "is right but the wording is not (type the new wording). The examples show the items the "
                    "concept scores highest and the ones near the labelling cut.</p>",
}


def instructions_html(mode: str, path: str | os.PathLike[str] | None) -> str:
    """The project's instructions: ``path`` (HTML when it ends in .html, else plain text in paragraphs), or the
    mode's default."""
    if path is None:
        return DEFAULT_INSTRUCTIONS[mode]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewError(f"--instructions {path}: unreadable: {exc}") from None
    if not text.strip():
        raise ReviewError(f"--instructions {path}: the file is empty")
    if str(path).lower().endswith((".html", ".htm")):
        return text
    import html as _html

    return "".join(f"<p>{_html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def _client(url: str | None, token_env: str, timeout_s: float, max_retries: int) -> LabelStudioClient:
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    return LabelStudioClient(url, token_env=token_env, timeout_s=timeout_s,
                             retry=RetryPolicy(max_retries=max_retries))


def ls_push(
    run: str | os.PathLike[str],
    *,
    review: str = "item",
    budget: int | None = None,
    url: str | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
    batch_size: int = 200,
    timeout_s: float = 30.0,
    max_retries: int = 4,
    instructions: str | os.PathLike[str] | None = None,
    annotators_per_task: int = 1,
    seed: int = 0,
    pick: str = "uncertain",
) -> dict[str, Any]:
    """Create or update the run's ``review`` project and import its tasks; returns a summary.

    ``annotators_per_task`` sets the project's overlap (every task is labelled by that many people, so
    agreement is measured); ``instructions`` a file shown to reviewers (default: the mode's)."""
    if annotators_per_task < 1:
        raise ReviewError(f"--annotators-per-task must be >= 1, got {annotators_per_task}")
    settings = {"expert_instruction": instructions_html(review, instructions) if review in REVIEW_MODES else "",
                "show_instruction": True, "maximum_annotations": annotators_per_task,
                "overlap_cohort_percentage": 100}
    data = load_run(run)
    tasks = review_tasks(data, review, budget=budget, seed=seed, pick=pick)
    with _client(url, token_env, timeout_s, max_retries) as client:
        marker = project_marker(data.lineage, review)
        existing = client.find_project(marker)
        _check_recorded_project(data, review, existing, client.url)
        retired = []
        if existing and review == "item":
            used = set(concept_controls(existing.get("label_config", ""))) | set(client.annotated_controls(existing["id"]))
            retired = sorted(n for n in used if is_concept_control(n))
        result = push_tasks(client, marker=marker, title=f"{data.name} · {review} review",
                            label_config=review_config(review, concept_groups(data.concepts), retired),
                            run_id=tasks[0].predictions[0].model_version if tasks else data.run_id,
                            tasks=[task_json(t) for t in tasks], batch_size=batch_size, settings=settings)
        # The task list a reviewer sees: no internal or raw JSON columns, most uncertain first.
        client.ensure_view(result.project_id, title=VIEW_TITLE, hidden=HIDDEN_COLUMNS[review],
                           ordering=["-tasks:predictions_score"])
        server = client.url
    state = _read_json(data.path / "review.json")
    state.setdefault("projects", {})[review] = {
        "url": server, "project_id": result.project_id, "marker": project_marker(data.lineage, review),
        "run_id": data.run_id, "budget": budget, "tasks": result.tasks,
        "pushed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(data.path / "review.json", state)
    return {"run": str(data.path), "review": review, "url": server, "selected": len(tasks), **asdict(result)}


# ---------------------------------------------------------------- pull


def _key(row: dict[str, Any]) -> tuple:
    return (row["project_id"], row["annotation_id"], row["concept"])


def _state(row: dict[str, Any]) -> tuple:
    return (row["label"], row["edited_concept"], row["time"], row["concept_id"], row["item_id"])


def ls_pull(
    run: str | os.PathLike[str],
    *,
    review: str | None = None,
    url: str | None = None,
    token_env: str = DEFAULT_TOKEN_ENV,
    timeout_s: float = 30.0,
    max_retries: int = 4,
    min_labels: int = 10,
    on_export: Callable[[str, int], None] | None = None,
) -> dict[str, Any]:
    """Export the run's projects (all review modes, or ``review``) and write the verified outputs.

    ``on_export(mode, export_id)`` is called once each snapshot export exists on the server (tests use it to
    interrupt a pull half-way).
    """
    data = load_run(run)
    modes = REVIEW_MODES if review is None else (review,)
    if review is not None and review not in REVIEW_MODES:
        raise ReviewError(f"--review must be one of {', '.join(REVIEW_MODES)}; got {review!r}")
    concept_ids = {c: i for i, c in enumerate(data.concept_names)}
    pulled: dict[str, int] = {}
    new_verified: list[dict[str, Any]] = []
    new_candidates: list[dict[str, Any]] = []
    with _client(url, token_env, timeout_s, max_retries) as client:
        server = client.url
        for mode in modes:
            project = client.find_project(project_marker(data.lineage, mode))
            if project is None:
                continue
            pid = project["id"]
            hook = (lambda export_id, mode=mode: on_export(mode, export_id)) if on_export else None
            export = client.export_snapshot(pid, on_created=hook)
            pulled[mode] = pid
            new_verified += verified_rows(export, mode=mode, project_id=pid, concept_ids=concept_ids)
            new_candidates += human_candidate_rows(export, mode=mode, project_id=pid)
    if not pulled:
        raise ReviewError(f"no Label Studio project for run {data.name!r} at {server}; "
                          f"push one first: conceptkit ls push {data.path}")
    # Every export is in memory: only now is anything written.
    verified_path = data.path / "verified.parquet"
    old = read_table(verified_path, VERIFIED).to_pylist() if verified_path.exists() else []
    kept = [r for r in old if r["project_id"] not in pulled.values()]
    verified = sorted(kept + new_verified, key=lambda r: (r["project_id"], r["task_id"], r["annotation_id"], r["concept"]))
    before = {_key(r): _state(r) for r in old if r["project_id"] in pulled.values()}
    after = {_key(r): _state(r) for r in new_verified}
    counts = {
        "added": sum(k not in before for k in after),
        "changed": sum(k in before and before[k] != v for k, v in after.items()),
        "removed": sum(k not in after for k in before),
        "unchanged": sum(before.get(k) == v for k, v in after.items()),
        "rows": len(verified),
    }
    cand_path = data.path / "human_candidates.parquet"
    old_candidates = read_table(cand_path, HUMAN_CANDIDATES).to_pylist() if cand_path.exists() else []
    candidates = [r for r in old_candidates if r["project_id"] not in pulled.values()] + new_candidates
    candidates.sort(key=lambda r: (r["project_id"], r["task_id"], r["annotation_id"], r["concept"]))

    merged, metrics = merge_labels(item_ids=data.item_ids, scores=data.scores, predicted=data.predicted(),
                                   concepts=data.concept_names, verified=verified, min_labels=min_labels,
                                   margins=data.rule.with_refits({}).margins(data.scores, data.labels))
    write_table(verified_path, verified, VERIFIED)
    write_table(cand_path, candidates, HUMAN_CANDIDATES)
    write_table(data.path / "merged.parquet", merged, MERGED)
    state = _read_json(data.path / "review.json")
    state["pull"] = {"url": server, "projects": pulled, "run_id": data.run_id,
                     "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "verified": counts, "human_candidates": len(candidates)}
    state["review"] = metrics
    _write_json(data.path / "review.json", state)
    from conceptkit.pipelines.runs.card import write_dataset_card

    write_dataset_card(data.path)  # the card lists the review tables with their row counts
    logger.info("pulled %s: %d verified rows (%d added, %d changed, %d removed)", data.name, counts["rows"],
                counts["added"], counts["changed"], counts["removed"])
    return {"run": str(data.path), "url": server, "projects": pulled, "verified": counts,
            "human_candidates": len(candidates), "merged_rows": len(merged), "review": metrics}


# ---------------------------------------------------------------- serve


def ls_serve(
    *,
    data_dir: str | os.PathLike[str] = ".labelstudio",
    port: int = 8080,
    username_env: str = "LABEL_STUDIO_USERNAME",
    password_env: str = "LABEL_STUDIO_PASSWORD",
    token_env: str = DEFAULT_TOKEN_ENV,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run a local Label Studio in the foreground until it exits or is interrupted; returns its exit code."""
    values = {}
    for what, name in (("username", username_env), ("password", password_env), ("token", token_env)):
        values[what] = os.environ.get(name, "")
        if not values[what]:
            raise ReviewError(f"the admin {what} is read from ${name}, which is empty or unset")
    if len(values["token"]) < 6:
        raise ReviewError(f"${token_env} must be at least 6 characters (Label Studio ignores shorter tokens)")
    server = LocalLabelStudio(Path(data_dir), port=port, **values)

    def stop_on_term(signum, frame):  # SIGTERM (a service manager, `kill`) stops the child like Ctrl-C does
        raise KeyboardInterrupt

    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop_on_term) if main_thread else None
    try:
        url = server.start()
        if on_ready is not None:
            on_ready(url)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- command line


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=None, metavar="URL", help=f"Label Studio URL (default: ${URL_ENV}, else {DEFAULT_URL})")
    p.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR",
                   help=f"environment variable holding the API token, legacy or personal access token "
                        f"(default {DEFAULT_TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="per-request timeout (default 30)")
    p.add_argument("--max-retries", type=int, default=4, metavar="N",
                   help="retries on connection errors, timeouts, 429 and 5xx, with backoff (default 4)")


def register(subparsers: Any) -> None:
    """Add ``conceptkit ls serve|push|pull`` to the CLI's subparsers."""
    ls = subparsers.add_parser("ls", help="human review in Label Studio: serve, push, pull",
                               description="Push a run's review tasks to Label Studio and pull verified labels back.")
    sub = ls.add_subparsers(dest="ls_command", required=True)

    serve = sub.add_parser("serve", help="run a local Label Studio on 127.0.0.1 (foreground)",
                           description="Local Label Studio for development: 127.0.0.1 only, signup disabled, no "
                           "outbound calls; the admin user, password and API token come from environment variables.")
    serve.add_argument("--data-dir", default=".labelstudio", metavar="DIR", help="data directory (default .labelstudio)")
    serve.add_argument("--port", type=int, default=8080, metavar="PORT", help="port on 127.0.0.1 (default 8080)")
    serve.add_argument("--username-env", default="LABEL_STUDIO_USERNAME", metavar="VAR", help="admin e-mail variable")
    serve.add_argument("--password-env", default="LABEL_STUDIO_PASSWORD", metavar="VAR", help="admin password variable")
    serve.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, metavar="VAR", help="admin API token variable")
    serve.set_defaults(func=_cmd_serve)

    push = sub.add_parser("push", help="create or update the run's review project and import tasks",
                          description="Idempotent: tasks have stable keys, so pushing again adds only what changed.")
    push.add_argument("run", metavar="RUN", help="run directory, e.g. runs/demo")
    push.add_argument("--review", choices=REVIEW_MODES, default="item",
                      help="item: checklist per item; concept: one item and one concept; concept-list: a class's "
                           "concepts (default item)")
    push.add_argument("--budget", type=int, default=None, metavar="N",
                      help="send only N tasks, among items nobody judged yet, chosen by --pick (default: all)")
    push.add_argument("--pick", choices=PICKS, default="uncertain",
                      help="with --budget: uncertain (nearest the labelling cut, then diverse: active learning) or "
                           "random (an unbiased sample for measuring label quality); default uncertain")
    push.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the pick (default 0)")
    push.add_argument("--batch-size", type=int, default=200, metavar="N", help="tasks per import request")
    push.add_argument("--instructions", default=None, metavar="FILE",
                      help="instructions shown to reviewers (.html as is, else plain text; default: the mode's)")
    push.add_argument("--annotators-per-task", type=int, default=1, metavar="N",
                      help="people who label each task (the project's overlap; >= 2 measures agreement)")
    _connection_flags(push)
    push.set_defaults(func=_cmd_push)

    pull = sub.add_parser("pull", help="export annotations and write verified/merged labels into the run",
                          description="Writes verified.parquet, merged.parquet, human_candidates.parquet and "
                          "review.json in the run directory.")
    pull.add_argument("run", metavar="RUN", help="run directory, e.g. runs/demo")
    pull.add_argument("--review", choices=REVIEW_MODES, default=None, help="pull one mode's project (default: all)")
    pull.add_argument("--min-labels", type=int, default=10, metavar="N",
                      help="judged pairs a concept needs before its cut is fitted to the answers (default 10)")
    _connection_flags(pull)
    pull.set_defaults(func=_cmd_pull)


def _run(name: str, call: Callable[[], int]) -> int:
    try:
        return call()
    except (ReviewError, LabelStudioAuthError) as exc:
        print(f"conceptkit ls {name}: error: {exc}", file=sys.stderr)
        return 2
    except LabelStudioError as exc:
        print(f"conceptkit ls {name}: failed: {exc}", file=sys.stderr)
        return 1


def _cmd_serve(args: argparse.Namespace) -> int:
    def call() -> int:
        ls_serve(data_dir=args.data_dir, port=args.port, username_env=args.username_env,
                 password_env=args.password_env, token_env=args.token_env,
                 on_ready=lambda url: print(f"conceptkit ls serve: Label Studio on {url} (data in {args.data_dir}); "
                                            "Ctrl-C stops it", flush=True))
        print("conceptkit ls serve: stopped")
        return 0

    return _run("serve", call)


def _cmd_push(args: argparse.Namespace) -> int:
    def call() -> int:
        s = ls_push(args.run, review=args.review, budget=args.budget, url=args.url, token_env=args.token_env,
                    batch_size=args.batch_size, timeout_s=args.timeout, max_retries=args.max_retries,
                    instructions=args.instructions, annotators_per_task=args.annotators_per_task,
                    pick=args.pick, seed=args.seed)
        print(f"conceptkit ls push: {s['run']} -> project {s['project_id']} at {s['url']} ({s['review']} review): "
              f"{s['imported']} imported, {s['updated']} updated, {s['unchanged']} unchanged, "
              f"{s['tasks']} tasks in the project")
        return 0

    return _run("push", call)


def _cmd_pull(args: argparse.Namespace) -> int:
    def call() -> int:
        s = ls_pull(args.run, review=args.review, url=args.url, token_env=args.token_env, timeout_s=args.timeout,
                    max_retries=args.max_retries, min_labels=args.min_labels)
        v = s["verified"]
        print(f"conceptkit ls pull: {s['run']}/verified.parquet: {v['rows']} rows ({v['added']} added, "
              f"{v['changed']} changed, {v['removed']} removed); merged.parquet {s['merged_rows']} rows; "
              f"{s['human_candidates']} human candidates; metrics in review.json")
        return 0

    return _run("pull", call)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m conceptkit.pipelines.cli.labelstudio ls ...``) until the main CLI registers ``ls``."""
    parser = argparse.ArgumentParser(prog="conceptkit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
