"""Review data as selection input (pipelines/review/apply.py): verdict majorities, precision weights, pins."""

from datetime import datetime, timedelta, timezone

import numpy as np

from conceptkit.pipelines.config import SelectionConfig
from conceptkit.pipelines.review.apply import ReviewInput, list_verdicts, precision_weights
from conceptkit.pipelines.selection.filters import Candidate
from conceptkit.pipelines.selection.stage import select_concepts

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _verdict(who, concept, label, minutes=0, edited=None, cls="cooking"):
    return {"review": "concept-list", "class_name": cls, "concept": concept, "annotator": who, "label": label,
            "time": T + timedelta(minutes=minutes), "edited_concept": edited}


def test_verdicts_take_each_reviewers_latest_answer_and_ties_decide_nothing():
    rows = [_verdict("a", "oven", "keep"), _verdict("a", "oven", "reject", minutes=5),  # a changed their mind
            _verdict("b", "oven", "reject"),
            _verdict("a", "spices", "keep"), _verdict("b", "spices", "reject"),  # a tie
            _verdict("a", "pan", "edit", edited="Frying  Pan"), _verdict("b", "pan", "edit", edited="frying pan")]
    assert list_verdicts(rows) == {("cooking", "oven"): ("reject", None), ("cooking", "pan"): ("edit", "frying pan")}


def test_precision_weights_are_smoothed_and_bounded():
    merged = ([{"concept": "good", "model": True, "human": True}] * 6
              + [{"concept": "bad", "model": True, "human": False}] * 6
              + [{"concept": "unjudged", "model": True, "human": None},
                 {"concept": "negative", "model": False, "human": True}])
    w = precision_weights(merged)
    assert set(w) == {"good", "bad"}
    assert w["good"] == 1.75 and w["bad"] == 0.25


def _select(review):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 16)).astype(np.float32)  # two class directions
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    emb = np.stack([base[0] + 0.02 * rng.normal(size=16), base[0] + 0.02 * rng.normal(size=16),
                    base[0] + 0.3 * rng.normal(size=16), base[1]]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    accepted = [Candidate(raw=r, classes=[c], prompt_id="p", prompt="", model="m", sample=0)
                for r, c in (("first idea", "a"), ("second idea", "a"), ("third idea", "a"), ("other", "b"))]
    rows, summary = select_concepts(accepted, emb, ["a", "b"], class_means={"a": base[0], "b": base[1]},
                                    cfg=SelectionConfig(k_per_class=1, direction="off"), review=review)
    return [r["concept"] for r in rows if r["picked_for"] == "a"], accepted, summary


def test_a_concept_people_keep_rejecting_loses_to_one_they_confirm():
    plain, _, _ = _select(None)
    assert len(plain) == 1
    winner = plain[0]
    loser = "second idea" if winner == "first idea" else "first idea"
    weighted, _, summary = _select(ReviewInput(source="r", weights={winner: 0.25, loser: 1.75}))
    assert weighted == [loser]
    assert summary["review"]["weighted_concepts"] == 2


def test_rejected_leave_and_kept_are_pinned_in_place_of_the_last_unpinned_pick():
    plain, _, _ = _select(None)
    chosen, accepted, summary = _select(ReviewInput(source="r", rejected=frozenset({("a", plain[0])}),
                                                    pinned=frozenset({("a", "third idea")})))
    assert chosen == ["third idea"] and summary["review"]["pinned_added"] == 1
    assert next(c for c in accepted if c.concept == plain[0]).reason == "review_rejected"
