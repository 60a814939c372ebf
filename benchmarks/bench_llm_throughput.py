"""Throughput of ``pipelines.llm.ChatClient`` against a loopback fake OpenAI server with a fixed latency.

In: nothing but the repo (the fake server is ``tests/fake_llm.py``). Out: a Markdown table on stdout with
requests/s and the fraction of the latency bound (concurrency / latency) per concurrency level; paste it into
benchmarks/README.md. No cache, no retries expected (errors are counted in the table).

The fake server runs in a child process by default so that its Python threads do not share a GIL with the
client's event loop; ``--server thread`` runs it in-process instead. ``--raw`` adds a diagnostic row per level
measured with a bare ``httpx`` client (no openai SDK, no ChatClient), which tells client overhead apart from the
server's own ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _open(latency_s: float, backlog: int | None):
    from fake_llm import FakeLLM

    fake = FakeLLM(latency_s=latency_s)
    if backlog:
        # socketserver listens with a backlog of 5 (request_queue_size); a burst of new connections beyond it
        # waits for a SYN retransmit (~1 s). Linux lets listen() be called again to raise the backlog.
        fake._server.socket.listen(backlog)  # noqa: SLF001
    return fake


def _serve(latency_s: float, backlog: int | None, conn, stop) -> None:
    with _open(latency_s, backlog) as fake:
        conn.send(fake.base_url)
        stop.wait()
        conn.send(fake.requests)


class FakeServer:
    """FakeLLM in a child process (``process``) or in this one (``thread``)."""

    def __init__(self, latency_s: float, mode: str, backlog: int | None = None) -> None:
        self.latency_s = latency_s
        self.mode = mode
        self.backlog = backlog
        self.requests = 0

    def __enter__(self) -> "FakeServer":
        if self.mode == "thread":
            self._fake = _open(self.latency_s, self.backlog).__enter__()
            self.base_url = self._fake.base_url
        else:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._stop = ctx.Event()
            self._proc = ctx.Process(target=_serve, args=(self.latency_s, self.backlog, child, self._stop), daemon=True)
            self._proc.start()
            if not self._conn.poll(60):
                raise RuntimeError("the fake server process did not start")
            self.base_url = self._conn.recv()
        return self

    def __exit__(self, *exc) -> None:
        if self.mode == "thread":
            self.requests = self._fake.requests
            self._fake.__exit__(None, None, None)
        else:
            self._stop.set()
            self.requests = self._conn.recv()
            self._proc.join(timeout=10)


def jobs_for(n: int):
    from pipelines.prompts import build_requests, concepts_schema

    # Distinct messages, as in a real build (the fake answers the same way whatever the class).
    reqs = build_requests([f"class {i}" for i in range(n)], family="text", domain="benchmark texts", n=10)[:n]
    return [(r.messages(), concepts_schema(r.n), r.sample) for r in reqs]


def run_client(base_url: str, concurrency: int, jobs) -> tuple[float, list]:
    from pipelines.llm import ChatClient, ClientSettings

    settings = ClientSettings(base_url=base_url, model="fake-model", concurrency=concurrency, timeout_s=60.0,
                              max_retries=0, cache_path=None)
    client = ChatClient(settings)
    started = time.perf_counter()
    results = client.run_many(jobs)
    return time.perf_counter() - started, results


def run_raw(base_url: str, concurrency: int, jobs) -> tuple[float, int]:
    """The same POSTs through a bare httpx.AsyncClient: the server's ceiling without the SDK's overhead."""
    import httpx

    async def go() -> tuple[float, int]:
        gate = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as http:
            async def one(job):
                async with gate:
                    try:
                        r = await http.post("/chat/completions", json={"model": "fake-model", "messages": job[0]})
                    except httpx.HTTPError:
                        return False
                    return r.status_code == 200

            started = time.perf_counter()
            ok = await asyncio.gather(*(one(j) for j in jobs))
            return time.perf_counter() - started, sum(ok)

    return asyncio.run(go())


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--latency", type=float, default=0.2, help="fake server latency per request, seconds")
    parser.add_argument("--server", choices=["process", "thread"], default="process")
    parser.add_argument("--backlog", type=int, nargs="+", default=[0, 1024],
                        help="listen backlogs to measure; 0 = FakeLLM as shipped (socketserver's 5)")
    parser.add_argument("--raw", action="store_true", help="also measure a bare httpx client (diagnostic)")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    jobs = jobs_for(args.requests)
    rows = []
    for backlog in args.backlog:
        server_label = "FakeLLM as shipped (backlog 5)" if not backlog else f"FakeLLM, backlog {backlog}"
        for c in args.concurrency:
            bound = c / args.latency
            with FakeServer(args.latency, args.server, backlog or None) as server:
                run_client(server.base_url, c, jobs[: min(len(jobs), 2 * c)])  # warm-up: imports, connections
                wall, results = run_client(server.base_url, c, jobs)
            errors = Counter(r.error for r in results if r.error is not None)
            lat = [r.latency_s * 1000 for r in results if r.error is None]
            rps = len(jobs) / wall
            rows.append((server_label, "ChatClient", c, wall, rps, bound, errors, pct(lat, 0.5), pct(lat, 0.95)))
            print(f"# {server_label}, concurrency {c}: {rps:.1f} req/s in {wall:.1f} s, errors {dict(errors)}",
                  file=sys.stderr, flush=True)
            if args.raw:
                with FakeServer(args.latency, args.server, backlog or None) as server:
                    run_raw(server.base_url, c, jobs[: min(len(jobs), 2 * c)])
                    wall, ok = run_raw(server.base_url, c, jobs)
                failed = Counter({"non-200": len(jobs) - ok}) if ok < len(jobs) else Counter()
                rows.append((server_label, "bare httpx", c, wall, len(jobs) / wall, bound, failed, None, None))
                print(f"# raw concurrency {c}: {len(jobs) / wall:.1f} req/s", file=sys.stderr, flush=True)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}), python "
          f"{platform.python_version()}; load average at end {os.getloadavg()[0]:.2f}; "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}; fake server in a {args.server}; "
          f"{args.requests} requests per row, latency {args.latency * 1000:.0f} ms\n")
    print("| server | client | concurrency | wall s | requests/s | bound (c / latency) | fraction of bound "
          "| errors | p50 ms | p95 ms |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for server_label, client, c, wall, rps, bound, errors, p50, p95 in rows:
        err = ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"
        p = "" if p50 is None else f"{p50:.0f}"
        q = "" if p95 is None else f"{p95:.0f}"
        print(f"| {server_label} | {client} | {c} | {wall:.1f} | {rps:.1f} | {bound:.0f} | {rps / bound:.2f} "
              f"| {err} | {p} | {q} |")


if __name__ == "__main__":
    main()
