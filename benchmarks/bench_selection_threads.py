"""Facility location with 1 thread against all threads (``conceptkit.submodular``'s thread pool and the BLAS
threads together), same data, each measurement in its own subprocess.

Data: ``--n`` embeddings of synthetic short texts (bench_annotate_texts) from the packaged model (or
``--model``), on the GPU when there is one (the device machine) else the CPU; cached as .npy under
benchmarks/.cache. Scenarios: n = 10,000 from the precomputed similarity (k = 1,000), n = 50,000 with rows on
demand (k = 5,000). Lazy greedy; optimisation time only (the similarity and a 2,048-point warm-up fit, which
compiles numba's loops, are outside the timer).

    python3 benchmarks/bench_selection_threads.py --model benchmarks/.cache/gpu_model --threads 1 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
CACHE = ROOT / "benchmarks" / ".cache"
import conceptkit  # noqa: E402

if not (Path(conceptkit.__path__[0]) / "annotators").exists():  # not installed (the device machine): map the
    conceptkit.__path__.append(str(ROOT))                          # root folders (spawned workers run this too)


def embeddings(n: int, model: str) -> Path:
    import numpy as np

    path = CACHE / f"synthetic_embeddings_{n}.npy"
    if path.exists():
        return path
    from bench_annotate_texts import synthetic_items

    _, texts, _ = synthetic_items(n)
    import torch

    if torch.cuda.is_available():
        from conceptkit.annotators.cuda_encoder import CudaEncoder

        enc = CudaEncoder(model)
        x = enc.encode(texts)
        enc.close()
    else:
        from sentence_transformers import SentenceTransformer

        x = SentenceTransformer(model, device="cpu").encode(texts, normalize_embeddings=True, batch_size=64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, x.astype(np.float32))
    return path


def child(path: str, n: int, threads: int) -> None:
    import numpy as np
    from bench_selection import warm_ours

    from conceptkit.pipelines.selection import submodular as sm

    sm.set_threads(threads)
    x = np.load(path)[:n]
    k = n // 10
    dense = n * n * 4 <= 2 << 30
    similarity = np.maximum(x @ x.T, 0) if dense else None
    warm_ours(x)  # numba's compile, outside the timer
    t = time.perf_counter()
    if dense:
        sel = sm.lazy_greedy(sm.FacilityLocation(similarity, symmetric=True), k)
    else:
        sel = sm.lazy_greedy(sm.FacilityLocation.from_embeddings(x), k)
    print(json.dumps({"n": n, "k": k, "threads": threads, "seconds": round(time.perf_counter() - t, 3),
                      "objective": sel.objective, "mode": "precomputed" if dense else "rows on demand"}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:all-MiniLM-L6-v2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    model = args.model
    if model.startswith("packaged:"):
        from conceptkit.annotators.embedding import resolve_model

        model = resolve_model(model)[0]
    path = embeddings(max(args.sizes), model)
    print(f"# {os.cpu_count()} cores; {time.strftime('%Y-%m-%d %H:%M %Z')}; command: python3 "
          f"benchmarks/bench_selection_threads.py {' '.join(sys.argv[1:])}", flush=True)
    rows = []
    for n in args.sizes:
        for threads in args.threads:
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
                   "MKL_NUM_THREADS": str(threads)}
            out = subprocess.run([sys.executable, __file__, "--child", str(path), str(n), str(threads)], env=env,
                                 capture_output=True, text=True, timeout=900)
            if out.returncode:
                print(out.stderr[-2000:], flush=True)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| n | k | mode | threads | seconds | speed-up over 1 thread | objective |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for r in rows:
        one = next((x for x in rows if x["n"] == r["n"] and x["threads"] == 1), None)
        print(f"| {r['n']:,} | {r['k']:,} | {r['mode']} | {r['threads']} | {r['seconds']:.2f} | "
              f"{one['seconds'] / r['seconds']:.2f} | {r['objective']:.1f} |" if one else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
