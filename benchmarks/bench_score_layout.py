"""Write and read one annotations shard in both score layouts (``annotation.score_layout``: list, packed) through
the project's own ``write_table`` / ``read_table`` / ``score_matrix``: seconds per shard, bytes on disk, and a
check that both give the same matrix. Scores are real cosines where ``benchmarks/.cache/real_embeddings.npy``
exists (concepts and items drawn apart from its vectors, items jittered so no two rows repeat), else synthetic
ones of about the same spread.

    python benchmarks/bench_score_layout.py --items 20000 --concepts 5000 --dtype float16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import ROOT  # noqa: E402


def scores_for(items: int, concepts: int, dtype: str) -> np.ndarray:
    path = ROOT / "benchmarks" / ".cache" / "real_embeddings.npy"
    rng = np.random.default_rng(0)
    if path.exists():
        vectors = np.asarray(np.load(path), dtype=np.float32)
        order = rng.permutation(len(vectors))
        c = vectors[order[:concepts]]
        pool = vectors[order[concepts:]]
        # items: the other vectors, drawn with replacement and jittered, so no two score rows are equal
        v = pool[rng.integers(0, len(pool), items)] + 0.02 * rng.standard_normal((items, pool.shape[1]), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        c /= np.linalg.norm(c, axis=1, keepdims=True)
        return (v @ c.T).astype(dtype)
    return (rng.standard_normal((items, concepts), dtype=np.float32) * 0.08 + 0.15).astype(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--concepts", type=int, default=5_000)
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    import pyarrow as pa

    from conceptkit.schemas.annotations import annotations_schema, score_column, score_matrix
    from conceptkit.schemas.io import read_table, write_table

    scores = scores_for(args.items, args.concepts, args.dtype)
    n, k = args.items, 5
    top = np.argsort(-scores[:, :200], axis=1)[:, :k].astype(np.int32)  # any ids: not what is measured
    fixed = np.arange(0, (n + 1) * k, k, dtype=np.int32)
    common = {"item_id": pa.array([f"item-{i:07d}" for i in range(n)]), "text": pa.array(["some text"] * n),
              "label": pa.array([f"class-{i % 50}" for i in range(n)]), "split": pa.array(["train"] * n),
              "top_concept_ids": pa.ListArray.from_arrays(fixed, pa.array(top.reshape(-1))),
              "top_scores": pa.ListArray.from_arrays(fixed, pa.array(np.zeros(n * k, np.float32))),
              "concept_ids": pa.ListArray.from_arrays(np.zeros(n + 1, np.int32), pa.array([], pa.int32()))}
    record = {"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                         f"pyarrow {pa.__version__}, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "items": n, "concepts": args.concepts,
              "dtype": args.dtype, "scores": "real" if (ROOT / "benchmarks/.cache/real_embeddings.npy").exists() else "synthetic",
              "layouts": {}}
    matrices = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # alternating, best of the repeats
            for layout in ("list", "packed"):
                schema = annotations_schema(args.concepts, args.dtype, layout)
                table = pa.table({**common, "scores": score_column(scores, layout)})
                path = Path(tmp) / f"{layout}.parquet"
                t = time.perf_counter()
                write_table(path, table, schema, row_group_size=8192)
                wrote = time.perf_counter() - t
                t = time.perf_counter()
                matrix = score_matrix(read_table(path, schema))
                read = time.perf_counter() - t
                best = record["layouts"].setdefault(layout, {"write_s": wrote, "read_s": read})
                best["write_s"], best["read_s"] = min(best["write_s"], wrote), min(best["read_s"], read)
                best["mb"] = round(path.stat().st_size / 1e6, 1)
                matrices[layout] = matrix
    record["same_matrix"] = bool(np.array_equal(matrices["list"], matrices["packed"]))
    for entry in record["layouts"].values():
        entry["write_s"], entry["read_s"] = round(entry["write_s"], 3), round(entry["read_s"], 3)
    lst, packed = record["layouts"]["list"], record["layouts"]["packed"]
    record["write_speedup"] = round(lst["write_s"] / packed["write_s"], 2)
    record["read_speedup"] = round(lst["read_s"] / packed["read_s"], 2)
    print(json.dumps(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n| {n:,} x {args.concepts:,} {args.dtype} shard ({record['scores']} scores) | write (s) | read + score_matrix (s) | MB |")
    print("|---|---:|---:|---:|")
    for layout, e in record["layouts"].items():
        print(f"| {layout} | {e['write_s']} | {e['read_s']} | {e['mb']} |")
    print(f"packed against list: writes {record['write_speedup']}x, reads {record['read_speedup']}x; "
          f"same matrix: {record['same_matrix']}")


if __name__ == "__main__":
    main()
