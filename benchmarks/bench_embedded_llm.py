"""Peak generation throughput of the embedded llama.cpp server on this machine, over parallel slots and threads,
the way llama.cpp's batched bench measures it: P concurrent requests decoding together, aggregate completion
tokens per second of wall time.

For every (threads, slots) setting the server is started fresh (``python -m conceptkit.pipelines.generation.server
--parallel P --threads T``), warmed with one request, then P requests are sent at once, each asking for a long
list at temperature 0 with ``max_tokens`` (default 128); tokens/s = the sum of their completion tokens / the wall
time from the first send to the last answer. Prompt tokens are reported beside it. ``--build-manifest RUN``
adds a line for a finished build: its completion tokens over its generation stage time, and that as a share of
the peak measured here.

    python benchmarks/bench_embedded_llm.py --threads 1 2 --slots 1 2 4 8 [--build-manifest runs/demo]

``--demo-builds N`` then builds ``configs/demo.yaml`` N times each way, alternating, from an empty LLM cache every
time (a temporary cache directory and run, removed afterwards): with the shared prompt prefix copied into every
slot (the default) and with ``--no-llm-share-prefix``; each build's completion tokens over its generation time,
and that as a share of the peak measured in the same call.

``--builds N --workload demo|dbpedia [--before DIR]`` builds the workload N times with this tree and, with
``--before``, N times with an earlier tree (``git archive REV conceptkit pipelines annotators schemas | tar -x -C
DIR``; it runs from outside the repository with DIR on PYTHONPATH, so the editable install does not shadow it),
alternating, each from an empty LLM cache, and measures the peak again after them. ``dbpedia`` is the eval
benchmark's build (28 requests; `bench_eval.py dbpedia` prepares its items and embeddings, which are reused).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

PROMPT = ("List 60 different everyday objects, one per line, numbered, with a short description of each. "
          "Do not stop early.")


def ask(port: int, max_tokens: int) -> dict:
    body = json.dumps({"model": "x", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
                       "temperature": 0}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        return json.loads(r.read())["usage"]


def measure(threads: int, slots: int, port: int, max_tokens: int) -> dict:
    from conceptkit.pipelines.generation.server import is_healthy

    proc = subprocess.Popen([sys.executable, "-m", "conceptkit.pipelines.generation.server", "--port", str(port),
                             "--parallel", str(slots), "--threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not is_healthy(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server (threads {threads}, slots {slots}) did not start")
            time.sleep(0.5)
        ask(port, 8)  # warm-up
        t = time.perf_counter()
        with cf.ThreadPoolExecutor(slots) as pool:
            usages = list(pool.map(lambda _: ask(port, max_tokens), range(slots)))
        wall = time.perf_counter() - t
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    completion = sum(u["completion_tokens"] for u in usages)
    return {"threads": threads, "slots": slots, "completion_tokens": completion,
            "prompt_tokens": sum(u["prompt_tokens"] for u in usages), "wall_s": round(wall, 2),
            "tokens_s": round(completion / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--build-manifest", help="a run directory whose build's generation to compare")
    parser.add_argument("--demo-builds", type=int, default=0, metavar="N",
                        help="also build configs/demo.yaml N times with and N times without the shared prefix")
    parser.add_argument("--builds", type=int, default=0, metavar="N", help="build --workload N times (and --before)")
    parser.add_argument("--workload", choices=("demo", "dbpedia"), default="demo")
    parser.add_argument("--before", type=Path, help="an earlier tree (conceptkit/ with its packages) to build with too")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores; {datetime.now(timezone.utc).isoformat(timespec='minutes')}; "
          f"command: python benchmarks/bench_embedded_llm.py {' '.join(sys.argv[1:])}\n", flush=True)
    print("| threads | slots | completion tokens | wall (s) | tokens/s |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    for threads in args.threads:
        for slots in args.slots:
            row = measure(threads, slots, args.port, args.max_tokens)
            rows.append(row)
            print(f"| {threads} | {slots} | {row['completion_tokens']} | {row['wall_s']} | {row['tokens_s']} |",
                  flush=True)
    peak = max(rows, key=lambda r: r["tokens_s"])
    print(f"\npeak: {peak['tokens_s']} tokens/s at {peak['threads']} threads x {peak['slots']} slots")
    if args.build_manifest:
        manifest = json.loads((Path(args.build_manifest) / "manifest.json").read_text())
        tokens = manifest["llm"]["completion_tokens"]
        seconds = manifest["timings_s"].get("generate") or manifest["timings_s"].get("rounds")
        if tokens and seconds:
            print(f"build {args.build_manifest}: {tokens} completion tokens in {seconds:.1f} s of generation = "
                  f"{tokens / seconds:.2f} tokens/s, {tokens / seconds / peak['tokens_s']:.2f} of the peak")
    if args.demo_builds:
        print("\n| demo build (fresh LLM cache) | generation (s) | completion tokens | tokens/s | share of the peak |")
        print("|---|---:|---:|---:|---:|")
        for _ in range(args.demo_builds):
            for share in (True, False):
                build = workload_build("demo", None, () if share else ("--no-llm-share-prefix",))
                print(f"| {'shared prefix' if share else '--no-llm-share-prefix'} | {build['generate_s']:.1f} | "
                      f"{build['completion_tokens']} | {build['tokens_s']:.2f} | {build['tokens_s'] / peak['tokens_s']:.2f} |",
                      flush=True)
    if args.builds:
        print(f"\n| {args.workload} build (fresh LLM cache) | generation (s) | requests | prompt + completion tokens | "
              f"completion tokens/s | share of the peak before ({peak['tokens_s']}) |")
        print("|---|---:|---:|---:|---:|---:|")
        done = []
        for _ in range(args.builds):
            for tree in ([None, args.before] if args.before else [None]):
                build = workload_build(args.workload, tree)
                done.append((tree, build))
                print(f"| {'before' if tree else 'now'} | {build['generate_s']:.1f} | {build['requests']} | "
                      f"{build['prompt_tokens']} + {build['completion_tokens']} | {build['tokens_s']:.2f} | "
                      f"{build['tokens_s'] / peak['tokens_s']:.2f} |", flush=True)
        after = measure(peak["threads"], peak["slots"], args.port, args.max_tokens)
        print(f"\npeak again after the builds: {after['tokens_s']} tokens/s; shares against it: "
              + ", ".join(f"{'before' if tree else 'now'} {b['tokens_s'] / after['tokens_s']:.2f}" for tree, b in done))
    return 0


def workload_build(workload: str, tree: Path | None, flags: tuple[str, ...] = ()) -> dict:
    """One build of ``workload`` (with extra build ``flags``) from an empty LLM cache (DBpedia: embeddings copied
    from the eval benchmark's cache), in a temporary directory of this call's own, removed afterwards; ``tree``:
    an earlier checkout to run instead of this one."""
    import shutil
    import tempfile

    root = Path(__file__).resolve().parents[1]
    work = Path(tempfile.mkdtemp(prefix="ck-llm-bench-"))
    try:
        if workload == "demo":
            command = ["build", "--config", str(root / "configs" / "demo.yaml"),
                       "--items", str(root / "examples" / "demo" / "items.csv")]  # the config's path is relative
        else:
            eval_cache = root / "benchmarks" / ".cache" / "eval"
            if not (eval_cache / "dbpedia" / "train.csv").exists():
                raise SystemExit("run `python benchmarks/bench_eval.py dbpedia` first (it prepares the items)")
            if (eval_cache / "cache" / "embeddings").exists():
                shutil.copytree(eval_cache / "cache" / "embeddings", work / "cache" / "embeddings")
            command = ["build", "--items", str(eval_cache / "dbpedia" / "train.csv"), "--holdout", "0",
                       "--domain", "Wikipedia article abstracts"]
        env = dict(os.environ, PYTHONPATH=str(tree.resolve())) if tree else None
        subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "-q", *command, *flags, "--out",
                        str(work / "run"), "--cache-dir", str(work / "cache")],
                       cwd=work if tree else root, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
        manifest = json.loads((work / "run" / "manifest.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    llm = manifest["llm"]
    seconds = manifest["timings_s"]["generate"]
    return {"generate_s": seconds, "completion_tokens": llm["completion_tokens"], "prompt_tokens": llm["prompt_tokens"],
            "requests": llm["calls"], "tokens_s": llm["completion_tokens"] / seconds}


if __name__ == "__main__":
    sys.exit(main())
