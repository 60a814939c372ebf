"""Generation under faults, budgets and kills, through whole builds against the loopback fake LLM."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import DEMO_ANSWERS, ROOT, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import read_table
from conceptkit.schemas.llm_calls import LLM_CALLS
from conceptkit.schemas.rejects import REJECTS

CLASSES = ["cooking", "sports", "weather", "travel"]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("items")
    return write_csv(tmp / "items.csv", demo_rows(per_class=5, classes=CLASSES))


def test_every_fault_kind_run_completes(tmp_path, items):
    faults = ["429", "500", "503", "hang", "reset", "malformed", "empty", "schema", "repeat", "400"]
    with FakeLLM(DEMO_ANSWERS, faults=faults, hang_s=2.5) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, llm={"timeout_s": 1.0, "max_retries": 3},
                                               generation={"family": "lfcbm"}))
        summary = run_build(cfg)
    out = cfg.out_dir()
    concepts = read_table(out / "concepts.parquet", CONCEPTS).to_pylist()
    rejects = read_table(out / "rejects.parquet", REJECTS).to_pylist()
    calls = read_table(out / "llm_calls.parquet", LLM_CALLS).to_pylist()
    covered = {c for row in concepts for c in row["classes"]}
    explicit = {r["key"] for r in rejects if r["stage"] == "select"}
    assert set(CLASSES) <= covered | explicit  # every class gets concepts or an explicit reject
    assert len({c["concept"] for c in concepts}) == len(concepts)  # no duplicate concept rows
    gen_reasons = sorted(r["reason"] for r in rejects if r["stage"] == "generate")
    assert gen_reasons == ["empty", "http_400", "malformed_json", "schema_violation"]
    # 429, 500, 503, the hang (timeout) and the reset were retried: five retries counted in the manifest.
    assert summary.llm["retries"] == 5 and sum(c["retries"] for c in calls) == 5
    assert len(calls) == len(CLASSES) * 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["llm"]["retries"] == 5 and manifest["llm"]["errors"] == 1


def test_max_cost_stops_spending(tmp_path, items):
    with FakeLLM(DEMO_ANSWERS) as fake:
        # 50 + 20 tokens a call at 1000 USD per million tokens is 0.07 USD; the ceiling allows a few calls only.
        cfg = load_config(None, fake_overrides(
            fake, tmp_path, items,
            llm={"max_cost": 0.5, "max_tokens": 100, "concurrency": 1,
                 "prices": {"fake-model": {"prompt_per_million": 1000, "completion_per_million": 1000}}}))
        summary = run_build(cfg)
        served = fake.completions
    assert summary.llm["budget_stops"] > 0
    assert summary.llm["cost_usd"] <= 0.5 and served == summary.llm["calls"]
    rejects = read_table(cfg.out_dir() / "rejects.parquet", REJECTS).to_pylist()
    assert any(r["reason"] == "budget_exceeded" for r in rejects)


def test_penalties_and_seed_reach_the_endpoint(tmp_path, items):
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, llm={
            "frequency_penalty": 0.5, "presence_penalty": 0.25, "samples": 2, "seed": 7}))
        run_build(cfg)
        bodies = fake.bodies
    assert {b["frequency_penalty"] for b in bodies} == {0.5} and {b["presence_penalty"] for b in bodies} == {0.25}
    assert {b["seed"] for b in bodies} == {7, 8}  # sample i uses seed + i
    assert all(b["response_format"]["type"] == "json_schema" for b in bodies)


def test_rate_limit_spaces_requests(tmp_path, items):
    from conceptkit.pipelines.generation.client import ChatClient, ClientSettings

    with FakeLLM(DEMO_ANSWERS) as fake:
        client = ChatClient(ClientSettings(base_url=fake.base_url, model="m", requests_per_minute=120))
        started = time.perf_counter()
        client.run_many([([{"role": "user", "content": "x"}], None, s) for s in range(124)])
        elapsed = time.perf_counter() - started
    assert elapsed >= 1.5  # 120 from the full bucket, then 4 more at 2 per second


def test_api_key_never_leaks(tmp_path, items, monkeypatch, capsys):
    secret = "sk-test-DO-NOT-LEAK-0123456789"
    monkeypatch.setenv("CK_SECRET_KEY", secret)
    from conceptkit.pipelines.cli.main import main

    with FakeLLM(DEMO_ANSWERS, faults=["400"]) as fake:
        out = tmp_path / "runs" / "s"
        rc = main(["-vv", "build", "--items", str(items), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                   "--llm-base-url", fake.base_url, "--llm-model", "fake-model", "--llm-api-key-env", "CK_SECRET_KEY"])
        assert fake.headers[0]["Authorization"] == f"Bearer {secret}"  # it was used...
    captured = capsys.readouterr()
    assert rc == 0
    assert secret not in captured.out + captured.err  # ...but never logged
    for path in [*tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_kill_9_mid_generation_then_rerun(tmp_path, items):
    """A killed build leaves no run directory; the rerun reuses every cached answer and matches a clean run."""
    with FakeLLM(DEMO_ANSWERS, latency_s=0.3) as fake:
        overrides = fake_overrides(fake, tmp_path, items, llm={"concurrency": 1},
                                   generation={"family": "lfcbm"})
        (tmp_path / "overrides.json").write_text(json.dumps(overrides))
        code = ("import json, sys; from conceptkit.pipelines.config import load_config; from conceptkit.pipelines.build import run_build; "
                f"run_build(load_config(None, json.load(open({str(tmp_path / 'overrides.json')!r}))))")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ))
        deadline = time.monotonic() + 120
        while fake.completions < 5 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before_kill = fake.completions
        n_requests = len(CLASSES) * 3
        assert 5 <= done_before_kill < n_requests
        assert not (tmp_path / "runs" / "t").exists()  # nothing half-written under the run's name
        summary = run_build(load_config(None, overrides))
        # Only the request in flight at the kill (concurrency 1) may be asked twice.
        assert fake.completions - done_before_kill <= n_requests - done_before_kill + 1
        assert summary.llm["cache_hits"] >= done_before_kill - 1
    with FakeLLM(DEMO_ANSWERS) as fake2:
        clean = load_config(None, fake_overrides(fake2, tmp_path / "clean", items, generation={"family": "lfcbm"}))
        run_build(clean)
    killed_rows = read_table(tmp_path / "runs" / "t" / "concepts.parquet", CONCEPTS).drop(["embedding"]).to_pylist()
    clean_rows = read_table(clean.out_dir() / "concepts.parquet", CONCEPTS).drop(["embedding"]).to_pylist()
    assert killed_rows == clean_rows
