"""What people said, fed back into selection (``conceptkit select RUN --use-review``, the build DAG).

In: a run directory's ``verified.parquet`` (concept-list verdicts; item and concept judgements),
``human_candidates.parquet`` and ``merged.parquet``. Out: a ``ReviewInput`` that the build applies:

- concept-list verdicts, by majority of each reviewer's latest answer per (class, concept): ``reject`` removes the
  concept from that class's candidates, ``edit`` replaces it by the new wording (the original leaves, the edit
  joins as a human candidate), ``keep`` pins it (selected for the class whatever the budget's arithmetic);
- ``human_candidates.parquet`` (concepts typed as missing, edits) joins the candidates with ``source="human"``
  and goes through the same filters as the LLM's and the mined ones;
- per-concept precision from item and concept review (model-positive pairs people judged, from
  ``merged.parquet``), smoothed as (confirmed + 1) / (judged + 2), weights the concept's class association by
  twice that (1 when nobody judged it; a concept people keep rejecting loses to one they confirm).

``record()`` is what the manifest keeps under ``review_used``. Pure: no Beam, no HTTP.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_WEIGHT, MAX_WEIGHT = 0.25, 1.75


def _norm(text: str) -> str:
    """The same normal form the filters give a candidate's ``concept``."""
    from conceptkit.pipelines.selection.filters import normalize_concept

    return normalize_concept(" ".join(str(text).split()))


@dataclass(frozen=True)
class ReviewInput:
    source: str
    rejected: frozenset[tuple[str, str]] = frozenset()  # (class, concept)
    pinned: frozenset[tuple[str, str]] = frozenset()
    edited: dict[tuple[str, str], str] = field(default_factory=dict)  # (class, concept) -> new wording
    weights: dict[str, float] = field(default_factory=dict)  # concept -> weight of its class association
    candidates: list[dict[str, Any]] = field(default_factory=list)  # candidate rows, source "human"
    verdicts: dict[str, int] = field(default_factory=dict)

    def removes(self, class_name: str, concept: str) -> bool:
        key = (class_name, _norm(concept))
        return key in self.rejected or key in self.edited

    def pins(self, class_name: str, concept: str) -> bool:
        return (class_name, _norm(concept)) in self.pinned

    def weight(self, concept: str) -> float:
        return self.weights.get(_norm(concept), 1.0)

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "verdicts": dict(self.verdicts), "rejected": len(self.rejected),
                "edited": len(self.edited), "pinned": len(self.pinned), "human_candidates": len(self.candidates),
                "weighted_concepts": len(self.weights)}


class ReviewDataError(ValueError):
    """A review file of the run is unreadable; the message names it."""


def _read(path: Path, schema) -> list[dict[str, Any]]:
    from conceptkit.schemas.io import SchemaMismatch, read_table

    if not path.exists():
        return []
    try:
        return read_table(path, schema).to_pylist()
    except (OSError, ValueError, SchemaMismatch) as exc:
        raise ReviewDataError(f"{path}: unreadable: {' '.join(str(exc).split())[:300]}") from None


def has_review(run_dir: str | os.PathLike[str]) -> bool:
    run = Path(run_dir)
    return any((run / name).exists() for name in ("verified.parquet", "human_candidates.parquet"))


def list_verdicts(verified: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(class, concept) -> (keep|reject|edit, new wording) by majority of each reviewer's latest concept-list
    answer; ties decide nothing."""
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in verified:
        if row["review"] != "concept-list" or not row.get("class_name"):
            continue
        key = (row["class_name"], _norm(row["concept"]), row["annotator"])
        if key not in latest or row["time"] >= latest[key]["time"]:
            latest[key] = row
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for (cls, concept, _), row in sorted(latest.items()):
        by_pair[(cls, concept)].append(row)
    out = {}
    for pair, rows in by_pair.items():
        counts = Counter(r["label"] for r in rows if r["label"] in ("keep", "reject", "edit"))
        if not counts:
            continue
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            continue
        verdict = ranked[0][0]
        wording = None
        if verdict == "edit":
            edits = [r["edited_concept"] for r in rows if r["label"] == "edit" and r.get("edited_concept")]
            if not edits:
                continue
            wording = _norm(Counter(edits).most_common(1)[0][0])
        out[pair] = (verdict, wording)
    return out


def precision_weights(merged: list[dict[str, Any]]) -> dict[str, float]:
    """concept -> 2 * (confirmed + 1) / (judged + 2) over the model-positive pairs people judged."""
    judged: dict[str, list[bool]] = defaultdict(list)
    for row in merged:
        if row["model"] and row["human"] is not None:
            judged[_norm(row["concept"])].append(bool(row["human"]))
    return {c: min(MAX_WEIGHT, max(MIN_WEIGHT, 2 * (sum(v) + 1) / (len(v) + 2))) for c, v in judged.items()}


def load_review(run_dir: str | os.PathLike[str], classes: list[str]) -> ReviewInput:
    """The review data of ``run_dir`` as selection input; classes not in ``classes`` are ignored."""
    from conceptkit.schemas.verified import HUMAN_CANDIDATES, MERGED, VERIFIED

    run = Path(run_dir)
    known = set(classes)
    verdicts = {pair: v for pair, v in list_verdicts(_read(run / "verified.parquet", VERIFIED)).items()
                if pair[0] in known}
    rejected = frozenset(p for p, (v, _) in verdicts.items() if v == "reject")
    edited = {p: w for p, (v, w) in verdicts.items() if v == "edit" and w}
    # kept concepts are pinned, and so is an edit's new wording (people chose it for the class)
    pinned = frozenset([p for p, (v, _) in verdicts.items() if v == "keep"] + [(c, w) for (c, _), w in edited.items()])
    rows = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for row in _read(run / "human_candidates.parquet", HUMAN_CANDIDATES):
        kind = row["kind"]
        row_classes = [c for c in row["classes"] if c in known]
        if kind == "edit":  # an edit joins only when the class's verdict says edit
            pair = (row_classes[0], _norm(row["replaces"] or "")) if row_classes else None
            if pair is None or edited.get(pair) != _norm(row["concept"]):
                continue
        key = (_norm(row["concept"]), tuple(row_classes))
        if not row_classes or key in seen:
            continue
        seen.add(key)
        rows.append({"position": len(rows), "raw": row["concept"], "classes": row_classes, "prompt_id": "human",
                     "prompt": f"typed by a reviewer ({kind})", "model": "human", "sample": 0, "source": "human"})
    for (cls, _), wording in sorted(edited.items()):  # an edit verdict without its typed row still joins
        key = (wording, (cls,))
        if key not in seen:
            seen.add(key)
            rows.append({"position": len(rows), "raw": wording, "classes": [cls], "prompt_id": "human",
                         "prompt": "typed by a reviewer (edit)", "model": "human", "sample": 0, "source": "human"})
    weights = precision_weights(_read(run / "merged.parquet", MERGED))
    return ReviewInput(source=str(run), rejected=rejected, pinned=pinned, edited=edited, weights=weights,
                       candidates=rows, verdicts=dict(Counter(v for v, _ in verdicts.values())))
