"""The one decision of which concepts an item shows: the binary labels, the review pre-ticks, merged.parquet's
``model`` column, review.json's metrics and ``conceptkit eval`` all come from ``LabelRule.decide``.

In: an (items x concepts) cosine score matrix and the rule's per-concept statistics; out: a boolean matrix.

The rule (chosen by measurement on TREC's 50 fine question types, benchmarks/bench_labels.py):

1. each concept's scores are standardised over the run's items (``mean``/``std`` from the calibration pass), so
   a concept that is close to everything does not fire on everything;
2. each item's standardised scores are standardised again across the run's concepts, so an item that is close
   to every concept (short, generic texts) does not get all of them;
3. a concept is shown when that double z-score reaches ``z`` (default 3: about one item in 700 of a normal
   spread; an item gets a concept only when it stands out both among the concept's items and among the item's
   concepts).

One concept among ``n`` can stand out of an item's spread by at most sqrt(n - 1) standard deviations, so for
small concept sets the cut is capped at half that (``effective_z``; 3 holds from 37 concepts on). With fewer
than ``MIN_CONCEPTS_FOR_ITEM_CONTEXT`` concepts, step 2 is skipped. A concept with a cut fitted from human labels (``conceptkit ls pull``) is decided by that
cut instead of 0, on the same margins (so the item and class context stay): people's answers move each
concept's cut, concept by concept, for every later push, pull, refresh and eval.

The rule is stored in the run as ``labels.json`` (``save``/``load``); the human thresholds live in
``review.json`` and join it in ``for_run``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

DEFAULT_Z = 3.0
MIN_CONCEPTS_FOR_ITEM_CONTEXT = 3
FILE = "labels.json"
RULE = "double-z"
_EPS = 1e-6


@dataclass(frozen=True)
class LabelRule:
    mean: np.ndarray  # per concept, over the run's items
    std: np.ndarray
    z: float = DEFAULT_Z
    # concept_id -> the cut fitted to people's answers, in the rule's units: the concept is shown when its margin
    # (double z-score minus z, class penalty included) reaches the cut instead of 0
    refits: Mapping[int, float] = field(default_factory=dict)
    # Per concept, the classes it was proposed for; with class_margin, a labelled item of another class needs
    # that much more (None: class context off; inf: ACC, never).
    classes: tuple[tuple[str, ...], ...] = ()
    class_margin: float | None = None

    @property
    def n_concepts(self) -> int:
        return len(self.mean)

    @property
    def item_context(self) -> bool:
        return self.n_concepts >= MIN_CONCEPTS_FOR_ITEM_CONTEXT

    @property
    def effective_z(self) -> float:
        if not self.item_context:
            return self.z
        return float(min(self.z, np.sqrt(self.n_concepts - 1) / 2))

    def standardised(self, scores: np.ndarray) -> np.ndarray:
        """(items x concepts) double z-scores: per concept over items, then per item over concepts."""
        scores = np.asarray(scores, dtype=np.float32)
        z = (scores - self.mean[None, :]) / np.maximum(self.std[None, :], _EPS)
        if self.item_context:
            z = (z - z.mean(axis=1, keepdims=True)) / np.maximum(z.std(axis=1, keepdims=True), _EPS)
        return z

    def class_penalty(self, labels) -> np.ndarray | None:
        """(items x concepts) extra cut from the items' classes (0 for a concept of the item's class or an
        unlabelled item), or None without class context."""
        if self.class_margin is None or labels is None or not self.classes:
            return None
        margin = np.float32(self.class_margin) if np.isfinite(self.class_margin) else np.float32(1e6)
        known = {c for cs in self.classes for c in cs}
        out = np.zeros((len(labels), self.n_concepts), dtype=np.float32)
        member = {}
        for i, label in enumerate(labels):
            if label is None or label not in known:
                continue
            if label not in member:
                member[label] = np.array([label not in cs for cs in self.classes], dtype=bool)
            out[i, member[label]] = margin
        return out

    def margins(self, scores: np.ndarray, labels=None) -> np.ndarray:
        """(items x concepts) signed distance to the decision, in the rule's units (>= 0 means shown): the double
        z-score minus ``z``, minus the class penalty for a labelled item (``labels`` in item order), minus the
        concept's human cut where a pull fitted one."""
        scores = np.asarray(scores, dtype=np.float32)
        out = self.standardised(scores) - self.effective_z
        penalty = self.class_penalty(labels)
        if penalty is not None:
            out -= penalty
        for cid, cut in self.refits.items():
            if 0 <= cid < self.n_concepts:
                out[:, cid] -= np.float32(cut)
        return out

    def decide(self, scores: np.ndarray, labels=None) -> np.ndarray:
        """(items x concepts) booleans: the binary concept labels (``labels``: the items' classes, or None)."""
        return self.margins(scores, labels) >= 0

    def concept_floor(self) -> np.ndarray:
        """Per concept, the raw score at which the concept-level z reaches ``z`` plus the human cut
        (``concepts.parquet``'s ``threshold``; the item and class steps move each item's cut around it)."""
        cut = np.array([self.refits.get(c, 0.0) for c in range(self.n_concepts)], dtype=np.float32)
        return (self.mean + (self.effective_z + cut) * self.std).astype(np.float32)

    def with_refits(self, refits: Mapping[int, float]) -> "LabelRule":
        return replace(self, refits=dict(refits))

    def with_classes(self, classes, class_margin: float | None) -> "LabelRule":
        return replace(self, classes=tuple(tuple(c) for c in classes), class_margin=class_margin)

    def as_json(self) -> dict:
        margin = self.class_margin
        return {"rule": RULE, "z": self.z, "min_concepts_for_item_context": MIN_CONCEPTS_FOR_ITEM_CONTEXT,
                "class_margin": margin if margin is None or np.isfinite(margin) else "inf",
                "classes": [list(c) for c in self.classes],
                "mean": [round(float(x), 6) for x in self.mean], "std": [round(float(x), 6) for x in self.std]}


def from_histograms(histograms: np.ndarray, *, z: float = DEFAULT_Z) -> LabelRule:
    """The rule from (concepts x bins) score histograms over [-1, 1] (the streaming calibration pass)."""
    from conceptkit.pipelines.annotation.thresholds import bin_edges

    hist = np.asarray(histograms, dtype=np.float64)
    edges = bin_edges(hist.shape[1])
    centers = (edges[:-1] + edges[1:]) / 2
    total = np.maximum(hist.sum(axis=1), 1)
    mean = (hist * centers).sum(axis=1) / total
    var = (hist * (centers[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
    return LabelRule(mean.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(np.float32), z)


def from_scores(scores: np.ndarray, *, z: float = DEFAULT_Z) -> LabelRule:
    """The rule from a whole (items x concepts) score matrix (tests, benchmarks)."""
    scores = np.asarray(scores, dtype=np.float32)
    return LabelRule(scores.mean(axis=0), scores.std(axis=0), z)


def save(run_dir: str | os.PathLike[str], rule: LabelRule) -> Path:
    from conceptkit.schemas.io import write_text_atomic

    path = Path(run_dir) / FILE
    write_text_atomic(path, json.dumps(rule.as_json(), indent=1) + "\n")
    return path


class LabelRuleError(ValueError):
    """A run's labels.json is missing or unusable; the message names the file."""


def load(run_dir: str | os.PathLike[str], n_concepts: int) -> LabelRule:
    path = Path(run_dir) / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("rule") != RULE:
            raise ValueError(f"unknown rule {data.get('rule')!r}")
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
        z = float(data["z"])
        margin = data.get("class_margin")
        margin = None if margin is None else float(margin)
        classes = tuple(tuple(str(x) for x in c) for c in data.get("classes") or ())
    except FileNotFoundError:
        raise LabelRuleError(f"{path}: missing (runs built before the label rule existed: rebuild the run)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelRuleError(f"{path}: unusable label rule: {exc}") from None
    if len(mean) != n_concepts or len(std) != n_concepts or (classes and len(classes) != n_concepts):
        raise LabelRuleError(f"{path}: statistics for {len(mean)} concepts, the run has {n_concepts}")
    return LabelRule(mean, std, z, classes=classes, class_margin=margin)


def human_thresholds(run_dir: str | os.PathLike[str], concept_names: list[str]) -> dict[int, float]:
    """concept_id -> the cut the last pull fitted from human labels (review.json ``review.thresholds``), for this
    run's concepts."""
    try:
        review = json.loads((Path(run_dir) / "review.json").read_text(encoding="utf-8")).get("review", {})
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LabelRuleError(f"{Path(run_dir) / 'review.json'}: unreadable: {exc}") from None
    ids = {c: i for i, c in enumerate(concept_names)}
    return {ids[c]: float(t["cut"]) for c, t in (review.get("thresholds") or {}).items() if c in ids and "cut" in t}


def for_run(run_dir: str | os.PathLike[str], concept_names: list[str]) -> LabelRule:
    """The run's current rule: the build's statistics with the human thresholds of the last pull."""
    return load(run_dir, len(concept_names)).with_refits(human_thresholds(run_dir, concept_names))
