"""A reviewer's view: headless Chromium logs in to the session's Label Studio, opens a pushed item task, and sees
the model's concepts pre-ticked. The screenshot is the README's picture of the labeling UI
(docs/labelstudio-review.png; refresh it with CONCEPTKIT_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conceptkit.annotators.labelstudio import LabelStudioClient
from conceptkit.pipelines.cli.labelstudio import ls_push
from labelstudio_fixtures import CLASSES

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "labelstudio-review.png"
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


def test_reviewer_sees_predicted_concepts_pre_ticked(ls, tiny_run, chromium, tmp_path):
    run = tiny_run(texts={"cooking-0": "Toast the cumin seeds in a dry pan, then simmer them with the onions "
                                       "before the dish goes into a hot oven."})
    project_id = ls_push(run, url=ls.url, max_retries=1)["project_id"]
    with LabelStudioClient(ls.url) as client:
        task = next(t for t in client.tasks(project_id) if t["data"]["item_id"] == "cooking-0")
    predicted = [c for result in task["predictions"][0]["result"] for c in result["value"]["choices"]]
    options = [c for cs in CLASSES.values() for c in cs]  # the run's whole list, by class
    assert predicted and set(predicted) < set(options)

    page = chromium.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(30_000)
    page.goto(f"{ls.url}/user/login/")
    page.fill("input[name=email]", ls.username)
    page.fill("input[name=password]", ls.password)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    page.goto(f"{ls.url}/projects/{project_id}/data?task={task['id']}")
    # The checklist: one antd checkbox per candidate concept, named after it (its label also shows a hotkey).
    page.get_by_text("Which concepts does this item show?").wait_for()
    boxes = page.locator("input.ant-checkbox-input")
    boxes.nth(len(options) - 1).wait_for(state="attached")
    # The editor may re-render the checklist once more after it first appears (seen under CPU load): poll until
    # the rendered checklist is stable instead of reading it once.
    shown: dict = {}
    for _ in range(60):
        shown = {box.get_attribute("name"): box.is_checked() for box in boxes.all()}
        if set(shown) == set(options):
            break
        page.wait_for_timeout(500)
    shot = tmp_path / "review.png"
    page.screenshot(path=str(shot))
    page.close()
    assert set(shown) == set(options)
    assert {c for c, checked in shown.items() if checked} == set(predicted)
    # The committed picture is refreshed on request (or when missing), so a test run leaves the tree clean.
    if os.environ.get("CONCEPTKIT_UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
