"""The build's annotation path on a GPU, unit by unit, against plain ``SentenceTransformer.encode`` of the same
texts in the same process: 1M short texts x 5,000 concepts on the device machine.

What runs is what the build's DoFns call for ``--embedding-device cuda`` (pipelines/transforms.py ``EmbedItems``,
``ScoreHistograms``, ``AnnotateBatch``, ``WriteShards``), in the order the in-process runner runs them, one
``annotation.rows_per_shard`` unit at a time, without the Beam runner itself (the device machine has no Beam):

1. embed: ``TextEmbedder(device="cuda").encode`` of the unit's texts (the CUDA encoder), ``save_and_keep`` (``save_unit``, and the unit held on the GPU);
2. calibrate: ``load_unit_table`` + ``UnitScorer.histograms`` per unit (torch engine), ``from_histograms``;
3. annotate: ``load_unit_table``, ``UnitScorer.annotate`` (scores, top-k, the label rule's margins and
   positives on the GPU; scores copied back in the storage dtype), ``shard_table``, ``write_task_file`` (the review
   tasks, in two worker processes), ``ShardWriter.write`` (the Parquet shards, on its threads while the next unit is scored),
   and the waits at the end (the DoFns' ``finish_bundle``). The times per part are the calling thread's: waits
   for a full queue count where they happen.

Not in it: reading and validating the items CSV, the LLM, selection, the concept index, the embedding cache
(``embedding.cache: false``), the final tasks.json join and the dataset card. Needs torch, sentence-transformers,
numpy, pyarrow and pydantic (carried as wheels there).

    python3 benchmarks/bench_annotate_pipeline_gpu.py --items 1000000 --concepts 5000 --json $OUT/pipe.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkout import ROOT  # noqa: E402  (conceptkit from this checkout where it is not installed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concepts", type=int, default=5_000)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--plain-items", type=int, default=200_000)
    parser.add_argument("--model", default=str(ROOT / "benchmarks" / ".cache" / "gpu_model"))
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--unit", type=int, default=20_000, help="items per unit (annotation.rows_per_shard)")
    parser.add_argument("--score-dtype", default="float16")
    parser.add_argument("--score-layout", default="list", choices=["list", "packed"],
                        help="annotation.score_layout of the shards")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--embed-batch", type=int, default=1024, help="texts per GPU batch (embedding.batch_size)")
    parser.add_argument("--no-hold", action="store_true", help="read every unit back from its file (before this change)")
    parser.add_argument("--writer-threads", type=int, default=None, help="ShardWriter threads (default: its own)")
    parser.add_argument("--task-workers", type=int, default=None, help="review-task workers (default: task_workers)")
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    from bench_annotate_texts import concept_phrases, synthetic_items
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.annotation.labels import from_histograms
    from conceptkit.pipelines.annotation.scoring import UnitScorer
    from conceptkit.pipelines.annotation.thresholds import BINS
    from conceptkit.pipelines.annotation.units import (Background, ShardWriter, load_unit_table, release_from_device,
                                                       save_and_keep, shard_table, task_fields, task_workers,
                                                       write_task_file)

    cuda = args.device.startswith("cuda")
    gpu = torch.cuda.get_device_name(0) if cuda else "none"
    record = {"machine": f"{os.cpu_count()} CPU cores, GPU {gpu}, torch {torch.__version__}, "
                         f"Python {platform.python_version()}", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "items": args.items, "concepts": args.concepts, "unit": args.unit, "score_dtype": args.score_dtype,
              "score_layout": args.score_layout, "embed_batch": args.embed_batch}
    ids, texts, _ = synthetic_items(args.items)
    classes = [f"class-{c}" for c in range(args.classes)]
    labels = [classes[i % args.classes] for i in range(args.items)]
    names = concept_phrases(args.concepts)
    concept_classes = [(classes[j % args.classes],) for j in range(args.concepts)]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ck-pipe-"))
    units_dir, shards_dir, tasks_dir = work / "units", work / "annotations", work / "tasks"

    # The peer first: plain encode of the first --plain-items texts, fp16, batch 1024 (embeddings only).
    from sentence_transformers import SentenceTransformer

    plain = SentenceTransformer(args.model, device=args.device)
    if cuda:
        plain.half()
    n_plain = min(args.plain_items, args.items)
    plain.encode(texts[:2048], batch_size=1024, normalize_embeddings=True)  # warm-up
    t = time.perf_counter()
    plain_vectors = plain.encode(texts[:n_plain], batch_size=1024, normalize_embeddings=True, convert_to_numpy=True)
    record["plain_items_s"] = round(n_plain / (time.perf_counter() - t), 1)
    del plain
    if cuda:
        torch.cuda.empty_cache()
    print(json.dumps({"plain_items_s": record["plain_items_s"]}), flush=True)

    embedder = TextEmbedder(args.model, device=args.device, batch_size=args.embed_batch)
    matrix = embedder.encode(names)  # the concept set (its time is not counted: selection made it)
    embedder.encode(texts[:2048])  # warm-up: worker pool and CUDA kernels
    stages = {}
    units = [(g, slice(s, min(s + args.unit, args.items))) for g, s in enumerate(range(0, args.items, args.unit))]
    hold = cuda and not args.no_hold  # EmbedItems keeps each saved unit on the GPU (units.keep_on_device)
    record["hold_units_on_device"] = hold
    started = time.perf_counter()

    t = time.perf_counter()
    first = None
    saves = Background(1, "units")
    for group, part in units:  # EmbedItems: embed, and the unit written on a thread
        emb = embedder.encode(texts[part])
        if first is None:
            first = emb[: min(20_000, n_plain)]
        saves.submit(save_and_keep, str(units_dir), group, {"item_id": ids[part], "label": labels[part],
                                                        "text": texts[part], "split": ["train"] * (part.stop - part.start),
                                                        "embedding": emb}, args.device if hold else None)
    saves.close()  # EmbedItems.finish_bundle
    stages["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    scorer = UnitScorer(matrix, top_k=5, score_dtype=args.score_dtype, engine="torch", device=args.device)
    total = np.zeros((args.concepts, BINS), dtype=np.int64)
    for group, _ in units:  # ScoreHistograms, then Calibrate
        _, emb = load_unit_table(str(units_dir), group, device=args.device)
        total += scorer.histograms(emb)
    rule = from_histograms(total).with_classes(concept_classes, 2.0)
    stages["calibrate"] = time.perf_counter() - t

    writer = ShardWriter(str(shards_dir), args.score_dtype, threads=args.writer_threads, score_layout=args.score_layout)
    timings = {"read": 0.0, "score": 0.0, "shard": 0.0, "write": 0.0, "tasks": 0.0}
    positives = 0
    t = time.perf_counter()
    workers = args.task_workers or task_workers(cuda)
    record["task_workers"] = workers
    tasks_writer = Background(workers, "tasks", processes=cuda)  # as AnnotateBatch.setup
    for group, _ in units:  # AnnotateBatch, then WriteShards (one split)
        t0 = time.perf_counter()
        unit, emb = load_unit_table(str(units_dir), group, device=args.device)
        t1 = time.perf_counter()
        scored = scorer.annotate(emb, unit.column("label").to_pylist(), rule)
        release_from_device(str(units_dir), group)
        t2 = time.perf_counter()
        shard = shard_table(unit, scored, args.score_layout)
        t3 = time.perf_counter()
        tasks_writer.submit(write_task_file, tasks_dir / f"unit-{group:07d}.jsonl", names, "bench", task_fields(unit, scored))
        t4 = time.perf_counter()
        writer.write(shard, args.concepts)  # WriteShards: returns once the write is queued
        t5 = time.perf_counter()
        positives += len(scored.positive_ids)
        for key, dt in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t4 - t3)):
            timings[key] += dt
    t6 = time.perf_counter()
    writer.close()  # WriteShards.finish_bundle
    timings["write"] += time.perf_counter() - t6
    t6 = time.perf_counter()
    tasks_writer.close()  # AnnotateBatch.finish_bundle
    timings["tasks"] += time.perf_counter() - t6
    stages["annotate"] = time.perf_counter() - t
    wall = time.perf_counter() - started
    # Agreement of the GPU engine with the CPU (numpy) engine on the first unit.
    unit, emb = load_unit_table(str(units_dir), 0)
    unit_labels = unit.column("label").to_pylist()
    gpu_scored = scorer.annotate(emb, unit_labels, rule)
    cpu_scored = UnitScorer(matrix, top_k=5, score_dtype=args.score_dtype, engine="numpy").annotate(emb, unit_labels, rule)

    def pairs(s):
        rows = np.repeat(np.arange(len(s.positive_indptr) - 1), np.diff(s.positive_indptr))
        return set(zip(rows.tolist(), s.positive_ids.tolist()))

    a, b = pairs(gpu_scored), pairs(cpu_scored)
    record["agreement_first_unit"] = {
        "top1_equal": round(float((gpu_scored.top_ids[:, 0] == cpu_scored.top_ids[:, 0]).mean()), 5),
        "max_abs_score_diff": float(np.abs(gpu_scored.scores.astype(np.float32) - cpu_scored.scores.astype(np.float32)).max()),
        "positives_gpu": len(a), "positives_cpu": len(b), "positives_jaccard": round(len(a & b) / max(len(a | b), 1), 5)}
    record.update({
        "pipeline_items_s": round(args.items / wall, 1), "ratio": round(args.items / wall / record["plain_items_s"], 2),
        "wall_s": round(wall, 2), "stages_s": {k: round(v, 2) for k, v in stages.items()},
        "annotate_parts_s": {k: round(v, 2) for k, v in timings.items()}, "positives": positives,
        "shard_bytes": sum(p.stat().st_size for p in shards_dir.glob("*.parquet")),
        "min_cosine_to_plain": round(float((first * plain_vectors[: len(first)]).sum(1).min()), 5),
    })
    print(json.dumps(record), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n| path ({args.items:,} texts, {args.concepts:,} concepts, {args.score_dtype} scores, {args.score_layout}) | items/s | ratio |")
    print("|---|---:|---:|")
    print(f"| plain `SentenceTransformer.encode` (on {n_plain:,} of the texts) | {record['plain_items_s']:,.0f} | 1.00 |")
    print(f"| the build's GPU annotation path, embed + calibrate + annotate + shards + tasks | "
          f"{record['pipeline_items_s']:,.0f} | {record['ratio']:.2f} |")
    print(f"stages (s): {record['stages_s']}; annotate parts (s): {record['annotate_parts_s']}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)  # ours: made above


if __name__ == "__main__":
    main()
