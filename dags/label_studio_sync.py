"""Sync human review: pull verified labels from Label Studio for the active runs, merge them, re-fit the label cuts.

### Tasks
`active_runs` -> `pull_verified_labels` (one mapped task per run)

- **active_runs**: the runs to sync: `params.runs`, else the Airflow Variable `conceptkit_active_runs` (a JSON list
  of run names), else every run under the runs directory that has been pushed to Label Studio (`review.json`).
  Skips the whole DAG run, with the reason in the log, when no `conceptkit_labelstudio` connection is defined, when this conceptkit install has no
  Label Studio support, or when there is no run to sync.
- **pull_verified_labels**: `conceptkit.pipelines.cli.labelstudio.ls_pull`, what `conceptkit ls pull RUN` calls: it exports the
  run's annotations, writes `verified.parquet` (only new or changed annotations are added), merges human labels
  over model labels (`merged.parquet`) and refits per-concept thresholds. Skipped for a run whose pull found no
  added, changed or removed annotation.

Pulls are idempotent, so a rerun of the same logical date changes nothing. Settings and connections: see
`conceptkit_airflow.py`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from conceptkit_airflow import DAG_POLICY, TAGS


@dag(
    dag_id="label_studio_sync",
    schedule="@hourly",
    tags=[*TAGS, "labelstudio"],
    doc_md=__doc__,
    **DAG_POLICY,
    params={"runs": Param([], type="array", description="Run names to sync; empty: the active runs")},
)
def label_studio_sync():
    @task
    def active_runs() -> list[str]:
        """Names of the runs to pull for; skips when Label Studio is not configured or nothing is active."""
        import json

        from airflow.sdk import Variable, get_current_context
        from airflow.sdk.exceptions import AirflowSkipException

        from conceptkit_airflow import label_studio_connection, label_studio_function, runs_dir

        label_studio_connection()
        if label_studio_function("ls_pull") is None:
            raise AirflowSkipException("this conceptkit install has no conceptkit.pipelines.cli.labelstudio.ls_pull")
        runs = get_current_context()["params"]["runs"] or json.loads(Variable.get("conceptkit_active_runs", "[]"))
        if not runs:
            names = (p.parent.name for p in runs_dir().glob("*/review.json"))
            runs = sorted(n for n in names if not n.startswith("."))  # .<name>.tmp-* are staged, not committed
        if not runs:
            raise AirflowSkipException(f"no run to sync under {runs_dir()}")
        return list(runs)

    @task(max_active_tis_per_dag=2)
    def pull_verified_labels(run: str) -> dict:
        """``ls_pull`` for one run; skipped when it brought nothing new or changed."""
        from airflow.sdk.exceptions import AirflowSkipException

        from conceptkit_airflow import as_xcom, call_label_studio, label_studio_connection, runs_dir

        result = as_xcom(call_label_studio("ls_pull", runs_dir() / run, label_studio_connection()))
        verified = result["verified"]
        if not (verified["added"] or verified["changed"] or verified["removed"]):
            raise AirflowSkipException(f"{run}: no new, changed or removed annotation in Label Studio")
        return result

    pull_verified_labels.expand(run=active_runs())


label_studio_sync()
