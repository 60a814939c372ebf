"""The review loop against a real Label Studio: push, annotate through the API as a reviewer would, pull.

Also idempotency (push twice, pull twice, a newer run), edits and deletions, an interrupted pull, and the
client's retries and one-line errors.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conceptkit.annotators.labelstudio import LabelStudioClient, LabelStudioError, RetryPolicy, free_port
from conceptkit.pipelines.cli.labelstudio import ReviewError, ls_pull, ls_push, main, project_marker
from conceptkit.schemas.io import read_table
from conceptkit.schemas.verified import HUMAN_CANDIDATES, MERGED, VERIFIED
from labelstudio_fixtures import CLASSES, FAST, annotate, api, project_tasks

def second_reviewer(http: httpx.Client) -> int:
    email = "second@example.com"
    users = {u["email"]: u["id"] for u in http.get("/api/users/").json()}
    if email in users:
        return users[email]
    response = http.post("/api/users/", json={"email": email, "username": "second", "password": "second-pw-123"})
    response.raise_for_status()
    return response.json()["id"]


def test_push_annotate_pull(ls, tiny_run):
    run = tiny_run()
    pushed = ls_push(run, url=ls.url, **FAST)
    assert pushed["imported"] == 12 and pushed["tasks"] == 12 and pushed["created_project"]
    tasks = project_tasks(ls, pushed["project_id"])
    assert set(tasks) == {f"item:{c}-{j}" for c in ("cooking", "sports", "weather") for j in range(4)}
    oven_task = tasks["item:cooking-0"]
    prediction = oven_task["predictions"][0]
    assert prediction["model_version"] == "tiny-1"
    predicted = {c for result in prediction["result"] for c in result["value"]["choices"]}
    assert predicted and 0 < prediction["score"] <= 1  # the model's uncertainty, not a cosine
    assert "options" not in oven_task["data"] and "concept_scores" not in oven_task["data"]
    # the project: instructions, overlap, and a task list without internal or raw JSON columns
    with api(ls) as http:
        project = http.get(f"/api/projects/{pushed['project_id']}/").json()
        views = http.get("/api/dm/views/", params={"project": pushed["project_id"]}).json()
    assert "Tick every concept" in project["expert_instruction"] and project["show_instruction"]
    assert project["maximum_annotations"] == 1
    view = next(v["data"] for v in views if v["data"]["title"] == "conceptkit review")
    assert {"tasks:data", "tasks:predictions_results", "tasks:data.fingerprint"} <= set(view["hiddenColumns"]["explore"])
    assert view["ordering"] == ["-tasks:predictions_score"]
    options = [c for cs in CLASSES.values() for c in cs]  # every concept of the run is on the checklist

    with api(ls) as http:
        # reviewer 1 confirms the prediction but removes one pick and adds a missing concept
        removed = sorted(predicted)[0]
        annotate(http, oven_task["id"], choices=sorted(predicted - {removed}), missing="knife skills")
        # two reviewers disagree on a sports item
        sports = tasks["item:sports-1"]
        annotate(http, sports["id"], choices=["goal"])
        annotate(http, sports["id"], choices=["coach"], user_id=second_reviewer(http))

    summary = ls_pull(run, url=ls.url, **FAST)
    assert summary["verified"]["added"] == 3 * len(options)
    verified = read_table(run / "verified.parquet", VERIFIED).to_pylist()
    mine = [r for r in verified if r["item_id"] == "cooking-0"]
    assert {r["concept"]: r["label"] for r in mine} == {c: ("present" if c in predicted - {removed} else "absent")
                                                         for c in options}
    assert all(r["source"] == "human" and r["annotator"] == ls.username and r["task_id"] == oven_task["id"]
               and r["review"] == "item" and r["model_version"] == "tiny-1" for r in mine)
    assert {r["annotator"] for r in verified if r["item_id"] == "sports-1"} == {ls.username, "second@example.com"}

    merged = {(r["item_id"], r["concept"]): r for r in read_table(run / "merged.parquet", MERGED).to_pylist()}
    overridden = merged[("cooking-0", removed)]
    assert overridden["model"] is True and overridden["final"] is False and overridden["final_source"] == "human"
    untouched = merged[("weather-0", next(c for (i, c) in merged if i == "weather-0"))]
    assert untouched["final_source"] == "model" and untouched["final"] == untouched["model"]

    candidates = read_table(run / "human_candidates.parquet", HUMAN_CANDIDATES).to_pylist()
    assert [(c["concept"], c["source"], c["classes"]) for c in candidates] == [("knife skills", "human", ["cooking"])]

    card = (run / "README.md").read_text()
    assert "| `verified.parquet` |" in card and "| `merged.parquet` |" in card
    review = json.loads((run / "review.json").read_text())["review"]
    assert review["model_vs_human"]["per_concept"][removed]["precision"] == 0.0
    assert review["inter_annotator"]["pairs_with_several"] == 9  # sports-1: every concept of the run
    assert review["inter_annotator"]["percent_agreement"] == 0.7778  # agree on the 7 absent, not goal/coach


def test_push_twice_then_a_newer_run(ls, tiny_run):
    run = tiny_run("old")
    first = ls_push(run, url=ls.url, budget=6, **FAST)
    second = ls_push(run, url=ls.url, budget=6, **FAST)
    assert (first["imported"], second["imported"], second["unchanged"], second["tasks"]) == (6, 0, 6, 6)
    assert (first["predictions_added"], second["predictions_added"]) == (6, 0)  # new tasks carry theirs inline
    full = ls_push(run, url=ls.url, **FAST)
    assert (full["imported"], full["unchanged"], full["tasks"]) == (6, 6, 12)

    # the same run name, rebuilt: one text changed, one item added
    newer = tiny_run("new", run_id="tiny-2", texts={"sports-2": "A rewritten sports text."}, extra_items=1)
    pushed = ls_push(newer, url=ls.url, batch_size=5, **FAST)
    assert (pushed["imported"], pushed["updated"], pushed["unchanged"], pushed["tasks"]) == (1, 1, 11, 13)
    assert pushed["predictions_added"] == 13  # every old task gets the new run's pre-ticks, the new one its own
    tasks = project_tasks(ls, pushed["project_id"])
    assert len(tasks) == 13 and tasks["item:sports-2"]["data"]["text"] == "A rewritten sports text."
    assert {p["model_version"] for p in tasks["item:sports-2"]["predictions"]} == {"tiny-1", "tiny-2"}
    again = ls_push(newer, url=ls.url, **FAST)
    assert (again["imported"], again["updated"], again["predictions_added"]) == (0, 0, 0)


def test_pull_twice_then_edit_and_delete(ls, tiny_run):
    run = tiny_run()
    pid = ls_push(run, url=ls.url, **FAST)["project_id"]
    tasks = project_tasks(ls, pid)
    with api(ls) as http:
        a1 = annotate(http, tasks["item:weather-0"]["id"], choices=["rain"])
        a2 = annotate(http, tasks["item:weather-1"]["id"], choices=["storm"])
    ls_pull(run, url=ls.url, **FAST)
    first = (run / "verified.parquet").read_bytes()
    again = ls_pull(run, url=ls.url, **FAST)
    assert again["verified"]["added"] == again["verified"]["changed"] == again["verified"]["removed"] == 0
    assert read_table(run / "verified.parquet", VERIFIED).equals(read_table_bytes(first))

    with api(ls) as http:
        edited = http.patch(f"/api/annotations/{a1}/", json={"result": [
            {"from_name": "concepts", "to_name": "text", "type": "choices", "value": {"choices": ["forecast"]}}]})
        edited.raise_for_status()
        http.delete(f"/api/annotations/{a2}/").raise_for_status()
    third = ls_pull(run, url=ls.url, **FAST)["verified"]
    assert third["removed"] == 9 and third["changed"] >= 1 and third["added"] == 0
    rows = read_table(run / "verified.parquet", VERIFIED).to_pylist()
    assert {r["annotation_id"] for r in rows} == {a1}
    assert {r["concept"] for r in rows if r["label"] == "present"} == {"forecast"}


def test_concept_and_concept_list_reviews(ls, tiny_run):
    run = tiny_run()
    concept = ls_push(run, url=ls.url, review="concept", budget=5, **FAST)
    assert concept["imported"] == 5
    clist = ls_push(run, url=ls.url, review="concept-list", **FAST)
    assert clist["imported"] == 9
    concept_tasks = list(project_tasks(ls, concept["project_id"]).values())
    list_tasks = project_tasks(ls, clist["project_id"])
    with api(ls) as http:
        annotate(http, concept_tasks[0]["id"], verdict="unsure")
        annotate(http, concept_tasks[1]["id"], verdict="present")
        annotate(http, list_tasks["concept-list:weather:storm"]["id"], verdict="edit", edited="thunderstorm")
        annotate(http, list_tasks["concept-list:sports:match"]["id"], verdict="reject")
    summary = ls_pull(run, url=ls.url, **FAST)
    assert set(summary["projects"]) == {"concept", "concept-list"}
    rows = read_table(run / "verified.parquet", VERIFIED).to_pylist()
    assert sorted((r["review"], r["label"]) for r in rows) == [
        ("concept", "present"), ("concept", "unsure"), ("concept-list", "edit"), ("concept-list", "reject")]
    edit = next(r for r in rows if r["label"] == "edit")
    assert (edit["item_id"], edit["class_name"], edit["edited_concept"]) == (None, "weather", "thunderstorm")
    candidates = read_table(run / "human_candidates.parquet", HUMAN_CANDIDATES).to_pylist()
    assert [(c["concept"], c["kind"], c["replaces"]) for c in candidates] == [("thunderstorm", "edit", "storm")]


def test_pull_interrupted_by_server_stop_then_resumed(ls, tiny_run):
    run = tiny_run()
    pid = ls_push(run, url=ls.url, **FAST)["project_id"]
    tasks = project_tasks(ls, pid)
    with api(ls) as http:
        annotate(http, tasks["item:cooking-1"]["id"], choices=["oven"])
    ls_pull(run, url=ls.url, **FAST)
    with api(ls) as http:
        annotate(http, tasks["item:cooking-2"]["id"], choices=["spices"], missing="dough")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    twin = run.parent.parent / "twin" / run.name
    shutil.copytree(run, twin)

    with pytest.raises(LabelStudioError, match=r"cannot connect .*after 2 attempts"):
        ls_pull(run, url=ls.url, on_export=lambda mode, export_id: ls.stop(), **FAST)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # nothing half-written

    ls.port = free_port()
    ls.start(timeout_s=120)
    resumed = ls_pull(run, url=ls.url, **FAST)
    uninterrupted = ls_pull(twin, url=ls.url, **FAST)
    assert resumed["verified"] == uninterrupted["verified"]
    for name, schema in (("verified.parquet", VERIFIED), ("human_candidates.parquet", HUMAN_CANDIDATES),
                         ("merged.parquet", MERGED)):
        assert read_table(run / name, schema).equals(read_table(twin / name, schema)), name


def test_cli_push_pull_and_errors(ls, tiny_run, capsys):
    run = tiny_run()
    assert main(["ls", "push", str(run), "--url", ls.url, "--budget", "3", "--max-retries", "0"]) == 0
    assert "3 imported" in capsys.readouterr().out
    assert main(["ls", "pull", str(run), "--url", ls.url, "--review", "item"]) == 0
    assert "verified.parquet: 0 rows" in capsys.readouterr().out
    assert main(["ls", "pull", str(run), "--url", ls.url, "--review", "concept"]) == 2
    assert "no Label Studio project" in capsys.readouterr().err
    assert main(["ls", "push", str(run.parent / "missing"), "--url", ls.url]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["ls", "push", str(run), "--url", f"http://127.0.0.1:{free_port()}", "--max-retries", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("conceptkit ls push: failed: Label Studio at") and "cannot connect" in err
    assert len(err.splitlines()) == 1


def test_wrong_token_is_a_clear_error(ls, monkeypatch):
    monkeypatch.setenv("WRONG_TOKEN", "not-the-token")
    with LabelStudioClient(ls.url, token_env="WRONG_TOKEN") as client:
        with pytest.raises(LabelStudioError, match=r"token rejected \(HTTP 401\); check WRONG_TOKEN"):
            client.find_project(project_marker("x", "item"))
    monkeypatch.delenv("WRONG_TOKEN")
    with pytest.raises(LabelStudioError, match="WRONG_TOKEN is empty or unset"):
        LabelStudioClient(ls.url, token_env="WRONG_TOKEN")


class _Flaky(BaseHTTPRequestHandler):
    script: list[int] = []
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.seen.append(self.headers.get("Authorization", ""))
        status = self.script.pop(0) if self.script else 200
        body = json.dumps({"count": 0, "next": None, "results": []} if status == 200 else {"detail": "x"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setenv("FLAKY_TOKEN", "secret-token")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.seen.clear()
    yield server
    server.shutdown()
    server.server_close()


def test_retries_5xx_with_backoff_then_fails_clearly(flaky):
    url = f"http://127.0.0.1:{flaky.server_address[1]}"
    policy = RetryPolicy(max_retries=2, backoff_s=0.01)
    _Flaky.script[:] = [503, 500]
    with LabelStudioClient(url, token_env="FLAKY_TOKEN", retry=policy) as client:
        assert client.find_project("m") is None  # two failures, then an answer
    assert _Flaky.seen == ["Token secret-token"] * 3
    _Flaky.script[:] = [502, 502, 502]
    with LabelStudioClient(url, token_env="FLAKY_TOKEN", retry=policy) as client:
        with pytest.raises(LabelStudioError, match=r"list projects: HTTP 502 \(after 3 attempts\)"):
            client.find_project("m")
    _Flaky.script[:] = [403]
    with LabelStudioClient(url, token_env="FLAKY_TOKEN", retry=policy) as client:
        with pytest.raises(LabelStudioError, match=r"permission denied \(HTTP 403\)"):
            client.find_project("m")


def test_bad_arguments_fail_fast(tiny_run):
    run = tiny_run()
    with pytest.raises(ReviewError, match="--budget must be >= 1, got 0"):
        ls_push(run, budget=0)


def read_table_bytes(data: bytes):
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))


def test_instructions_and_overlap_set_the_project(ls, tiny_run, tmp_path, capsys):
    run = tiny_run()
    notes = tmp_path / "notes.txt"
    notes.write_text("Judge the text, not the title.\n\nAsk <Ann> when unsure.\n")
    pid = ls_push(run, url=ls.url, instructions=notes, annotators_per_task=2, **FAST)["project_id"]
    with api(ls) as http:
        project = http.get(f"/api/projects/{pid}/").json()
    assert project["maximum_annotations"] == 2  # every task is labelled twice: agreement gets data
    assert project["expert_instruction"] == "<p>Judge the text, not the title.</p><p>Ask &lt;Ann&gt; when unsure.</p>"
    for bad, message in (([str(tmp_path / "missing.txt")], "--instructions"), (["--annotators-per-task", "0"],
                                                                                "--annotators-per-task")):
        argv = ["ls", "push", str(run), "--url", ls.url]
        argv += ["--instructions", *bad] if message == "--instructions" else bad
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_a_changed_concept_list_keeps_checklists_that_annotations_use(ls, tiny_run):
    """Label Studio refuses a labeling config that orphans existing annotations: a push after a reselection
    (other classes, fewer checklists) or after an older push (one ``concepts`` checklist) keeps those names."""
    import pyarrow.parquet as pq
    import pyarrow as pa

    run = tiny_run()
    pid = ls_push(run, url=ls.url, **FAST)["project_id"]
    task = project_tasks(ls, pid)["item:weather-0"]
    with api(ls) as http:
        http.post(f"/api/tasks/{task['id']}/annotations/", json={"result": [
            {"from_name": "concepts", "to_name": "text", "type": "choices", "value": {"choices": ["rain"]}},
            {"from_name": "concepts__2", "to_name": "text", "type": "choices", "value": {"choices": ["storm"]}}]}
        ).raise_for_status()
    # the reselected run: the weather concepts now belong to "sports" (two checklists instead of three)
    table = pq.read_table(run / "concepts.parquet")
    picked = ["sports" if p == "weather" else p for p in table.column("picked_for").to_pylist()]
    table = table.set_column(table.schema.get_field_index("picked_for"), table.schema.field("picked_for"),
                             pa.array(picked, pa.string()))
    pq.write_table(table, run / "concepts.parquet")
    again = ls_push(run, url=ls.url, **FAST)
    assert again["project_id"] == pid
    with api(ls) as http:
        config = http.get(f"/api/projects/{pid}/").json()["label_config"]
    assert 'name="concepts__2"' in config and 'name="concepts"' in config
    pulled = ls_pull(run, url=ls.url, **FAST)
    rows = read_table(run / "verified.parquet", VERIFIED).to_pylist()
    assert {r["concept"] for r in rows if r["label"] == "present"} == {"rain", "storm"} and pulled["verified"]["rows"]


def test_refitted_cuts_become_the_rule_for_the_next_push(ls, tiny_run):
    """After a pull with enough answers, each concept's cut fitted to people's answers is the label rule: the
    next push brings its pre-ticks as a new prediction version, and merged.parquet's model column and review.json
    measure that rule."""
    from conceptkit.pipelines.cli.labelstudio import load_run

    run = tiny_run()
    pid = ls_push(run, url=ls.url, **FAST)["project_id"]
    tasks = project_tasks(ls, pid)
    with api(ls) as http:  # the people say: an item shows exactly its class's concepts
        for key, task in tasks.items():
            annotate(http, task["id"], choices=CLASSES[key.split(":")[1].split("-")[0]])
    pulled = ls_pull(run, url=ls.url, **FAST)
    cuts = pulled["review"]["thresholds"]
    assert set(cuts) == {c for cs in CLASSES.values() for c in cs} and all("cut" in v for v in cuts.values())
    rule = load_run(run).rule
    assert len(rule.refits) == 9
    again = ls_push(run, url=ls.url, **FAST)
    assert again["predictions_added"] == 12
    tasks = project_tasks(ls, pid)
    for key, task in tasks.items():
        latest = next(p for p in task["predictions"] if p["model_version"].startswith("tiny-1+review-"))
        ticked = {c for r in latest["result"] for c in r["value"]["choices"]}
        assert ticked == set(CLASSES[key.split(":")[1].split("-")[0]]), key
    # pulling again now measures the re-fitted rule: it agrees with people everywhere
    review = ls_pull(run, url=ls.url, **FAST)["review"]
    assert review["model_vs_human"]["overall"]["f1"] == 1.0


@pytest.mark.parametrize("content, message", [("{not json", "unusable label rule"),
                                               ('{"rule": "double-z", "z": 3, "mean": [0.1], "std": [0.1]}',
                                                "statistics for 1 concepts, the run has 9")])
def test_a_broken_label_rule_is_a_one_line_error_before_any_request(tiny_run, capsys, content, message):
    run = tiny_run()
    (run / "labels.json").write_text(content)
    assert main(["ls", "push", str(run), "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "labels.json" in err and message in err, err
