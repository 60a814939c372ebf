"""Compiled loops for dense facility location (numba), used when numba imports and the problem is large.

numpy evaluates a gain sum_i max(s_ji - best_i, 0) in four passes over the row (gather, subtract, clip, sum), each
a call that takes the GIL; these loops do it in one pass that releases the GIL, so a pool of threads runs them in
parallel. On the 2-core VM a 256 x 10,000 batch in cache took 0.45-0.54 ms against 1.7-2.1 ms in numpy; lazy
greedy at n = 10,000 ran 1.3-1.5x faster (benchmarks/README.md, "Fifth round"). A row's gain comes from the same loop whatever batch it is in, so lazy greedy still reproduces
naive greedy; against the numpy path gains agree to float32 rounding (float64 accumulation here).

Once the dense rows are pruned to live entries, ``lazy_sparse`` runs lazy greedy's steps themselves between two
prunes (a binary heap of the bounds instead of the numpy pool, whose per-step bookkeeping was a third of the
selection at n = 10,000), and ``live_filter`` re-prunes the live entries in one pass.

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
        from conceptkit.pipelines.selection import numba_loops as loops
    except ImportError:  # no numba
        return None
    return SimpleNamespace(gains=loops.gains, live_counts=loops.live_counts, live_fill=loops.live_fill,
                           live_filter=loops.live_filter, sparse_gains=loops.sparse_gains, lazy_sparse=loops.lazy_sparse)
