"""Label Studio fixtures: a real server per test session, started from a migrated data directory made once.

Migrating a new Label Studio database takes about a minute; a copy of a migrated one starts in seconds. The
template lives in the temp directory, keyed by the Label Studio version and the test credentials, and is built
under a file lock (other sessions may be building it at the same time). Each session copies it, starts a server
on a free 127.0.0.1 port and sets ``LABEL_STUDIO_API_KEY``. ``tiny_run`` writes a small run directory with
``conceptkit.schemas.io.write_table`` and the real task builder, so tests need neither an LLM nor an embedding model.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

USERNAME = "reviewer@example.com"
PASSWORD = "conceptkit-test-pw"
TOKEN = "conceptkit-test-token-0123456789"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def _label_studio_version() -> str | None:
    try:
        return importlib.metadata.version("label-studio")
    except importlib.metadata.PackageNotFoundError:
        return None


def _template(version: str) -> Path:
    from conceptkit.annotators.labelstudio import LocalLabelStudio, free_port

    root = Path(os.environ.get("CONCEPTKIT_LS_TEMPLATE_DIR", tempfile.gettempdir()))
    template = root / f"conceptkit-ls-template-{version}-{uuid.uuid5(uuid.NAMESPACE_URL, USERNAME + TOKEN).hex[:8]}"
    if (template / "ready").exists():
        return template
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{template.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (template / "ready").exists():
            return template
        building = root / f"{template.name}.building-{uuid.uuid4().hex[:8]}"
        server = LocalLabelStudio(building, username=USERNAME, password=PASSWORD, token=TOKEN, port=free_port())
        try:
            server.start(timeout_s=300)
        finally:
            server.stop()
        (building / "labelstudio.log").unlink(missing_ok=True)
        (building / "ready").write_text(version)
        shutil.rmtree(template, ignore_errors=True)
        os.replace(building, template)
    return template


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory):
    """A running Label Studio (``LocalLabelStudio``); tests may stop and restart it (its ``url`` then changes)."""
    version = _label_studio_version()
    if version is None:
        pytest.skip("label-studio is not installed (pip install -e '.[labelstudio]')")
    from conceptkit.annotators.labelstudio import LocalLabelStudio, free_port

    data_dir = tmp_path_factory.mktemp("labelstudio") / "data"
    shutil.copytree(_template(version), data_dir)
    server = LocalLabelStudio(data_dir, username=USERNAME, password=PASSWORD, token=TOKEN, port=free_port())
    previous = os.environ.get(TOKEN_ENV)
    os.environ[TOKEN_ENV] = TOKEN
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()
        if previous is None:
            os.environ.pop(TOKEN_ENV, None)
        else:
            os.environ[TOKEN_ENV] = previous


@pytest.fixture
def ls(ls_server):
    """The session's server, restarted on a fresh port if a previous test left it stopped."""
    from conceptkit.annotators.labelstudio import free_port

    if not ls_server.running():
        ls_server.port = free_port()
        ls_server.start(timeout_s=120)
    return ls_server


CLASSES = {
    "cooking": ["oven", "spices", "recipe"],
    "sports": ["goal", "coach", "match"],
    "weather": ["rain", "storm", "forecast"],
}


def write_run(out: Path, *, run_id: str, n_per_class: int = 4, seed: int = 0,
              texts: dict[str, str] | None = None, extra_items: int = 0, lineage: str | None = None) -> Path:
    """A small run directory under ``out``: 3 classes x 3 concepts, ``n_per_class`` items each.

    Scores favour the item's own class's concepts, so the pre-ticks look like a real run's. ``texts`` overrides
    item texts by id; ``extra_items`` appends items (ids continue the sequence).
    """
    from conceptkit.pipelines.annotation.labels import from_scores, save
    from conceptkit.pipelines.review.tasks import item_task, write_tasks
    from conceptkit.schemas.annotations import annotations_schema
    from conceptkit.schemas.concepts import CONCEPTS
    from conceptkit.schemas.io import write_table

    names = [c for cs in CLASSES.values() for c in cs]
    concept_rows = []
    for cid, name in enumerate(names):
        cls = next(k for k, v in CLASSES.items() if name in v)
        concept_rows.append({"concept_id": cid, "concept": name, "classes": [cls], "picked_for": cls, "rank": cid % 3,
                             "gain": 1.0 - 0.1 * cid, "discriminability": 0.5, "coverage_gain": 0.5,
                             "candidate_id": f"c{cid}", "threshold": 0.3, "embedding": [0.0, 1.0]})
    items = []
    for cls in CLASSES:
        for j in range(n_per_class):
            items.append((f"{cls}-{j}", cls))
    for j in range(extra_items):
        items.append((f"extra-{j}", "weather"))
    scores = np.zeros((len(items), len(names)), dtype=np.float32)
    for i, (_, cls) in enumerate(items):
        rng = np.random.default_rng([seed, i])  # per item: adding items leaves the others' scores alone
        scores[i] = rng.uniform(0.05, 0.25, size=len(names))
        for name in CLASSES[cls]:
            scores[i, names.index(name)] += rng.uniform(0.15, 0.35)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :4]
    classes = [[next(k for k, v in CLASSES.items() if name in v)] for name in names]
    rule = from_scores(scores).with_classes(classes, 2.0)
    present = rule.decide(scores, [cls for _, cls in items])
    texts = texts or {}
    tasks = []
    rows = []
    for i, (item_id, cls) in enumerate(items):
        text = texts.get(item_id, f"A short {cls} text number {item_id}.")
        ids = top[i].tolist()
        sc = [float(scores[i, c]) for c in ids]
        tasks.append(item_task(item_id=item_id, text=text, label=cls, top_ids=ids, top_scores=sc, concepts=names,
                               run_id=run_id, ticked=np.flatnonzero(present[i]).tolist()))
        rows.append({"item_id": item_id, "text": text, "label": cls, "split": "train", "top_concept_ids": ids, "top_scores": sc,
                     "concept_ids": np.flatnonzero(present[i]).tolist(), "scores": scores[i]})
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "concepts.parquet", concept_rows, CONCEPTS)
    write_table(out / "annotations" / "train-0.parquet", rows, annotations_schema(len(names)))
    write_tasks(out / "labelstudio" / "tasks.json", tasks)
    save(out, rule)
    # A rebuild keeps its lineage (what names its Label Studio projects); by default one per run name here.
    manifest = {"run_id": run_id, "lineage": lineage or f"lineage-{out.name}", "counts": {"items_annotated": len(items)}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    from conceptkit.pipelines.runs.guard import write_run_marker

    write_run_marker(out, run_id)  # what conceptkit writes into every run it builds
    return out


@pytest.fixture
def tiny_run(tmp_path):
    """A factory: ``tiny_run(where, run_id=..., **write_run_options)`` -> a run directory under tmp_path.

    The run's name (its directory name, which names its Label Studio projects) is unique per test, so tests
    sharing the session's server never see each other's projects; ``where`` only separates copies of it.
    """

    def make(where: str = "a", *, run_id: str = "tiny-1", **options) -> Path:
        return write_run(tmp_path / where / f"run-{tmp_path.name}", run_id=run_id, **options)

    return make


# Helpers for tests that review through the API the way the labeling UI does.
FAST = dict(max_retries=1, timeout_s=10)


def api(ls) -> httpx.Client:
    return httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.token}"}, timeout=30)


def project_tasks(ls, project_id: int) -> dict[str, dict]:
    from conceptkit.annotators.labelstudio import LabelStudioClient

    with LabelStudioClient(ls.url) as client:
        return {t["data"]["task_key"]: t for t in client.tasks(project_id)}


def annotate(http: httpx.Client, task_id: int, *, choices=None, verdict=None, missing=None, edited=None,
             user_id=None) -> int:
    """What the labeling UI sends when a reviewer submits: item review's ticks go to the checklist of the class
    each concept is listed under (``concepts__<k>``, classes in name order)."""
    result = []
    if choices is not None:
        by_group: dict[str, list[str]] = {}
        for concept in choices:
            k = next((k for k, cls in enumerate(sorted(CLASSES)) if concept in CLASSES[cls]), None)
            by_group.setdefault("concepts" if k is None else f"concepts__{k}", []).append(concept)
        for name, chosen in by_group.items():
            result.append({"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": chosen}})
    if verdict is not None:
        result.append({"from_name": "verdict", "to_name": "text", "type": "choices", "value": {"choices": [verdict]}})
    if missing is not None:
        result.append({"from_name": "missing_concepts", "to_name": "text", "type": "textarea",
                       "value": {"text": [missing]}})
    if edited is not None:
        result.append({"from_name": "edited_concept", "to_name": "text", "type": "textarea",
                       "value": {"text": [edited]}})
    body = {"result": result, "lead_time": 4.2}
    if user_id is not None:
        body["completed_by"] = user_id
    response = http.post(f"/api/tasks/{task_id}/annotations/", json=body)
    response.raise_for_status()
    return response.json()["id"]
