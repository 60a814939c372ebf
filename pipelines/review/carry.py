"""Human review survives a rebuild: what people said about the old run is carried into the new one.

In: the committed run that a build is about to replace, and the staged new run (complete, not yet swapped in).
Out: in the staged run, ``verified.parquet`` (every human judgement, re-keyed: ``concept_id`` follows the
concept's text into the new concept set, null where the new run has no such concept), ``human_candidates.parquet``
and ``review.json`` as they were, and ``merged.parquet`` recomputed against the new run's scores and labels.
Nothing is dropped: judgements whose concept or item the new run lacks stay in ``verified.parquet`` and are
counted as unmatched in the returned summary (the manifest's ``review_carried``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from conceptkit.schemas.io import read_table, write_table
from conceptkit.schemas.verified import HUMAN_CANDIDATES, MERGED, VERIFIED

logger = logging.getLogger(__name__)

REVIEW_FILES = ("verified.parquet", "human_candidates.parquet", "review.json", "merged.parquet")


def has_review(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in REVIEW_FILES)


def carry_forward(old: Path, new: Path) -> dict[str, Any] | None:
    """Carry ``old``'s review state into the staged run ``new``; returns counts, or None when there was none."""
    if not has_review(old):
        return None
    from conceptkit.pipelines.cli.labelstudio import load_run
    from conceptkit.pipelines.review.tasks import merge_labels

    summary: dict[str, Any] = {"from_run": _run_id(old)}
    state = json.loads((old / "review.json").read_text()) if (old / "review.json").exists() else None
    verified = read_table(old / "verified.parquet", VERIFIED).to_pylist() if (old / "verified.parquet").exists() else []
    summary.update(verified=len(verified), matched=0, unmatched=len(verified))
    if verified:
        data = load_run(new)
        concept_ids = {c: i for i, c in enumerate(data.concept_names)}
        items = set(data.item_ids)
        for row in verified:  # re-keyed by the concept's text: concept ids are positions in one run's set
            row["concept_id"] = concept_ids.get(row["concept"])
        matched = [r for r in verified
                   if r["concept_id"] is not None and (r["item_id"] is None or r["item_id"] in items)]
        summary.update(matched=len(matched), unmatched=len(verified) - len(matched))
        write_table(new / "verified.parquet", verified, VERIFIED)
        state = state or {}
        min_labels = int(state.get("pull", {}).get("min_labels", 10))
        merged, metrics = merge_labels(item_ids=data.item_ids, scores=data.scores, predicted=data.predicted(),
                                       concepts=data.concept_names, verified=matched, min_labels=min_labels)
        write_table(new / "merged.parquet", merged, MERGED)
        state["review"] = metrics
        state["carried"] = summary
    if (old / "human_candidates.parquet").exists():
        candidates = read_table(old / "human_candidates.parquet", HUMAN_CANDIDATES)
        write_table(new / "human_candidates.parquet", candidates, HUMAN_CANDIDATES)
        summary["human_candidates"] = candidates.num_rows
    if state is not None:
        (new / "review.json").write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    logger.info("carried review from %s: %d human judgements (%d matched the new run, %d kept unmatched)", old,
                summary.get("verified", 0), summary.get("matched", 0), summary.get("unmatched", 0))
    return summary


def _run_id(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "manifest.json").read_text()).get("run_id")
    except (OSError, ValueError):
        return None
