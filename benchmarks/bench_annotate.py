"""Annotation at scale: throughput against plain sentence-transformers, scaling with workers and items, memory of
streaming units, recall of the approximate concept indexes.

In: the repo, the packaged all-MiniLM-L6-v2, and (where present) ../shared/data/trec and dbpedia14_sample.
Out: Markdown tables on stdout (paste into benchmarks/README.md "Annotation at scale"); caches and run
directories under benchmarks/.cache/annotate/. Subcommands:

- ``throughput``: ``TextEmbedder.encode`` + the annotate path (histograms, ``annotate`` with a flat
  ``ConceptIndex``, thresholds) against plain ``SentenceTransformer.encode`` of the same texts, same process,
  same model object, one torch thread, interleaved repeats; wall and CPU time. No embedding cache.
- ``build``: a whole ``run_build`` (DirectRunner, fake LLM, embedding cache off) of the same texts, against plain
  encode of them in the same process before and after.
- ``scale``: ``run_build`` of synthetic short texts per (items, workers), each in a child process whose process
  tree's summed RSS is sampled every 0.2 s.
- ``stream``: the per-unit annotate + shard-writing code (``ScoreHistograms``, ``AnnotateBatch``, ``WriteShards``
  DoFns driven directly, no Beam pipeline) over N items x C concepts of precomputed unit vectors, unit by unit, in a
  child process; peak RSS. Shards are written (zstd Parquet) and deleted after their size is counted
  (``--keep`` keeps them).
- ``gpu-model``: saves the fp16 copy of the model that ``bench_annotate_gpu.py`` carries to the device machine.
- ``recall``: recall@10 of HNSW and IVF (``conceptkit.annotators.index.ConceptIndex``) against exact search, ~29k real text
  embeddings as the database and 1k real queries; build and search times.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]
CACHE = ROOT / "benchmarks" / ".cache" / "annotate"
MODEL = "packaged:all-MiniLM-L6-v2"

from bench_annotate_texts import (  # noqa: E402
    FAKE_ANSWERS, concept_phrases, dbpedia_sentences, dbpedia_texts, synthetic_items, trec_items,
)
from bench_selection import machine  # noqa: E402


def header() -> str:
    return (f"Machine: {machine()}, load average {os.getloadavg()[0]:.1f} at start (the 2 cores are shared)  \n"
            f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}  \nCommand: `{' '.join(['python', *sys.argv])}`\n")


def table_head(*columns: str) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def timed(fn, *args, **kwargs) -> tuple[float, float, object]:
    """(wall s, process CPU s, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def texts_for(dataset: str, n: int) -> list[str]:
    if dataset == "trec":
        loaded = trec_items(n)
        texts = loaded[1] if loaded else []
    elif dataset == "dbpedia":
        texts = dbpedia_texts(n)
    else:
        texts = synthetic_items(n)[1]
    if not texts:
        raise SystemExit(f"no {dataset} data under ../shared/data: skipped")
    return texts


# --- throughput -------------------------------------------------------------------------------------------------

def annotate_path(embedder, texts, concept_emb, index, top_k: int = 5):
    """What the pipeline does per work unit: embed, score histograms, annotate, apply thresholds."""
    from conceptkit.annotators.embedding import annotate
    from conceptkit.pipelines.annotation.thresholds import otsu_thresholds, score_histograms

    emb = embedder.encode(texts)
    thresholds = otsu_thresholds(score_histograms(emb @ concept_emb.T))
    top_ids, top_scores, scores = annotate(emb, concept_emb, top_k=top_k, index=index)
    return int((scores >= thresholds[None, :]).sum())


def cmd_throughput(args) -> None:
    offline()
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.annotators.index import ConceptIndex

    print(header())
    table_head("texts", "n", "concepts", "plain encode, batch 32 (items/s)", "plain encode, batch 128 (items/s)",
               "embed + annotate (items/s)", "ratio vs plain 128", "ratio vs plain 32", "CPU-time ratio vs plain 128")
    for dataset in args.datasets:
        try:
            texts = texts_for(dataset, args.n)
        except SystemExit as exc:
            print(f"| {dataset} | {exc} |")
            continue
        embedder = TextEmbedder(MODEL, threads=1, batch_size=128)
        model = embedder.load()  # the same SentenceTransformer object serves both paths
        concept_emb = embedder.encode(concept_phrases(args.concepts))
        index = ConceptIndex.build(concept_emb, np.arange(len(concept_emb)), model=MODEL, concepts=[], kind="flat")
        embedder.encode(texts[:256])  # warm-up
        runs: dict[str, list[tuple[float, float]]] = {"plain32": [], "plain128": [], "ours": []}
        for _ in range(args.repeats):
            for name, fn in (
                ("plain32", lambda: model.encode(texts, show_progress_bar=False)),
                ("plain128", lambda: model.encode(texts, batch_size=128, normalize_embeddings=True,
                                                  convert_to_numpy=True, show_progress_bar=False)),
                ("ours", lambda: annotate_path(embedder, texts, concept_emb, index)),
            ):
                wall, cpu, _ = timed(fn)
                runs[name].append((wall, cpu))
        rate = {k: len(texts) / statistics.median(w for w, _ in v) for k, v in runs.items()}
        cpu_rate = {k: len(texts) / statistics.median(c for _, c in v) for k, v in runs.items()}
        print(f"| {dataset} | {len(texts):,} | {args.concepts} | {rate['plain32']:.0f} | {rate['plain128']:.0f} | "
              f"{rate['ours']:.0f} | {rate['ours'] / rate['plain128']:.2f} | {rate['ours'] / rate['plain32']:.2f} | "
              f"{cpu_rate['ours'] / cpu_rate['plain128']:.2f} |", flush=True)
    print(f"\nMedians of {args.repeats} interleaved repeats (wall clock); torch threads 1.")


# --- whole build --------------------------------------------------------------------------------------------------

def write_items(path: Path, ids, texts, labels) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        writer.writerows(zip(ids, texts, labels))
    return path


def build_once(items: Path, work: Path, *, workers: int, runner: str = "direct") -> dict:
    """One ``run_build`` against the fake LLM; embedding cache off. Returns wall/CPU time and the summary."""
    from fake_llm import FakeLLM

    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    with FakeLLM(FAKE_ANSWERS) as fake:
        overrides = {
            "out": str(work / "run"), "cache_dir": str(work / "cache"), "items": {"path": str(items)},
            "llm": {"base_url": fake.base_url, "model": "fake-model", "max_retries": 2, "timeout_s": 30},
            "embedding": {"cache": False},
            "runner": {"runner": runner, "direct_num_workers": workers, "dask_workers": workers},
        }
        cfg = load_config(None, overrides)
        wall, cpu, summary = timed(run_build, cfg)
    return {"wall_s": wall, "cpu_s": cpu, "counts": summary.counts, "timings_s": summary.timings_s}


def cmd_build(args) -> None:
    offline()
    from conceptkit.annotators.embedding import TextEmbedder

    loaded = trec_items(args.n)
    if loaded is None:
        raise SystemExit("no TREC data under ../shared/data: skipped")
    ids, texts, labels = loaded
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE.mkdir(parents=True, exist_ok=True) or CACHE))
    items = write_items(work / "items.csv", ids, texts, labels)
    embedder = TextEmbedder(MODEL, threads=1, batch_size=128)
    model = embedder.load()
    model.encode(texts[:256], show_progress_bar=False)

    def plain():
        return model.encode(texts, batch_size=128, normalize_embeddings=True, show_progress_bar=False)

    before = timed(plain)
    result = build_once(items, work, workers=1)
    after = timed(plain)
    plain_wall = min(before[0], after[0])
    t = result["timings_s"]
    print(header())
    table_head("texts", "items", "concepts", "plain encode (items/s)", "run_build total (items/s)", "ratio",
               "build wall (s)", "plain encode wall (s)", "embed_items stage (s)", "annotate stage (s)", "write (s)",
               "other (s)")
    staged = sum(t.get(k, 0) for k in ("embed_items", "annotate", "write"))
    print(f"| TREC questions | {len(texts):,} | {result['counts']['concepts_selected']} | {len(texts) / plain_wall:.0f} | "
          f"{len(texts) / result['wall_s']:.0f} | {plain_wall / result['wall_s']:.2f} | {result['wall_s']:.1f} | "
          f"{plain_wall:.1f} | {t.get('embed_items', 0):.1f} | {t.get('annotate', 0):.1f} | {t.get('write', 0):.1f} | "
          f"{result['wall_s'] - staged:.1f} |")
    print(f"\nplain encode before / after the build: {before[0]:.1f} / {after[0]:.1f} s (the faster is used). "
          f"Build timings (s): {json.dumps(t)}")


# --- process-tree memory --------------------------------------------------------------------------------------------

def run_measured(argv: list[str], timeout: float) -> dict:
    """Run this script with ``argv`` in a child; its JSON line plus the peak summed RSS of its process tree."""
    import psutil

    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak = {"tree": 0, "processes": 0}
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            total, count = 0, 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                        count += 1
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak["tree"] = max(peak["tree"], total)
            peak["processes"] = max(peak["processes"], count)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"over the {timeout:.0f} s cap"}
    finally:
        done.set()
        sampler.join()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {err.strip().splitlines()[-3:]}"}
    result = json.loads(lines[-1])
    result["tree_peak_gb"] = peak["tree"] / 2**30
    result["tree_processes"] = peak["processes"]
    return result


def self_peak() -> dict:
    return {"self_peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "children_peak_gb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}


def cmd_build_once(args) -> None:
    """(child of ``scale``) one synthetic build; prints a JSON line."""
    offline()
    work = Path(tempfile.mkdtemp(prefix=f"scale-{args.n}-w{args.workers}-", dir=CACHE))
    items = write_items(work / "items.csv", *synthetic_items(args.n))
    result = build_once(items, work, workers=args.workers, runner=args.runner)
    if not args.keep:
        import shutil

        shutil.rmtree(work)
    print(json.dumps({**result, **self_peak(), "n": args.n, "workers": args.workers}))


def cmd_scale(args) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    print(header())
    table_head("items", "runner, workers", "wall (s)", "items/s", "embed_items (s, summed over workers)",
               "annotate (s)", "write (s)", "peak RSS, process tree (GB)", "processes", "peak RSS, largest process (GB)")
    for n in args.sizes:
        for workers in args.workers:
            r = run_measured(["build-once", "--n", str(n), "--workers", str(workers), "--runner", args.runner],
                             args.timeout)
            if "error" in r:
                print(f"| {n:,} | {args.runner}, {workers} | not run to completion: {r['error']} |", flush=True)
                continue
            t = r["timings_s"]
            print(f"| {n:,} | {args.runner}, {workers} | {r['wall_s']:.0f} | {n / r['wall_s']:.0f} | "
                  f"{t.get('embed_items', 0):.0f} | {t.get('annotate', 0):.0f} | {t.get('write', 0):.0f} | "
                  f"{r['tree_peak_gb']:.2f} | {r['tree_processes']} | "
                  f"{max(r['self_peak_gb'], r['children_peak_gb']):.2f} |", flush=True)


# --- streaming units -------------------------------------------------------------------------------------------------

def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def unit_batch(unit: int, size: int, concepts: np.ndarray) -> dict:
    """Work unit ``unit``: ids, labels, short texts and unit vectors, each near one concept (cosine ~0.6), so that
    thresholds and labels are not empty. Deterministic per unit: both passes see the same batch."""
    rng = np.random.default_rng([7, unit])
    near = rng.integers(len(concepts), size=size)
    emb = 0.6 * concepts[near] + 0.8 * unit_vectors(rng, size, concepts.shape[1])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids, texts, labels = synthetic_items(size, seed=unit)
    return {"item_id": [f"u{unit}-{i}" for i in ids], "label": labels, "text": texts, "embedding": emb}


def cmd_stream_once(args) -> None:
    """(child of ``stream``) two passes over the units, as the pipeline: histograms, then annotate + write."""
    from conceptkit.pipelines.config import AnnotationConfig, IndexConfig
    from conceptkit.pipelines.transforms import AnnotateBatch, ScoreHistograms, WriteShards, calibrate

    concepts = unit_vectors(np.random.default_rng(1), args.concepts, 384)
    selection = {"concepts": [{"concept_id": i, "concept": f"concept {i}", "embedding": concepts[i].tolist()}
                              for i in range(args.concepts)]}
    units = [(u, min(args.unit, args.items - u * args.unit)) for u in range((args.items + args.unit - 1) // args.unit)]
    started = time.perf_counter()
    histograms = ScoreHistograms()
    total = None
    for u, size in units:
        for h in histograms.process(unit_batch(u, size, concepts), selection):
            total = h if total is None else total + h  # what calibrate's ToList would hold, summed as it arrives
    thresholds = calibrate([total], args.concepts)
    pass1 = time.perf_counter() - started
    annotate = AnnotateBatch(AnnotationConfig(top_k=5, rows_per_shard=args.unit), "bench", IndexConfig())
    out = CACHE / "stream-shards"
    out.mkdir(parents=True, exist_ok=True)
    writer = WriteShards(str(out))
    rows = labels = tasks = shard_bytes = 0
    t_annotate = t_write = 0.0
    for u, size in units:
        t = time.perf_counter()
        shard = None
        for kind, value in annotate.process(unit_batch(u, size, concepts), selection, thresholds):
            if kind == "tasks":
                tasks += 1  # the pipeline collects these (AllTasks); here they are counted and dropped
            else:
                shard = value
        t2 = time.perf_counter()
        name = next(writer.process(shard, args.concepts))
        t_write += time.perf_counter() - t2
        t_annotate += t2 - t
        rows += len(shard)
        labels += sum(len(r["concept_ids"]) for r in shard)
        del shard
        path = out / name
        shard_bytes += path.stat().st_size
        if not args.keep:
            path.unlink()
    print(json.dumps({"items": args.items, "concepts": args.concepts, "unit": args.unit, "rows": rows, "tasks": tasks,
                      "labels": labels, "shard_gb": shard_bytes / 2**30, "histogram_pass_s": pass1,
                      "annotate_s": t_annotate, "write_s": t_write, "wall_s": time.perf_counter() - started,
                      **self_peak()}))


def cmd_stream(args) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    print(header())
    table_head("items x concepts", "unit (rows)", "labels", "shards written (GB, zstd)", "histogram pass (s)",
               "annotate (s)", "write (s)", "wall (s)", "items/s", "peak RSS (GB)")
    for n in args.items:
        r = run_measured(["stream-once", "--items", str(n), "--concepts", str(args.concepts), "--unit", str(args.unit),
                          *(["--keep"] if args.keep else [])], args.timeout)
        if "error" in r:
            print(f"| {n:,} x {args.concepts:,} | {args.unit:,} | not run to completion: {r['error']} |", flush=True)
            continue
        print(f"| {n:,} x {args.concepts:,} | {args.unit:,} | {r['labels']:,} | {r['shard_gb']:.2f} | "
              f"{r['histogram_pass_s']:.0f} | {r['annotate_s']:.0f} | {r['write_s']:.0f} | {r['wall_s']:.0f} | "
              f"{n / r['wall_s']:.0f} | {max(r['self_peak_gb'], r['tree_peak_gb']):.2f} |", flush=True)


# --- recall -----------------------------------------------------------------------------------------------------

def real_embeddings() -> np.ndarray:
    """Embeddings of the TREC questions and the DBpedia sentences (cached under benchmarks/.cache/annotate)."""
    texts = []
    for name in ("TREC.train", "TREC.test"):
        path = ROOT / ".." / "shared" / "data" / "trec" / name
        if path.exists():
            texts += [line.partition(" ")[2].strip() for line in path.read_text(encoding="latin-1").splitlines()]
    texts = [t for t in texts if t] + dbpedia_sentences()
    if not texts:
        raise SystemExit("no real data under ../shared/data: skipped")
    import hashlib

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
    cache = CACHE / f"recall-embeddings-{digest}.npy"
    if cache.exists():
        return np.load(cache)
    offline()
    from conceptkit.annotators.embedding import TextEmbedder

    emb = TextEmbedder(MODEL, threads=1, batch_size=128).encode(texts)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, emb)
    return emb


def cmd_recall(args) -> None:
    from conceptkit.annotators.index import ConceptIndex

    emb = real_embeddings()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(emb))
    queries = emb[order[: args.queries]]
    db = emb[order[args.queries: args.queries + args.db]]
    ids = np.arange(len(db))
    k = 10

    def build(kind, **kw):
        wall, _, index = timed(ConceptIndex.build, db, ids, model=MODEL, concepts=[], kind=kind, **kw)
        return wall, index

    flat_build, flat = build("flat")
    flat_search, _, (_, exact) = timed(flat.search, queries, k)
    print(header())
    print(f"Database: {len(db):,} real text embeddings (TREC questions, DBpedia sentences), {len(queries):,} held-out "
          f"real queries, k = {k}.\n")
    table_head("index", "parameters", "build (s)", "search 1k queries (ms)", "recall@10")
    print(f"| flat (exact) | - | {flat_build:.2f} | {flat_search * 1000:.0f} | 1.000 |")

    def recall(found) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))

    import faiss

    default = ConceptIndex.build.__kwdefaults__
    wall, hnsw = build("hnsw")
    for ef in args.ef_search:
        faiss.downcast_index(hnsw.index.index).hnsw.efSearch = ef
        search, _, (_, found) = timed(hnsw.search, queries, k)
        mark = " (default)" if ef == default["hnsw_ef_search"] else ""
        print(f"| HNSW | M={default['hnsw_m']}, efSearch={ef}{mark} | {wall:.2f} | {search * 1000:.0f} | "
              f"{recall(found):.3f} |", flush=True)
    wall, ivf = build("ivf")
    inner = faiss.downcast_index(ivf.index.index)
    for nprobe in args.nprobe:
        inner.nprobe = nprobe
        search, _, (_, found) = timed(ivf.search, queries, k)
        mark = " (default)" if nprobe == default["ivf_nprobe"] else ""
        print(f"| IVF | nlist={inner.nlist}, nprobe={nprobe}{mark} | {wall:.2f} | {search * 1000:.0f} | "
              f"{recall(found):.3f} |", flush=True)


def cmd_gpu_model(args) -> None:
    """An fp16 copy of the packaged model (45 MB: fits the device tool's 64 MiB carry limit)."""
    import shutil

    offline()
    from conceptkit.annotators.embedding import TextEmbedder

    model = TextEmbedder(MODEL).load()
    model.half()
    shutil.rmtree(args.out, ignore_errors=True)
    model.save(args.out)
    print(f"saved {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("throughput")
    p.add_argument("--datasets", nargs="+", default=["trec", "dbpedia"])
    p.add_argument("--n", type=int, default=5_000)
    p.add_argument("--concepts", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("build")
    p.add_argument("--n", type=int, default=5_000)
    p = sub.add_parser("scale")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runner", default="direct", choices=["direct", "dask"])
    p.add_argument("--timeout", type=float, default=1800)
    p = sub.add_parser("build-once")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--runner", default="direct", choices=["direct", "dask"])
    p.add_argument("--keep", action="store_true")
    p = sub.add_parser("stream")
    p.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--concepts", type=int, default=5_000)
    p.add_argument("--unit", type=int, default=20_000)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--timeout", type=float, default=3600)
    p = sub.add_parser("stream-once")
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--concepts", type=int, default=5_000)
    p.add_argument("--unit", type=int, default=20_000)
    p.add_argument("--keep", action="store_true")
    p = sub.add_parser("gpu-model")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / ".cache" / "gpu_model"))
    p = sub.add_parser("recall")
    p.add_argument("--db", type=int, default=30_000)
    p.add_argument("--queries", type=int, default=1_000)
    p.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    args = parser.parse_args()
    globals()[f"cmd_{args.cmd.replace('-', '_')}"](args)


if __name__ == "__main__":
    main()
