"""The numba loops behind kernels.py, at module level so that numba's disk cache holds them (functions defined
inside another function and calling each other were compiled again in every process: ~2 s). Imported only by
``kernels.load()``; see kernels.py for what each loop is for."""

from __future__ import annotations

import numba
import numpy as np

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
def live_filter(indptr, indices, data, best, new_indptr, new_indices, new_data):  # keep data > best, one pass
    k = 0
    new_indptr[0] = 0
    for j in range(indptr.shape[0] - 1):
        for t in range(indptr[j], indptr[j + 1]):
            if data[t] > best[indices[t]]:
                new_indices[k] = indices[t]
                new_data[k] = data[t]
                k += 1
        new_indptr[j + 1] = k
    return k


# A sparse row's gain in source order (no fastmath: the same sum wherever it is inlined, so a gain computed by
# lazy_sparse equals the one sparse_gains gives naive greedy, bit for bit).
@numba.njit(nogil=True, cache=True)
def row_gain(indptr, indices, data, j, best):
    acc = 0.0
    for k in range(indptr[j], indptr[j + 1]):
        acc += max(data[k] - best[indices[k]], np.float32(0.0))
    return acc


@jit
def sparse_gains(indptr, indices, data, idx, best, out):  # the same over CSR rows of live entries
    for r in range(idx.shape[0]):
        out[r] = row_gain(indptr, indices, data, idx[r], best)


@numba.njit(nogil=True, cache=True, inline="always")
def above(hv, hi, a, b):  # heap order: larger bound first, the lower index on ties
    return hv[a] > hv[b] or (hv[a] == hv[b] and hi[a] < hi[b])


@numba.njit(nogil=True, cache=True)
def sift_down(hv, hi, pos, size):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        if left + 1 < size and above(hv, hi, left + 1, left):
            child = left + 1
        if not above(hv, hi, child, pos):
            return
        hv[pos], hv[child] = hv[child], hv[pos]
        hi[pos], hi[child] = hi[child], hi[pos]
        pos = child


@numba.njit(nogil=True, cache=True)
def lazy_sparse(indptr, indices, data, best, upper, fresh_at, first_step, steps, selected, picked_gains):
    """Lazy greedy steps first_step .. first_step + steps over CSR rows of live entries, a binary heap of the
    bounds ``upper`` (stale unless ``fresh_at[j]`` is the current step): the top is picked once it is fresh,
    so every other bound is lower or equal with a higher index, as naive greedy's first maximum. Updates
    ``best``, ``upper`` (-inf once picked) and ``fresh_at`` in place; returns the gain evaluations."""
    n = upper.shape[0]
    hv = np.empty(n)
    hi = np.empty(n, dtype=np.int64)
    size = 0
    for j in range(n):
        if upper[j] > -np.inf:
            hv[size] = upper[j]
            hi[size] = j
            size += 1
    for pos in range(size // 2 - 1, -1, -1):
        sift_down(hv, hi, pos, size)
    evaluations = 0
    for s in range(steps):
        step = first_step + s
        while fresh_at[hi[0]] != step:
            j = hi[0]
            g = row_gain(indptr, indices, data, j, best)
            evaluations += 1
            upper[j] = g
            fresh_at[j] = step
            hv[0] = g
            sift_down(hv, hi, 0, size)
        j = hi[0]
        selected[s] = j
        picked_gains[s] = hv[0]
        upper[j] = -np.inf
        size -= 1
        hv[0], hi[0] = hv[size], hi[size]
        sift_down(hv, hi, 0, size)
        for k in range(indptr[j], indptr[j + 1]):
            if data[k] > best[indices[k]]:
                best[indices[k]] = data[k]
    return evaluations
