"""Airflow fixtures for the DAG tests: a throwaway AIRFLOW_HOME, a fresh sqlite metadata DB, dags/ as DAG folder.

Airflow reads its configuration once, when ``airflow`` is first imported, so ``pytest_configure`` points it at a
temporary home before any test module imports it; ``airflow_db`` creates the metadata tables once per session.
DAG runs write under a temporary runs directory (``CONCEPTKIT_RUNS_DIR``); relative paths in params and configs
resolve against the repository (``CONCEPTKIT_PROJECT_DIR``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
LOGICAL_DATE = datetime(2025, 6, 2, tzinfo=timezone.utc)
RUN_NAME = "concepts-20250602"  # the build DAG's default run_name_template on LOGICAL_DATE


def pytest_configure(config) -> None:
    # Test modules elsewhere do `from conftest import ...` meaning tests/conftest.py, but in pytest's default
    # (prepend) import mode that name is left pointing at the conftest imported last: this one. Point it back.
    root = config.pluginmanager.get_plugin(str(ROOT / "tests" / "conftest.py"))
    if root is not None:
        sys.modules["conftest"] = root
    if "airflow" in sys.modules and not os.environ.get("AIRFLOW_HOME", "").startswith(tempfile.gettempdir()):
        raise pytest.UsageError("airflow was imported before tests/dags/conftest.py could point it at a test home")
    home = tempfile.mkdtemp(prefix="conceptkit-airflow-")
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    os.environ.update({
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    })


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A migrated metadata database, once per session (dag.test() records its runs there)."""
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dagbag():
    """Every file in dags/ parsed the way the DAG processor parses a bundle (the DAG folder on sys.path)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)


@pytest.fixture(scope="session")
def shared(pytestconfig):
    """tests/conftest.py as a module: its demo answers and data helpers (a conftest cannot be imported by name)."""
    return pytestconfig.pluginmanager.get_plugin(str(ROOT / "tests" / "conftest.py"))


@pytest.fixture(scope="session")
def demo_answers(shared) -> dict[str, list[str]]:
    return shared.DEMO_ANSWERS


@pytest.fixture
def conceptkit_env(tmp_path, monkeypatch) -> Path:
    """A fresh runs directory for one test; returns it."""
    runs = tmp_path / "runs"
    monkeypatch.setenv("CONCEPTKIT_PROJECT_DIR", str(ROOT))
    monkeypatch.setenv("CONCEPTKIT_RUNS_DIR", str(runs))
    return runs


def snapshot(run_dir: Path) -> dict[str, int]:
    """Relative path -> rows (Parquet) or bytes (other files); annotation shards pooled (their names are random)."""
    out: dict[str, int] = {}
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        rel = str(path.relative_to(run_dir))
        if rel.startswith("annotations/"):
            rel = "annotations/*.parquet"
        size = pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else path.stat().st_size
        out[rel] = out.get(rel, 0) + size
    return out


@dataclass
class Builds:
    runs: Path  # the runs directory
    run_dir: Path  # the run both builds wrote
    results: list[tuple[dict[str, str], dict[str, int], list[str], int]]  # (states, snapshot, item ids, LLM requests)
    fake: FakeLLM


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


@pytest.fixture
def run_dag(airflow_db, dagbag):
    """``run_dag(dag_id, logical_date, conf)`` -> task id -> state (and "(dag run)" -> state) of one dag.test()."""

    def run(dag_id: str, logical_date: datetime, conf: dict | None = None) -> dict[str, str]:
        dag_run = dagbag.dags[dag_id].test(logical_date=logical_date, run_conf=conf)
        return task_states(dag_run) | {"(dag run)": dag_run.state}

    return run


@pytest.fixture(scope="session")
def built_runs(airflow_db, dagbag, demo_answers, tmp_path_factory) -> Builds:
    """Two dag.test() runs of concept_dataset_build for the same logical date, on the demo data and the fake LLM.

    The LLM endpoint and key come from the ``conceptkit_llm`` connection (``AIRFLOW_CONN_*``), as when deployed.
    """
    runs = tmp_path_factory.mktemp("dag-build") / "runs"
    dag = dagbag.dags["concept_dataset_build"]
    results = []
    with pytest.MonkeyPatch.context() as mp, FakeLLM(demo_answers) as fake:
        mp.setenv("CONCEPTKIT_PROJECT_DIR", str(ROOT))
        mp.setenv("CONCEPTKIT_RUNS_DIR", str(runs))
        mp.setenv("AIRFLOW_CONN_CONCEPTKIT_LLM", json.dumps(
            {"conn_type": "http", "host": fake.base_url, "password": "test-key", "extra": {"model": "fake-model"}}
        ))
        for _ in range(2):
            before = fake.requests
            dag_run = dag.test(logical_date=LOGICAL_DATE)
            run_dir = runs / RUN_NAME
            ids = pq.read_table(run_dir / "annotations", columns=["item_id"]).column("item_id").to_pylist()
            # Task states now: the next dag.test() of the same logical date clears this run's task instances.
            results.append((task_states(dag_run) | {"(dag run)": dag_run.state}, snapshot(run_dir), ids,
                            fake.requests - before))
        # A reviewer typed a missing concept (as `conceptkit ls pull` writes it): the next build applies it.
        write_human_candidate(runs / RUN_NAME, "quiet mountain trail", "travel")
        dag_run = dag.test(logical_date=LOGICAL_DATE)
        results.append((task_states(dag_run) | {"(dag run)": dag_run.state}, snapshot(runs / RUN_NAME), [], 0))
        yield Builds(runs, runs / RUN_NAME, results, fake)


def write_human_candidate(run_dir: Path, concept: str, class_name: str) -> None:
    from datetime import datetime, timezone

    import pyarrow as pa

    from conceptkit.schemas.verified import HUMAN_CANDIDATES

    row = {"candidate_id": "human-test", "concept": concept, "raw": concept, "classes": [class_name],
           "kind": "missing", "replaces": None, "item_id": None, "annotator": "a@example.com",
           "time": datetime(2025, 6, 3, tzinfo=timezone.utc), "task_id": 1, "annotation_id": 1, "project_id": 1,
           "source": "human"}
    pq.write_table(pa.Table.from_pylist([row], schema=HUMAN_CANDIDATES), run_dir / "human_candidates.parquet")


@pytest.fixture
def run_copy(built_runs, conceptkit_env) -> Path:
    """A private copy of the built demo run under this test's runs directory."""
    target = conceptkit_env / built_runs.run_dir.name
    shutil.copytree(built_runs.run_dir, target)
    return target



@pytest.fixture
def new_items() -> list[dict[str, str]]:
    """Items the demo run has not seen, one per class for four of its classes."""
    return [
        {"id": "new-1", "text": "We simmered the tomato sauce for an hour before adding basil.", "label": "cooking"},
        {"id": "new-2", "text": "The striker scored twice in the second half of the derby.", "label": "sports"},
        {"id": "new-3", "text": "Forecasters expect hail and gusts over the hills tonight.", "label": "weather"},
        {"id": "new-4", "text": "Our train to the coast left twenty minutes late.", "label": "travel"},
    ]
