"""Compiled loops for dense facility location (numba), used when numba imports and the problem is large.

numpy evaluates a gain sum_i max(s_ji - best_i, 0) in four passes over the row (gather, subtract, clip, sum), each
a call that takes the GIL; these loops do it in one pass that releases the GIL, so a pool of threads runs them in
parallel. On the 2-core VM a 256 x 10,000 batch in cache took 0.45-0.54 ms against 1.7-2.1 ms in numpy; lazy
greedy at n = 10,000 ran 1.3-1.5x faster (benchmarks/README.md, "Fifth round"). A row's gain comes from the same loop whatever batch it is in, so lazy greedy still reproduces
naive greedy; against the numpy path gains agree to float32 rounding (float64 accumulation here).

``load()`` compiles on first use (cached on disk by numba: about a second the first time on a machine, then a
load); ``CONCEPTKIT_NUMBA=0`` turns the loops off, and without numba the numpy path runs.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

_LOADED: list = []


def load() -> SimpleNamespace | None:
    """The compiled functions, or None (numba missing or ``CONCEPTKIT_NUMBA=0``)."""
    if os.environ.get("CONCEPTKIT_NUMBA", "1") == "0":
        return None
    if not _LOADED:
        _LOADED.append(_compile())
    return _LOADED[0]


def _compile() -> SimpleNamespace | None:
    try:
        import numba
        import numpy as np
    except ImportError:
        return None
    jit = numba.njit(nogil=True, cache=True, fastmath=True)

    @jit
    def gains(rows, idx, best, out):  # out[r] = sum_i max(rows[idx[r], i] - best[i], 0)
        n = rows.shape[1]
        for r in range(idx.shape[0]):
            row = rows[idx[r]]
            acc = 0.0
            for i in range(n):
                acc += max(row[i] - best[i], np.float32(0.0))
            out[r] = acc

    @jit
    def live_counts(rows, lo, hi, best, counts):  # counts[r] = #{i: rows[lo + r, i] > best[i]}
        n = rows.shape[1]
        for r in range(hi - lo):
            row = rows[lo + r]
            c = 0
            for i in range(n):
                if row[i] > best[i]:
                    c += 1
            counts[r] = c

    @jit
    def live_fill(rows, lo, hi, best, start, indices, data):  # the live entries of rows lo..hi, from start
        n = rows.shape[1]
        k = start
        for r in range(hi - lo):
            row = rows[lo + r]
            for i in range(n):
                if row[i] > best[i]:
                    indices[k] = i
                    data[k] = row[i]
                    k += 1

    @jit
    def sparse_gains(indptr, indices, data, idx, best, out):  # the same over CSR rows of live entries
        for r in range(idx.shape[0]):
            j = idx[r]
            acc = 0.0
            for k in range(indptr[j], indptr[j + 1]):
                acc += max(data[k] - best[indices[k]], np.float32(0.0))
            out[r] = acc

    return SimpleNamespace(gains=gains, live_counts=live_counts, live_fill=live_fill, sparse_gains=sparse_gains)
