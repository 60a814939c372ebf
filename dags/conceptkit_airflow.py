"""Airflow glue shared by the conceptkit DAGs: settings, connections, run names and the retry policy.

Nothing here does work at import time (DAG files import it while being parsed); every function is called inside a
task. It lives beside the DAGs because Airflow puts the DAG folder on ``sys.path``, so deploying ``dags/`` deploys it.

Settings, each an Airflow Variable or else an environment variable (read when a task runs, never at parse time):

- ``conceptkit_project_dir`` / ``CONCEPTKIT_PROJECT_DIR``: the directory that relative paths (the config file, the
  items file named in it) are relative to; default: the worker's working directory.
- ``conceptkit_runs_dir`` / ``CONCEPTKIT_RUNS_DIR``: where run directories go; default ``<project_dir>/runs``.
  The LLM cache lives in ``<runs_dir>/.cache`` unless the config names another ``cache_dir``.

Secrets, from Airflow connections only:

- ``conceptkit_llm``: an OpenAI-compatible endpoint. ``host`` is the base URL (``https://api.openai.com/v1``),
  ``password`` the API key (optional), extra ``{"model": "..."}`` the model name. Absent: the config's ``llm``
  section applies (with no ``base_url`` there, the embedded local model).
- ``conceptkit_labelstudio``: ``host`` is the Label Studio URL, ``password`` the API token. Absent: review tasks are
  not pushed and the sync DAG skips.

Secrets reach conceptkit the way the CLI takes them: by the *name* of an environment variable, set only for the
duration of the call.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

LLM_CONN_ID = "conceptkit_llm"
LABEL_STUDIO_CONN_ID = "conceptkit_labelstudio"
LLM_KEY_ENV = "CONCEPTKIT_LLM_API_KEY"
LABEL_STUDIO_TOKEN_ENV = "CONCEPTKIT_LABEL_STUDIO_TOKEN"

START_DATE = datetime(2025, 1, 1)
TAGS = ["conceptkit"]
# A failed build is retried from scratch; the LLM cache makes a retry cheap (answered calls are not repeated).
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "conceptkit",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
}
# What every conceptkit DAG shares: no backfill of missed intervals, one run at a time (runs replace directories).
DAG_POLICY: dict[str, Any] = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
}
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def setting(name: str, default: str | None = None) -> str | None:
    """Airflow Variable ``conceptkit_<name>``, else environment variable ``CONCEPTKIT_<NAME>``, else ``default``."""
    from airflow.sdk import Variable

    return Variable.get(f"conceptkit_{name}", default=os.environ.get(f"CONCEPTKIT_{name.upper()}", default))


def project_dir() -> Path:
    return Path(setting("project_dir") or os.getcwd()).resolve()


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute against the project directory (absolute paths are kept)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_dir() / path


def runs_dir() -> Path:
    return resolve_path(setting("runs_dir") or "runs")


def run_name(template: str, context: Mapping[str, Any]) -> str:
    """The run name for this DAG run: ``template`` with ``{ds}``, ``{ds_nodash}``, ``{ts_nodash}``, ``{dag_id}``.

    Built from the logical date (the run's ``run_after`` when it has none), so a rerun of the same logical date
    writes the same run directory, which the build replaces whole.
    """
    when = context.get("logical_date") or context["dag_run"].run_after
    fields = {
        "ds": when.strftime("%Y-%m-%d"),
        "ds_nodash": when.strftime("%Y%m%d"),
        "ts_nodash": when.strftime("%Y%m%dT%H%M%S"),
        "dag_id": context["dag"].dag_id,
    }
    try:
        name = template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"params.run_name_template {template!r}: unknown field {exc}; use {sorted(fields)}") from None
    if not _RUN_NAME.match(name):
        raise ValueError(f"params.run_name_template {template!r} gives {name!r}, not a plain directory name")
    return name


def optional_connection(conn_id: str):
    """The Airflow connection ``conn_id``, or None when it is not defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def connection_url(conn) -> str:
    """The base URL a connection points at: ``host`` when it is a URL, else built from its parts."""
    if "://" in (conn.host or ""):
        return conn.host.rstrip("/")
    scheme = conn.conn_type if conn.conn_type in ("http", "https") else "http"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{conn.schema.strip('/')}" if conn.schema else ""
    return f"{scheme}://{conn.host}{port}{path}"


def llm_from_connection() -> tuple[dict[str, Any], dict[str, str]]:
    """(``llm`` config overrides, secret environment) from the ``conceptkit_llm`` connection; empty when absent."""
    conn = optional_connection(LLM_CONN_ID)
    if conn is None:
        return {}, {}
    overrides: dict[str, Any] = {"base_url": connection_url(conn)}
    model = conn.extra_dejson.get("model")
    if model:
        overrides["model"] = model
    if conn.password:
        overrides["api_key_env"] = LLM_KEY_ENV
        return overrides, {LLM_KEY_ENV: conn.password}
    return overrides, {}


@contextmanager
def secret_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a call and restore them after (tasks may share a process)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def label_studio_function(name: str):
    """``conceptkit.pipelines.cli.labelstudio.<name>``, or None when this conceptkit install has no Label Studio support."""
    try:
        module = importlib.import_module("conceptkit.pipelines.cli.labelstudio")
    except ModuleNotFoundError as exc:
        if exc.name != "conceptkit.pipelines.cli.labelstudio":
            raise
        return None
    return getattr(module, name, None)


def as_xcom(value: Any) -> Any:
    """A function's result as plain JSON data for XCom (dataclasses and paths included)."""
    import dataclasses
    import json

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def label_studio_connection():
    """(connection, function) for a Label Studio call; skips the task when no connection is defined."""
    from airflow.sdk.exceptions import AirflowSkipException

    conn = optional_connection(LABEL_STUDIO_CONN_ID)
    if conn is None:
        raise AirflowSkipException(
            f"no Airflow connection {LABEL_STUDIO_CONN_ID!r}: define it (host = Label Studio URL, password = API "
            "token) to push review tasks and pull verified labels"
        )
    return conn


def call_label_studio(name: str, run_dir: str | os.PathLike[str], conn, **options: Any) -> Any:
    """``conceptkit.pipelines.cli.labelstudio.<name>(run_dir, url=..., token_env=..., **options)``, what ``conceptkit ls`` calls,
    with the connection's token in an environment variable for the duration of the call."""
    from airflow.sdk.exceptions import AirflowFailException

    function = label_studio_function(name)
    if function is None:
        raise AirflowFailException(
            f"connection {LABEL_STUDIO_CONN_ID!r} is defined but this conceptkit install has no "
            f"conceptkit.pipelines.cli.labelstudio.{name}; install conceptkit[labelstudio] from a version that has it"
        )
    user_error = getattr(importlib.import_module(function.__module__), "ReviewError", ())
    with secret_env({LABEL_STUDIO_TOKEN_ENV: conn.password or ""}):
        try:
            return function(str(run_dir), url=connection_url(conn), token_env=LABEL_STUDIO_TOKEN_ENV, **options)
        except user_error as exc:  # a missing run or project: a retry would fail the same way
            raise AirflowFailException(str(exc)) from None


def push_to_label_studio(run_dir: str | os.PathLike[str], **options: Any) -> Any:
    """Push a run's review tasks (``ls_push`` is idempotent: a second push adds only what changed)."""
    return as_xcom(call_label_studio("ls_push", run_dir, label_studio_connection(), **options))


def latest_reviewed_run() -> Path | None:
    """The newest committed run under the runs directory that has review data (pulled labels), or None."""
    import json

    from conceptkit.pipelines.review.apply import has_review

    manifests = [p for p in runs_dir().glob("*/manifest.json")
                 if not p.parent.name.startswith(".") and has_review(p.parent)]
    if not manifests:
        return None
    return max(manifests, key=lambda p: json.loads(p.read_text()).get("created", "")).parent


def latest_run() -> Path:
    """The committed run under the runs directory whose manifest is newest."""
    import json

    from airflow.sdk.exceptions import AirflowFailException

    manifests = [p for p in runs_dir().glob("*/manifest.json") if not p.parent.name.startswith(".")]
    if not manifests:
        raise AirflowFailException(f"no run under {runs_dir()} to refresh; run concept_dataset_build first")
    return max(manifests, key=lambda p: json.loads(p.read_text()).get("created", "")).parent
