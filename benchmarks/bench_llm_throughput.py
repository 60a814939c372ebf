"""Throughput of ``conceptkit.pipelines.generation.client.ChatClient`` against a loopback fake OpenAI server with a fixed latency.

In: nothing but the repo (the fake server is ``tests/fake_llm.py``). Out: a Markdown table on stdout with
requests/s and the fraction of the latency bound (concurrency / latency) per concurrency level; paste it into
benchmarks/README.md. No cache; the client retries as a build would (``--max-retries``, default 4), and the table
counts retries and requests that failed anyway.

``--fake`` picks the fake server set-ups (``VARIANTS``): the test fixture as shipped, and with two socket-level
fixes (a listen backlog above socketserver's 5, and TCP_NODELAY on its replies) that remove the fixture's own
limits, so that what remains is the client. The fake server runs in a child process by default so that its Python threads do not share a GIL with the
client's event loop; ``--server thread`` runs it in-process instead. The table gives the CPU used by each side
during the measured run (in cores: CPU seconds / wall seconds): a side near 1.0 is saturated, since each is one
Python process bound by its GIL.
"""

from __future__ import annotations

import argparse
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


# How the fake server is set up, from the test fixture as shipped to one with two socket-level fixes.
VARIANTS = {
    "shipped": "FakeLLM as shipped",
    "backlog": "FakeLLM + listen backlog 1024",
    "tuned": "FakeLLM + backlog 1024 + TCP_NODELAY",
}


def _open(latency_s: float, variant: str):
    from fake_llm import FakeLLM

    fake = FakeLLM(latency_s=latency_s)
    server = fake._server  # noqa: SLF001 - benchmark-only tuning of the test fixture's socket
    if variant in ("backlog", "tuned"):
        # socketserver listens with a backlog of 5 (request_queue_size); a burst of new connections beyond it
        # waits for a SYN retransmit (~1 s) or fails. Linux lets listen() be called again to raise the backlog.
        server.socket.listen(1024)
    if variant == "tuned":
        # http.server writes the status line + headers and then the body in two sends; with Nagle on, the body
        # waits for the client's delayed ACK (~40 ms on Linux). StreamRequestHandler has a switch for it.
        server.RequestHandlerClass.disable_nagle_algorithm = True
    return fake


def _serve(latency_s: float, variant: str, conn, stop) -> None:
    with _open(latency_s, variant) as fake:
        conn.send(fake.base_url)
        while not stop.is_set():
            if conn.poll(0.05):  # any message asks for the process CPU time so far
                conn.recv()
                conn.send(time.process_time())
        conn.send(fake.requests)


class FakeServer:
    """FakeLLM in a child process (``process``) or in this one (``thread``)."""

    def __init__(self, latency_s: float, mode: str, variant: str = "shipped") -> None:
        self.latency_s = latency_s
        self.mode = mode
        self.variant = variant
        self.requests = 0

    def __enter__(self) -> "FakeServer":
        if self.mode == "thread":
            self._fake = _open(self.latency_s, self.variant).__enter__()
            self.base_url = self._fake.base_url
        else:
            ctx = mp.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._stop = ctx.Event()
            self._proc = ctx.Process(target=_serve, args=(self.latency_s, self.variant, child, self._stop), daemon=True)
            self._proc.start()
            if not self._conn.poll(60):
                raise RuntimeError("the fake server process did not start")
            self.base_url = self._conn.recv()
        return self

    def cpu_s(self) -> float | None:
        """CPU seconds used so far by the server process (None when it runs in this process)."""
        if self.mode == "thread":
            return None
        self._conn.send("cpu")
        return self._conn.recv()

    def __exit__(self, *exc) -> None:
        if self.mode == "thread":
            self.requests = self._fake.requests
            self._fake.__exit__(None, None, None)
        else:
            self._stop.set()
            self.requests = self._conn.recv()
            self._proc.join(timeout=10)


def jobs_for(n: int):
    from conceptkit.pipelines.generation.prompts import build_requests, concepts_schema

    # Distinct messages, as in a real build (the fake answers the same way whatever the class).
    reqs = build_requests([f"class {i}" for i in range(n)], family="text", domain="benchmark texts", n=10)[:n]
    return [(r.messages(), concepts_schema(r.n), r.sample) for r in reqs]


def run_client(base_url: str, concurrency: int, jobs, *, max_retries: int) -> tuple[float, list]:
    from conceptkit.pipelines.generation.client import ChatClient, ClientSettings

    settings = ClientSettings(base_url=base_url, model="fake-model", concurrency=concurrency, timeout_s=60.0,
                              max_retries=max_retries, cache_path=None)
    client = ChatClient(settings)
    started = time.perf_counter()
    results = client.run_many(jobs)
    return time.perf_counter() - started, results


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
    parser.add_argument("--fake", choices=list(VARIANTS), nargs="+", default=["shipped", "tuned"],
                        help="fake server set-ups to measure (see VARIANTS)")
    parser.add_argument("--max-retries", type=int, default=4, help="ChatClient retries (the build default is 4)")
    args = parser.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    jobs = jobs_for(args.requests)
    rows = []
    for variant in args.fake:
        server_label = VARIANTS[variant]
        for c in args.concurrency:
            bound = c / args.latency
            with FakeServer(args.latency, args.server, variant) as server:
                warm = jobs[: min(len(jobs), 2 * c)]  # warm-up: imports, first connections
                run_client(server.base_url, c, warm, max_retries=args.max_retries)
                cpu0, client0 = server.cpu_s(), time.process_time()
                wall, results = run_client(server.base_url, c, jobs, max_retries=args.max_retries)
                client_cpu = (time.process_time() - client0) / wall
                server_cpu = None if cpu0 is None else (server.cpu_s() - cpu0) / wall
            errors = Counter(r.error for r in results if r.error is not None)
            retries = sum(r.retries for r in results)
            lat = [r.latency_s * 1000 for r in results if r.error is None]
            rps = len(jobs) / wall
            rows.append((server_label, "ChatClient", c, wall, rps, bound, errors, retries, pct(lat, 0.5),
                         pct(lat, 0.95), client_cpu, server_cpu))
            print(f"# {server_label}, concurrency {c}: {rps:.1f} req/s in {wall:.1f} s, errors {dict(errors)}, "
                  f"retries {retries}",
                  file=sys.stderr, flush=True)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores ({platform.platform()}), python "
          f"{platform.python_version()}; load average at end {os.getloadavg()[0]:.2f}; "
          f"{datetime.now(timezone.utc).strftime('%Y-%m-%d')}; fake server in a {args.server}; "
          f"{args.requests} requests per row, latency {args.latency * 1000:.0f} ms, ChatClient max_retries "
          f"{args.max_retries}\n")
    print("| server | client | concurrency | wall s | requests/s | bound (c / latency) | fraction of bound "
          "| failed | retries | p50 ms | p95 ms | client CPU | server CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for server_label, client, c, wall, rps, bound, errors, retries, p50, p95, client_cpu, server_cpu in rows:
        err = ", ".join(f"{k}: {v}" for k, v in errors.items()) or "0"
        p = "" if p50 is None else f"{p50:.0f}"
        q = "" if p95 is None else f"{p95:.0f}"
        print(f"| {server_label} | {client} | {c} | {wall:.1f} | {rps:.1f} | {bound:.0f} | {rps / bound:.2f} "
              f"| {err} | {'' if retries is None else retries} | {p} | {q} "
              f"| {client_cpu:.2f} | {'' if server_cpu is None else f'{server_cpu:.2f}'} |")


if __name__ == "__main__":
    main()
