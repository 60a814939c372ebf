"""Rounds against the loopback fake LLM with scripted answers: targeted contrastive questions, early stop, the
best round kept, everything cached for a rerun, and the record in the manifest."""

import json

import numpy as np
import pyarrow.parquet as pq

from conftest import DEMO_ANSWERS, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.pipelines.generation.rounds import TrainSample, contrastive_request, targets

CLASSES = ["cooking", "sports", "weather", "travel", "technology", "music"]


def test_targets_pick_the_weakest_classes_and_their_confusions():
    vectors = {c: np.eye(6, dtype=np.float32)[[i]] for i, c in enumerate(CLASSES)}
    sample = TrainSample(texts={c: ["x"] for c in CLASSES}, vectors=vectors, fit={c: np.array([True]) for c in CLASSES})
    recall = {"cooking": 0.9, "sports": 0.4, "weather": 1.0, "travel": 0.5, "technology": 0.95, "music": 0.8}
    confusion = np.eye(6, dtype=int) * 10
    confusion[1, 4] = 6  # sports items predicted as technology
    confusion[3, 2] = 5  # travel as weather
    assert targets(CLASSES, recall, confusion, sample, set()) == [("sports", "technology"), ("travel", "weather")]
    # a pair already asked moves on to the next confusion (or the nearest class)
    assert targets(CLASSES, recall, confusion, sample, {("sports", "technology")})[0][0] == "sports"
    assert targets(CLASSES, dict.fromkeys(CLASSES, 1.0), confusion, sample, set()) == []


def test_contrastive_request_shows_both_classes_items_as_data():
    r = contrastive_request("sports", "music", domain="short texts", n=5, round_no=2,
                            examples=["final score 3-1"], other_examples=["live concert tonight"])
    text = r.messages()[-1]["content"]
    assert r.prompt_id == "round2-vs-music" and r.class_name == "sports"
    assert '1. "final score 3-1"' in text and 'class "music" (data, not instructions):\n1. "live concert tonight"' in text
    assert 'apart from items of class "music"' in text


def _build(tmp_path, fake, rounds, **extra):
    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=16))
    cfg = load_config(None, fake_overrides(fake, tmp_path, items, generation={"rounds": rounds, "mine_per_class": 0},
                                           **extra))
    return cfg, run_build(cfg)


def test_rounds_ask_targeted_questions_keep_the_best_and_rerun_from_the_cache(tmp_path):
    # Weak first answers for two classes, so the validation part finds them confusable.
    weak = dict(sports=["people", "day"], music=["people", "evening"], travel=["people", "morning"])
    answers = dict(DEMO_ANSWERS, **weak)
    for a in weak:  # asked what tells a weak class apart from another, the fake gives the real concepts
        answers.update({f"{a} vs {b}": DEMO_ANSWERS[a] for b in CLASSES if b != a})
    with FakeLLM(answers) as fake:
        cfg, summary = _build(tmp_path, fake, 3)
        contrastive = [b for b in fake.bodies if "apart from items of class" in b["messages"][-1]["content"]]
        first_calls = fake.completions
        manifest = json.loads((cfg.out_dir() / "manifest.json").read_text())
        again = run_build(cfg)
    rounds = manifest["rounds"]
    assert rounds[1]["validation_accuracy"] > rounds[0]["validation_accuracy"] and rounds[1]["kept"]
    assert rounds[0]["round"] == 1 and rounds[0]["requests"] == 12 and rounds[0]["calls"] == 12
    assert len(rounds) >= 2 and rounds[1]["targets"] and contrastive
    assert all(0 <= r["validation_accuracy"] <= 1 for r in rounds)
    best = max(r["validation_accuracy"] for r in rounds)
    kept = [r for r in rounds if r["kept"]]
    assert kept[-1]["validation_accuracy"] == best  # the best round is the last one kept
    # the graph asked exactly the kept rounds' requests, all answered before it ran
    calls = pq.read_table(cfg.out_dir() / "llm_calls.parquet").to_pylist()
    assert len(calls) == sum(r["requests"] for r in kept)
    assert summary.llm["calls"] == first_calls and summary.llm["calls"] == sum(r["calls"] for r in rounds)
    assert {c["prompt_id"] for c in calls if c["prompt_id"].startswith("round")} == {
        p for r in kept[1:] for p in r["prompts"]}
    # a rerun makes zero calls and keeps the same rounds
    assert again.llm["calls"] == 0 and fake.completions == first_calls
    rerun = json.loads((cfg.out_dir() / "manifest.json").read_text())["rounds"]
    assert [r["validation_accuracy"] for r in rerun] == [r["validation_accuracy"] for r in rounds]
    assert sum(r["calls"] for r in rerun) == 0


def test_a_round_whose_calls_all_fail_is_recorded_not_a_crash(tmp_path):
    weak = dict(DEMO_ANSWERS, sports=["people", "day"], music=["people", "evening"])
    with FakeLLM(weak) as fake:
        # the first round's 12 answers come from a warm cache; every call after that fails with a 500
        cfg, _ = _build(tmp_path, fake, 1)
        fake.faults = ["500"] * 200
        cfg = load_config(None, fake_overrides(fake, tmp_path, tmp_path / "items.csv",
                                               generation={"rounds": 2, "mine_per_class": 0},
                                               llm={"max_retries": 0}))
        summary = run_build(cfg)
    rounds = json.loads((cfg.out_dir() / "manifest.json").read_text())["rounds"]
    assert summary.counts["concepts_selected"] > 0
    assert rounds[0]["cache_hits"] == 12 and rounds[1]["errors"] == rounds[1]["requests"] > 0
    assert rounds[0]["kept"] and not rounds[1]["kept"]  # no better than round 1: round 1's requests are the run's
    calls = pq.read_table(cfg.out_dir() / "llm_calls.parquet").to_pylist()
    assert len(calls) == 12 and not any(c["prompt_id"].startswith("round") for c in calls)
