"""GPU annotation at 1M short texts x 5,000 concepts: conceptkit's CUDA path against plain
``SentenceTransformer.encode`` in the same process, same model, same dtype.

Runs on the device machine (torch, sentence-transformers, numpy; nothing else needed):

    python3 benchmarks/bench_cuda_encoder.py --items 1000000 --concepts 5000 --json $OUT/cuda.json

- peer: ``SentenceTransformer.encode(texts, batch_size=1024, normalize_embeddings=True)`` with the model in
  float16 (embeddings only: it does no scoring at all);
- ours: ``conceptkit.annotators.cuda_encoder.CudaEncoder.annotate`` (tokenised ahead in worker processes,
  length-sorted batches, pinned memory, float16 encoder, scores + top-5 + thresholds on the GPU, top-k, labels
  and the score vectors copied back in ``--score-dtype``), and ``CudaEncoder.encode`` (embeddings only);
- agreement: cosine of our embeddings to the peer's on the first 20,000 texts (min and median).

``--model``: a sentence-transformers directory (the benchmark carries ``benchmarks/.cache/gpu_model``, the fp16
copy made by ``bench_annotate.py gpu-model``). One JSON line per measurement, a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
import conceptkit  # noqa: E402

if not (Path(conceptkit.__path__[0]) / "annotators").exists():  # not installed (the device machine): map the
    conceptkit.__path__.append(str(ROOT))                          # root folders as setuptools' package-dir does


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "benchmarks" / ".cache" / "gpu_model"))
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--plain-items", type=int, default=300_000)
    parser.add_argument("--concepts", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--score-dtype", nargs="+", default=["float16", "float32"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    from bench_annotate_texts import concept_phrases, synthetic_items
    from conceptkit.annotators.cuda_encoder import CudaEncoder

    record = {"machine": f"{os.cpu_count()} CPU cores, GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
                         f"sentence-transformers {sentence_transformers.__version__}, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": " ".join(["python3", *sys.argv]), "rows": []}

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        record["rows"].append(row)
        if args.json:
            Path(args.json).write_text(json.dumps(record, indent=2) + "\n")

    print(json.dumps({k: v for k, v in record.items() if k != "rows"}), flush=True)
    _, texts, _ = synthetic_items(args.items)
    encoder = CudaEncoder(args.model, batch_size=args.batch_size, workers=args.workers)
    concepts = encoder.encode(concept_phrases(args.concepts))
    thresholds = np.full(len(concepts), 0.5, dtype=np.float32)
    encoder.annotate(texts[:20_000], concepts, thresholds, top_k=5)  # warm-up: pool, kernels, allocator

    peer = SentenceTransformer(args.model, device="cuda").half()
    peer.encode(texts[:20_000], batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
    torch.cuda.synchronize()
    n = min(args.plain_items, len(texts))
    t = time.perf_counter()
    reference = peer.encode(texts[:n], batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                            show_progress_bar=False)
    torch.cuda.synchronize()
    plain = n / (time.perf_counter() - t)
    emit({"what": "plain SentenceTransformer.encode (fp16)", "items": n, "items_s": round(plain)})

    t = time.perf_counter()
    ours_emb = encoder.encode(texts)
    emit({"what": "CudaEncoder.encode (embeddings only)", "items": len(texts),
          "items_s": round(len(texts) / (time.perf_counter() - t))})
    from conceptkit.annotators.embedding import TextEmbedder

    pipeline_embedder = TextEmbedder(args.model, device="cuda", batch_size=32)  # EmbedItems' call, CPU-tuned batch
    pipeline_embedder.encode(texts[:20_000], on_batch=lambda n: None)
    t = time.perf_counter()
    via_pipeline = pipeline_embedder.encode(texts, on_batch=lambda n: None)
    emit({"what": "TextEmbedder(device='cuda').encode with progress chunks (what EmbedItems calls)",
          "items": len(texts), "items_s": round(len(texts) / (time.perf_counter() - t)),
          "same_as_CudaEncoder": bool(np.allclose(via_pipeline[:1000], ours_emb[:1000], atol=1e-3))})
    del via_pipeline
    cos = (ours_emb[:20_000] * reference[:20_000]).sum(axis=1)
    emit({"what": "agreement with plain encode (cosine, first 20,000)", "min": round(float(cos.min()), 5),
          "median": round(float(np.median(cos)), 5)})
    for dtype in args.score_dtype:
        t = time.perf_counter()
        result = encoder.annotate(texts, concepts, thresholds, top_k=5, score_dtype=dtype)
        seconds = time.perf_counter() - t
        rows = result.order[:1000]
        check = (ours_emb[rows] @ concepts.T).argmax(axis=1)
        top_ids, scores = result.top_ids, result.scores
        emit({"what": f"CudaEncoder.annotate (embed + score + top-5 + positives, scores {dtype} to host)",
              "items": len(texts), "concepts": len(concepts), "items_s": round(len(texts) / seconds),
              "ratio_to_plain": round(len(texts) / seconds / plain, 2), "score_bytes": int(scores.nbytes),
              "top1_agrees_with_fp32_scoring": float((top_ids[:1000, 0] == check).mean()),
              "positives": int(len(result.positive_ids))})
        del result, top_ids, scores
    encoder.close()
    print(f"\nMachine: {record['machine']}  \nDate: {record['date']}  \nCommand: `{record['command']}`\n")
    print("| path | items/s | ratio to plain encode |")
    print("|---|---:|---:|")
    for r in record["rows"]:
        if "items_s" in r:
            print(f"| {r['what']} | {r['items_s']:,} | {r['items_s'] / plain:.2f} |")


if __name__ == "__main__":
    main()
