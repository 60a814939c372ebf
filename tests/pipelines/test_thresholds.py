import numpy as np

from conceptkit.pipelines.annotation.thresholds import BINS, otsu_thresholds, score_histograms


def test_histograms_count_every_score():
    scores = np.array([[0.1, -0.5], [0.9, 0.95], [1.0, -1.0]], dtype=np.float32)
    hist = score_histograms(scores)
    assert hist.shape == (2, BINS) and hist.sum(axis=1).tolist() == [3, 3]


def test_otsu_splits_a_bimodal_concept_between_its_modes():
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0.15, 0.03, 900), rng.normal(0.55, 0.03, 100)])[:, None]
    (t,) = otsu_thresholds(score_histograms(scores))
    assert 0.2 < t < 0.45  # Otsu leans towards the larger mode; it still separates the two
    assert ((scores[:, 0] >= t).sum()) == 100


def test_floor_applies_to_concepts_nobody_matches():
    scores = np.random.default_rng(1).normal(0.0, 0.05, (500, 1))
    assert otsu_thresholds(score_histograms(scores), floor=0.2)[0] == np.float32(0.2)
