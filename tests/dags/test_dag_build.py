"""concept_dataset_build under ``dag.test()`` on the demo data against the loopback fake LLM (``built_runs``).

The DAG runs twice for the same logical date: the second run must replace the run directory with the same outputs,
no duplicates and no LLM call.
"""

from __future__ import annotations

import json


def test_build_dag_succeeds_and_skips_push_without_label_studio(built_runs):
    for states, *_ in built_runs.results[:2]:
        assert states == {
            "(dag run)": "success", "plan": "success", "build_concepts": "success", "check_outputs": "success",
            "push_review_tasks": "skipped",
        }


def test_run_directory_contract(built_runs):
    files = built_runs.results[0][1]
    for name in ("candidates.parquet", "concepts.parquet", "annotations/*.parquet", "rejects.parquet",
                 "index/concepts.faiss", "index/index.json", "labelstudio/config.xml", "labelstudio/tasks.json",
                 "manifest.json"):
        assert name in files, name
    manifest = json.loads((built_runs.run_dir / "manifest.json").read_text())
    assert manifest["counts"]["items_in"] == 300
    assert manifest["counts"]["items_annotated"] + manifest["counts"]["items_rejected"] == 300
    assert manifest["config"]["llm"]["api_key_env"] == "CONCEPTKIT_LLM_API_KEY"
    assert "test-key" not in (built_runs.run_dir / "manifest.json").read_text()
    ids = built_runs.results[0][2]
    assert len(ids) == len(set(ids)) == manifest["counts"]["items_annotated"]


def test_llm_comes_from_the_airflow_connection(built_runs):
    assert built_runs.results[0][3] > 0
    assert all(h.get("Authorization") == "Bearer test-key" for h in built_runs.fake.headers)
    assert all(b["model"] == "fake-model" for b in built_runs.fake.bodies)


def test_a_build_applies_the_review_data_of_the_newest_reviewed_run(built_runs):
    states = built_runs.results[2][0]
    assert states["build_concepts"] == "success"
    manifest = json.loads((built_runs.run_dir / "manifest.json").read_text())
    assert manifest["review_used"]["source"] == str(built_runs.run_dir)
    assert manifest["review_used"]["human_candidates"] == 1
    import pyarrow.parquet as pq

    rows = pq.read_table(built_runs.run_dir / "candidates.parquet").to_pylist()
    assert any(r["concept"] == "quiet mountain trail" and r["source"] == "human" for r in rows)


def test_rerun_of_the_same_logical_date_duplicates_nothing(built_runs):
    (_, first, first_ids, _), (_, second, second_ids, second_requests) = built_runs.results[:2]
    assert second_requests == 0  # every answer came from the LLM cache
    assert sorted(first_ids) == sorted(second_ids)
    assert {k: v for k, v in first.items() if k != "manifest.json"} == \
        {k: v for k, v in second.items() if k != "manifest.json"}
    # No staged (.<name>.tmp-*) or replaced (.<name>.old-*) copies left beside the run.
    assert sorted(p.name for p in built_runs.runs.iterdir()) == [".cache", built_runs.run_dir.name]
