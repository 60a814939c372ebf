"""Per-concept decision thresholds calibrated from score distributions, without labels.

In: item-concept cosine scores, accumulated as fixed-bin histograms (so the pass streams and merges across
workers). Out: one threshold per concept. The default method is Otsu's: the cut that maximises the
between-group variance of the concept's score histogram, i.e. the most natural split of items into "shows the
concept" and "does not". A concept's threshold is never below ``floor`` (scores that low mean nothing for
sentence embeddings). Human labels later replace these with fitted thresholds (``conceptkit ls pull``).
"""

from __future__ import annotations

import numpy as np

BINS = 400
LOW, HIGH = -1.0, 1.0
DEFAULT_FLOOR = 0.2


def bin_edges(bins: int = BINS) -> np.ndarray:
    return np.linspace(LOW, HIGH, bins + 1)


def score_histograms(scores: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(concepts, bins) counts of an (items, concepts) score matrix."""
    scores = np.asarray(scores, dtype=np.float32)
    idx = np.clip(((scores - LOW) / (HIGH - LOW) * bins).astype(np.int64), 0, bins - 1)
    n_concepts = scores.shape[1]
    flat = idx + (np.arange(n_concepts, dtype=np.int64) * bins)[None, :]
    return np.bincount(flat.ravel(), minlength=n_concepts * bins).reshape(n_concepts, bins)


def otsu_thresholds(histograms: np.ndarray, *, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Otsu's threshold of each row of ``histograms`` (bins over [-1, 1]), at least ``floor``."""
    hist = np.asarray(histograms, dtype=np.float64)
    edges = bin_edges(hist.shape[1])
    centers = (edges[:-1] + edges[1:]) / 2
    total = hist.sum(axis=1, keepdims=True)
    total[total == 0] = 1
    p = hist / total
    w0 = np.cumsum(p, axis=1)
    mu = np.cumsum(p * centers, axis=1)
    mu_t = mu[:, -1:]
    w1 = 1 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    cut = np.argmax(between, axis=1)  # first maximum: deterministic
    return np.maximum(edges[cut + 1], floor).astype(np.float32)
