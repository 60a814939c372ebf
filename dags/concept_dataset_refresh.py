"""Refresh a concept dataset: annotate new or changed items against the run's existing concepts.

### Tasks
`refresh_annotations` -> `push_review_tasks`

- **refresh_annotations**: `conceptkit.pipelines.annotation.refresh.refresh_run`: items whose id and content hash are already annotated are
  left alone; new or changed items are embedded with the run's model and annotated with its concept set and index
  (no LLM call, no concept regeneration); the run directory is swapped into place in one step. Skipped (with the
  push after it) when nothing is new or changed, so a rerun of the same logical date writes nothing.
- **push_review_tasks**: pushes the run's review tasks to Label Studio when the `conceptkit_labelstudio` connection
  exists (the push is idempotent: only new tasks are added); skipped otherwise.

### Parameters
`run`: the run directory name under the runs directory; empty: the most recently built run there.
`items`: the items file (the whole current dataset or only new rows, with the run's columns), relative to the
project directory; empty: the file the run was built from. Settings and connections: see `conceptkit_airflow.py`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from conceptkit_airflow import DAG_POLICY, TAGS


@dag(
    dag_id="concept_dataset_refresh",
    schedule="@daily",
    tags=[*TAGS, "refresh"],
    doc_md=__doc__,
    **DAG_POLICY,
    params={
        "run": Param("", type="string", description="Run to refresh; empty: the most recently built run"),
        "items": Param("", type="string", description="Items file; empty: the run's build input"),
    },
)
def concept_dataset_refresh():
    @task
    def refresh_annotations() -> dict:
        """``refresh_run`` on the chosen run; skips when nothing is new or changed."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from conceptkit_airflow import latest_run, resolve_path, runs_dir
        from conceptkit.pipelines.readers.items import InputError
        from conceptkit.pipelines.annotation.refresh import RunCheckError, refresh_run

        params = get_current_context()["params"]
        run_dir = runs_dir() / params["run"] if params["run"] else latest_run()
        items = resolve_path(params["items"]) if params["items"] else None
        try:
            summary = refresh_run(run_dir, items)
        except (InputError, RunCheckError) as exc:  # a retry would fail the same way
            raise AirflowFailException(str(exc)) from None
        if not summary.changed:
            raise AirflowSkipException(f"{run_dir}: nothing new or changed ({summary.counts['unchanged']} items unchanged)")
        print(f"{run_dir}: {summary.counts}")
        return {"out": str(run_dir), "counts": summary.counts}

    @task
    def push_review_tasks(refreshed: dict) -> dict:
        """Push the refreshed run's review tasks; skipped without a ``conceptkit_labelstudio`` connection."""
        from conceptkit_airflow import push_to_label_studio

        return push_to_label_studio(refreshed["out"])

    push_review_tasks(refresh_annotations())


concept_dataset_refresh()
