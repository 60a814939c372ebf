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


MIN_EVIDENCE = 5  # items per class below which an AUC says too little: LaBo's score instead


def evidence_size(cfg: SelectionConfig, n_classes: int) -> int:
    """Items per class kept as selection evidence: ``cfg.evidence_per_class``, at most 100,000 items in all (at
    least 32 per class); 0 unless discriminability is measured on items."""
    if cfg.discriminability != "items":
        return 0
    return min(cfg.evidence_per_class, max(32, 100_000 // max(n_classes, 1)))


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
    review=None,
    class_evidence: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Concept rows (selection order, ``concept_id`` = position) and a summary of the selection.

    With item evidence, a candidate whose best class association exceeds its median class association by less
    than ``generic_spread`` is rejected as ``generic`` first (it points at no class), unless that would leave
    one of its classes without candidates.

    ``review`` (``conceptkit.pipelines.review.apply.ReviewInput``) applies what people said: a concept rejected
    or replaced for a class leaves that class (``review_rejected`` when it leaves every class), its precision
    weight scales its class association, and a kept one is pinned: selected for its class, in place of the
    class's last unpinned pick when the class is full.

    ``class_evidence`` (unit-norm embeddings of a sample of each class's train items): with
    ``cfg.discriminability == "items"`` and at least ``MIN_EVIDENCE`` items for every class, a concept's
    discriminability for a class is ``item_discriminability`` (2 AUC - 1 of its scores on those items, times
    the review's precision weight) instead of LaBo's score."""
    from conceptkit.pipelines.selection.submodular import item_discriminability, select_labo

    if review is not None:
        keep = []
        for i, cand in enumerate(accepted):
            left = [c for c in cand.classes if not review.removes(c, cand.concept)]
            if not left:
                cand.reject("review_rejected")
                continue
            cand.classes[:] = left
            keep.append(i)
        accepted = [accepted[i] for i in keep]
        embeddings = np.asarray(embeddings)[keep] if keep else np.zeros((0, np.asarray(embeddings).shape[1]))
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
        if review is not None:
            association = association * np.array([[review.weight(c.concept)] for c in accepted])
        if generic_spread > 0 and len(classes) > 2:
            spread = association.max(axis=1) - np.median(association, axis=1)
            generic = spread < generic_spread
            if generic.any() and membership[~generic].any(axis=0).all():
                for i in np.flatnonzero(generic).tolist():
                    accepted[i].reject("generic")
                keep = np.flatnonzero(~generic)
                accepted = [accepted[i] for i in keep.tolist()]
                embeddings, membership, association = embeddings[keep], membership[keep], association[keep]
    per_class = None
    evidence_sizes = {c: len((class_evidence or {}).get(c, ())) for c in classes}
    if use_items and cfg.discriminability == "items" and min(evidence_sizes.values()) >= MIN_EVIDENCE:
        per_class = item_discriminability(embeddings, membership, [class_evidence[c] for c in classes])
        if review is not None:
            per_class = per_class * np.array([[min(1.0, review.weight(c.concept))] for c in accepted])
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
        class_discriminability=per_class,
    )
    picks = [(idx, classes[int(result.picked_for[pos])], pos) for pos, idx in enumerate(result.selected.tolist())]
    pinned_added = 0
    if review is not None:
        picks, pinned_added = _with_pins(picks, accepted, review, cfg.k_per_class)
    rows = []
    for pos, (idx, picked_for, at) in enumerate(picks):
        cand = accepted[idx]
        cand.selected = True
        rows.append(
            {
                "concept_id": pos,
                "concept": cand.concept,
                "classes": list(cand.classes),
                "picked_for": picked_for,
                "rank": int(result.ranks[at]) if at is not None else 0,
                "gain": float(result.gains[at]) if at is not None else 0.0,
                "discriminability": float(result.discriminability[at]) if at is not None else 0.0,
                "coverage_gain": float(result.coverage_gain[at]) if at is not None else 0.0,
                "candidate_id": cand.candidate_id,
                "embedding": np.asarray(embeddings[idx], dtype=np.float32).tolist(),
            }
        )
    summary = {
        "objective": float(result.objective),
        "uses_item_evidence": use_items,
        "discriminability": "items" if per_class is not None else ("labo" if use_items else "none"),
        "evidence_per_class": {c: n for c, n in evidence_sizes.items()} if per_class is not None else {},
        "parameters": cfg.model_dump(mode="json") | ({} if use_items else {"alpha_effective": 0.0}),
        "selected": len(rows),
        "candidates": len(accepted),
    }
    if review is not None:
        summary["review"] = {"pinned_added": pinned_added, **review.record()}
    return rows, summary


def _with_pins(picks, accepted, review, k_per_class: int):
    """``picks`` (candidate index, class, position in the optimiser's result) plus every pinned concept not yet
    picked for its class; a full class gives up its last unpinned pick for it. Returns (picks, pins added)."""
    picked = {(accepted[i].concept, cls) for i, cls, _ in picks}
    added = 0
    for i, cand in enumerate(accepted):
        for cls in cand.classes:
            if not review.pins(cls, cand.concept) or (cand.concept, cls) in picked:
                continue
            if any(j == i for j, _, _ in picks):
                continue  # selected for another class already: one row per concept
            of_class = [k for k, (j, c, _) in enumerate(picks) if c == cls]
            if len(of_class) >= k_per_class:
                drop = [k for k in of_class if not review.pins(cls, accepted[picks[k][0]].concept)]
                if not drop:
                    continue
                accepted[picks[drop[-1]][0]].selected = False
                del picks[drop[-1]]
            picks.append((i, cls, None))
            picked.add((cand.concept, cls))
            added += 1
    return picks, added
