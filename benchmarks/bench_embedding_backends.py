"""CPU embedding throughput of the backends against plain torch ``SentenceTransformer.encode``, same texts, same
threads, one process, interleaved repeats.

Texts: TREC questions (short, ~10 words) and DBpedia-14 abstracts (long, ~50 words) from ../shared/data (skips
cleanly when absent). For each: plain ``SentenceTransformer.encode(batch_size=32, normalize_embeddings=True)``
(the peer), conceptkit's ``TextEmbedder`` with backend torch, onnx and onnx-int8 (export time reported apart,
not timed in), ``--repeats`` times in rotation; the median seconds of each and the ratio to the peer's median.
Quality beside speed: min and median cosine of each backend's vectors to the peer's.

    python benchmarks/bench_embedding_backends.py [--threads 2] [--n 4000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MODEL = "packaged:all-MiniLM-L6-v2"


def load_texts(n: int) -> dict[str, list[str]]:
    import csv

    trec = [line.split(" ", 1)[1] for line in (DATA / "trec" / "TREC.train").read_bytes().decode("latin-1").splitlines()
            if line.strip()][:n]
    with open(DATA / "dbpedia14_sample" / "val.csv", newline="", encoding="utf-8") as f:
        dbpedia = [text for _, text in csv.reader(f)][:n]
    return {"TREC questions (short)": trec, "DBpedia abstracts (long)": dbpedia}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: {DATA} is absent")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    from conceptkit.annotators.embedding import TextEmbedder, resolve_model

    peer = SentenceTransformer(resolve_model(MODEL)[0], device="cpu")
    onnx_dir = tempfile.mkdtemp(prefix="ck-onnx-")
    embedders = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        t = time.perf_counter()
        emb = TextEmbedder(MODEL, backend=backend, threads=args.threads, batch_size=32, onnx_dir=onnx_dir)
        emb.encode(["warm up"])
        embedders[backend] = emb
        print(f"# {backend}: load/export {time.perf_counter() - t:.1f} s", flush=True)
    print(f"\nmachine: {platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}, torch "
          f"{torch.__version__}, threads {args.threads}; {datetime.now(timezone.utc).date()}; "
          f"command: python benchmarks/bench_embedding_backends.py --threads {args.threads} --n {args.n} "
          f"--repeats {args.repeats}\n")
    print("| texts | encoder | items/s (median of repeats) | ratio to plain torch encode | min / median cosine to it |")
    print("|---|---|---:|---:|---|")
    for name, texts in load_texts(args.n).items():
        seconds: dict[str, list[float]] = {k: [] for k in ("plain", *embedders)}
        vectors: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for key in seconds:
                t = time.perf_counter()
                if key == "plain":
                    v = peer.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
                else:
                    v = embedders[key].encode(texts)
                seconds[key].append(time.perf_counter() - t)
                vectors[key] = np.asarray(v, dtype=np.float32)
        base = statistics.median(seconds["plain"])
        for key, values in seconds.items():
            med = statistics.median(values)
            cos = (vectors[key] * vectors["plain"]).sum(axis=1)
            label = "plain SentenceTransformer.encode (peer)" if key == "plain" else f"TextEmbedder backend={key}"
            print(f"| {name} | {label} | {len(texts) / med:,.0f} | {base / med:.2f} | "
                  f"{cos.min():.4f} / {np.median(cos):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
