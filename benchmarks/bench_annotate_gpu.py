"""Embed + score throughput on a GPU at 1M synthetic short texts, against plain ``SentenceTransformer.encode``.

Runs where only torch, sentence-transformers and numpy exist (the device machine has no FAISS, Beam or pydantic):
it uses ``conceptkit.annotators.embedding.TextEmbedder`` (the pipeline's embedder) and scores on the GPU with torch, the
same arithmetic as ``conceptkit.annotators.embedding.annotate`` (full cosine vector, top-k, per-concept threshold), work unit
by work unit (``--unit`` rows, the pipeline's ``annotation.rows_per_shard``). The full score matrix of each unit
is copied back to host memory (what a shard writer needs); no Parquet is written.

In: ``--model`` (a sentence-transformers directory; the benchmark carries an fp16 copy of the packaged
all-MiniLM-L6-v2 made by ``bench_annotate.py gpu-model``). Out: one JSON line per measurement on stdout and a
Markdown table at the end; ``--json PATH`` also writes them to a file, rewritten after each measurement.
Do not pipe stdout through a filter such as grep on the device machine: the filter buffers, and a run stopped
at its time limit then returns no output at all.
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


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def plain_encode(model, texts: list[str], batch_size: int) -> float:
    """Seconds for plain ``SentenceTransformer.encode`` of ``texts`` (normalised, to numpy)."""
    _sync()
    t = time.perf_counter()
    model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                 show_progress_bar=False)
    _sync()
    return time.perf_counter() - t


def embed_and_score(embedder, texts: list[str], concepts, thresholds, *, unit: int, top_k: int) -> dict:
    """Seconds for embed + score of ``texts`` in units of ``unit`` rows, and the split between the two."""
    import torch

    device = concepts.device
    embed_s = score_s = 0.0
    labels = 0
    _sync()
    started = time.perf_counter()
    for lo in range(0, len(texts), unit):
        t = time.perf_counter()
        emb = embedder.encode(texts[lo:lo + unit])  # numpy float32, unit-norm: what EmbedItems emits
        t2 = time.perf_counter()
        x = torch.from_numpy(emb).to(device, non_blocking=True)
        scores = x @ concepts.T
        top_scores, top_ids = torch.topk(scores, top_k, dim=1)
        present = scores >= thresholds[None, :]
        n_present = int(present.sum())
        host = scores.cpu().numpy()  # the full vector goes to the shard
        top_ids.cpu().numpy(), top_scores.cpu().numpy()
        labels += n_present
        assert host.shape == (len(emb), concepts.shape[0])
        _sync()
        embed_s += t2 - t
        score_s += time.perf_counter() - t2
    return {"total_s": time.perf_counter() - started, "embed_s": embed_s, "score_s": score_s, "labels": labels}


def cpu_annotate_unit(unit_emb: np.ndarray, concept_emb: np.ndarray, top_k: int) -> float:
    """Seconds for numpy ``annotate`` (no index) of one unit on this machine's CPU cores."""
    from conceptkit.annotators.embedding import annotate

    t = time.perf_counter()
    annotate(unit_emb, concept_emb, top_k=top_k)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "benchmarks" / ".cache" / "gpu_model"))
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--plain-items", type=int, default=1_000_000)
    parser.add_argument("--concepts", type=int, default=5_000)
    parser.add_argument("--unit", type=int, default=20_000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    parser.add_argument("--json")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import sentence_transformers
    import torch

    from conceptkit.annotators.embedding import TextEmbedder
    from bench_annotate_texts import concept_phrases, synthetic_items

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "none"
    header = {"machine": f"{os.cpu_count()} CPU cores, GPU {gpu}, torch {torch.__version__}, "
                         f"sentence-transformers {sentence_transformers.__version__}, Python {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": " ".join(["python", *sys.argv])}
    print(json.dumps(header), flush=True)
    t = time.perf_counter()
    _, texts, _ = synthetic_items(args.items)
    print(json.dumps({"texts_generated_s": round(time.perf_counter() - t, 1), "n": len(texts)}), flush=True)

    results = []
    for dtype in args.dtypes:
        for batch_size in args.batch_sizes:
            embedder = TextEmbedder(args.model, device=device, threads=1, batch_size=batch_size)
            model = embedder.load()
            model.to(getattr(torch, dtype))
            concept_emb = embedder.encode(concept_phrases(args.concepts))
            concepts = torch.from_numpy(concept_emb).to(device)
            thresholds = torch.full((args.concepts,), 0.5, device=device)
            embed_and_score(embedder, texts[:2 * batch_size], concepts, thresholds, unit=args.unit, top_k=args.top_k)
            plain_n = min(args.plain_items, len(texts))
            plain_s = plain_encode(model, texts[:plain_n], batch_size)
            ours = embed_and_score(embedder, texts, concepts, thresholds, unit=args.unit, top_k=args.top_k)
            row = {
                "dtype": dtype, "batch_size": batch_size, "items": len(texts), "concepts": args.concepts,
                "plain_items": plain_n, "plain_items_s": plain_n / plain_s,
                "ours_items_s": len(texts) / ours["total_s"], "ours_total_s": ours["total_s"],
                "embed_s": ours["embed_s"], "score_s": ours["score_s"], "labels": ours["labels"],
                "torch_threads": torch.get_num_threads(),
            }
            row["ratio"] = row["ours_items_s"] / row["plain_items_s"]
            print(json.dumps(row), flush=True)
            results.append(row)
            if args.json:  # after every row: a run stopped at its time limit still leaves what it measured
                Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=2) + "\n")
            del embedder, model
            if device == "cuda":
                torch.cuda.empty_cache()

    # The same scoring arithmetic on the CPU (numpy annotate), one unit, all cores: is the GPU scoring needed?
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    unit_emb = rng.standard_normal((args.unit, 384), dtype=np.float32)
    unit_emb /= np.linalg.norm(unit_emb, axis=1, keepdims=True)
    concept_rand = rng.standard_normal((args.concepts, 384), dtype=np.float32)
    concept_rand /= np.linalg.norm(concept_rand, axis=1, keepdims=True)
    cpu_s = cpu_annotate_unit(unit_emb, concept_rand, args.top_k)
    cpu = {"cpu_annotate_unit_s": cpu_s, "cpu_annotate_items_s": args.unit / cpu_s, "unit": args.unit}
    print(json.dumps(cpu), flush=True)

    print(f"\nMachine: {header['machine']}  \nDate: {header['date']}  \nCommand: `{header['command']}`\n")
    print(f"| model dtype | batch | items | plain encode (items/s) | embed + score (items/s) | ratio | "
          f"embed (s) | score + copy back (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['dtype']} | {r['batch_size']} | {r['items']:,} x {r['concepts']:,} concepts | "
              f"{r['plain_items_s']:,.0f} ({r['plain_items']:,} texts) | {r['ours_items_s']:,.0f} | {r['ratio']:.2f} | "
              f"{r['embed_s']:.1f} | {r['score_s']:.1f} |")
    print(f"\nnumpy `annotate` of one {args.unit:,}-row unit x {args.concepts:,} concepts on the CPU: "
          f"{cpu_s:.2f} s ({cpu['cpu_annotate_items_s']:,.0f} items/s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results, "cpu": cpu}, indent=2) + "\n")


if __name__ == "__main__":
    main()
