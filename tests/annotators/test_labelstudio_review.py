"""Pure parts of the review loop: configs, task keys, what to send, export parsing, merge and agreement."""

import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from conceptkit.annotators.labelstudio import human_candidate_rows, verified_rows
from conceptkit.pipelines.review.tasks import (
    concept_list_tasks,
    item_review_config,
    concept_groups,
    item_push_task,
    item_task,
    krippendorff_alpha_nominal,
    merge_labels,
    refit_threshold,
    review_config,
    select_uncertain_diverse,
    task_json,
)
from conceptkit.schemas.labelstudio import REVIEW_MODES, Task
from conceptkit.schemas.verified import HUMAN_CANDIDATES, MERGED, VERIFIED


def test_every_mode_has_a_wellformed_config():
    for mode in REVIEW_MODES:
        root = ET.fromstring(review_config(mode))
        assert root.tag == "View"
        assert {el.get("name") for el in root.iter("Choices")} <= {"concepts", "verdict"}
    # item review shows the run's whole concept list, one checklist per class, and the item's class
    groups = concept_groups([{"concept_id": 0, "concept": "oven", "picked_for": "cooking"},
                             {"concept_id": 1, "concept": "goal", "picked_for": "sports"},
                             {"concept_id": 2, "concept": "spices", "picked_for": "cooking"}])
    assert groups == [("cooking", ["oven", "spices"]), ("sports", ["goal"])]
    root = ET.fromstring(review_config("item", groups))
    assert [(c.get("name"), [x.get("value") for x in c.iter("Choice")]) for c in root.iter("Choices")] == [
        ("concepts__0", ["oven", "spices"]), ("concepts__1", ["goal"])]
    assert "Class: $label" in [h.get("value") for h in root.iter("Header")]
    assert 'value="$options"' in item_review_config(dynamic=True)
    assert '<Choice value="a &amp; b"/>' in item_review_config(["a & b"])  # the build's static form still works
    with pytest.raises(ValueError, match="review mode"):
        review_config("items")


def _task(run_id="r1", text="some text"):
    return item_task(item_id="x", text=text, label="cooking", top_ids=[2, 0, 1], top_scores=[0.5, 0.3, 0.1],
                     concepts=["oven", "goal", "spices"], run_id=run_id, min_score=0.25)


GROUPS = [("cooking", ["oven", "spices"]), ("sports", ["goal"])]


def _push(run_id="r1", text="some text", ticked=("spices", "oven")):
    return item_push_task(item_id="x", text=text, label="cooking", ticked=list(ticked), groups=GROUPS, score=0.7,
                          run_id=run_id)


def test_task_keys_are_stable_across_runs_and_fingerprints_follow_content():
    a, b, c = _push("r1"), _push("r2"), _push("r2", text="other text")
    assert a.data.task_key == b.data.task_key == c.data.task_key == "item:x"
    assert a.data.fingerprint == b.data.fingerprint != c.data.fingerprint != _push(ticked=["oven"]).data.fingerprint
    # pre-ticks per class checklist; the prediction score is the uncertainty
    assert [(r.from_name, r.value.choices) for r in a.predictions[0].result] == [("concepts__0", ["oven", "spices"])]
    assert a.predictions[0].model_version == "r1" and a.predictions[0].score == 0.7
    # no raw JSON columns in the pushed task list
    assert set(task_json(a)["data"]) == {"item_id", "text", "label", "task_key", "fingerprint"}
    # the build's tasks.json form is unchanged: no push-only fields
    assert set(task_json(_task())["data"]) == {"item_id", "text", "label", "concept_scores"}
    assert Task.model_validate(task_json(a)) == a


def test_concept_list_tasks_cover_each_class():
    rows = [{"concept_id": 0, "concept": "oven", "picked_for": "cooking", "gain": 1.0},
            {"concept_id": 1, "concept": "<goal>", "picked_for": "sports", "gain": 0.5}]
    tasks = concept_list_tasks(rows, run_id="r", examples={0: "<ul><li>bake it</li></ul>"})
    assert [t.data.task_key for t in tasks] == ["concept-list:cooking:oven", "concept-list:sports:<goal>"]
    assert "&lt;goal&gt;" in tasks[1].data.class_concepts
    assert tasks[0].data.examples == "<ul><li>bake it</li></ul>" and tasks[1].data.examples == ""
    # the score is a doubt in [0, 1] (not a gain shown as a percentage): a class's best pick is 0
    assert [t.predictions[0].score for t in tasks] == [0.0, 0.0]


def test_budget_picks_uncertain_then_diverse_deterministically():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 8))
    emb[:10] = emb[0]  # ten copies of one item, all very uncertain
    margins = np.linspace(0, 1, 50)
    a = select_uncertain_diverse(margins, emb, 5)
    assert list(a) == list(select_uncertain_diverse(margins, emb, 5))
    assert len(set(a.tolist())) == 5 and max(a) < 15  # from the uncertain pool (3 x budget)
    assert sum(i < 10 for i in a) <= 2  # diversity: not five copies of the same item
    assert list(select_uncertain_diverse(margins, emb, 80)) == list(range(50))
    with pytest.raises(ValueError, match="budget must be >= 1"):
        select_uncertain_diverse(margins, emb, 0)


def test_krippendorff_alpha():
    assert krippendorff_alpha_nominal([["a", "a"], ["b", "b"], ["a", "a"]]) == 1.0
    assert krippendorff_alpha_nominal([["a", "b"], ["b", "a"]]) < 0
    assert krippendorff_alpha_nominal([["a", "a"]]) is None  # one category: undefined
    assert krippendorff_alpha_nominal([["a"]]) is None


def test_refit_threshold_needs_enough_labels():
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    y = s > 0.55
    refit = refit_threshold(s, y)
    assert refit is not None and 0.5 < refit.threshold < 0.6 and refit.f1 == 1.0
    assert refit_threshold(s[:5], y[:5]) is None
    assert refit_threshold(s, np.zeros(10, bool)) is None


def _export(annotations, *, options=("oven", "spices", "goal")):
    return [{"id": 7, "data": {"item_id": "x", "label": "cooking", "task_key": "item:x",
                               "options": [{"value": o} for o in options]},
             "annotations": annotations}]


def _ann(aid, choices, who="a@example.com", missing=None, cancelled=False):
    result = [{"from_name": "concepts", "to_name": "text", "type": "choices", "value": {"choices": choices}}]
    if missing:
        result.append({"from_name": "missing_concepts", "to_name": "text", "type": "textarea",
                       "value": {"text": [missing]}})
    return {"id": aid, "completed_by": {"id": 1, "email": who}, "result": result, "was_cancelled": cancelled,
            "updated_at": "2026-01-02T03:04:05.123456Z", "prediction": {"model_version": "r1"}}


def test_verified_rows_from_item_review():
    export = _export([_ann(1, ["oven"], missing="Knife skills\n\n fresh  herbs "), _ann(2, [], cancelled=True)])
    rows = verified_rows(export, mode="item", project_id=3, concept_ids={"oven": 0, "spices": 2})
    assert [(r["concept"], r["label"], r["concept_id"]) for r in rows] == [
        ("goal", "absent", None), ("oven", "present", 0), ("spices", "absent", 2)]
    assert all(r["source"] == "human" and r["annotator"] == "a@example.com" and r["task_id"] == 7 for r in rows)
    assert rows[0]["time"] == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    pa.Table.from_pylist(rows, schema=VERIFIED)
    cands = human_candidate_rows(export, mode="item", project_id=3)
    assert [(c["concept"], c["kind"], c["classes"]) for c in cands] == [
        ("fresh herbs", "missing", ["cooking"]), ("knife skills", "missing", ["cooking"])]
    pa.Table.from_pylist(cands, schema=HUMAN_CANDIDATES)


def test_merge_human_overrides_model_and_agreement():
    t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def row(item, cid, label, who):
        return {"item_id": item, "concept_id": cid, "concept": "c", "review": "item", "label": label,
                "annotator": who, "time": t}

    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], dtype=np.float32)
    predicted = {("i0", 0), ("i1", 1)}
    verified = [row("i0", 0, "absent", "a"), row("i0", 0, "absent", "b"), row("i1", 1, "present", "a"),
                row("i1", 1, "absent", "b"), row("i2", 0, "present", "a")]
    merged, metrics = merge_labels(item_ids=["i0", "i1", "i2"], scores=scores, predicted=predicted,
                                   concepts=["c0", "c1"], verified=verified)
    by = {(r["item_id"], r["concept_id"]): r for r in merged}
    assert by[("i0", 0)]["final"] is False and by[("i0", 0)]["final_source"] == "human"  # override
    assert by[("i1", 1)]["human"] is None and by[("i1", 1)]["final"] is True  # tie: model stands
    assert by[("i2", 0)]["final"] is True and by[("i2", 0)]["model"] is False
    pa.Table.from_pylist(merged, schema=MERGED)
    c0 = metrics["model_vs_human"]["per_concept"]["c0"]
    assert (c0["n"], c0["precision"], c0["recall"]) == (2, 0.0, 0.0)
    assert metrics["inter_annotator"]["pairs_with_several"] == 2
    assert metrics["inter_annotator"]["percent_agreement"] == 0.5
