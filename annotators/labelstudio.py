"""People as annotators: a Label Studio client that pushes review tasks and pulls verified labels back.

Connect to any Label Studio by URL with a token read from an environment variable (a legacy API token, or a
personal access token, which is exchanged for short-lived access tokens). Every request goes through one retry
layer: connection errors, timeouts, 429 and 5xx are retried with exponential backoff, then raised as
``LabelStudioError`` with a one-line message; 401/403 fail at once (retrying a wrong token does not help).

- ``push_tasks``: idempotent import into a project, keyed by ``data.task_key``: a task already there with the same
  ``data.fingerprint`` is skipped (its prediction for this run added if missing), a changed one is updated, a new
  one imported, in batches. An import batch that timed out is re-checked against the project before it is sent
  again, so a retry never duplicates tasks.
- ``export_snapshot``: a snapshot export of a project (every task with its annotations), deleted after download.
- ``verified_rows`` / ``human_candidate_rows``: an export -> rows of ``conceptkit.schemas.verified`` (pure).
- ``LocalLabelStudio``: starts and stops a local server (127.0.0.1, signup disabled, no outbound calls).

No Beam, nothing written to disk except by ``LocalLabelStudio`` (its data directory and log).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from conceptkit.schemas.labelstudio import CONCEPTS, EDITED, MISSING, VERDICT

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "LABEL_STUDIO_API_KEY"
RETRY_STATUS = (429, 500, 502, 503, 504)
# Title length limit of Label Studio projects; the marker in the description is what identifies a project.
TITLE_MAX = 50


class LabelStudioError(RuntimeError):
    """A Label Studio request failed for good; the message is one line naming the server and what failed."""


class LabelStudioAuthError(LabelStudioError):
    """No token, or the server refused it (401/403): the user's to fix, so the CLI exits 2."""


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s)
            except ValueError:
                pass
        base = min(self.backoff_s * 2**attempt, self.max_backoff_s)
        return base * (0.5 + random.random() / 2)


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("ey")


class LabelStudioClient:
    """A small REST client for one Label Studio server.

    ``token_env`` names the environment variable holding the token; it is read here, at the point of use, and
    never logged or stored beyond the session's headers.
    """

    def __init__(
        self,
        url: str,
        *,
        token_env: str = DEFAULT_TOKEN_ENV,
        timeout_s: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        page_size: int = 500,
    ) -> None:
        token = os.environ.get(token_env, "")
        if not token:
            raise LabelStudioAuthError(f"no Label Studio token: environment variable {token_env} is empty or unset")
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.retry = retry
        self.page_size = page_size
        self._refresh_token = token if _is_jwt(token) else None
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, follow_redirects=True)
        if self._refresh_token is None:
            self._http.headers["Authorization"] = f"Token {token}"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "LabelStudioClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transport

    def _authorize(self) -> None:
        """Exchange a personal access token (a JWT refresh token) for an access token."""
        response = self._send("POST", "/api/token/refresh", what="token refresh", json={"refresh": self._refresh_token},
                              auth=False)
        self._http.headers["Authorization"] = f"Bearer {response.json()['access']}"

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        before_retry: Callable[[], Any] | None = None,
    ) -> httpx.Response:
        """One API call with retries. ``before_retry`` (for non-idempotent calls) returns the body to send on a
        retry, or ``None`` when nothing is left to send (the earlier attempt went through)."""
        if self._refresh_token is not None and "Authorization" not in self._http.headers:
            self._authorize()
        try:
            return self._send(method, path, what=what, json=json, params=params, before_retry=before_retry)
        except _Unauthorized:
            if self._refresh_token is None:
                raise LabelStudioAuthError(
                    f"Label Studio at {self.url}: {what}: token rejected (HTTP 401); check {self.token_env}") from None
            self._authorize()  # the access token expired: one fresh one, then give up
            try:
                return self._send(method, path, what=what, json=json, params=params, before_retry=before_retry)
            except _Unauthorized:
                raise LabelStudioAuthError(
                    f"Label Studio at {self.url}: {what}: token rejected (HTTP 401); check {self.token_env}") from None

    def _send(self, method, path, *, what, json=None, params=None, before_retry=None, auth=True) -> httpx.Response:
        attempts = self.retry.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            if attempt and before_retry is not None:
                json = before_retry()
                if json is None:
                    return httpx.Response(200, json={})
            retry_after = None
            try:
                headers = None if auth else {"Authorization": ""}
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TimeoutException:
                problem = "timed out"
            except httpx.TransportError as exc:
                problem = f"cannot connect ({type(exc).__name__})"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code == 401:
                    raise _Unauthorized()
                if response.status_code == 403:
                    raise LabelStudioAuthError(f"Label Studio at {self.url}: {what}: permission denied (HTTP 403); "
                                           f"the token in {self.token_env} may not reach this project")
                if response.status_code not in RETRY_STATUS:
                    raise LabelStudioError(f"Label Studio at {self.url}: {what}: HTTP {response.status_code}: "
                                           f"{_detail(response)}")
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
            if attempt + 1 < attempts:
                delay = self.retry.delay(attempt, retry_after)
                logger.info("%s: %s; retry %d/%d in %.1fs", what, problem, attempt + 1, attempts - 1, delay)
                time.sleep(delay)
        raise LabelStudioError(f"Label Studio at {self.url}: {what}: {problem} (after {attempts} attempts)")

    # ------------------------------------------------------------ projects

    def projects(self) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            body = self.request("GET", "/api/projects/", what="list projects",
                                params={"page": page, "page_size": 100}).json()
            yield from body.get("results", [])
            if not body.get("next"):
                return
            page += 1

    def find_project(self, marker: str) -> dict[str, Any] | None:
        """The project whose description is exactly ``marker`` (the lowest id when several): never a project whose
        marker merely starts the same (``review=concept`` vs ``review=concept-list``)."""
        found = [p for p in self.projects() if (p.get("description") or "").strip() == marker]
        return min(found, key=lambda p: p["id"]) if found else None

    def ensure_project(self, *, marker: str, title: str, label_config: str,
                       settings: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Create the project identified by ``marker`` or bring its title, labeling config and ``settings``
        (other project fields: instructions, overlap) up to date.

        Returns (project, created). A field is only sent when it differs.
        """
        project = self.find_project(marker)
        fields = {"title": title[:TITLE_MAX], "label_config": label_config, **(settings or {})}
        if project is None:
            body = dict(fields, description=marker, show_collab_predictions=True)
            created = self.request("POST", "/api/projects/", what="create project", json=body).json()
            logger.info("created Label Studio project %d (%s)", created["id"], title)
            return created, True
        changes = {k: v for k, v in fields.items() if project.get(k) != v}
        if changes:
            self.request("PATCH", f"/api/projects/{project['id']}/", what=f"update project {project['id']}",
                         json=changes)
        return project, False

    def annotated_controls(self, project_id: int) -> list[str]:
        """The control names (``from_name``) that the project's annotations use (Label Studio's summary)."""
        summary = self.request("GET", f"/api/projects/{project_id}/summary/",
                               what=f"read the summary of project {project_id}").json()
        names = {key.split("|", 1)[0] for key in (summary.get("created_annotations") or {})}
        return sorted(n for n in names if n)

    def ensure_view(self, project_id: int, *, title: str, hidden: Sequence[str], ordering: Sequence[str] = ()) -> int:
        """A Data Manager tab named ``title`` that hides ``hidden`` columns (``tasks:data.<field>``,
        ``tasks:<column>``) and sorts by ``ordering``; created or brought up to date. Returns its id."""
        views = self.request("GET", "/api/dm/views/", what=f"list views of project {project_id}",
                             params={"project": project_id}).json()
        data = {"title": title, "hiddenColumns": {"explore": list(hidden), "labeling": list(hidden)},
                "ordering": list(ordering)}
        for view in views:
            current = view.get("data") or {}
            if current.get("title") == title:
                if {k: current.get(k) for k in data} != data:
                    self.request("PATCH", f"/api/dm/views/{view['id']}/", what=f"update view {view['id']}",
                                 json={"project": project_id, "data": {**current, **data}})
                return int(view["id"])
        created = self.request("POST", "/api/dm/views/", what=f"create a view in project {project_id}",
                               json={"project": project_id, "data": data}).json()
        return int(created["id"])

    def show_predictions_of(self, project: Mapping[str, Any], model_version: str) -> None:
        """Pre-label with ``model_version``'s predictions (Label Studio shows one model version's predictions;
        it accepts a version only once predictions of it exist)."""
        if project.get("model_version") != model_version:
            self.request("PATCH", f"/api/projects/{project['id']}/", what=f"update project {project['id']}",
                         json={"model_version": model_version})

    # ------------------------------------------------------------ tasks

    def tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of a project with its predictions (paged)."""
        page = 1
        seen = 0
        while True:
            try:
                body = self.request("GET", "/api/tasks/", what=f"list tasks of project {project_id}",
                                    params={"project": project_id, "page": page, "page_size": self.page_size,
                                            "fields": "all"}).json()
            except LabelStudioError as exc:
                if "HTTP 404" in str(exc) and page > 1:  # past the last page
                    return
                raise
            tasks = body.get("tasks", [])
            yield from tasks
            seen += len(tasks)
            if not tasks or seen >= body.get("total", 0):
                return
            page += 1

    def existing_keys(self, project_id: int) -> dict[str, dict[str, Any]]:
        """task_key -> {id, fingerprint, model_versions} of the project's tasks."""
        out: dict[str, dict[str, Any]] = {}
        for task in self.tasks(project_id):
            key = (task.get("data") or {}).get("task_key")
            if key is None or key in out:
                continue
            out[key] = {"id": task["id"], "fingerprint": task["data"].get("fingerprint"),
                        "model_versions": {p.get("model_version") for p in task.get("predictions") or []
                                           if isinstance(p, dict)}}
        return out

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> int:
        """Import one batch; on a retry, only the tasks the project does not hold yet are sent."""

        def remaining() -> list[dict[str, Any]] | None:
            present = self.existing_keys(project_id)
            left = [t for t in tasks if t["data"]["task_key"] not in present]
            return left or None

        self.request("POST", f"/api/projects/{project_id}/import", what=f"import {len(tasks)} tasks",
                     json=tasks, before_retry=remaining)
        return len(tasks)

    def update_task_data(self, task_id: int, data: Mapping[str, Any]) -> None:
        self.request("PATCH", f"/api/tasks/{task_id}/", what=f"update task {task_id}", json={"data": dict(data)})

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> None:
        """Add predictions to existing tasks. Retried as is: a duplicate prediction would only repeat a pre-tick,
        and ``push_tasks`` skips tasks that already hold one for the run."""
        self.request("POST", f"/api/projects/{project_id}/import/predictions",
                     what=f"import {len(predictions)} predictions", json=predictions)

    # ------------------------------------------------------------ export

    def export_snapshot(self, project_id: int, *, poll_s: float = 0.2, timeout_s: float = 300.0,
                        on_created: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """All tasks of a project with their (not skipped) annotations, via a snapshot export."""
        body = {"title": "conceptkit pull",
                "serialization_options": {"annotations__completed_by": {"only_id": False},
                                          "predictions": {"only_id": True}, "drafts": {"only_id": True}}}
        what = f"snapshot export of project {project_id}"
        export = self.request("POST", f"/api/projects/{project_id}/exports/", what=what, json=body).json()
        export_id = export["id"]
        if on_created is not None:
            on_created(export_id)
        deadline = time.monotonic() + timeout_s
        while export.get("status") != "completed":
            if export.get("status") == "failed":
                raise LabelStudioError(f"Label Studio at {self.url}: {what}: the server reports the export failed")
            if time.monotonic() > deadline:
                raise LabelStudioError(f"Label Studio at {self.url}: {what}: not ready after {timeout_s:.0f}s")
            time.sleep(poll_s)
            export = self.request("GET", f"/api/projects/{project_id}/exports/{export_id}", what=what).json()
        tasks = self.request("GET", f"/api/projects/{project_id}/exports/{export_id}/download", what=what,
                             params={"exportType": "JSON"}).json()
        try:
            self.request("DELETE", f"/api/projects/{project_id}/exports/{export_id}", what=f"delete {what}")
        except LabelStudioError as exc:  # a leftover export file costs disk, not correctness
            logger.warning("%s", exc)
        return tasks


class _Unauthorized(Exception):
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].replace("\n", " ")
    if isinstance(body, dict):
        detail = body.get("validation_errors") or body.get("detail") or body
        return str(detail)[:300].replace("\n", " ")
    return str(body)[:300]


# ---------------------------------------------------------------- push


@dataclass
class PushResult:
    project_id: int
    created_project: bool
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    predictions_added: int = 0
    tasks: int = 0


def _prediction_for(task: Mapping[str, Any], task_id: int) -> dict[str, Any]:
    prediction = dict(task["predictions"][0])
    prediction["task"] = task_id
    return prediction


def push_tasks(
    client: LabelStudioClient,
    *,
    marker: str,
    title: str,
    label_config: str,
    run_id: str,
    tasks: Sequence[Mapping[str, Any]],
    batch_size: int = 200,
    settings: Mapping[str, Any] | None = None,
) -> PushResult:
    """Bring the project identified by ``marker`` up to date with ``tasks`` (Label Studio JSON with a
    ``data.task_key`` and ``data.fingerprint`` and one prediction each). Idempotent; see the module docstring."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [t["data"]["task_key"] for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique within a push")
    project, created = client.ensure_project(marker=marker, title=title, label_config=label_config,
                                             settings=settings)
    project_id = project["id"]
    result = PushResult(project_id=project_id, created_project=created)
    existing = {} if created else client.existing_keys(project_id)
    new, predictions = [], []
    for task in tasks:
        have = existing.get(task["data"]["task_key"])
        if have is None:
            new.append(dict(task))
            continue
        if have["fingerprint"] != task["data"]["fingerprint"]:
            client.update_task_data(have["id"], task["data"])
            result.updated += 1
        else:
            result.unchanged += 1
        if run_id not in have["model_versions"]:
            predictions.append(_prediction_for(task, have["id"]))
    for start in range(0, len(new), batch_size):
        result.imported += client.import_tasks(project_id, new[start:start + batch_size])
    for start in range(0, len(predictions), batch_size):
        client.import_predictions(project_id, predictions[start:start + batch_size])
    # New tasks carry their prediction inline; existing ones got theirs through import_predictions.
    result.predictions_added = len(predictions) + sum(len(t.get("predictions") or []) for t in new)
    result.tasks = len(existing) + result.imported
    if tasks:
        client.show_predictions_of(project, run_id)
    logger.info("project %d: %d imported, %d updated, %d unchanged, %d predictions added", project_id,
                result.imported, result.updated, result.unchanged, result.predictions_added)
    return result


# ---------------------------------------------------------------- pull


def _time(value: str | None) -> datetime:
    if not value:
        return datetime(1970, 1, 1, tzinfo=timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _annotator(annotation: Mapping[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return who.get("email") or f"user:{who.get('id')}"
    return f"user:{who}"


def _results(annotation: Mapping[str, Any], name: str) -> list[Any]:
    for result in annotation.get("result") or []:
        if result.get("from_name") == name:
            value = result.get("value") or {}
            return list(value.get("choices") or value.get("text") or [])
    return []


def _ticked(annotation: Mapping[str, Any]) -> set[str]:
    """Item review: every concept ticked in any of the checklists (``concepts`` or ``concepts__<k>``)."""
    out: set[str] = set()
    for result in annotation.get("result") or []:
        name = str(result.get("from_name") or "")
        if name == CONCEPTS or name.startswith(f"{CONCEPTS}__"):
            out.update((result.get("value") or {}).get("choices") or [])
    return out


def _annotations(task: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for annotation in task.get("annotations") or []:
        if not annotation.get("was_cancelled"):
            yield annotation


def verified_rows(
    export: Iterable[Mapping[str, Any]], *, mode: str, project_id: int, concept_ids: Mapping[str, int]
) -> list[dict[str, Any]]:
    """Rows of ``conceptkit.schemas.verified.VERIFIED`` from a snapshot export of a ``mode`` project.

    Item review: each candidate concept of the task is ``present`` when ticked, ``absent`` when not (an
    annotation with nothing ticked says none is present). Concept and concept-list review: the verdict, when
    one was given. ``concept_ids`` maps concept text to this run's ids (null for a concept not in the run).
    """
    rows = []
    for task in export:
        data = task.get("data") or {}
        key = data.get("task_key")
        if key is None:
            continue
        for annotation in _annotations(task):
            base = {
                "annotator": _annotator(annotation), "time": _time(annotation.get("updated_at")),
                "task_id": int(task["id"]), "annotation_id": int(annotation["id"]), "project_id": project_id,
                "task_key": key, "model_version": (annotation.get("prediction") or {}).get("model_version"),
                "review": mode, "source": "human", "edited_concept": None,
            }
            if mode == "item":
                ticked = _ticked(annotation)
                # What the reviewer was shown: the task's own checklist (older pushes), else the run's whole list.
                options = ([o["value"] for o in data.get("options") or []] or list(data.get("concept_scores") or {})
                           or list(concept_ids))
                judged = list(dict.fromkeys([*options, *sorted(ticked)]))
                for concept in judged:
                    rows.append({**base, "item_id": data.get("item_id"), "concept": concept,
                                 "concept_id": concept_ids.get(concept), "class_name": data.get("label"),
                                 "label": "present" if concept in ticked else "absent"})
            else:
                verdict = _results(annotation, VERDICT)
                if not verdict:
                    continue
                concept = data["concept"]
                row = {**base, "concept": concept, "concept_id": concept_ids.get(concept), "label": verdict[0]}
                if mode == "concept":
                    row.update(item_id=data.get("item_id"), class_name=data.get("label"))
                else:
                    edited = " ".join(" ".join(_results(annotation, EDITED)).split()) or None
                    row.update(item_id=None, class_name=data.get("class_name"),
                               edited_concept=edited if verdict[0] == "edit" else None)
                rows.append(row)
    rows.sort(key=lambda r: (r["project_id"], r["task_id"], r["annotation_id"], r["concept"]))
    return rows


def human_candidate_rows(
    export: Iterable[Mapping[str, Any]], *, mode: str, project_id: int
) -> list[dict[str, Any]]:
    """Concepts people typed as missing (item review) or as a new wording (concept-list edits): rows of
    ``conceptkit.schemas.verified.HUMAN_CANDIDATES``."""
    rows = []
    for task in export:
        data = task.get("data") or {}
        for annotation in _annotations(task):
            found: list[tuple[str, str, str | None, list[str]]] = []
            if mode == "item":
                label = data.get("label")
                for text in _results(annotation, MISSING):
                    for line in re.split(r"[\n;]", str(text)):
                        found.append(("missing", line, None, [label] if label else []))
            elif mode == "concept-list" and _results(annotation, VERDICT)[:1] == ["edit"]:
                for text in _results(annotation, EDITED):
                    found.append(("edit", str(text), data.get("concept"), [data.get("class_name")]))
            for kind, raw, replaces, classes in found:
                concept = " ".join(raw.split()).strip().lower()
                if not concept:
                    continue
                digest = hashlib.sha256(f"{annotation['id']}\0{kind}\0{concept}".encode()).hexdigest()[:16]
                rows.append({
                    "candidate_id": f"human-{digest}", "concept": concept, "raw": raw, "classes": classes,
                    "kind": kind, "replaces": replaces, "item_id": data.get("item_id"),
                    "annotator": _annotator(annotation), "time": _time(annotation.get("updated_at")),
                    "task_id": int(task["id"]), "annotation_id": int(annotation["id"]), "project_id": project_id,
                    "source": "human",
                })
    unique = {r["candidate_id"]: r for r in rows}
    return sorted(unique.values(), key=lambda r: (r["task_id"], r["annotation_id"], r["concept"]))


# ---------------------------------------------------------------- a local server


# Environment that keeps a local Label Studio from calling out (error reporting, analytics, version checks) and
# from letting strangers sign up.
QUIET_ENV = {
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "COLLECT_ANALYTICS": "false",
    "LATEST_VERSION_CHECK": "false",
    "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
}
_STARTED = re.compile(r"Starting development server at http://[\d.]+:(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class LocalLabelStudio:
    """A Label Studio server on 127.0.0.1 over ``data_dir``, run as a child process.

    The admin user and token are created on first start (a data directory that already has them keeps them).
    Credentials travel in the child's environment, never on its command line. ``start`` refuses a port that is
    taken (Label Studio would silently move to the next one) and returns once the server answers with the token.
    """

    data_dir: Path
    username: str
    password: str
    token: str
    port: int = 8080
    log_path: Path | None = None
    executable: str | None = None
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        exe = self.executable or shutil.which("label-studio", path=os.path.dirname(sys.executable)) or "label-studio"
        return [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--enable-legacy-api-token"]

    def start(self, *, timeout_s: float = 240.0) -> str:
        if _port_taken(self.port):
            raise LabelStudioError(f"port {self.port} on 127.0.0.1 is already in use; choose another with --port")
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = Path(self.log_path or self.data_dir / "labelstudio.log")
        env = {**os.environ, **QUIET_ENV, "LABEL_STUDIO_USERNAME": self.username,
               "LABEL_STUDIO_PASSWORD": self.password, "LABEL_STUDIO_USER_TOKEN": self.token,
               "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir)}
        log = open(log_path, "ab")
        offset = log.tell()  # only this start's lines count: an earlier start logged its own port
        self._process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = log_path.read_bytes()[offset:].decode(errors="replace")
            if self._process.poll() is not None:
                tail = text[-400:].replace("\n", " | ")
                raise LabelStudioError(f"Label Studio exited with code {self._process.returncode}: {tail}")
            match = _STARTED.findall(text)
            if match and int(match[-1]) != self.port:
                self.stop()
                raise LabelStudioError(f"Label Studio moved to port {match[-1]} instead of {self.port}")
            if self._answers():
                return self.url
            time.sleep(0.25)
        self.stop()
        raise LabelStudioError(f"Label Studio did not answer on {self.url} within {timeout_s:.0f}s (log: {log_path})")

    def _answers(self) -> bool:
        try:
            response = httpx.get(f"{self.url}/api/current-user/whoami", timeout=2.0,
                                 headers={"Authorization": f"Token {self.token}"})
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def stop(self, *, timeout_s: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
