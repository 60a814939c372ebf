"""Submodular subset selection: objectives, greedy optimisers and LaBo's per-class concept selection.

Contract: pure numpy / scipy / faiss (torch only for ``knn_graph(device="cuda")``). In: embeddings or
similarity matrices (dense ndarray or scipy.sparse) and budgets. Out: frozen dataclasses holding the
ordered selection, the marginal gain of each pick and the objective value. No file or network IO; logging
only; a tqdm progress bar for long selections when logging is at INFO or below and stderr is a terminal.

Objectives (all monotone submodular on non-negative inputs):

- ``FacilityLocation``: f(A) = sum_i max(0, max_{j in A} s_ij). Dense, sparse (a kNN similarity
  graph from ``knn_graph``) or computed on the fly from embeddings when the dense matrix would not
  fit in ``max_dense_bytes``.
- ``GraphCut``: f(A) = sum_{i in V, j in A} s_ij - lam * sum_{i, j in A} s_ij (monotone for lam <= 0.5).
- ``SaturatedCoverage``: f(A) = sum_i min(sum_{j in A} s_ij, gamma * sum_{j in V} s_ij).
- ``FeatureBased``: f(A) = sum_f w_f g(sum_{j in A} m_jf), g concave ("sqrt", "log1p", "inverse").
- ``Modular``: f(A) = sum_{j in A} w_j.
- ``Mixture``: sum_t w_t f_t(A).

Negative similarities: a monotone facility location needs s >= 0. The default ``negative="clip"``
counts a negative similarity as 0 (an element dissimilar to everything chosen is simply not
covered); ``negative="shift"`` adds -min(s) to every dense entry, which keeps the order of all
similarities but rewards every pick by the shift. Sparse inputs are always clipped (a shift would
make them dense). Other similarity-based objectives clip.

Optimisers: ``naive_greedy`` (the reference), ``lazy_greedy`` (priority queue of upper bounds,
returns exactly naive greedy's selection and gains on precomputed similarities) and
``stochastic_greedy`` (Mirzasoleiman et al. 2015, seeded). Ties go to the lowest index.
k must be in [1, n]; k = 0 and k > n are errors (a caller wanting "all" passes n).

LaBo (Yang et al. 2023): ``select_labo`` runs the per-class selection of all classes at once on a
padded (classes x candidates x candidates) block; see its docstring for the utility and budgets.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

OPTIMIZERS = ("naive", "lazy", "stochastic")
NEGATIVE_MODES = ("clip", "shift")
# Rows of a dense similarity block evaluated at once; bounds temporaries to ~64 MB of float32.
_BLOCK_ELEMENTS = 1 << 24
# Precomputed dense rows are gathered and reduced in blocks this small (512 KiB of float32), so the subtract,
# clip and sum passes after the gather read the block from the core's own cache: a 256 x 10,000 batch took
# 1.7 ms on the 2-core VM against 2.1-2.2 ms in 64 MB blocks (lazy greedy at n = 10,000: 3-9 % faster).
_CACHE_BLOCK_ELEMENTS = 1 << 17
# Dense facility location switches to sparse rows of live entries (s_ij > best_i) once the ground
# set is this large and at most this share of the entries is still live.
_PRUNE_MIN_GROUND = 1024
_PRUNE_MAX_DENSITY = 0.3
# Picks before the first prune: precomputed rows are cheap to re-read, rows on demand are matrix products.
_FIRST_PRUNE_DENSE, _FIRST_PRUNE_ON_DEMAND = 32, 8
_PRUNE_MAX_ENTRIES = 1 << 27  # 1 GiB of live (int32 index, float32 value) pairs
# Precomputed dense problems at least this large use the compiled loops of kernels.py (when numba imports):
# below it numpy is as fast and nothing is compiled.
_KERNEL_MIN_ELEMENTS = 1 << 22
# Selections at least this long get a progress bar (when logging and the terminal allow it).
_PROGRESS_MIN_K = 2000


@dataclass(frozen=True)
class Selection:
    """An ordered greedy selection: ``objective`` is f(selected), ``gains`` sum to it (up to rounding)."""

    selected: np.ndarray  # (k,) int64 in selection order
    gains: np.ndarray  # (k,) float64 marginal gain of each at its pick
    objective: float


# ---------------------------------------------------------------- validation


def _check_finite(name: str, array: np.ndarray) -> None:
    # One sum is one pass without a temporary (in float32 for float32 arrays: no cast); non-finite entries
    # (or, rarely, overflow) make it non-finite, and only then do we look for the offending entry.
    total_dtype = np.float32 if array.dtype == np.float32 else np.float64
    if array.size and not math.isfinite(float(array.sum(dtype=total_dtype))) and not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"`{name}` must be finite; found {array[tuple(bad)]} at index {tuple(int(b) for b in bad)}")


def _as_matrix(name: str, value: Any, *, dtype: type = np.float32) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"`{name}` must be non-empty, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise ValueError(f"`{name}` must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=dtype)
    _check_finite(name, array)
    return array


def _check_k(name: str, k: Any, n: float) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"`{name}` must be an int, got {k!r}")
    if k < 1:
        raise ValueError(f"`{name}` must be >= 1, got {k}")
    if k > n:
        raise ValueError(f"`{name}`={k} exceeds the number of candidates n={n}")
    return int(k)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}")


def _check_epsilon(epsilon: float) -> None:
    if not (isinstance(epsilon, (int, float)) and 0.0 < epsilon < 1.0):
        raise ValueError(f"`epsilon` must be in (0, 1), got {epsilon!r}")


def _check_weight(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}")
    return float(value)


def _progress(total: int, desc: str) -> Any:
    """A tqdm bar for long selections on a terminal at INFO; otherwise None."""
    if total < _PROGRESS_MIN_K or not logger.isEnabledFor(logging.INFO) or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# ---------------------------------------------------------------- objectives


class Objective(ABC):
    """A monotone submodular set function over candidates 0..n-1, evaluated through a mutable state."""

    n: int

    @abstractmethod
    def init_state(self) -> Any:
        """The state of the empty set."""

    @abstractmethod
    def gains(self, state: Any, idx: np.ndarray) -> np.ndarray:
        """(len(idx),) float64 marginal gains f(A + j) - f(A) for candidates ``idx`` not in A."""

    @abstractmethod
    def update(self, state: Any, j: int) -> None:
        """Add candidate ``j`` to the set held by ``state``."""

    @abstractmethod
    def value(self, state: Any) -> float:
        """f(A) for the set held by ``state``."""


_THREADS = [0]  # 0: os.cpu_count()
_LOCAL = threading.local()
# Below this a call's blocks are evaluated in the calling thread; above it they go to the pool in tasks of at least
# _PARALLEL_TASK_ELEMENTS, and precomputed dense rows (take, subtract, clip, sum: short ufunc calls that take the
# GIL between them) on at most _DENSE_MAX_THREADS threads. Measured on the 16-core device, n = 10,000 precomputed,
# 2026-12-03 (benchmarks/README.md): 2^27 (the first pass only) 0.64 s on 16 threads; 2^20 with tasks of 2^18
# 0.47 s on 16, 0.36 s on 8 or 4; one thread 0.60 s either way.
_PARALLEL_MIN_ELEMENTS = 1 << 20
_PARALLEL_TASK_ELEMENTS = 1 << 18
_DENSE_MAX_THREADS = 8
# Rows computed on demand are BLAS products (threaded themselves): the pool only for large calls, as before
# (n = 50,000 on the 16-core device: 2.2x over one thread, 2026-12-02).
_PARALLEL_MIN_ON_DEMAND = 1 << 27


def set_threads(n: int | None) -> None:
    """Threads for large dense block evaluations (the first gains pass, pruning); None or 0: all cores.

    numpy's element-wise kernels release the GIL, so blocks of rows evaluated in a thread pool use several
    cores; small lazy-greedy batches stay in the calling thread (a task costs more than their arithmetic)."""
    if n is not None and n < 0:
        raise ValueError(f"threads must be >= 0, got {n}")
    _THREADS[0] = n or 0


def threads() -> int:
    return _THREADS[0] or int(os.environ.get("CONCEPTKIT_THREADS", 0)) or (os.cpu_count() or 1)


_POOLS: dict[int, Any] = {}


def _pool(n: int):
    from concurrent.futures import ThreadPoolExecutor

    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(n, thread_name_prefix="conceptkit-fl")
    return _POOLS[n]


_ZEROS = [np.zeros(0, dtype=np.float32)]  # grown by _relu; replaced whole, so a reader's slice stays valid


def _relu(array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """max(array, 0) elementwise over the last axis, bit for bit, against a row of zeros: numpy's maximum with a
    scalar 0.0 runs a slower loop (1.3 ms for a 256 x 10,000 float32 block on the 2-core VM, 0.4 ms against an
    array)."""
    n = array.shape[-1]
    zeros = _ZEROS[0]
    if zeros.size < n:
        zeros = _ZEROS[0] = np.zeros(n, dtype=np.float32)
    return np.maximum(array, zeros[:n], out=out)


def _dense_rows_gains(rows: np.ndarray, best: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """sum(max(rows - best, 0), axis=-1) as float64, in ``out`` (may be ``rows``) to spare allocations.

    Float32 sums along the contiguous last axis: a row's result does not depend on its batch,
    which is what makes lazy greedy reproduce naive greedy bit for bit. Fresh multi-megabyte
    temporaries cost more in page faults than the arithmetic, hence ``out``.
    """
    out = np.subtract(rows, best, out=out)
    _relu(out, out=out)
    return out.sum(axis=-1).astype(np.float64)


def _csr_gather(indptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of rows ``idx`` of a CSR layout (``indptr``) in its data/indices, and the batch row of each."""
    starts = indptr[idx]
    lengths = indptr[idx + 1] - starts
    total = int(lengths.sum())
    owner = np.repeat(np.arange(len(idx)), lengths)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return offsets + np.arange(total), owner


class FacilityLocation(Objective):
    """f(A) = sum_i max(0, max_{j in A} s_ij) over ground elements i and candidates j.

    ``similarity`` is (n_ground, n_candidates), dense or scipy.sparse (missing entries are 0).
    """

    def __init__(
        self, similarity: np.ndarray | sp.spmatrix | sp.sparray, *, negative: str = "clip", symmetric: bool = False
    ) -> None:
        """``symmetric=True`` promises s_ij == s_ji (a cosine Gram matrix) and skips a transposed copy."""
        _check_choice("negative", negative, NEGATIVE_MODES)
        self._embeddings: np.ndarray | None = None
        if sp.issparse(similarity):
            matrix = sp.csr_matrix(similarity, dtype=np.float32)
            if matrix.shape[0] == 0 or matrix.shape[1] == 0:
                raise ValueError(f"`similarity` must be non-empty, got shape {matrix.shape}")
            _check_finite("similarity", matrix.data)
            # Rows of the transpose are candidates: a gain reads one contiguous row.
            transposed = matrix.T.tocsr()
            transposed.data = np.maximum(transposed.data, 0.0)
            transposed.eliminate_zeros()
            transposed.sort_indices()
            self._sparse: sp.csr_matrix | None = transposed
            self._dense: np.ndarray | None = None
            self.n_ground = matrix.shape[0]
        else:
            dense = _as_matrix("similarity", similarity)
            if symmetric and dense.shape[0] != dense.shape[1]:
                raise ValueError(f"`similarity` must be square when symmetric=True, got shape {dense.shape}")
            lowest = float(dense.min())
            if lowest < 0 and negative == "shift":
                dense = dense - np.float32(lowest)
            elif lowest < 0:
                dense = np.maximum(dense, 0.0)
            # Rows of self._dense are candidates, so a gain reads one contiguous row.
            self._dense = dense if symmetric else np.ascontiguousarray(dense.T)
            self._sparse = None
            self.n_ground = dense.shape[0]
        self.n = (self._sparse if self._sparse is not None else self._dense).shape[0]

    @classmethod
    def from_embeddings(
        cls, embeddings: np.ndarray, *, negative: str = "clip", max_dense_bytes: int = 2 << 30
    ) -> FacilityLocation:
        """Cosine facility location over the rows of ``embeddings`` (ground set = candidates).

        The n x n float32 similarity is precomputed when it fits in ``max_dense_bytes``; otherwise
        rows are computed on demand (X[idx] @ X.T), trading time for memory. ``negative="shift"``
        maps cosine s to (s + 1) / 2 in the on-demand mode.
        """
        _check_choice("negative", negative, NEGATIVE_MODES)
        x = normalize_rows(_as_matrix("embeddings", embeddings))
        n = x.shape[0]
        if n * n * 4 <= max_dense_bytes:
            gram = _blocked_gram(x)
            if negative == "clip":
                _relu(gram, out=gram)  # in place: spares the constructor a copy
            return cls(gram, negative=negative, symmetric=True)
        self = cls.__new__(cls)
        self._embeddings = x
        self._dense = None
        self._sparse = None
        self._shift = negative == "shift"
        self.n = self.n_ground = n
        return self

    def _rows(self, idx: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Candidate rows ``idx`` (n_ground wide): a view, a copy into ``out``, or computed on demand."""
        if self._dense is not None:
            if len(idx) > 1 and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
                return self._dense[idx[0] : idx[-1] + 1]  # a view: no copy for block scans
            if out is None:
                return self._dense[idx]
            return np.take(self._dense, idx, axis=0, out=out[: len(idx)], mode="clip")  # "raise" buffers `out`
        rows = np.matmul(self._embeddings[idx], self._embeddings.T, out=None if out is None else out[: len(idx)])
        if self._shift:
            rows += 1.0
            rows *= 0.5
        return _relu(rows, out=rows)

    def init_state(self) -> _FacilityState:
        first_prune = _FIRST_PRUNE_DENSE if self._dense is not None else _FIRST_PRUNE_ON_DEMAND
        return _FacilityState(np.zeros(self.n_ground, dtype=np.float32), next_prune=first_prune)

    def gains(self, state: _FacilityState, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        rows = self._sparse if self._sparse is not None else state.live
        compiled = self._kernels()  # only for precomputed dense rows, whose live entries are state.live
        if state.live is not None and compiled is not None:
            out = np.empty(len(idx))
            compiled.sparse_gains(rows.indptr, rows.indices, rows.data, idx, state.best, out)
            return out
        if rows is not None:
            pos, owner = _csr_gather(rows.indptr, idx)
            diff = rows.data[pos] - state.best[rows.indices[pos]]
            _relu(diff, out=diff)
            return np.bincount(owner, weights=diff, minlength=len(idx))
        if not len(idx):
            return np.zeros(0)
        step = max(1, _BLOCK_ELEMENTS // self.n_ground)
        n_threads, least = self._threads()
        if n_threads > 1 and len(idx) * self.n_ground >= least:
            per_task = max(1, _PARALLEL_TASK_ELEMENTS // self.n_ground)
            return self._parallel_gains(state, idx, min(step, max(per_task, -(-len(idx) // n_threads))), n_threads)
        cached = max(1, (_CACHE_BLOCK_ELEMENTS if self._dense is not None else _BLOCK_ELEMENTS) // self.n_ground)
        return self._block_gains(state, idx, self._scratch, step if state.updates == 0 else cached)

    def _block_gains(self, state: _FacilityState, idx: np.ndarray, scratch, step: int) -> np.ndarray:
        """Dense gains of rows ``idx``, ``step`` rows at a time into ``scratch(rows)``. The calling thread uses
        blocks of ``_CACHE_BLOCK_ELEMENTS`` for precomputed rows (gathers); a pool task takes its rows in one
        block (on the 16-core device, cache-sized blocks in 8 threads ran 0.77-0.85 s against 0.56-0.64 s: more
        short numpy calls, each taking the GIL)."""
        if state.updates == 0:  # best == 0 and s >= 0: max(s - 0, 0) is s itself, summed the same way
            return np.concatenate([self._rows(idx[s : s + step]).sum(axis=1) for s in range(0, len(idx), step)]).astype(np.float64)
        compiled = self._kernels()
        if compiled is not None:  # one pass per row, GIL released
            out = np.empty(len(idx))
            compiled.gains(self._dense, np.ascontiguousarray(idx, dtype=np.int64), state.best, out)
            return out
        buffer = scratch(min(step, len(idx)))
        return np.concatenate(
            [
                _dense_rows_gains(self._rows(idx[s : s + step], buffer), state.best, out=buffer[: len(idx[s : s + step])])
                for s in range(0, len(idx), step)
            ]
        )

    def _parallel_gains(self, state: _FacilityState, idx: np.ndarray, step: int, n_threads: int) -> np.ndarray:
        """``gains`` of a large batch, tasks of ``step`` rows on a thread pool, each evaluated as the serial path
        evaluates its rows (the same float32 sums along each row), so lazy == naive still holds."""
        def scratch(rows: int) -> np.ndarray:
            buffer = getattr(_LOCAL, "buffer", None)
            if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != self.n_ground:
                buffer = _LOCAL.buffer = np.empty((rows, self.n_ground), dtype=np.float32)
            return buffer

        def task(lo: int) -> np.ndarray:
            return self._block_gains(state, idx[lo : lo + step], scratch, step)

        return np.concatenate(list(_pool(n_threads).map(task, range(0, len(idx), step))))

    def _kernels(self):
        """kernels.py's compiled loops for a large precomputed dense problem, else None (numpy)."""
        if getattr(self, "_compiled", False) is False:
            from conceptkit.pipelines.selection import kernels

            large = self._dense is not None and self.n * self.n_ground >= _KERNEL_MIN_ELEMENTS
            self._compiled = kernels.load() if large and self._dense.flags.c_contiguous else None
        return self._compiled

    def _threads(self) -> tuple[int, int]:
        """(pool threads, least elements of a call that uses the pool) for this objective's row blocks."""
        if self._dense is not None:
            return min(threads(), _DENSE_MAX_THREADS), _PARALLEL_MIN_ELEMENTS
        return threads(), _PARALLEL_MIN_ON_DEMAND

    def _scratch(self, rows: int) -> np.ndarray:
        buffer = getattr(self, "_buffer", None)
        if buffer is None or buffer.shape[0] < rows:
            buffer = self._buffer = np.empty((rows, self.n_ground), dtype=np.float32)
        return buffer

    def update(self, state: _FacilityState, j: int) -> None:
        best = state.best
        if self._sparse is not None:
            lo, hi = self._sparse.indptr[j], self._sparse.indptr[j + 1]
            cols = self._sparse.indices[lo:hi]
            best[cols] = np.maximum(best[cols], self._sparse.data[lo:hi])
            return
        if state.live is not None:
            lo, hi = state.live.indptr[j], state.live.indptr[j + 1]
            cols = state.live.indices[lo:hi]
            best[cols] = np.maximum(best[cols], state.live.data[lo:hi])
        else:
            np.maximum(best, self._rows(np.array([j]))[0], out=best)
        state.updates += 1
        if state.updates == state.next_prune and self.n_ground >= _PRUNE_MIN_GROUND:
            state.next_prune *= 2
            self._prune(state)

    def lazy_steps(self, state: _FacilityState, upper: np.ndarray, fresh_at: np.ndarray, step: int, most: int):
        """Up to ``most`` lazy greedy steps from ``step`` in one compiled loop (kernels.py ``lazy_sparse``), once
        the dense rows are pruned to live entries and the loops are compiled; stops at the next prune, which it
        runs. Returns (picks, gains, evaluations), or None where the caller's own loop applies."""
        compiled = self._kernels()
        if state.live is None or compiled is None or most < 1:
            return None
        steps = min(most, state.next_prune - state.updates)
        picks, gains = np.empty(steps, dtype=np.int64), np.empty(steps)
        live = state.live
        evaluations = compiled.lazy_sparse(live.indptr, live.indices, live.data, state.best, upper, fresh_at, step,
                                           steps, picks, gains)
        state.updates += steps
        if state.updates == state.next_prune:
            state.next_prune *= 2
            self._prune(state)
        return picks, gains, int(evaluations)

    def _prune(self, state: _FacilityState) -> None:
        """Keep only entries s_ij > best_i: the others contribute 0 now and forever (best only grows).

        Used once fewer than ``_PRUNE_MAX_DENSITY`` of the entries are live; later calls filter the
        live set again. Gains then come from short sparse rows instead of full dense ones.
        """
        best = state.best
        if state.live is not None and self._kernels() is not None:
            live = state.live
            indptr, indices, data = np.empty_like(live.indptr), np.empty_like(live.indices), np.empty_like(live.data)
            kept = self._kernels().live_filter(live.indptr, live.indices, live.data, best, indptr, indices, data)
            state.live = _Rows(indptr, indices[:kept].copy(), data[:kept].copy())
            return
        if state.live is not None:
            live = state.live
            keep = live.data > best[live.indices]
            kept_before = np.concatenate(([0], np.cumsum(keep)))
            state.live = _Rows(kept_before[live.indptr], live.indices[keep], live.data[keep])
            return
        limit = min(int(_PRUNE_MAX_DENSITY * self.n * self.n_ground), _PRUNE_MAX_ENTRIES)
        step = max(1, _BLOCK_ELEMENTS // self.n_ground)
        counts, indices, data, total = [], [], [], 0
        n_threads, least = self._threads()
        parallel = n_threads > 1 and self.n * self.n_ground >= least
        if parallel:
            step = max(1, min(step, -(-self.n // (4 * n_threads))))
        compiled = self._kernels()
        if compiled is not None:
            self._prune_compiled(state, compiled, limit, step, n_threads if parallel else 1)
            return
        # Serial: cache-sized blocks of precomputed rows; a pool task filters its rows at once (as in _block_gains).
        sub = step if parallel or self._dense is None else max(1, _CACHE_BLOCK_ELEMENTS // self.n_ground)

        def live(lo: int, hi: int):
            rows = self._rows(np.arange(lo, hi))
            mask = rows > best
            flat = np.flatnonzero(mask)
            return np.count_nonzero(mask, axis=1), (flat % self.n_ground).astype(np.int32), rows.ravel()[flat]

        def block(s: int):  # a task's rows, ``sub`` at a time
            hi = min(s + step, self.n)
            parts = [live(lo, min(lo + sub, hi)) for lo in range(s, hi, sub)]
            return tuple(np.concatenate(p) for p in zip(*parts)) if len(parts) > 1 else parts[0]

        starts = list(range(0, self.n, step))
        wave = max(1, n_threads)
        for w in range(0, len(starts), wave):  # a wave at a time: stop as soon as the live set is too large
            parts = (list(_pool(n_threads).map(block, starts[w : w + wave])) if n_threads > 1
                     else [block(x) for x in starts[w : w + wave]])
            for c, i, d in parts:
                counts.append(c)
                indices.append(i)
                data.append(d)
                total += i.size
            if total > limit:
                return
        counts_all = np.concatenate(counts)
        state.live = _Rows(
            np.concatenate(([0], np.cumsum(counts_all))), np.concatenate(indices), np.concatenate(data)
        )
        logger.debug("facility location: %d live entries of %d after %d picks", total, self.n * self.n_ground, state.updates)

    def _prune_compiled(self, state: _FacilityState, compiled, limit: int, step: int, n_threads: int) -> None:
        """``_prune``'s first pass with the compiled loops: count each row's live entries, then fill them in
        place (blocks of ``step`` rows on the pool); the dense rows stay when more than ``limit`` are live."""
        best, n = state.best, self.n
        starts = list(range(0, n, step))

        def each(task) -> None:
            if n_threads > 1:
                list(_pool(n_threads).map(task, starts))
            else:
                for lo in starts:
                    task(lo)

        counts = np.empty(n, dtype=np.int64)
        each(lambda lo: compiled.live_counts(self._dense, lo, min(lo + step, n), best, counts[lo : lo + step]))
        indptr = np.concatenate(([0], np.cumsum(counts)))
        total = int(indptr[-1])
        if total > limit:
            return
        indices, data = np.empty(total, dtype=np.int32), np.empty(total, dtype=np.float32)
        each(lambda lo: compiled.live_fill(self._dense, lo, min(lo + step, n), best, indptr[lo], indices, data))
        state.live = _Rows(indptr, indices, data)
        logger.debug("facility location: %d live entries of %d after %d picks", total, n * self.n_ground, state.updates)

    def value(self, state: _FacilityState) -> float:
        return float(state.best.sum(dtype=np.float64))


@dataclass
class _Rows:
    """Minimal CSR rows (candidates x ground) for the live entries of a dense facility location."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


@dataclass
class _FacilityState:
    best: np.ndarray  # (n_ground,) float32 max similarity to the selected set (0 when empty)
    live: _Rows | None = None
    updates: int = 0
    next_prune: int = _FIRST_PRUNE_ON_DEMAND  # init_state sets it per kind of rows


def _square(name: str, similarity: np.ndarray) -> np.ndarray:
    dense = _as_matrix(name, similarity)
    if dense.shape[0] != dense.shape[1]:
        raise ValueError(f"`{name}` must be square, got shape {dense.shape}")
    return np.maximum(dense, 0.0)


class GraphCut(Objective):
    """f(A) = sum_{i in V, j in A} s_ij - lam * sum_{i, j in A} s_ij on a symmetric similarity (clipped at 0)."""

    def __init__(self, similarity: np.ndarray, *, lam: float = 0.5) -> None:
        lam = _check_weight("lam", lam)
        if lam > 0.5:
            raise ValueError(f"`lam` must be <= 0.5 for a monotone graph cut, got {lam}")
        self._s = _square("similarity", similarity).astype(np.float64)
        if not np.allclose(self._s, self._s.T):
            raise ValueError("`similarity` must be symmetric for GraphCut")
        self._lam = lam
        self._total = self._s.sum(axis=0)
        self.n = self._s.shape[0]

    def init_state(self) -> dict[str, Any]:
        return {"inside": np.zeros(self.n), "value": 0.0}

    def gains(self, state: dict[str, Any], idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        return self._total[idx] - self._lam * (2.0 * state["inside"][idx] + self._s[idx, idx])

    def update(self, state: dict[str, Any], j: int) -> None:
        state["value"] += float(self.gains(state, np.array([j]))[0])
        state["inside"] += self._s[j]

    def value(self, state: dict[str, Any]) -> float:
        return state["value"]


class SaturatedCoverage(Objective):
    """f(A) = sum_i min(sum_{j in A} s_ij, gamma * sum_{j in V} s_ij), similarities clipped at 0."""

    def __init__(self, similarity: np.ndarray, *, gamma: float = 0.1) -> None:
        gamma = _check_weight("gamma", gamma)
        if not 0 < gamma <= 1:
            raise ValueError(f"`gamma` must be in (0, 1], got {gamma}")
        dense = np.maximum(_as_matrix("similarity", similarity), 0.0).astype(np.float64)
        self._t = np.ascontiguousarray(dense.T)
        self._cap = gamma * dense.sum(axis=1)
        self.n = self._t.shape[0]

    def init_state(self) -> np.ndarray:
        return np.zeros(self._t.shape[1])

    def gains(self, state: np.ndarray, idx: np.ndarray) -> np.ndarray:
        now = np.minimum(state, self._cap)
        return (np.minimum(state + self._t[np.asarray(idx, dtype=np.int64)], self._cap) - now).sum(axis=1)

    def update(self, state: np.ndarray, j: int) -> None:
        state += self._t[j]

    def value(self, state: np.ndarray) -> float:
        return float(np.minimum(state, self._cap).sum())


_CONCAVE = {
    "sqrt": np.sqrt,
    "log1p": np.log1p,
    "inverse": lambda x: x / (1.0 + x),
}


class FeatureBased(Objective):
    """f(A) = sum_f w_f g(sum_{j in A} m_jf) with non-negative features m and a concave g."""

    def __init__(self, features: np.ndarray, *, weights: np.ndarray | None = None, concave: str = "sqrt") -> None:
        _check_choice("concave", concave, tuple(_CONCAVE))
        m = _as_matrix("features", features, dtype=np.float64)
        if m.min() < 0:
            raise ValueError(f"`features` must be non-negative, got minimum {m.min()}")
        w = np.ones(m.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (m.shape[1],):
            raise ValueError(f"`weights` must have shape ({m.shape[1]},), got {w.shape}")
        _check_finite("weights", w)
        if w.min() < 0:
            raise ValueError(f"`weights` must be non-negative, got minimum {w.min()}")
        self._m, self._w, self._g = m, w, _CONCAVE[concave]
        self.n = m.shape[0]

    def init_state(self) -> np.ndarray:
        return np.zeros(self._m.shape[1])

    def gains(self, state: np.ndarray, idx: np.ndarray) -> np.ndarray:
        rows = self._m[np.asarray(idx, dtype=np.int64)]
        return ((self._g(state + rows) - self._g(state)) * self._w).sum(axis=1)

    def update(self, state: np.ndarray, j: int) -> None:
        state += self._m[j]

    def value(self, state: np.ndarray) -> float:
        return float((self._g(state) * self._w).sum())


class Modular(Objective):
    """f(A) = sum_{j in A} w_j with w >= 0 (e.g. LaBo's discriminability)."""

    def __init__(self, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError(f"`weights` must be a non-empty 1-D array, got shape {w.shape}")
        _check_finite("weights", w)
        if w.min() < 0:
            raise ValueError(f"`weights` must be non-negative, got minimum {w.min()}")
        self._w = w
        self.n = w.size

    def init_state(self) -> list[float]:
        return [0.0]

    def gains(self, state: list[float], idx: np.ndarray) -> np.ndarray:
        return self._w[np.asarray(idx, dtype=np.int64)]

    def update(self, state: list[float], j: int) -> None:
        state[0] += float(self._w[j])

    def value(self, state: list[float]) -> float:
        return state[0]


class Mixture(Objective):
    """f(A) = sum_t w_t f_t(A) over objectives sharing the same candidates."""

    def __init__(self, terms: Sequence[tuple[float, Objective]]) -> None:
        if not terms:
            raise ValueError("`terms` must be non-empty")
        sizes = {objective.n for _, objective in terms}
        if len(sizes) != 1:
            raise ValueError(f"`terms` must share one candidate count, got {sorted(sizes)}")
        self._terms = [(_check_weight("weight", w), objective) for w, objective in terms]
        self.n = sizes.pop()

    def init_state(self) -> list[Any]:
        return [objective.init_state() for _, objective in self._terms]

    def gains(self, state: list[Any], idx: np.ndarray) -> np.ndarray:
        total = np.zeros(len(idx))
        for (w, objective), s in zip(self._terms, state):
            total += w * objective.gains(s, idx)
        return total

    def update(self, state: list[Any], j: int) -> None:
        for (_, objective), s in zip(self._terms, state):
            objective.update(s, j)

    def value(self, state: list[Any]) -> float:
        return sum(w * objective.value(s) for (w, objective), s in zip(self._terms, state))


# ---------------------------------------------------------------- optimisers


def _take_best(objective: "Objective", state: Any, pool: np.ndarray, available: np.ndarray, selected: list[int],
               gains: list[float], bar: Any) -> None:
    """One greedy step over ``pool``: pick the best gain (lowest index on ties), record it, update the state."""
    g = objective.gains(state, pool)
    best = int(np.argmax(g))
    j = int(pool[best])
    selected.append(j)
    gains.append(float(g[best]))
    available[j] = False
    objective.update(state, j)
    if bar is not None:
        bar.update()


def naive_greedy(objective: Objective, k: int) -> Selection:
    """Reference greedy: evaluate every remaining candidate at every step; ties to the lowest index."""
    k = _check_k("k", k, objective.n)
    state = objective.init_state()
    available = np.ones(objective.n, dtype=bool)
    selected, gains = [], []
    bar = _progress(k, "naive greedy")
    for _ in range(k):
        _take_best(objective, state, np.flatnonzero(available), available, selected, gains, bar)
    if bar is not None:
        bar.close()
    return Selection(np.array(selected, dtype=np.int64), np.array(gains), objective.value(state))


def lazy_greedy(
    objective: Objective, k: int, *, pool_size: int = 1024, min_batch: int = 8, max_batch: int = 256
) -> Selection:
    """Lazy greedy (Minoux 1978) over a pool of the highest upper bounds, in numpy.

    Stale gains are upper bounds. The pool holds every candidate whose bound is at least the
    ``pool_size``-th largest; ``outside`` is the largest bound left out, strictly below the pool.
    Each step re-evaluates the pool's top stale bounds in batches (doubling from ``min_batch`` to
    ``max_batch``, so a gain computed on the fly is paid in matrix products) until the best fresh
    gain beats every stale bound, ties going to the lowest index; the pool is rebuilt, O(n), only
    when ``outside`` catches up. The result equals ``naive_greedy``'s whenever a candidate's gain
    does not depend on the batch it is computed in (dense or sparse precomputed similarities).
    """
    k = _check_k("k", k, objective.n)
    n = objective.n
    state = objective.init_state()
    upper = objective.gains(state, np.arange(n))
    fresh_at = np.zeros(n, dtype=np.int64)  # step at which upper[j] was computed
    selected, gains = [], []
    evaluations, rebuilds = n, 0
    pool = np.zeros(0, dtype=np.int64)
    outside = np.inf  # forces a build at the first step
    bar = _progress(k, "lazy greedy")
    compiled_steps = getattr(objective, "lazy_steps", None)
    while len(selected) < k:
        step = len(selected)
        run = compiled_steps(state, upper, fresh_at, step, k - step) if compiled_steps is not None else None
        if run is not None:  # the objective ran steps in compiled code: same picks, the pool is rebuilt after
            picks, picked_gains, evaluated = run
            selected.extend(picks.tolist())
            gains.extend(picked_gains.tolist())
            evaluations += evaluated
            pool, outside = np.zeros(0, dtype=np.int64), np.inf
            if bar is not None:
                bar.update(len(picks))
            continue
        batch = min_batch
        # The pool is in index order, so argmax (first maximum) breaks ties to the lowest index. At a new step
        # every bound is stale; fresh_b / stale_b hold each pool entry's bound in one of the two, -inf in the other.
        stale_b = upper[pool]
        fresh_b = np.full(len(pool), -np.inf)
        n_stale = len(pool)
        while True:
            fi = int(fresh_b.argmax()) if len(pool) else 0
            best = fresh_b[fi] if len(pool) else -np.inf
            si = int(stale_b.argmax()) if n_stale else -1
            stale = stale_b[si] if n_stale else -np.inf
            if best > -np.inf and best > outside and (best > stale or (best == stale and fi < si)):
                j = int(pool[fi])
                break
            if stale == -np.inf or stale < outside:
                pool, outside = _build_pool(upper, pool_size)
                rebuilds += 1
                bounds = upper[pool]
                fresh = fresh_at[pool] == step
                fresh_b = np.where(fresh, bounds, -np.inf)
                stale_b = np.where(fresh, -np.inf, bounds)
                n_stale = int(np.count_nonzero(stale_b > -np.inf))
                continue
            at = _top_stable(stale_b, min(batch, n_stale))
            top = pool[at]
            g = objective.gains(state, top)
            upper[top] = g
            fresh_at[top] = step
            fresh_b[at] = g
            stale_b[at] = -np.inf
            n_stale -= len(at)
            evaluations += len(top)
            batch = min(2 * batch, max_batch)
        selected.append(j)
        gains.append(float(best))
        upper[j] = -np.inf
        pool = pool[pool != j]
        objective.update(state, j)
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    logger.debug("lazy greedy: k=%d n=%d gain evaluations=%d pool rebuilds=%d", k, n, evaluations, rebuilds)
    return Selection(np.array(selected, dtype=np.int64), np.array(gains), objective.value(state))


def _top_stable(values: np.ndarray, m: int) -> np.ndarray:
    """Positions of the ``m`` largest ``values``, largest first, ties by position (a stable argsort's head)."""
    if m >= len(values) // 4:
        return np.argsort(-values, kind="stable")[:m]
    part = np.argpartition(-values, m - 1)[:m]
    cut = values[part].min()
    head = np.flatnonzero(values >= cut)  # every tie at the cut, in position order
    return head[np.argsort(-values[head], kind="stable")][:m]


def _build_pool(upper: np.ndarray, pool_size: int) -> tuple[np.ndarray, float]:
    """Indices with a bound >= the pool_size-th largest (ties all in), and the largest bound left out."""
    live = upper > -np.inf
    n_live = int(np.count_nonzero(live))
    if n_live <= pool_size:
        return np.flatnonzero(live), -np.inf
    threshold = np.partition(upper, upper.size - pool_size)[upper.size - pool_size]
    inside = upper >= threshold
    left = upper[~inside]
    return np.flatnonzero(inside), float(left.max()) if left.size else -np.inf


def stochastic_greedy(objective: Objective, k: int, *, epsilon: float = 0.1, seed: int = 0) -> Selection:
    """Stochastic greedy: each step evaluates a seeded random sample of ceil(n/k * ln(1/epsilon))
    remaining candidates; (1 - 1/e - epsilon) in expectation."""
    k = _check_k("k", k, objective.n)
    _check_epsilon(epsilon)
    n = objective.n
    sample_size = min(n, math.ceil(n / k * math.log(1.0 / epsilon)))
    rng = np.random.default_rng(seed)
    state = objective.init_state()
    available = np.ones(n, dtype=bool)
    selected, gains = [], []
    bar = _progress(k, "stochastic greedy")
    for step in range(k):
        remaining = n - step
        if sample_size >= remaining // 2:
            pool = np.flatnonzero(available)
            sample = np.sort(rng.choice(pool, size=min(sample_size, remaining), replace=False))
        else:
            # Rejection sampling keeps a step O(sample) instead of O(n) when few are taken.
            draw = rng.integers(0, n, size=2 * sample_size + 16)
            sample = np.unique(draw[available[draw]])[:sample_size]
            if sample.size == 0:
                sample = np.flatnonzero(available)[:1]
        _take_best(objective, state, sample, available, selected, gains, bar)
    if bar is not None:
        bar.close()
    return Selection(np.array(selected, dtype=np.int64), np.array(gains), objective.value(state))


def greedy(
    objective: Objective, k: int, *, optimizer: str = "lazy", epsilon: float = 0.1, seed: int = 0
) -> Selection:
    """Maximise ``objective`` under |A| <= k with the named optimiser."""
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "naive":
        return naive_greedy(objective, k)
    if optimizer == "lazy":
        return lazy_greedy(objective, k)
    return stochastic_greedy(objective, k, epsilon=epsilon, seed=seed)


# ---------------------------------------------------------------- similarity helpers


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x / np.where(norms > 0, norms, np.float32(1.0))


def _blocked_gram(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    out = np.empty((n, n), dtype=np.float32)
    step = max(1, _BLOCK_ELEMENTS // n)
    for s in range(0, n, step):
        np.matmul(x[s : s + step], x.T, out=out[s : s + step])
    return out


def knn_graph(
    embeddings: np.ndarray,
    n_neighbors: int,
    *,
    exact_below: int = 50_000,
    nprobe: int = 8,
    search_dim: int | None = 64,
    seed: int = 0,
    device: str = "cpu",
) -> sp.csr_matrix:
    """(n, n) CSR: row i holds the cosine similarity to its ``n_neighbors`` nearest rows (itself included).

    ``device="cuda"`` (or "auto" with torch seeing a GPU, from ``exact_below`` rows up): exact search on the GPU
    in float16 blocks, the found neighbours' similarities recomputed in float32; recall is that of exact search
    up to float16 near-ties. ``"cpu"`` (the default: on one H200 the GPU was no faster than 16 CPU cores at 1M
    points, benchmarks/README.md): the path below.

    Below ``exact_below`` rows: exact search (faiss IndexFlatIP). Above: ``_knn_cluster_blocks``, an
    inverted-file search done as dense blocks (nlist = sqrt(nprobe * n) k-means cells over a PCA projection
    to ``search_dim`` dimensions, None: full; each cell's points against the points of its ``nprobe``
    nearest cells); the neighbours are approximate, their similarities exact.
    Non-positive similarities are dropped (clipped to 0).
    """
    _check_choice("device", device, ("auto", "cpu", "cuda"))
    x = normalize_rows(_as_matrix("embeddings", embeddings))
    n, d = x.shape
    n_neighbors = _check_k("n_neighbors", n_neighbors, n)
    if device == "cuda" or (device == "auto" and n >= exact_below and _cuda_available()):
        sims, ids = _knn_torch(x, n_neighbors)
        return _knn_csr(sims, ids, n)
    import faiss

    if n < exact_below:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        sims = np.empty((n, n_neighbors), dtype=np.float32)
        ids = np.empty((n, n_neighbors), dtype=np.int64)
        for s in range(0, n, 65_536):
            sims[s : s + 65_536], ids[s : s + 65_536] = index.search(x[s : s + 65_536], n_neighbors)
        return _knn_csr(sims, ids, n)
    sims, ids = _knn_cluster_blocks(x, n_neighbors, nprobe=nprobe, search_dim=search_dim, seed=seed)
    return _knn_csr(sims, ids, n)


def _knn_cluster_blocks(x: np.ndarray, n_neighbors: int, *, nprobe: int, search_dim: int | None,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate k nearest rows by cosine as an inverted file searched in dense blocks.

    Spherical k-means (faiss, seeded sample of 40 points per cell) over a PCA projection assigns every point to
    one of sqrt(nprobe * n) cells; the points of a cell are then compared, in the full dimension by one matrix
    product, with the points of the ``nprobe`` cells whose centroids are nearest to the cell's centroid, and the
    top ``n_neighbors`` kept. Same work as an IVF search with ``nprobe`` lists, but as BLAS products (a cell
    shares its probe list), cells spread over the thread pool with BLAS kept to one thread each.
    """
    import faiss
    from threadpoolctl import threadpool_limits

    n, d = x.shape
    nlist = max(1, int(math.sqrt(nprobe * n)))
    nprobe = min(nprobe, nlist)
    rng = np.random.default_rng(seed)
    train_rows = np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))
    searched = x
    if search_dim is not None and search_dim < d:
        pca = faiss.PCAMatrix(d, search_dim)
        pca.train(x[train_rows])
        searched = np.empty((n, search_dim), dtype=np.float32)
        for s in range(0, n, 262_144):
            searched[s : s + 262_144] = pca.apply(x[s : s + 262_144])
    kmeans = faiss.Kmeans(searched.shape[1], nlist, niter=10, seed=seed, spherical=True, verbose=False)
    kmeans.train(searched[train_rows])
    cell = np.empty(n, dtype=np.int64)
    for s in range(0, n, 262_144):
        cell[s : s + 262_144] = kmeans.index.search(searched[s : s + 262_144], 1)[1][:, 0]
    del searched
    centroids = kmeans.centroids
    probes = np.argsort(-(centroids @ centroids.T), axis=1, kind="stable")[:, :nprobe]
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
    sims = np.full((n, n_neighbors), -np.inf, dtype=np.float32)
    ids = np.full((n, n_neighbors), -1, dtype=np.int64)

    def search(c: int) -> None:
        members = order[bounds[c] : bounds[c + 1]]
        if not len(members):
            return
        pool = np.concatenate([order[bounds[p] : bounds[p + 1]] for p in probes[c]])
        m = min(n_neighbors, len(pool))
        for lo in range(0, len(members), 2048):
            rows = members[lo : lo + 2048]
            block = x[rows] @ x[pool].T
            top = np.argpartition(-block, m - 1, axis=1)[:, :m] if m < len(pool) else np.broadcast_to(np.arange(m), (len(rows), m))
            sims[rows, :m] = np.take_along_axis(block, top, axis=1)
            ids[rows, :m] = pool[top]

    n_threads = threads()
    with threadpool_limits(1 if n_threads > 1 else None, user_api="blas"):
        if n_threads > 1:
            list(_pool(n_threads).map(search, range(nlist)))
        else:
            for c in range(nlist):
                search(c)
    return sims, ids


def _knn_csr(sims: np.ndarray, ids: np.ndarray, n: int) -> sp.csr_matrix:
    """(n, k) neighbour lists -> (n, n) CSR, non-positive similarities and missing (-1) neighbours dropped."""
    keep = (ids >= 0) & (sims > 0)
    rows = np.repeat(np.arange(n), ids.shape[1])[keep.ravel()]
    graph = sp.csr_matrix((sims[keep], (rows, ids[keep])), shape=(n, n), dtype=np.float32)
    graph.sum_duplicates()
    logger.info("kNN graph: %d rows, %d neighbours, %d entries", n, ids.shape[1], graph.nnz)
    return graph


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _knn_torch(x: np.ndarray, n_neighbors: int, *, block: int = 4096, device: str = "cuda",
               dtype: str = "float16") -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows by cosine with torch (the GPU path; tests run it on the CPU): products in ``dtype``
    in blocks of ``block`` queries (the whole set stays on the device), top-k there, then each found pair's
    similarity in float32."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("knn_graph device='cuda' needs torch with a CUDA GPU; none is visible")
    dev = torch.device(device)
    n = x.shape[0]
    full = torch.from_numpy(x).to(dev)
    half = full.to(getattr(torch, dtype))
    sims = torch.empty((n, n_neighbors), dtype=torch.float32, device=dev)
    ids = torch.empty((n, n_neighbors), dtype=torch.int64, device=dev)
    with torch.inference_mode():
        for s in range(0, n, block):
            q = half[s : s + block]
            _, found = torch.topk(q @ half.T, n_neighbors, dim=1, sorted=True)
            ids[s : s + block] = found
            sims[s : s + block] = torch.einsum("id,ikd->ik", full[s : s + block], full[found])
    out = sims.cpu().numpy(), ids.cpu().numpy()
    del full, half, sims, ids
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def facility_location_greedy(
    data: np.ndarray | sp.spmatrix | sp.sparray,
    k: int,
    *,
    metric: str = "precomputed",
    n_neighbors: int = 20,
    negative: str = "clip",
    optimizer: str = "lazy",
    epsilon: float = 0.1,
    seed: int = 0,
) -> Selection:
    """Facility-location subset selection of ``k`` of the candidates in ``data``.

    metric="precomputed": ``data`` is an (n_ground, n) similarity, dense or sparse.
    metric="cosine": ``data`` is (n, d) embeddings; dense cosine similarity (on demand if large).
    metric="knn": ``data`` is (n, d) embeddings; sparse graph of ``n_neighbors`` cosine neighbours.
    """
    _check_choice("metric", metric, ("precomputed", "cosine", "knn"))
    if metric == "precomputed":
        objective = FacilityLocation(data, negative=negative)
    elif metric == "cosine":
        objective = FacilityLocation.from_embeddings(data, negative=negative)
    else:
        objective = FacilityLocation(knn_graph(data, n_neighbors, seed=seed))
    return greedy(objective, k, optimizer=optimizer, epsilon=epsilon, seed=seed)


# ---------------------------------------------------------------- LaBo


@dataclass(frozen=True)
class LaboSelection:
    """LaBo's per-class selection, in selection order.

    ``gains[i]`` is the increase of the total objective when ``selected[i]`` was added: it counts for
    every class it belongs to, so ``gains[i] == alpha * discriminability[i] * n_classes_i +
    coverage_gain[i]`` where n_classes_i is the number of classes the concept belongs to (with ``direction``
    other than "off", the discriminability term is summed per class and ``discriminability[i]`` is the one of
    the class it was picked for), and
    ``objective == gains.sum()`` up to rounding.
    """

    selected: np.ndarray  # (m,) int64 concept indices in selection order
    gains: np.ndarray  # (m,) float64 marginal gain of each at its pick
    ranks: np.ndarray  # (m,) int64 rank within the class budget that picked it (0-based)
    picked_for: np.ndarray  # (m,) int64 class index whose budget picked it
    discriminability: np.ndarray  # (m,) float64 the concept's discriminability term (0 when no labels)
    coverage_gain: np.ndarray  # (m,) float64 the coverage part of its gain (beta included)
    objective: float


DIRECTIONS = ("off", "soft", "strongest")


def class_direction(class_association: np.ndarray, direction: str) -> np.ndarray:
    """(n, C) weight in [0, 1] of concept j's discriminability when it is picked for class c.

    "strongest": 1 for the class of j's largest association, else 0. "soft": (S[j, c] - median_c S[j]) /
    (max_c S[j] - median_c S[j]) clipped to [0, 1]: 1 for the best class, 0 at or below the median class, so
    a concept that points at another class earns little for c. "off": 1 everywhere.
    """
    s = np.asarray(class_association, dtype=np.float64)
    if direction == "off":
        return np.ones_like(s)
    if direction == "strongest":
        return (s == s.max(axis=1, keepdims=True)).astype(np.float64)
    median = np.median(s, axis=1, keepdims=True)
    span = s.max(axis=1, keepdims=True) - median
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(span > 0, (s - median) / span, 1.0)
    return np.clip(w, 0.0, 1.0)


def item_discriminability(
    concept_embeddings: np.ndarray, membership: np.ndarray, evidence: Sequence[np.ndarray], *,
    max_negatives: int = 4096,
) -> np.ndarray:
    """(n_concepts, n_classes) how well each concept's scores separate a class's items from the other classes':
    max(0, 2 AUC - 1), where AUC is the probability that an item of the class scores higher (cosine to the concept)
    than an item of another class, ties counting half; 0 where ``membership`` is False.

    ``evidence[c]`` holds unit-norm embeddings of class c's items (a sample); the negatives of class c are the
    other classes' evidence, at most ``max_negatives`` of them (an even share of each class, in order). LaBo's
    score compares a concept's mean similarity to the class means; this one sees the items' spread, so a concept
    that a class's items score consistently high on wins over one that only raises the class's average (on the
    DBpedia-14 sample: 1-shot 0.735 against 0.699 for the same candidates, benchmarks/README.md)."""
    x = normalize_rows(_as_matrix("concept_embeddings", concept_embeddings))
    member = np.asarray(membership, dtype=bool)
    n_classes = member.shape[1]
    if len(evidence) != n_classes:
        raise ValueError(f"`evidence` must have one array per class ({n_classes}), got {len(evidence)}")
    out = np.zeros(member.shape, dtype=np.float64)
    filled = [i for i in range(n_classes) if len(evidence[i])]
    pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # share -> (every class's first `share` items, owner)
    for c in range(n_classes):
        rows = np.flatnonzero(member[:, c])
        n_others = len(filled) - (c in filled)
        if not rows.size or not len(evidence[c]) or not n_others:
            continue
        share = max(1, max_negatives // n_others)
        if share not in pools:
            pools[share] = (np.concatenate([np.asarray(evidence[i][:share], dtype=np.float32) for i in filled]),
                            np.repeat(filled, [min(share, len(evidence[i])) for i in filled]))
        pool, owner = pools[share]
        pos = (np.asarray(evidence[c], dtype=np.float32) @ x[rows].T).astype(np.float64)  # (n_pos, |rows|)
        neg = np.sort((pool @ x[rows].T)[owner != c].astype(np.float64), axis=0)  # the other classes' items
        # Mann-Whitney U in one searchsorted: column j's scores (in [-1, 1]) shifted by 4 j, so the columns' sorted
        # negatives concatenate into one sorted array; a positive wins over the negatives below it, ties count half.
        shift = 4.0 * np.arange(rows.size)
        flat = (neg + shift).T.ravel()
        queries = (pos + shift).T.ravel()
        start = np.repeat(np.arange(rows.size) * neg.shape[0], pos.shape[0])
        wins = (np.searchsorted(flat, queries, "left") + np.searchsorted(flat, queries, "right") - 2 * start) / 2.0
        auc = wins.reshape(rows.size, pos.shape[0]).sum(axis=1) / (pos.shape[0] * neg.shape[0])
        out[rows, c] = np.clip(2.0 * auc - 1.0, 0.0, 1.0)
    return out


def labo_discriminability(
    class_association: np.ndarray, *, negative: str = "clip", normalize: bool = True
) -> np.ndarray:
    """(n,) mutual-information score of each concept from an (n_concepts, n_classes) association S.

    S is clipped at 0 (``negative="clip"``: a concept dissimilar to a class's items is no evidence
    for it) or shifted by -min(S) (``"shift"``). p(c | y) = S[c, y] / sum_c S[c, y] per class, p(y)
    uniform over classes with any association, p(c, y) = p(c | y) p(y), p(c) = sum_y p(c, y), and
    MI(c) = sum_y p(c, y) log(p(c, y) / (p(c) p(y))) >= 0 (0 log 0 = 0). With ``normalize`` the
    scores are divided by their maximum, so they lie in [0, 1] whatever the number of concepts.
    """
    _check_choice("negative", negative, NEGATIVE_MODES)
    s = np.asarray(class_association)
    if s.ndim != 2 or 0 in s.shape:
        raise ValueError(f"`class_association` must be a non-empty 2-D array, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.floating) and not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"`class_association` must be numeric, got dtype {s.dtype}")
    # Row chunks in float32: S can be (500k concepts x 1000 classes), too big to copy whole.
    step = max(1, _BLOCK_ELEMENTS // (4 * s.shape[1]))
    chunks = range(0, s.shape[0], step)
    shift = 0.0
    if negative == "shift":
        for lo in chunks:
            _check_finite("class_association", s[lo : lo + step])
        shift = max(0.0, -float(s.min()))

    def cleaned(lo: int) -> np.ndarray:
        block = s[lo : lo + step].astype(np.float32)
        if shift:
            block += np.float32(shift)
        return _relu(block, out=block)

    mass = np.zeros(s.shape[1])
    for lo in chunks:
        block = cleaned(lo)
        mass += block.sum(axis=0, dtype=np.float64)
        if not math.isfinite(mass.sum()):
            _check_finite("class_association", s[lo : lo + step])
    live = mass > 0
    if not live.any():
        return np.zeros(s.shape[0])
    p_y = 1.0 / live.sum()
    inv_mass = (1.0 / mass[live]).astype(np.float32)
    mi = np.empty(s.shape[0])
    for lo in chunks:
        # MI(c) = p(y) sum_y q log q - p(c) log p(c), q = p(c|y), p(c) = p(y) sum_y q. float32 logs
        # (a score, not a probability summed over millions) keep 5e8 entries to about a second.
        q = cleaned(lo)
        if not live.all():
            q = q[:, live]
        q *= inv_mass
        q_log_q = np.zeros_like(q)
        np.log(q, out=q_log_q, where=q > 0)
        q_log_q *= q
        p_c = p_y * q.sum(axis=1, dtype=np.float64)
        p_c_log = p_c * np.log(np.where(p_c > 0, p_c, 1.0))
        mi[lo : lo + step] = p_y * q_log_q.sum(axis=1, dtype=np.float64) - p_c_log
    mi = np.maximum(mi, 0.0)  # >= 0 in exact arithmetic; rounding can dip below
    if normalize and mi.max() > 0:
        mi = mi / mi.max()
    return mi


class _ClassBlocks:
    """All classes' candidate similarity blocks, padded to (C, M, M), and the greedy state."""

    def __init__(self, x: np.ndarray, member: np.ndarray) -> None:
        n_classes = member.shape[1]
        concept_of, cls_of = np.nonzero(member)
        order = np.argsort(cls_of, kind="stable")  # by class, then concept index
        concept_of, cls_of = concept_of[order], cls_of[order]
        self.sizes = np.bincount(cls_of, minlength=n_classes)
        m = int(self.sizes.max())
        starts = np.concatenate(([0], np.cumsum(self.sizes)[:-1]))
        pos_of = np.arange(len(cls_of)) - starts[cls_of]
        self.cand = np.full((n_classes, m), -1, dtype=np.int64)
        self.cand[cls_of, pos_of] = concept_of
        self.valid = self.cand >= 0
        nbytes = n_classes * m * m * 4
        if nbytes > 4 << 30:
            logger.warning("LaBo similarity blocks need %.1f GiB (%d classes x %d candidates)", nbytes / 2**30, n_classes, m)
        self.sim = np.empty((n_classes, m, m), dtype=np.float32)
        self.initial = np.empty((n_classes, m))
        step = max(1, _BLOCK_ELEMENTS // (m * max(m, x.shape[1])))
        for s in range(0, n_classes, step):
            block = x[np.maximum(self.cand[s : s + step], 0)] * self.valid[s : s + step, :, None]
            np.matmul(block, block.transpose(0, 2, 1), out=self.sim[s : s + step])
            _relu(self.sim[s : s + step], out=self.sim[s : s + step])
            # Gains on the empty set, summed exactly as coverage_pairs sums them (rows - 0 == rows).
            self.initial[s : s + step] = self.sim[s : s + step].sum(axis=2)
        # (class, position) of every membership, grouped by concept.
        by_concept = np.argsort(concept_of, kind="stable")
        self.member_class = cls_of[by_concept]
        self.member_pos = pos_of[by_concept]
        self.member_ptr = np.concatenate(([0], np.cumsum(np.bincount(concept_of, minlength=member.shape[0]))))
        self.best = np.zeros((n_classes, m), dtype=np.float32)
        self._scratch: np.ndarray | None = None

    def coverage_pairs(self, classes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Coverage gains (unnormalised) of candidate ``positions[i]`` in class ``classes[i]``."""
        out = np.empty(len(classes))
        step = max(1, _BLOCK_ELEMENTS // self.sim.shape[2])
        for s in range(0, len(classes), step):
            c, p = classes[s : s + step], positions[s : s + step]
            rows = self.sim[c, p]
            out[s : s + step] = _dense_rows_gains(rows, self.best[c], out=rows)
        return out

    def coverage_all(self, classes: np.ndarray) -> np.ndarray:
        """(len(classes), M) coverage gains of every position of ``classes``."""
        m = self.sim.shape[2]
        out = np.empty((len(classes), m))
        step = max(1, _BLOCK_ELEMENTS // (m * m))
        for s in range(0, len(classes), step):
            c = classes[s : s + step]
            if self._scratch is None:
                self._scratch = np.empty((step, m, m), dtype=np.float32)
            out[s : s + step] = _dense_rows_gains(self.sim[c], self.best[c][:, None, :], out=self._scratch[: len(c)])
        return out


def select_labo(
    concept_embeddings: np.ndarray,
    membership: np.ndarray,
    *,
    class_association: np.ndarray | None,
    k_per_class: int,
    global_budget: int | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    optimizer: str = "lazy",
    epsilon: float = 0.1,
    seed: int = 0,
    direction: str = "off",
    class_discriminability: np.ndarray | None = None,
) -> LaboSelection:
    """LaBo's concept selection for all classes at once.

    Per class c with candidates V_c (``membership[:, c]``) and selected set A_c, the utility is

        F_c(A_c) = alpha * sum_{j in A_c} D(j) + beta * (1 / |V_c|) sum_{i in V_c} max_{j in A_c} cos+(i, j)

    where D = ``labo_discriminability(class_association)`` in [0, 1] (0 everywhere when
    ``class_association`` is None: coverage only) and cos+ is the cosine similarity clipped at 0.
    Both terms are per-concept quantities in [0, 1]: a pick's discriminability adds up to alpha, and
    its coverage gain (the share of the class's candidates it newly represents, weighted by
    similarity) adds up to beta, shrinking as the class fills. The total objective is sum_c F_c.

    Greedy runs in rounds: each class with budget left computes its best pick (all classes as one
    vectorised block), then picks are applied in descending gain (ties: lower class index). A
    concept is selected once and joins A_c of every class it belongs to, counting against each
    budget; a class whose set changed earlier in the round (a shared concept) re-decides in the
    next round, so every class's sequence is greedy on its own state. A class holds at most
    ``k_per_class`` concepts, its own picks and shared ones together: once it is full, no class can pick a
    concept it shares (fewer than k if it runs out of candidates, which is not an error).
    ``global_budget`` caps the number of distinct concepts. Both must be ints >= 1.
    With "lazy", each class's picks equal those of "naive"; "stochastic" evaluates a seeded
    Bernoulli sample of expected size |V_c| / k * ln(1 / epsilon) per class and round.

    ``class_discriminability`` (n_concepts, n_classes) in [0, 1], when given, is D(j) per class instead of
    LaBo's score and ``direction`` (e.g. ``item_discriminability``: how well a concept's scores separate the
    class's items from the others').
    """
    x = normalize_rows(_as_matrix("concept_embeddings", concept_embeddings))
    member = np.asarray(membership)
    if member.dtype != np.bool_:
        raise ValueError(f"`membership` must be a bool array, got dtype {member.dtype}")
    if member.ndim != 2 or member.shape[0] != x.shape[0] or member.shape[1] == 0:
        raise ValueError(
            f"`membership` must have shape (n_concepts={x.shape[0]}, n_classes >= 1), got {member.shape}"
        )
    if not member.any():
        raise ValueError("`membership` has no candidate in any class")
    n, n_classes = member.shape
    if class_association is None:
        discriminability = np.zeros(n)
    else:
        association = np.asarray(class_association)
        if association.shape != member.shape:
            raise ValueError(f"`class_association` must have shape {member.shape}, got {association.shape}")
        discriminability = labo_discriminability(association)
    _check_choice("direction", direction, DIRECTIONS)
    per_class_d = discriminability[:, None] * class_direction(association, direction) if (
        class_association is not None and direction != "off") else None
    if class_discriminability is not None:
        per_class_d = np.asarray(class_discriminability, dtype=np.float64)
        if per_class_d.shape != member.shape:
            raise ValueError(f"`class_discriminability` must have shape {member.shape}, got {per_class_d.shape}")
        _check_finite("class_discriminability", per_class_d)
        if per_class_d.min() < 0 or per_class_d.max() > 1:
            raise ValueError("`class_discriminability` must lie in [0, 1]")
    # Budgets above the candidate count are not errors here: a class with fewer candidates than
    # k_per_class takes all of them, and a global budget stops at whatever the classes can fill.
    k = _check_k("k_per_class", k_per_class, math.inf)
    if global_budget is not None:
        global_budget = _check_k("global_budget", global_budget, math.inf)
    alpha = _check_weight("alpha", alpha)
    beta = _check_weight("beta", beta)
    if alpha == 0 and beta == 0:
        raise ValueError("`alpha` and `beta` cannot both be 0")
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_epsilon(epsilon)

    blocks = _ClassBlocks(x, member)
    cand, sizes = blocks.cand, blocks.sizes
    inv_size = np.where(sizes > 0, 1.0 / np.maximum(sizes, 1), 0.0)
    if per_class_d is None:
        weighted_d = alpha * discriminability[np.maximum(cand, 0)]
    else:
        weighted_d = alpha * per_class_d[np.maximum(cand, 0), np.arange(n_classes)[:, None]]
    available = blocks.valid.copy()
    count = np.zeros(n_classes, dtype=np.int64)
    rng = np.random.default_rng(seed)

    def utility(classes: np.ndarray, positions: np.ndarray, coverage: np.ndarray) -> np.ndarray:
        return weighted_d[classes, positions] + beta * coverage * inv_size[classes]

    upper = np.full(cand.shape, -np.inf)
    if optimizer == "lazy":
        upper = weighted_d + beta * blocks.initial * inv_size[:, None]
        upper[~available] = -np.inf

    selected: list[int] = []
    gains: list[float] = []
    ranks: list[int] = []
    picked_for: list[int] = []
    coverage_gain: list[float] = []
    picked_d: list[float] = []
    limit = global_budget if global_budget is not None else n
    bar = _progress(min(limit, n_classes * k), "LaBo selection")
    while len(selected) < limit:
        active = np.flatnonzero((count < k) & available.any(axis=1))
        if active.size == 0:
            break
        if optimizer == "naive":
            cov = blocks.coverage_all(active)
            u = weighted_d[active] + beta * cov * inv_size[active, None]
            u[~available[active]] = -np.inf
            pick_pos = np.argmax(u, axis=1)
            pick_gain = u[np.arange(active.size), pick_pos]
        elif optimizer == "lazy":
            pick_pos, pick_gain = _lazy_round(blocks, active, upper, available, utility)
        else:
            budget_left = np.maximum(k - count[active], 1)
            n_avail = available[active].sum(axis=1)
            expected = np.minimum(n_avail, np.ceil(sizes[active] / budget_left * math.log(1.0 / epsilon)))
            keys = rng.random(available[active].shape)
            keys[~available[active]] = np.inf
            sampled = keys < (expected / n_avail)[:, None]
            sampled[np.arange(active.size), np.argmin(keys, axis=1)] = True  # never an empty sample
            rows, cols = np.nonzero(sampled)
            u = np.full(sampled.shape, -np.inf)
            u[rows, cols] = utility(active[rows], cols, blocks.coverage_pairs(active[rows], cols))
            pick_pos = np.argmax(u, axis=1)
            pick_gain = u[np.arange(active.size), pick_pos]
        order = np.lexsort((active, -pick_gain))
        dirty = np.zeros(n_classes, dtype=bool)
        for i in order.tolist():
            if len(selected) >= limit:
                break
            c = int(active[i])
            if dirty[c] or count[c] >= k or not available[c, pick_pos[i]]:
                continue  # (unavailable: it belongs to a class that an earlier pick of this round filled)
            j = int(cand[c, pick_pos[i]])
            lo, hi = blocks.member_ptr[j], blocks.member_ptr[j + 1]
            ranks.append(int(count[c]))
            total_cov = 0.0
            credited = 0
            for c2, p2 in zip(blocks.member_class[lo:hi].tolist(), blocks.member_pos[lo:hi].tolist()):
                row = blocks.sim[c2, p2]
                gain = float(np.maximum(row - blocks.best[c2], 0.0).sum())
                np.maximum(blocks.best[c2], row, out=blocks.best[c2])
                available[c2, p2] = False
                upper[c2, p2] = -np.inf
                count[c2] += 1
                total_cov += beta * gain * inv_size[c2]
                credited += 1
                if c2 != c:
                    dirty[c2] = True
            members = blocks.member_class[lo:hi]
            for c2 in members[count[members] >= k].tolist():  # a class this pick filled takes no more concepts,
                entries = _csr_gather(blocks.member_ptr, cand[c2, : sizes[c2]])[0]  # so none it shares stays open
                available[blocks.member_class[entries], blocks.member_pos[entries]] = False
                upper[blocks.member_class[entries], blocks.member_pos[entries]] = -np.inf
            selected.append(j)
            picked_for.append(c)
            coverage_gain.append(total_cov)
            if per_class_d is None:
                d_gain = alpha * discriminability[j] * credited
                picked_d.append(discriminability[j])
            else:
                d_gain = alpha * float(per_class_d[j, blocks.member_class[lo:hi]].sum())
                picked_d.append(per_class_d[j, c])
            gains.append(d_gain + total_cov)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    chosen = np.array(selected, dtype=np.int64)
    gains_array = np.array(gains, dtype=np.float64)
    logger.info(
        "LaBo selection: %d concepts for %d classes (k_per_class=%d, global_budget=%s, optimizer=%s)",
        chosen.size, n_classes, k, global_budget, optimizer,
    )
    return LaboSelection(
        selected=chosen,
        gains=gains_array,
        ranks=np.array(ranks, dtype=np.int64),
        picked_for=np.array(picked_for, dtype=np.int64),
        discriminability=np.array(picked_d, dtype=np.float64),
        coverage_gain=np.array(coverage_gain, dtype=np.float64),
        objective=float(gains_array.sum()),
    )


def _lazy_round(
    blocks: _ClassBlocks, active: np.ndarray, upper: np.ndarray, available: np.ndarray, utility: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Each active class's greedy pick, re-evaluating only the top stale upper bounds (doubling batches).

    A class is resolved when its best fresh gain beats every stale bound, or ties it with a lower
    position (ties go to the lowest concept index, as in naive greedy).
    """
    m = upper.shape[1]
    fresh = np.zeros((active.size, m), dtype=bool)
    pick_pos = np.zeros(active.size, dtype=np.int64)
    pick_gain = np.zeros(active.size)
    pending = np.arange(active.size)
    batch = 2
    while pending.size:
        classes = active[pending]
        stale = available[classes] & ~fresh[pending]
        bounds = np.where(stale, upper[classes], -np.inf)
        b = min(batch, m)
        top = np.argpartition(-bounds, b - 1, axis=1)[:, :b] if b < m else np.broadcast_to(np.arange(m), (len(classes), m))
        rows = np.repeat(np.arange(len(classes)), top.shape[1])
        cols = top.ravel()
        keep = stale[rows, cols]
        rows, cols = rows[keep], cols[keep]
        upper[classes[rows], cols] = utility(classes[rows], cols, blocks.coverage_pairs(classes[rows], cols))
        fresh[pending[rows], cols] = True
        done = available[classes] & fresh[pending]
        fresh_u = np.where(done, upper[classes], -np.inf)
        stale_u = np.where(available[classes] & ~fresh[pending], upper[classes], -np.inf)
        best_fresh, arg_fresh = fresh_u.max(axis=1), fresh_u.argmax(axis=1)
        best_stale, arg_stale = stale_u.max(axis=1), stale_u.argmax(axis=1)
        resolved = (best_fresh > best_stale) | ((best_fresh == best_stale) & (arg_fresh < arg_stale))
        resolved |= best_stale == -np.inf
        pick_pos[pending[resolved]] = arg_fresh[resolved]
        pick_gain[pending[resolved]] = best_fresh[resolved]
        pending = pending[~resolved]
        batch *= 2
    return pick_pos, pick_gain
