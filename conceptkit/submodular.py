"""Submodular selection on its own: fit on a similarity matrix or embeddings, get the ranking and the gains.

The engine the build selects concepts with (``conceptkit.pipelines.selection.submodular``), for any subset
selection task (representative items, diverse examples). Pure numpy / scipy / FAISS.

>>> import numpy as np
>>> from conceptkit.submodular import FacilityLocationSelection
>>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
>>> sel = FacilityLocationSelection(10, metric="cosine").fit(x)
>>> sel.ranking.shape, bool(np.all(np.diff(sel.gains) <= 1e-6))
((10,), True)
>>> sel.transform(x).shape
(10, 8)

The lower-level pieces (objectives, optimisers, LaBo's per-class selection) are re-exported unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from conceptkit.pipelines.selection.submodular import (
    FacilityLocation,
    FeatureBased,
    GraphCut,
    LaboSelection,
    Mixture,
    Modular,
    Objective,
    SaturatedCoverage,
    Selection,
    facility_location_greedy,
    greedy,
    knn_graph,
    labo_discriminability,
    lazy_greedy,
    naive_greedy,
    select_labo,
    stochastic_greedy,
)

__all__ = [
    "FacilityLocation", "FacilityLocationSelection", "FeatureBased", "GraphCut", "LaboSelection", "Mixture",
    "Modular", "Objective", "SaturatedCoverage", "Selection", "facility_location_greedy", "greedy", "knn_graph",
    "labo_discriminability", "lazy_greedy", "naive_greedy", "select_labo", "stochastic_greedy",
]


class FacilityLocationSelection:
    """Select ``n_samples`` rows by facility location, in the fit/transform style of apricot.

    ``metric``: ``"cosine"`` (rows of ``X`` are embeddings), ``"knn"`` (a sparse graph of ``n_neighbors``
    cosine neighbours, for large ``X``) or ``"precomputed"`` (``X`` is an (n_ground, n) similarity matrix).
    After ``fit``: ``ranking`` (selected indices, in pick order), ``gains`` (the marginal gain of each pick)
    and ``objective``.
    """

    def __init__(self, n_samples: int, *, metric: str = "cosine", optimizer: str = "lazy", n_neighbors: int = 20,
                 epsilon: float = 0.1, seed: int = 0) -> None:
        self.n_samples = n_samples
        self.metric = metric
        self.optimizer = optimizer
        self.n_neighbors = n_neighbors
        self.epsilon = epsilon
        self.seed = seed
        self.ranking: np.ndarray | None = None
        self.gains: np.ndarray | None = None
        self.objective: float | None = None

    def fit(self, X: Any) -> FacilityLocationSelection:
        result = facility_location_greedy(X, self.n_samples, metric=self.metric, n_neighbors=self.n_neighbors,
                                          optimizer=self.optimizer, epsilon=self.epsilon, seed=self.seed)
        self.ranking, self.gains, self.objective = result.selected, result.gains, result.objective
        return self

    def transform(self, X: Any) -> Any:
        """The selected rows of ``X`` (candidates are columns for ``metric="precomputed"``: those columns)."""
        if self.ranking is None:
            raise ValueError("call fit() before transform()")
        return X[:, self.ranking] if self.metric == "precomputed" else X[self.ranking]

    def fit_transform(self, X: Any) -> Any:
        return self.fit(X).transform(X)
