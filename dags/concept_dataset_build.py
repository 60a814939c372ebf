"""Build a concept dataset on a schedule: the same work as `conceptkit build --config ...`.

### Tasks
`plan` -> `build_concepts` -> `check_outputs` -> `push_review_tasks`

- **plan**: loads the config, resolves paths against the project directory and names the run from the logical
  date (`params.run_name_template`); a bad config fails here, without retries.
- **build_concepts**: generate candidates with the LLM, filter, embed, select, index and annotate. conceptkit runs
  these stages as *one* Apache Beam graph (`conceptkit.pipelines.build.run_build`, what the CLI calls): the stages hand each
  other in-memory collections (class embedding sums, the selected concept set as a side input), so splitting them
  into Airflow tasks would mean writing every intermediate collection to disk and starting a runner per task for
  no gain in restartability: the LLM answers are cached on disk, so a retried build makes no LLM call it has
  already made, and the run directory is staged and swapped into place whole, so a failed attempt leaves nothing
  behind. Per-stage counts and timings are in the run's `manifest.json` and the task log.
- **check_outputs**: reads the run directory back with its schemas (the run directory contract: candidates,
  concepts, annotations, rejects, index, Label Studio files, manifest) and checks that every item is annotated or
  rejected exactly once.
- **push_review_tasks**: pushes the run's review tasks to Label Studio when the `conceptkit_labelstudio`
  connection exists; skipped otherwise.

### Idempotency
The run directory is `<runs_dir>/<run name>`, named from the logical date, and replaced whole by a rerun: running
the same logical date twice gives the same outputs and no duplicates.

### Parameters
`config` (YAML path), `run_name_template` (`{ds}`, `{ds_nodash}`, `{ts_nodash}`, `{dag_id}`), `runner` (`direct` or
`dask`), `direct_num_workers`, `dask_workers` and `dask_scheduler` (Beam runner options), `review` and `review_budget` (what `conceptkit ls push` takes),
`use_review` (default true: when a run under the runs directory has review data, the newest such run's
concept-list verdicts, typed concepts and per-concept precision are applied to this build's selection, as
`conceptkit select RUN --use-review` does; the manifest's `review_used` says which). Settings and connections: see `conceptkit_airflow.py`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from conceptkit_airflow import DAG_POLICY, TAGS


@dag(
    dag_id="concept_dataset_build",
    schedule="@weekly",
    tags=[*TAGS, "build"],
    doc_md=__doc__,
    **DAG_POLICY,
    params={
        "config": Param("configs/demo.yaml", type="string",
                        description="Build config (YAML), relative to the project directory"),
        "run_name_template": Param("concepts-{ds_nodash}", type="string",
                                   description="Run directory name; fields {ds}, {ds_nodash}, {ts_nodash}, {dag_id}"),
        "runner": Param("direct", enum=["direct", "dask"],
                        description="Beam runner: direct (in-process) or dask (a local cluster, or dask_scheduler)"),
        "direct_num_workers": Param(1, type="integer", minimum=1, description="DirectRunner workers"),
        "dask_workers": Param(2, type="integer", minimum=1,
                              description="with runner dask and no scheduler: local Dask worker processes"),
        "dask_scheduler": Param(None, type=["null", "string"],
                                description="with runner dask: a dask.distributed scheduler, e.g. tcp://HOST:8786"),
        "review": Param("item", enum=["item", "concept", "concept-list"], description="Label Studio review mode"),
        "review_budget": Param(None, type=["null", "integer"], minimum=1,
                               description="Items to send for review (uncertain and diverse first); empty: all"),
        "use_review": Param(True, type="boolean",
                            description="apply the review data of the newest run that has some to the selection"),
    },
)
def concept_dataset_build():
    @task
    def plan() -> dict:
        """Config path and CLI-style overrides for this run; fails without retry on a bad config."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowFailException

        from conceptkit_airflow import resolve_path, run_name, runs_dir
        from conceptkit.pipelines.config import ConfigError, load_config

        context = get_current_context()
        params = context["params"]
        try:
            name = run_name(params["run_name_template"], context)
            config = resolve_path(params["config"])
            cfg = load_config(config)
            overrides: dict = {
                "name": name,
                "out": str(runs_dir() / name),
                "runner": {"runner": params["runner"], "direct_num_workers": params["direct_num_workers"],
                           "dask_workers": params["dask_workers"], "dask_scheduler": params["dask_scheduler"]},
            }
            if cfg.items.path:
                overrides["items"] = {"path": str(resolve_path(cfg.items.path))}
                if cfg.items.classes_file:
                    overrides["items"]["classes_file"] = str(resolve_path(cfg.items.classes_file))
            if cfg.cache_dir:
                overrides["cache_dir"] = str(resolve_path(cfg.cache_dir))
            if params.get("use_review", True):
                from conceptkit_airflow import latest_reviewed_run

                reviewed = latest_reviewed_run()
                if reviewed is not None:
                    overrides["selection"] = {"review_from": str(reviewed)}
            load_config(config, overrides)
        except (ConfigError, ValueError) as exc:
            raise AirflowFailException(str(exc)) from None
        return {"config": str(config), "overrides": overrides}

    @task
    def build_concepts(plan: dict) -> dict:
        """``run_build``: generate -> filter -> select -> index -> annotate, one Beam graph, one staged run dir."""
        from airflow.sdk.exceptions import AirflowFailException

        from conceptkit_airflow import llm_from_connection, secret_env
        from conceptkit.pipelines.build import UserError, format_summary, run_build
        from conceptkit.pipelines.config import load_config

        llm, env = llm_from_connection()
        overrides = dict(plan["overrides"], llm=llm) if llm else plan["overrides"]
        cfg = load_config(plan["config"], overrides)
        with secret_env(env):
            try:
                summary = run_build(cfg, argv=["airflow", "concept_dataset_build", plan["config"]])
            except UserError as exc:  # bad input or unreachable endpoint: a retry would fail the same way
                raise AirflowFailException(str(exc)) from None
        print(format_summary(summary))
        return {"out": str(summary.out), "run_id": summary.run_id, "counts": summary.counts, "llm": summary.llm}

    @task
    def check_outputs(built: dict) -> dict:
        """Read the run directory back with its schemas and check the item accounting."""
        from conceptkit.pipelines.annotation.refresh import check_run

        return check_run(built["out"])

    @task
    def push_review_tasks(built: dict, checked: dict) -> dict:
        """Push review tasks to Label Studio; skipped when no ``conceptkit_labelstudio`` connection is defined."""
        from airflow.sdk import get_current_context

        from conceptkit_airflow import push_to_label_studio

        params = get_current_context()["params"]
        return push_to_label_studio(built["out"], review=params["review"], budget=params["review_budget"])

    built = build_concepts(plan())
    push_review_tasks(built, check_outputs(built))


concept_dataset_build()
