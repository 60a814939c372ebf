"""Progress lines: counts, rate and ETA per stage; periodic log lines off a terminal; silent with -q."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from conftest import DEMO_ANSWERS, demo_rows, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.progress import Progress


def test_lines_count_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="conceptkit.progress")
    with Progress(4, "generate", unit="request", every_s=0.0) as p:
        p.update(1)
        assert "generate: 1/4 requests (25%)" in p.line() and "ETA" in p.line()
        p.update(3)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("generate: 1/4 requests (25%)") and "ETA" in lines[0]
    assert lines[-1].startswith("generate: 4/4 requests (100%)") and "done in" in lines[-1]
    assert len(lines) == 2  # one for the update below the total (every_s=0), one final line, never twice


def test_quiet_when_the_logger_is_above_info(caplog):
    caplog.set_level(logging.WARNING, logger="conceptkit.progress")
    with Progress(2, "embed items", every_s=0.0) as p:
        p.update(2)
    assert not caplog.records


def _build(tmp_path, fake, *flags):
    tmp_path.mkdir(parents=True)
    rows = demo_rows(per_class=4, classes=["cooking", "weather"])
    items = write_csv(tmp_path / "items.csv", rows)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "conceptkit.pipelines.cli.main", *flags, "build", "--items", str(items),
         "--out", str(tmp_path / "runs" / "p"), "--cache-dir", str(tmp_path / "cache"), "--llm-base-url",
         fake.base_url, "--llm-model", "fake-model", "--k-per-class", "2"],
        capture_output=True, text=True, env=env, timeout=300)


def test_a_build_shows_each_stage_and_quiet_shows_none(tmp_path):
    with FakeLLM(DEMO_ANSWERS) as fake:
        done = _build(tmp_path / "a", fake)
        quiet = _build(tmp_path / "b", fake, "-q")
    assert done.returncode == 0, done.stderr
    for needle in ("generate: ", " requests (100%)", "embed items: 8/8 items (100%)", "annotate: 8/8 items (100%)"):
        assert needle in done.stderr, done.stderr
    assert quiet.returncode == 0, quiet.stderr
    assert "requests (100%)" not in quiet.stderr and "embed items" not in quiet.stderr
    assert "conceptkit build: run" in quiet.stdout and "(the parts add up to the total)" in quiet.stdout
