"""A reviewer's view, one test per review mode: headless Chromium logs in to the session's Label Studio, opens a
pushed task, checks what a reviewer sees, answers through the UI, submits, and the next pull finds the answer.
The screenshots are the README's pictures of the labeling UI (docs/labelstudio-*.png; refresh them with
CONCEPTKIT_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conceptkit.annotators.labelstudio import LabelStudioClient
from conceptkit.pipelines.cli.labelstudio import ls_pull, ls_push
from conceptkit.schemas.io import read_table
from conceptkit.schemas.verified import HUMAN_CANDIDATES, VERIFIED
from labelstudio_fixtures import CLASSES, FAST

CHROMIUM = "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_task(chromium, ls, project_id: int, task_id: int):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(f"{ls.url}/user/login/")
    page.fill("input[name=email]", ls.username)
    page.fill("input[name=password]", ls.password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    page.goto(f"{ls.url}/projects/{project_id}/data?task={task_id}")
    return page


def stable(page, read, want, tries: int = 60):
    """Poll ``read()`` until it returns ``want`` (the editor may re-render once after it first appears)."""
    got = None
    for _ in range(tries):
        got = read()
        if got == want:
            break
        page.wait_for_timeout(500)
    return got


def submit(page, ls, task_id: int) -> None:
    page.get_by_role("button", name="Submit").click()
    with LabelStudioClient(ls.url) as client:
        for _ in range(60):
            task = client.request("GET", f"/api/tasks/{task_id}", what="read task").json()
            if task.get("total_annotations", 0) or task.get("annotations"):
                return
            page.wait_for_timeout(500)
    raise AssertionError(f"task {task_id}: the submitted annotation never reached the server")


def submit_with_text(page, ls, task_id: int, placeholder: str, text: str) -> None:
    """Type ``text`` into the text box with ``placeholder``, add it (Shift+Enter), submit, close the page."""
    area = page.get_by_placeholder(placeholder)
    area.fill(text)
    area.press("Shift+Enter")
    submit(page, ls, task_id)
    page.close()


def choose(page, verdict: str) -> None:
    """Click a single-choice option (its label also shows a hotkey: "unsure[3]")."""
    page.locator("label").filter(has_text=re.compile(rf"^\s*{verdict}\b")).first.click()


def keep_screenshot(page, tmp_path, name: str) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    target = DOCS / name
    # The committed picture is refreshed on request (or when missing), so a test run leaves the tree clean.
    if os.environ.get("CONCEPTKIT_UPDATE_SCREENSHOTS") == "1" or not target.exists():
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def _task(ls, project_id: int, key: str) -> dict:
    with LabelStudioClient(ls.url) as client:
        return next(t for t in client.tasks(project_id) if t["data"]["task_key"] == key)


def test_item_review_in_the_browser(ls, tiny_run, chromium, tmp_path):
    run = tiny_run(texts={"cooking-0": "Toast the cumin seeds in a dry pan, then simmer them with the onions "
                                       "before the dish goes into a hot oven."})
    project_id = ls_push(run, url=ls.url, **FAST)["project_id"]
    task = _task(ls, project_id, "item:cooking-0")
    predicted = {c for r in task["predictions"][0]["result"] for c in r["value"]["choices"]}
    options = [c for cs in CLASSES.values() for c in cs]
    assert predicted and predicted < set(options)

    page = open_task(chromium, ls, project_id, task["id"])
    page.get_by_text("Which concepts does this item show?").wait_for()
    # the item's class, and the run's whole list grouped by class, the model's labels pre-ticked
    page.get_by_text("Class: cooking").wait_for()
    for cls in CLASSES:
        page.get_by_text(f"Concepts of {cls}").wait_for()
    boxes = page.locator("input.ant-checkbox-input")
    shown = stable(page, lambda: {b.get_attribute("name"): b.is_checked() for b in boxes.all()},
                   {c: c in predicted for c in options})
    assert shown == {c: c in predicted for c in options}
    keep_screenshot(page, tmp_path, "labelstudio-review.png")

    # the reviewer ticks a concept the model missed, unticks one it got wrong, and types a missing one
    missed = next(c for c in CLASSES["cooking"] if c not in predicted)
    wrong = sorted(predicted)[0]
    page.locator(f"input.ant-checkbox-input[name='{missed}']").click()
    page.locator(f"input.ant-checkbox-input[name='{wrong}']").click()
    submit_with_text(page, ls, task["id"], "Missing concepts, one per line", "knife work")

    ls_pull(run, url=ls.url, **FAST)
    mine = {r["concept"]: r["label"] for r in read_table(run / "verified.parquet", VERIFIED).to_pylist()
            if r["item_id"] == "cooking-0"}
    assert set(mine) == set(options)
    assert mine[missed] == "present" and mine[wrong] == "absent"
    assert all(mine[c] == "present" for c in predicted - {wrong})
    typed = [r["concept"] for r in read_table(run / "human_candidates.parquet", HUMAN_CANDIDATES).to_pylist()]
    assert typed == ["knife work"]


def test_concept_review_in_the_browser(ls, tiny_run, chromium, tmp_path):
    run = tiny_run()
    pushed = ls_push(run, url=ls.url, review="concept", budget=1, **FAST)
    with LabelStudioClient(ls.url) as client:
        task = next(iter(client.tasks(pushed["project_id"])))
    concept = task["data"]["concept"]
    page = open_task(chromium, ls, pushed["project_id"], task["id"])
    page.get_by_text("Does this item show the concept below?").wait_for()
    page.get_by_text(concept, exact=True).first.wait_for()
    page.get_by_text(task["data"]["text"]).first.wait_for()
    keep_screenshot(page, tmp_path, "labelstudio-concept.png")
    choose(page, "unsure")
    submit(page, ls, task["id"])
    page.close()

    ls_pull(run, url=ls.url, **FAST)
    rows = [r for r in read_table(run / "verified.parquet", VERIFIED).to_pylist() if r["review"] == "concept"]
    assert [(r["item_id"], r["concept"], r["label"]) for r in rows] == [(task["data"]["item_id"], concept, "unsure")]


def test_concept_list_review_in_the_browser(ls, tiny_run, chromium, tmp_path):
    run = tiny_run()
    pushed = ls_push(run, url=ls.url, review="concept-list", **FAST)
    task = _task(ls, pushed["project_id"], "concept-list:cooking:spices")
    page = open_task(chromium, ls, pushed["project_id"], task["id"])
    page.get_by_text("Keep, reject or edit this concept for the class:").wait_for()
    # the class's list and, for this concept, items that score highest and items near the labelling cut
    page.get_by_text("Highest scores", exact=True).wait_for()
    page.get_by_text("Near the labelling cut", exact=True).wait_for()
    page.get_by_text("recipe", exact=True).first.wait_for()
    keep_screenshot(page, tmp_path, "labelstudio-concept-list.png")
    choose(page, "edit")
    submit_with_text(page, ls, task["id"], "New wording (when editing)", "ground spices")

    ls_pull(run, url=ls.url, **FAST)
    rows = [r for r in read_table(run / "verified.parquet", VERIFIED).to_pylist() if r["review"] == "concept-list"]
    assert [(r["class_name"], r["concept"], r["label"], r["edited_concept"]) for r in rows] == [
        ("cooking", "spices", "edit", "ground spices")]
    cands = read_table(run / "human_candidates.parquet", HUMAN_CANDIDATES).to_pylist()
    assert [(c["concept"], c["kind"], c["replaces"]) for c in cands] == [("ground spices", "edit", "spices")]
