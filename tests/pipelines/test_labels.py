"""The label rule (annotation/labels.py): one decision for labels, pre-ticks, merged labels and metrics."""

import numpy as np
import pytest

from conceptkit.pipelines.annotation.labels import (
    LabelRuleError,
    for_run,
    from_histograms,
    from_scores,
    load,
    save,
)
from conceptkit.pipelines.annotation.thresholds import score_histograms


def _scores(n_items=400, n_concepts=40, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.1, 0.05, size=(n_items, n_concepts)).astype(np.float32)
    truth = np.zeros_like(scores, dtype=bool)
    for i in range(n_items):  # each item really shows one concept, which scores clearly higher
        truth[i, i % n_concepts] = True
        scores[i, i % n_concepts] += 0.3
    return scores, truth


def test_the_rule_finds_planted_concepts_and_agrees_with_its_margins():
    scores, truth = _scores()
    rule = from_scores(scores)
    decided = rule.decide(scores)
    assert np.array_equal(decided, rule.margins(scores) >= 0)
    assert (decided & truth).sum() / truth.sum() > 0.95
    assert (decided & ~truth).sum() < 0.01 * truth.sum() + 5


def test_a_concept_close_to_everything_does_not_fire_on_everything():
    scores, truth = _scores()
    scores[:, 0] += 0.35  # generic: high for every item (a raw 0.2 cut would tick it everywhere)
    decided = from_scores(scores).decide(scores)
    assert decided[:, 0].sum() <= truth[:, 0].sum() + 5
    assert (scores[:, 0] >= 0.2).all()


def test_an_item_close_to_every_concept_does_not_get_them_all():
    scores, truth = _scores()
    rule = from_scores(scores)
    scores[7] += 0.25  # a short generic item near every concept
    decided = rule.decide(scores)
    assert decided[7].sum() <= 2 and decided[7, 7 % 40]


def test_human_thresholds_override_concept_by_concept():
    scores, _ = _scores()
    rule = from_scores(scores)
    refit = rule.with_refits({3: -99.0})  # people say concept 3 is everywhere
    assert refit.decide(scores)[:, 3].all()
    assert np.array_equal(refit.decide(scores)[:, 4], rule.decide(scores)[:, 4])
    assert refit.concept_floor()[3] < -1.0


def test_small_concept_sets_cap_the_cut():
    scores, truth = _scores(n_items=90, n_concepts=9)
    rule = from_scores(scores)
    assert rule.effective_z == pytest.approx(np.sqrt(8) / 2)  # one of 9 stands out by at most sqrt(8)
    assert (rule.decide(scores) & truth).sum() / truth.sum() > 0.9


def test_streamed_histograms_give_the_same_rule(tmp_path):
    scores, _ = _scores()
    a, b = from_scores(scores), from_histograms(score_histograms(scores))
    assert np.allclose(a.mean, b.mean, atol=2e-3) and np.allclose(a.std, b.std, atol=2e-3)
    assert (a.decide(scores) != b.decide(scores)).mean() < 0.002
    save(tmp_path, b)
    again = load(tmp_path, scores.shape[1])
    assert np.array_equal(again.decide(scores), b.decide(scores))
    with pytest.raises(LabelRuleError, match="statistics for 40 concepts, the run has 41"):
        load(tmp_path, 41)
    (tmp_path / "review.json").write_text('{"review": {"thresholds": {"c3": {"cut": -99.0}}}}')
    names = [f"c{j}" for j in range(40)]
    assert for_run(tmp_path, names).decide(scores)[:, 3].all()
    with pytest.raises(LabelRuleError, match="labels.json: missing"):
        load(tmp_path / "nowhere", 40)
