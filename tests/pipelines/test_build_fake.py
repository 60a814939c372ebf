"""End to end on a real Beam runner against the loopback fake LLM: outputs, schemas, accounting, reruns."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import DEMO_ANSWERS, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.config import load_config
from conceptkit.schemas.annotations import annotations_schema
from conceptkit.schemas.candidates import CANDIDATES
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import read_table
from conceptkit.schemas.rejects import REJECTS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    rows = demo_rows(per_class=10, classes=["cooking", "sports", "weather"])
    rows.append({"id": "bad-1", "text": "   ", "label": "cooking"})
    rows.append({"id": "bad-2", "text": "an item with a label outside the classes", "label": "gardening"})
    items = write_csv(tmp / "items.csv", rows)
    classes = tmp / "classes.txt"
    classes.write_text("cooking\nsports\nweather\n")
    answers = dict(DEMO_ANSWERS, sports=DEMO_ANSWERS["sports"] + ["sports fans", "Final score."])
    with FakeLLM(answers, faults=["500", "malformed"]) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp, items, items={"classes_file": str(classes)}))
        first = run_build(cfg)
        calls_after_first = fake.completions
        first_rejects = read_table(cfg.out_dir() / "rejects.parquet", REJECTS).to_pylist()
        second = run_build(cfg)
        calls_after_second = fake.completions
    return dict(cfg=cfg, first=first, second=second, n_items=len(rows), out=cfg.out_dir(),
                calls=(calls_after_first, calls_after_second), first_rejects=first_rejects)


def test_every_output_reads_back_with_its_schema(built):
    out = built["out"]
    concepts = read_table(out / "concepts.parquet", CONCEPTS)
    read_table(out / "candidates.parquet", CANDIDATES)
    read_table(out / "rejects.parquet", REJECTS)
    annotations = read_table(out / "annotations", annotations_schema(concepts.num_rows))
    assert annotations.num_rows == built["n_items"] - 2
    assert sorted(p.name for p in out.iterdir()) == [
        ".conceptkit-run", "README.md", "annotations", "candidates.parquet", "concepts.parquet", "index", "labels.json",
        "labelstudio", "llm_calls.parquet", "manifest.json", "rejects.parquet"]
    assert not list(out.parent.glob(".t.*"))  # no staging or old directories left beside it


def test_one_label_rule_for_labels_pre_ticks_and_review(built):
    """The binary labels in annotations/, the review pre-ticks in tasks.json and what push/pull treat as the
    model's labels are the same decision (annotation/labels.py), for every item of a real build."""
    import json

    from conceptkit.pipelines.annotation.labels import for_run
    from conceptkit.pipelines.cli.labelstudio import load_run
    from conceptkit.schemas.annotations import score_matrix

    out = built["out"]
    concepts = read_table(out / "concepts.parquet", CONCEPTS).to_pylist()
    names = [c["concept"] for c in concepts]
    annotations = read_table(out / "annotations", annotations_schema(len(names)))
    rule = for_run(out, names)
    decided = rule.decide(score_matrix(annotations), annotations.column("label").to_pylist())
    stored = {i: set(ids) for i, ids in zip(annotations.column("item_id").to_pylist(),
                                             annotations.column("concept_ids").to_pylist())}
    assert any(stored.values())
    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    ticks = {t["data"]["item_id"]: {names.index(c) for c in t["predictions"][0]["result"][0]["value"]["choices"]}
             if t["predictions"][0]["result"] else set() for t in tasks}
    by_rule = {i: set(np.flatnonzero(row).tolist()) for i, row in zip(annotations.column("item_id").to_pylist(), decided)}
    assert stored == ticks == by_rule
    predicted = load_run(out).predicted()
    assert predicted == {(i, c) for i, cs in stored.items() for c in cs}
    # concepts.parquet's threshold is the rule's per-concept floor, not a constant 0.2
    assert [round(c["threshold"], 4) for c in concepts] == [round(float(x), 4) for x in rule.concept_floor()]


def test_every_item_once_in_annotations_or_rejects(built):
    out = built["out"]
    concepts = read_table(out / "concepts.parquet", CONCEPTS)
    ids = read_table(out / "annotations", annotations_schema(concepts.num_rows)).column("item_id").to_pylist()
    rejects = read_table(out / "rejects.parquet", REJECTS).to_pylist()
    item_rejects = {r["key"]: r["reason"] for r in rejects if r["stage"] == "items"}
    assert item_rejects == {"bad-1": "empty_text", "bad-2": "unknown_label"}
    assert len(ids) == len(set(ids)) and not set(ids) & set(item_rejects)
    assert len(ids) + len(item_rejects) == built["n_items"]


def test_concepts_selected_per_class_with_gains(built):
    concepts = read_table(built["out"] / "concepts.parquet", CONCEPTS).to_pylist()
    by_class = {}
    for c in concepts:
        by_class.setdefault(c["picked_for"], []).append(c)
    assert set(by_class) == {"cooking", "sports", "weather"}
    assert all(len(v) <= 4 for v in by_class.values())
    assert [c["concept_id"] for c in concepts] == list(range(len(concepts)))
    assert all(len(c["embedding"]) == 384 for c in concepts)
    known = {a for v in DEMO_ANSWERS.values() for a in v}
    assert {c["concept"] for c in concepts} <= known


def test_candidates_keep_status_and_reason(built):
    cands = read_table(built["out"] / "candidates.parquet", CANDIDATES).to_pylist()
    by_concept = {}
    for c in cands:
        by_concept.setdefault(c["concept"], []).append(c)
    assert by_concept["sports fans"][0]["reason"] == "class_name_leak"
    # "final score" and "Final score." normalise to one concept (and both prompts proposed it): one survives.
    first, *again = by_concept["final score"]
    assert first["status"] == "accepted" and again  # how many depends on which request got the malformed answer
    assert {(a["status"], a["reason"], a["merged_into"]) for a in again} == {("merged", "duplicate", first["candidate_id"])}
    dupes = [c for c in cands if c["reason"] == "duplicate"]
    assert dupes and all(c["merged_into"] for c in dupes)
    assert all(c["status"] in ("accepted", "merged", "rejected") for c in cands)
    assert sum(c["selected"] for c in cands) == read_table(built["out"] / "concepts.parquet", CONCEPTS).num_rows


def test_llm_faults_become_rejects_or_retries(built):
    # The scripted 500 was retried (first run); the malformed answer is a reject with its raw text kept. It was
    # not cached, so the rerun asked again, got a good answer, and has no generate reject left.
    assert built["first"].llm["retries"] == 1
    gen = [r for r in built["first_rejects"] if r["stage"] == "generate"]
    assert [r["reason"] for r in gen] == ["malformed_json"] and gen[0]["raw"].startswith('{"concepts"')
    rejects = read_table(built["out"] / "rejects.parquet", REJECTS).to_pylist()
    assert not [r for r in rejects if r["stage"] == "generate"]


def test_rerun_asks_only_for_what_did_not_parse(built):
    # Every answer that parsed came from the cache; only the one malformed answer (never cached) was asked again.
    first_calls, second_calls = built["calls"]
    assert second_calls == first_calls + 1
    assert built["second"].llm["calls"] == 1
    assert built["second"].llm["cache_hits"] == built["first"].counts["llm_requests"] - 1


def test_manifest_and_index_and_tasks(built):
    out = built["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["items_in"] == built["n_items"]
    assert manifest["input"]["classes"] == ["cooking", "sports", "weather"]
    assert {"apache-beam", "torch", "faiss-cpu"} <= set(manifest["versions"])
    selection = manifest["selection"]
    assert selection["objective"] > 0 and selection["uses_item_evidence"] is True
    assert selection["parameters"]["k_per_class"] == 4 and selection["selected"] == manifest["counts"]["concepts_selected"]
    index = json.loads((out / "index" / "index.json").read_text())
    n = manifest["counts"]["concepts_selected"]
    assert index["count"] == n and index["dimension"] == 384 and index["ids"]["values"] == list(range(n))
    tasks = json.loads((out / "labelstudio" / "tasks.json").read_text())
    assert len(tasks) == built["n_items"] - 2
    assert tasks[0]["predictions"][0]["model_version"] == manifest["run_id"]
    config = (out / "labelstudio" / "config.xml").read_text()
    assert config.count("<Choice ") == n


def test_annotation_scores_agree_with_faiss_top_k(built):
    import numpy as np

    out = built["out"]
    n = read_table(out / "concepts.parquet", CONCEPTS).num_rows
    rows = read_table(out / "annotations", annotations_schema(n)).to_pylist()
    for r in rows[:10]:
        scores = np.array(r["scores"])
        assert r["top_concept_ids"] == list(np.argsort(-scores, kind="stable")[: len(r["top_concept_ids"])])
        assert np.allclose(r["top_scores"], scores[r["top_concept_ids"]], atol=1e-5)


def test_select_reruns_selection_without_llm(built, tmp_path, capsys):
    from conceptkit.pipelines.cli.main import main

    rc = main(["select", str(built["out"]), "--k-per-class", "2", "--out", str(tmp_path / "k2")])
    assert rc == 0, capsys.readouterr().err
    concepts = read_table(tmp_path / "k2" / "concepts.parquet", CONCEPTS).to_pylist()
    per_class = {}
    for c in concepts:
        per_class[c["picked_for"]] = per_class.get(c["picked_for"], 0) + 1
    assert per_class and max(per_class.values()) <= 2
    manifest = json.loads((tmp_path / "k2" / "manifest.json").read_text())
    assert manifest["llm"]["calls"] == 0 and manifest["config"]["selection"]["k_per_class"] == 2
    assert "conceptkit select: run" in capsys.readouterr().out


def test_grown_dataset_embeds_only_new_items(tmp_path):
    rows = demo_rows(per_class=4, classes=["cooking", "music"])
    extra = demo_rows(per_class=6, classes=["cooking", "music"])
    new = [r for r in extra if r not in rows]
    with FakeLLM(DEMO_ANSWERS) as fake:
        first = run_build(load_config(None, fake_overrides(fake, tmp_path, write_csv(tmp_path / "a.csv", rows))))
        grown = run_build(load_config(None, fake_overrides(fake, tmp_path, write_csv(tmp_path / "b.csv", rows + new))))
    assert first.counts["items_embedded"] == len(rows) and first.counts["items_embedding_cached"] == 0
    assert grown.counts["items_embedded"] == len(new) and grown.counts["items_embedding_cached"] == len(rows)


def test_bad_rows_become_rejects_and_the_rest_proceed(tmp_path):
    rows = demo_rows(per_class=3, classes=["cooking", "music"])
    bad = [
        dict(rows[0], text="a second row with the first row's id"),    # duplicate id
        {"id": "", "text": "a row without an id", "label": "music"},  # missing id
        {"id": "huge", "text": "word " * 5000, "label": "music"},      # over max_text_chars
        {"id": "blank", "text": "  ", "label": "cooking"},            # empty text
    ]
    items = write_csv(tmp_path / "items.csv", rows + bad)
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items,
                                               items={"on_duplicate_id": "reject", "max_text_chars": 10_000}))
        summary = run_build(cfg)
    rejects = read_table(cfg.out_dir() / "rejects.parquet", REJECTS).to_pylist()
    assert sorted((r["key"], r["reason"]) for r in rejects if r["stage"] == "items") == sorted(
        [(rows[0]["id"], "duplicate_id"), ("", "missing_id"), ("huge", "text_too_long"), ("blank", "empty_text")])
    assert summary.counts["items_annotated"] == len(rows)


def test_any_beam_runner_through_beam_args(tmp_path, capsys):
    from conceptkit.pipelines.cli.main import main

    rows = demo_rows(per_class=2, classes=["cooking", "music"])
    items = write_csv(tmp_path / "items.csv", rows)
    with FakeLLM(DEMO_ANSWERS) as fake:
        rc = main(["build", "--items", str(items), "--out", str(tmp_path / "runs" / "b"), "--cache-dir",
                   str(tmp_path / "cache"), "--llm-base-url", fake.base_url, "--llm-model", "fake-model",
                   "--runner", "beam", "--beam-arg=--runner=DirectRunner", "--beam-arg=--direct_num_workers=1"])
        assert rc == 0, capsys.readouterr().err
        manifest = json.loads((tmp_path / "runs" / "b" / "manifest.json").read_text())
        assert manifest["config"]["runner"]["beam_args"] == ["--runner=DirectRunner", "--direct_num_workers=1"]
        capsys.readouterr()
        rc = main(["build", "--items", str(items), "--out", str(tmp_path / "runs" / "c"), "--cache-dir",
                   str(tmp_path / "cache"), "--llm-base-url", fake.base_url, "--llm-model", "fake-model",
                   "--runner", "beam"])
    assert rc == 2 and "needs --runner=..." in capsys.readouterr().err
    assert not (tmp_path / "runs" / "c").exists()


def test_summary_and_card_say_what_each_class_got(tmp_path):
    """A class that gets fewer than k concepts is named, never hidden behind "k per class"."""
    from conceptkit.pipelines.build import format_summary

    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=4, classes=["cooking", "music", "weather"]))
    answers = dict(DEMO_ANSWERS, music=["guitar chords"])
    with FakeLLM(answers) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, selection={"k_per_class": 3}))
        summary = run_build(cfg)
    text = format_summary(summary)
    assert summary.per_class == {"cooking": 3, "music": 1, "weather": 3}
    assert "per class   cooking 3, music 1, weather 3" in text
    assert "warning     fewer than k=3 concepts for: music (1)" in text
    assert "selected (LaBo's discriminability from class means)" in text  # 4 items per class: too few for AUCs
    manifest = json.loads((cfg.out_dir() / "manifest.json").read_text())
    assert manifest["concepts_per_class"]["music"] == 1 and manifest["filtered"]
    card = (cfg.out_dir() / "README.md").read_text()
    assert "Fewer than k = 3 concepts were selected for 1 of 3 classes: music (1)" in card
    assert "Candidates the filters removed: " in card


def test_summary_and_card_count_shared_concepts_for_every_class(tmp_path):
    """A concept proposed for two classes counts toward both budgets: the class that did not pick it shows it as
    shared, a class is warned about only when it holds fewer than k, and the card says why counts differ."""
    from conceptkit.pipelines.build import format_summary

    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=4, classes=["cooking", "music", "weather"]))
    answers = dict(DEMO_ANSWERS, music=["guitar chords", "baking bread"])  # "baking bread" is cooking's too
    with FakeLLM(answers) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, selection={"k_per_class": 3}))
        summary = run_build(cfg)
    concepts = pq.read_table(cfg.out_dir() / "concepts.parquet").to_pylist()
    shared = [r for r in concepts if len(r["classes"]) > 1]
    assert [sorted(r["classes"]) for r in shared] == [["cooking", "music"]]
    other = ({"cooking", "music"} - {shared[0]["picked_for"]}).pop()
    assert summary.held_per_class == {c: sum(c in r["classes"] for r in concepts) for c in ("cooking", "music", "weather")}
    assert summary.held_per_class[other] == summary.per_class[other] + 1
    text = format_summary(summary)
    assert f"{other} {summary.per_class[other]} (+1 shared)" in text
    warned = [c for c, n in summary.held_per_class.items() if n < 3]
    assert ("warning     fewer than k=3" in text) == bool(warned)
    for c, n in summary.per_class.items():
        if n < 3 and summary.held_per_class[c] >= 3:
            assert f"{c} ({summary.held_per_class[c]})" not in text.split("warning")[-1]  # full through sharing
    manifest = json.loads((cfg.out_dir() / "manifest.json").read_text())
    assert manifest["concepts_held_per_class"] == summary.held_per_class
    card = (cfg.out_dir() / "README.md").read_text()
    assert f"1 of the {len(concepts)} concepts belongs to more than one class and counts toward" in card
    assert f"{other} {summary.held_per_class[other]}" in card


def test_build_measures_discriminability_on_a_sample_of_train_items(tmp_path):
    from conceptkit.pipelines.build import format_summary

    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=8, classes=["cooking", "music", "weather"]))
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, selection={"evidence_per_class": 6}))
        summary = run_build(cfg)
    selection = json.loads((cfg.out_dir() / "manifest.json").read_text())["selection"]
    assert selection["discriminability"] == "items"
    assert selection["evidence_per_class"] == {"cooking": 6, "music": 6, "weather": 6}
    assert "selected (discriminability on the train items)" in format_summary(summary)
    assert "Discriminability was measured on the train items" in (cfg.out_dir() / "README.md").read_text()


def test_summary_reports_the_generation_tokens_per_second(tmp_path):
    from conceptkit.pipelines.build import format_summary

    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=4, classes=["cooking", "music"]))
    with FakeLLM(DEMO_ANSWERS, latency_s=1.2) as fake:
        summary = run_build(load_config(None, fake_overrides(fake, tmp_path, items, llm={"concurrency": 1})))
    text = format_summary(summary)
    rate = summary.llm["completion_tokens"] / summary.timings_s["generate"]
    assert summary.llm["completion_tokens"] > 0 and f"{rate:.1f} completion tokens/s" in text


def test_batched_requests_build_with_answers_keyed_per_class(tmp_path):
    # Two classes per request: half the requests; every class gets the concepts its key held; a class the batched
    # answer leaves out is a reject (missing_class), the other classes' lists stand, and that answer is not cached:
    # a rerun asks again only the requests whose answers lacked a class.
    classes = ["cooking", "music", "weather", "sports"]
    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=6, classes=classes))
    with FakeLLM(DEMO_ANSWERS, skip_classes=("weather",)) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, generation={"classes_per_request": 2}))
        run_build(cfg)
        first = fake.completions
        run_build(cfg)
        again = fake.completions - first
        budgets = {body["max_tokens"] for body in fake.bodies}
    assert budgets == {2 * cfg.llm.max_tokens}  # max_tokens per concept list: two classes, twice one's budget
    templates = 2  # the text family's questions
    assert first == 2 * templates and again == templates  # [cooking, music] cached, [weather, sports] asked again
    candidates = read_table(cfg.out_dir() / "candidates.parquet", CANDIDATES).to_pylist()
    llm = [c for c in candidates if c["source"] == "llm"]
    for name in ("cooking", "music", "sports"):
        proposed = {c["raw"] for c in llm if name in c["classes"]}
        assert set(DEMO_ANSWERS[name]) <= proposed
    assert not any(c["classes"] == ["weather"] for c in llm)
    rejects = read_table(cfg.out_dir() / "rejects.parquet", REJECTS).to_pylist()
    assert sorted(r["key"] for r in rejects if r["reason"] == "missing_class") == [
        f"weather/{p}/0" for p in ("text-topics", "text-vocabulary")]
    calls = pq.read_table(cfg.out_dir() / "llm_calls.parquet").to_pylist()
    assert sorted(json.loads(c["class_name"]) if c["class_name"].startswith("[") else c["class_name"]
                  for c in calls)[0] == ["cooking", "music"]
