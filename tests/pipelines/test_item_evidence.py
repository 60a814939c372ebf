"""Discriminability measured on items: the AUC score, the evidence sample the build keeps, and the stage's choice."""

from __future__ import annotations

import numpy as np
import pytest

from conceptkit.pipelines.config import SelectionConfig
from conceptkit.pipelines.selection import submodular as sm
from conceptkit.pipelines.selection.filters import Candidate
from conceptkit.pipelines.selection.stage import evidence_size, select_concepts
from conceptkit.pipelines.transforms import add_sums, class_sums


def _unit(*v: float) -> np.ndarray:
    v = np.array(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_item_discriminability_golden():
    # Class a's items lie on e1, class b's on e2. A concept on e1 separates them perfectly (AUC 1 -> 1), one
    # halfway scores every item the same (AUC 0.5 -> 0), one on e2 points at the other class (AUC 0 -> 0).
    a, b = np.tile(_unit(1, 0, 0), (4, 1)), np.tile(_unit(0, 1, 0), (3, 1))
    concepts = np.stack([_unit(1, 0, 0), _unit(1, 1, 0), _unit(0, 0, 1), _unit(0, 1, 0)])
    member = np.array([[1, 0], [1, 0], [1, 0], [1, 1]], dtype=bool)
    d = sm.item_discriminability(concepts, member, [a, b])
    assert d[:, 0].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert d[:, 1].tolist() == [0.0, 0.0, 0.0, 1.0]  # only where the concept is a candidate of the class


def test_items_prefer_a_concept_every_item_scores_over_one_that_only_raises_the_mean():
    # Half of class a's items are about X (score 1), half are not (score 0): X has the higher class-mean
    # association, but Y scores every item of a (0.3) above every item of b (0.1).
    a = np.stack([_unit(1, 0, 0, 0, 0)] * 2 + [_unit(0, 0, 0, 1, 0)] * 2)
    b = np.stack([_unit(0, 1, 0, 0, 0)] * 4)
    x, y = _unit(1, 0, 0, 0, 0), _unit(0.3, 0.1, 0, 0.3, 0.9)
    concepts = np.stack([x, y])
    member = np.array([[1, 0], [1, 0]], dtype=bool)
    means = np.stack([a.mean(0), b.mean(0)])
    assert (concepts @ means[0])[0] > (concepts @ means[0])[1]  # LaBo's association favours X
    d = sm.item_discriminability(concepts, member, [a, b])
    assert d[0, 0] == pytest.approx(0.5) and d[1, 0] == pytest.approx(1.0)  # the items favour Y


def _candidates(names_classes):
    return [Candidate(raw=n, classes=list(c), prompt_id="p", prompt="q", model="m", sample=0, position=i)
            for i, (n, c) in enumerate(names_classes)]


def test_stage_uses_item_evidence_when_every_class_has_enough():
    a = np.stack([_unit(1, 0, 0, 0, 0)] * 3 + [_unit(0, 0, 0, 1, 0)] * 3)
    b = np.stack([_unit(0, 1, 0, 0, 0)] * 6)
    emb = np.stack([_unit(1, 0, 0, 0, 0), _unit(0.3, 0.1, 0, 0.3, 0.9), _unit(0, 1, 0, 0, 0)])
    means = {c: (m.mean(0) / np.linalg.norm(m.mean(0))).astype(np.float32) for c, m in (("a", a), ("b", b))}

    def run(evidence, **cfg):
        cands = _candidates([("x", "a"), ("y", "a"), ("z", "b")])
        for c in cands:
            c.concept = c.raw
        rows, summary = select_concepts(cands, emb, ["a", "b"], class_means=means,
                                        cfg=SelectionConfig(k_per_class=1, beta=0.0, **cfg), class_evidence=evidence)
        return {r["picked_for"]: r["concept"] for r in rows}, summary

    picks, summary = run({"a": a, "b": b})
    assert picks["a"] == "y" and summary["discriminability"] == "items"
    assert summary["evidence_per_class"] == {"a": 6, "b": 6}
    picks, summary = run({"a": a, "b": b}, discriminability="labo")
    assert summary["discriminability"] == "labo"
    picks, summary = run({"a": a[:4], "b": b})  # fewer than MIN_EVIDENCE items of a: LaBo's score
    assert summary["discriminability"] == "labo" and summary["evidence_per_class"] == {}


def test_evidence_sample_is_the_same_whatever_the_batches():
    rng = np.random.default_rng(0)
    ids = [f"item-{i}" for i in range(40)]
    labels = ["a" if i % 3 else "b" for i in range(40)]
    vectors = rng.standard_normal((40, 4)).astype(np.float32)

    def batch(lo, hi):
        return {"item_id": ids[lo:hi], "label": labels[lo:hi], "split": ["train"] * (hi - lo),
                "embedding": vectors[lo:hi]}

    def combined(bounds):
        parts: dict[str, list] = {}
        for lo, hi in zip(bounds, bounds[1:]):
            for label, value in class_sums(batch(lo, hi), evidence_per_class=5):
                parts.setdefault(label, []).append(value)
        return {label: add_sums(values[::-1], evidence_per_class=5) for label, values in parts.items()}

    one, many = combined([0, 40]), combined([0, 7, 8, 23, 40])
    for label in ("a", "b"):
        assert one[label][1] == many[label][1] and np.allclose(one[label][0], many[label][0])
        assert [k for k, _ in one[label][2]] == [k for k, _ in many[label][2]] and len(one[label][2]) == 5
    assert evidence_size(SelectionConfig(), 14) == 256 and evidence_size(SelectionConfig(), 10_000) == 32
    assert evidence_size(SelectionConfig(discriminability="labo"), 14) == 0


def test_class_discriminability_is_checked():
    x = np.eye(3, dtype=np.float32)
    member = np.ones((3, 2), dtype=bool)
    with pytest.raises(ValueError, match="`class_discriminability` must have shape"):
        sm.select_labo(x, member, class_association=None, k_per_class=1, class_discriminability=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        sm.select_labo(x, member, class_association=None, k_per_class=1, class_discriminability=np.full((3, 2), 2.0))


def test_item_discriminability_equals_pairwise_auc():
    # Against the definition, pair by pair, with ties (rounded vectors) and unequal evidence sizes.
    rng = np.random.default_rng(3)
    evidence = [np.round(rng.standard_normal((n, 4)), 1).astype(np.float32) for n in (7, 5, 9)]
    evidence = [e / np.linalg.norm(e, axis=1, keepdims=True) for e in evidence]
    concepts = rng.standard_normal((6, 4)).astype(np.float32)
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    member = rng.random((6, 3)) < 0.6
    got = sm.item_discriminability(concepts, member, evidence, max_negatives=8)
    for j in range(6):
        for c in range(3):
            if not member[j, c]:
                assert got[j, c] == 0.0
                continue
            share = 8 // 2
            neg = np.concatenate([evidence[i][:share] for i in range(3) if i != c]) @ concepts[j]
            pos = evidence[c] @ concepts[j]
            auc = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
            assert got[j, c] == pytest.approx(max(0.0, 2 * auc - 1), abs=1e-12)
