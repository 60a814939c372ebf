"""Concepts mined from the items: the scoring (hand-made corpora) and the build path (source=mined candidates)."""

import json

import pyarrow.parquet as pq
import pytest

from conftest import demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.pipelines.generation.mining import mine_phrases, name_words, phrases_of, stop_words

CORPUS = [
    ("heavy rain all day and a cold wind", "weather"),
    ("heavy rain again, roads flooded today", "weather"),
    ("the forecast says heavy rain tonight", "weather"),
    ("a sunny day today with light wind", "weather"),
    ("the final score was two to one today", "sports"),
    ("final score: home team wins", "sports"),
    ("the final score surprised the coach", "sports"),
    ("the team trained all day today", "sports"),
]


def test_phrases_skip_stop_words_short_words_and_numbers():
    grams = phrases_of("The 2 final score of 1999 is in", 3, stop_words())
    assert "final score" in grams and "final" in grams
    assert "the" not in grams and "is" not in grams  # single stop words
    assert "1999" not in grams  # numbers alone
    assert "score of 1999" in grams  # a longer phrase may hold a number


def test_a_phrase_of_one_class_beats_one_every_class_uses():
    texts, labels = zip(*CORPUS)
    mined = mine_phrases(texts, labels, ["weather", "sports"], per_class=5, min_items=2)
    weather = [m.phrase for m in mined if m.class_name == "weather"]
    sports = [m.phrase for m in mined if m.class_name == "sports"]
    assert weather[0] in ("heavy rain", "heavy", "rain") and "heavy rain" in weather
    assert sports[0] in ("final score", "final", "score") and "final score" in sports
    assert "today" not in weather + sports  # held by both classes: precision 0.5, far below the others
    top = next(m for m in mined if m.phrase == "heavy rain")
    assert (top.items, top.precision) == (3, 1.0) and top.score == pytest.approx(3 / 4)


def test_class_name_words_and_rare_phrases_are_skipped():
    texts, labels = zip(*CORPUS)
    mined = mine_phrases(texts, labels, ["weather", "sports teams"], per_class=50, min_items=2)
    phrases = {m.phrase for m in mined if m.class_name == "sports teams"}
    assert not any({"team", "teams", "sports", "sport"} & set(p.split()) for p in phrases)
    assert "coach" not in phrases  # one item only (min_items 2)
    assert name_words("Sea snails") >= {"sea", "seas", "snails", "snail"}
    # stop words of a class name ban nothing: "of" in "mean of transportation" would ban "one of the ..."
    assert name_words("mean of transportation") == {"mean", "means", "transportation", "transportations"}


def test_mining_is_deterministic_and_bounded():
    texts, labels = zip(*CORPUS)
    a = mine_phrases(texts, labels, ["weather", "sports"], per_class=3, min_items=1)
    b = mine_phrases(list(reversed(texts)), list(reversed(labels)), ["weather", "sports"], per_class=3, min_items=1)
    assert a == b and len(a) == 6
    with pytest.raises(ValueError, match="labels"):
        mine_phrases(texts, labels[:-1], ["weather"])


def test_build_adds_mined_candidates_through_the_same_filters(tmp_path):
    rows = demo_rows(per_class=12, classes=["cooking", "sports", "weather"])
    items = write_csv(tmp_path / "items.csv", rows)
    with FakeLLM({"cooking": ["cooking pot"]}) as fake:  # few, weak LLM answers: mining carries the set
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, generation={"mine_per_class": 20}))
        summary = run_build(cfg)
    out = cfg.out_dir()
    cands = pq.read_table(out / "candidates.parquet").to_pylist()
    mined = [c for c in cands if c["source"] == "mined"]
    assert mined and {c["prompt_id"] for c in mined} == {"mined"}
    assert all(c["prompt"].startswith("held by ") for c in mined)
    assert {c["source"] for c in cands} == {"llm", "mined"}
    assert summary.counts["candidates_mined"] == len(mined)
    # mined phrases meet the same filters: the whole class name in a longer phrase is a leak, wherever it came from
    assert not any("cooking" in c["concept"] for c in mined if c["status"] == "accepted" and "cooking" in c["classes"])
    concepts = pq.read_table(out / "concepts.parquet").to_pylist()
    by_id = {c["candidate_id"]: c for c in cands}
    assert any(by_id[c["candidate_id"]]["source"] == "mined" for c in concepts)
    # only train-split items were mined: the held-out test items' phrases never count
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["candidates_mined"] == len(mined)
    assert manifest["config"]["generation"]["mine_per_class"] == 20


def test_mining_off_and_unlabelled_items_give_no_mined_candidates(tmp_path):
    rows = demo_rows(per_class=6, classes=["cooking", "sports"])
    items = write_csv(tmp_path / "items.csv", rows)
    with FakeLLM() as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, generation={"mine_per_class": 0}))
        run_build(cfg)
    assert {c["source"] for c in pq.read_table(cfg.out_dir() / "candidates.parquet").to_pylist()} == {"llm"}
