"""The selection stage: turn accepted candidates plus item evidence into the run's concept set.

In: the accepted candidates (with their classes), their unit-norm embeddings, the class list and, when items are
labelled, the mean unit-norm item embedding of each class. The class-concept association is the mean cosine of a
concept to a class's items, which for unit vectors is the dot product with the class mean. Out: concept rows for
concepts.parquet (in selection order) and the selection parameters for the manifest. Pure numpy, no Beam.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from conceptkit.pipelines.config import SelectionConfig
from conceptkit.pipelines.selection.filters import Candidate


def class_association(concept_embeddings: np.ndarray, class_means: np.ndarray) -> np.ndarray:
    """(n_concepts, n_classes) mean cosine similarity of each concept to each class's items."""
    return np.asarray(concept_embeddings, dtype=np.float64) @ np.asarray(class_means, dtype=np.float64).T


def select_concepts(
    accepted: Sequence[Candidate],
    embeddings: np.ndarray,
    classes: Sequence[str],
    *,
    class_means: Mapping[str, np.ndarray] | None,
    cfg: SelectionConfig,
    generic_spread: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Concept rows (selection order, ``concept_id`` = position) and a summary of the selection.

    With item evidence, a candidate whose best class association exceeds its median class association by less
    than ``generic_spread`` is rejected as ``generic`` first (it points at no class), unless that would leave
    one of its classes without candidates."""
    from conceptkit.pipelines.selection.submodular import select_labo

    if len(accepted) == 0:
        raise ValueError("no accepted candidate concepts to select from")
    class_pos = {c: i for i, c in enumerate(classes)}
    membership = np.zeros((len(accepted), len(classes)), dtype=bool)
    for i, cand in enumerate(accepted):
        for c in cand.classes:
            membership[i, class_pos[c]] = True
    use_items = bool(class_means) and all(c in class_means for c in classes)
    association = None
    if use_items:
        means = np.stack([class_means[c] for c in classes])
        association = class_association(embeddings, means)
        if generic_spread > 0 and len(classes) > 2:
            spread = association.max(axis=1) - np.median(association, axis=1)
            generic = spread < generic_spread
            if generic.any() and membership[~generic].any(axis=0).all():
                for i in np.flatnonzero(generic).tolist():
                    accepted[i].reject("generic")
                keep = np.flatnonzero(~generic)
                accepted = [accepted[i] for i in keep.tolist()]
                embeddings, membership, association = embeddings[keep], membership[keep], association[keep]
    result = select_labo(
        np.ascontiguousarray(embeddings, dtype=np.float32),
        membership,
        class_association=association,
        k_per_class=cfg.k_per_class,
        global_budget=cfg.global_budget,
        alpha=cfg.alpha if use_items else 0.0,
        beta=cfg.beta,
        optimizer=cfg.optimizer,
        epsilon=cfg.epsilon,
        seed=cfg.seed,
        direction=cfg.direction,
    )
    rows = []
    for pos, idx in enumerate(result.selected.tolist()):
        cand = accepted[idx]
        cand.selected = True
        rows.append(
            {
                "concept_id": pos,
                "concept": cand.concept,
                "classes": list(cand.classes),
                "picked_for": classes[int(result.picked_for[pos])],
                "rank": int(result.ranks[pos]),
                "gain": float(result.gains[pos]),
                "discriminability": float(result.discriminability[pos]),
                "coverage_gain": float(result.coverage_gain[pos]),
                "candidate_id": cand.candidate_id,
                "embedding": np.asarray(embeddings[idx], dtype=np.float32).tolist(),
            }
        )
    summary = {
        "objective": float(result.objective),
        "uses_item_evidence": use_items,
        "parameters": cfg.model_dump(mode="json") | ({} if use_items else {"alpha_effective": 0.0}),
        "selected": len(rows),
        "candidates": len(accepted),
    }
    return rows, summary
