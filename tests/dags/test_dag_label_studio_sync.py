"""label_studio_sync under ``dag.test()``: skips cleanly without Label Studio; against a real one, pulls only changes.

The real server is the ``ls`` fixture of the human-in-the-loop tests (tests/labelstudio_fixtures.py); the test skips,
saying so, when that fixture is not visible from here or the Label Studio functions are not installed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

WHEN = datetime(2025, 6, 4, tzinfo=timezone.utc)


def label_studio_functions_missing() -> str | None:
    try:
        from conceptkit.pipelines.cli.labelstudio import ls_pull, ls_push  # noqa: F401
    except ImportError as exc:
        return f"conceptkit.pipelines.cli.labelstudio.ls_push/ls_pull not available yet ({exc})"
    return None


def test_sync_skips_without_a_label_studio_connection(run_dag, conceptkit_env, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CONCEPTKIT_LABELSTUDIO", raising=False)
    assert run_dag("label_studio_sync", WHEN) == {
        "(dag run)": "success", "active_runs": "skipped", "pull_verified_labels": "skipped"}


def test_push_then_sync_pulls_only_changes(request, run_dag, run_copy, shared, new_items, tmp_path, monkeypatch):
    missing = label_studio_functions_missing()
    if missing:
        pytest.skip(missing)
    try:
        ls = request.getfixturevalue("ls")
    except pytest.FixtureLookupError:
        pytest.skip("the real Label Studio fixture `ls` (tests/labelstudio_fixtures.py) is not visible from "
                    "tests/dags; move ls_server/ls to tests/conftest.py to run this test")
    import httpx
    import pyarrow.parquet as pq

    monkeypatch.setenv("AIRFLOW_CONN_CONCEPTKIT_LABELSTUDIO",
                       json.dumps({"conn_type": "http", "host": ls.url, "password": ls.token}))
    # Nothing pushed yet: no active run.
    assert run_dag("label_studio_sync", WHEN)["active_runs"] == "skipped"

    # The refresh DAG's push (the same task as the build DAG's) creates the run's project with its review tasks.
    items = shared.write_csv(tmp_path / "items.csv", shared.demo_rows() + new_items)
    states = run_dag("concept_dataset_refresh", WHEN, {"run": run_copy.name, "items": str(items)})
    assert states == {"(dag run)": "success", "refresh_annotations": "success", "push_review_tasks": "success"}
    project_id = json.loads((run_copy / "review.json").read_text())["projects"]["item"]["project_id"]

    # Pushed, nobody has reviewed anything yet: the pull finds nothing new and is skipped.
    states = run_dag("label_studio_sync", WHEN)
    assert states == {"(dag run)": "success", "active_runs": "success", "pull_verified_labels": "skipped"}

    with httpx.Client(base_url=ls.url, headers={"Authorization": f"Token {ls.token}"}, timeout=30) as http:
        task = http.get("/api/tasks/", params={"project": project_id}).json()
        task = (task["tasks"] if isinstance(task, dict) else task)[0]
        concept = pq.read_table(run_copy / "concepts.parquet").column("concept")[0].as_py()
        http.post(f"/api/tasks/{task['id']}/annotations/", json={"result": [
            {"from_name": "concepts__0", "to_name": "text", "type": "choices", "value": {"choices": [concept]}}]}
        ).raise_for_status()

    states = run_dag("label_studio_sync", WHEN)
    assert states == {"(dag run)": "success", "active_runs": "success", "pull_verified_labels": "success"}
    assert (run_copy / "verified.parquet").exists() and (run_copy / "merged.parquet").exists()
    states = run_dag("label_studio_sync", WHEN)  # pulled already: nothing changed
    assert states["pull_verified_labels"] == "skipped"
