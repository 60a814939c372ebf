"""`conceptkit eval`: pure parts (splits, few-shot draws, NEC, leakage) and the command on a fake-LLM run, with its
report opened in headless Chromium (the README's screenshot, docs/eval-report.png)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import DEMO_ANSWERS, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.cli.main import main
from conceptkit.pipelines.evaluation import models
from conceptkit.pipelines.evaluation.run import EvalError, evaluate_run, random_phrases, read_compare
from conceptkit.pipelines.readers.items import holdout_splits

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "eval-report.png"
CLASSES = ["cooking", "sports", "weather", "music"]


# --- pure -------------------------------------------------------------------------------------------------------


def test_holdout_is_stratified_deterministic_and_order_free():
    ids = [f"i{k}" for k in range(100)]
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    splits = holdout_splits(ids, labels, 0.2)
    per_class = {c: sum(s == "test" for s, lab in zip(splits, labels) if lab == c) for c in "abc"}
    assert per_class == {"a": 10, "b": 6, "c": 4}
    order = list(reversed(range(100)))
    again = holdout_splits([ids[k] for k in order], [labels[k] for k in order], 0.2)
    assert [again[order.index(k)] for k in range(100)] == splits  # the same items, whatever the row order
    assert sorted(holdout_splits(["x", "y"], ["a", "a"], 0.9)) == ["test", "train"]  # one train item always stays
    assert holdout_splits(ids, labels, 0.0) == ["train"] * 100
    assert holdout_splits(["u"], [None], 0.5) == ["train"]  # unlabelled items are never held out


def test_few_shot_draws_are_seeded_per_class_and_never_padded():
    y = np.array([0] * 5 + [1] * 3)
    first = models.few_shot_indices(y, 2, 2, seed=3)
    assert sorted(y[first].tolist()) == [0, 0, 1, 1]
    assert np.array_equal(first, models.few_shot_indices(y, 2, 2, seed=3))
    assert len({tuple(models.few_shot_indices(y, 2, 2, seed=s)) for s in range(10)}) > 1
    assert models.few_shot_indices(y, 2, 4, seed=0) is None  # class 1 has only 3


def test_a_shot_count_larger_than_a_class_is_skipped_with_a_note():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 4)).astype(np.float32)
    y = np.array([0] * 6 + [1] * 3)
    rows = {r.shots: r for r in models.few_shot_rows("m", x, y, x, y, n_classes=2, shots=(1, 4), seeds=3)}
    assert rows[1].seeds == 3 and rows[4].seeds == 0 and "fewer than 4 shots" in rows[4].notes[0]
    assert rows[4].as_dict()["accuracy_mean"] is None and rows["all"].seeds == 1


def test_sparse_model_respects_nec_and_finds_the_informative_features():
    rng = np.random.default_rng(1)
    n, informative = 600, 3
    y = rng.integers(0, 3, size=n)
    x = rng.normal(size=(n, 40)).astype(np.float32)
    for k in range(informative):
        x[:, k] += 3.0 * (y == k)
    sparse = models.sparse_model(x[:400], y[:400], x[400:], y[400:], n_classes=3, nec=2)
    assert sparse.nec <= 2 and sparse.accuracy > 0.8
    assert all(sparse.weights[k, k] > 0 for k in range(informative))


def test_tuned_c_is_chosen_on_the_train_split_only():
    # `eval --tune-c`: C comes from a validation fifth of the train items, so the test labels cannot move it; a
    # noisy many-feature problem wants strong regularisation; too few items per class skips the row with a note.
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(3), 40)
    x = rng.standard_normal((120, 60)).astype(np.float32)
    x[:, 0] += 1.5 * y  # one informative feature among 60 noisy ones
    x_test = rng.standard_normal((60, 60)).astype(np.float32)
    y_test = np.repeat(np.arange(3), 20)
    x_test[:, 0] += 1.5 * y_test
    row = models.tuned_row("bottleneck_tuned_c", x, y, x_test, y_test)
    shuffled = models.tuned_row("bottleneck_tuned_c", x, y, x_test, rng.permutation(y_test))
    assert row.extra == shuffled.extra and row.extra["C"] in models.C_GRID
    assert row.extra["C"] < 1.0 and row.shots == "all" and 0 <= row.accuracy_mean <= 1
    small = models.tuned_row("b", x[:12], np.repeat(np.arange(3), 4), x_test, y_test)
    assert small.seeds == 0 and "fewer than 5" in small.notes[0]


def test_random_phrases_are_seeded_generic_and_read_compare(tmp_path):
    assert random_phrases(5, 1) == random_phrases(5, 1) != random_phrases(5, 2)
    (tmp_path / "a.txt").write_text("one\ntwo\n\none\n")
    (tmp_path / "b.json").write_text(json.dumps({"x": ["p", "q"], "y": ["q", "r"]}))
    assert read_compare(tmp_path / "a.txt") == ("a", ["one", "two"])
    assert read_compare(tmp_path / "b.json") == ("b", ["p", "q", "r"])
    with pytest.raises(EvalError, match="no such file"):
        read_compare(tmp_path / "nope.txt")


# --- the command ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    tmp = tmp_path_factory.mktemp("eval")
    rows = demo_rows(per_class=20, classes=CLASSES)
    items = write_csv(tmp / "items.csv", rows)
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp, items, selection={"k_per_class": 4}))
        run_build(cfg)
    return dict(out=cfg.out_dir(), tmp=tmp, rows=rows)


def test_build_holds_out_a_stratified_test_split(run):
    import pyarrow.parquet as pq

    splits = {}
    for shard in (run["out"] / "annotations").glob("*.parquet"):
        table = pq.read_table(shard, columns=["split", "label"])
        for s, lab in zip(table.column("split").to_pylist(), table.column("label").to_pylist()):
            splits.setdefault(lab, []).append(s)
    assert all(v.count("test") == 4 and v.count("train") == 16 for v in splits.values())
    manifest = json.loads((run["out"] / "manifest.json").read_text())
    assert manifest["selection"]["evidence_items"] == 64  # held-out items are never selection evidence


def test_eval_cli_end_to_end(run, capsys, tmp_path):
    cbllm_like = tmp_path / "mine.json"
    cbllm_like.write_text(json.dumps({"cooking": ["kitchen work"], "weather": ["rain and wind"]}))
    assert main(["eval", str(run["out"]), "--seeds", "3", "--shots", "1,2,4,8,16,32", "--compare",
                 str(cbllm_like)]) == 0
    out = capsys.readouterr().out
    assert "bottleneck" in out and "black_box" in out and "compare:mine" in out and "eval.json" in out
    report = json.loads((run["out"] / "eval" / "eval.json").read_text())
    models_seen = {(r["model"], r["shots"]) for r in report["results"]}
    for model in ("bottleneck", "black_box", "random", "compare:mine"):
        for shots in (1, 2, 4, 8, 16, "all"):
            assert (model, shots) in models_seen
    assert ("sparse", "all") in models_seen and ("zero_shot", 0) in models_seen
    rows = {(r["model"], r["shots"]): r for r in report["results"]}
    # 16 train items per class: 32 shots cannot be drawn, and the row says so instead of padding
    assert rows[("bottleneck", 32)]["seeds"] == 0 and "fewer than 32" in rows[("bottleneck", 32)]["notes"][0]
    assert rows[("bottleneck", 16)]["seeds"] == 3
    assert rows[("bottleneck", 4)]["seeds"] == 3 and 0 <= rows[("bottleneck", 4)]["accuracy_mean"] <= 1
    assert rows[("random", 1)]["n_features"] == report["n_concepts"]
    assert report["n_test"] == 16 and report["n_train"] == 64 and len(report["confusion_matrix"]) == 4
    assert report["sparse"]["nec"] <= 5
    import pyarrow.parquet as pq

    weights = pq.read_table(run["out"] / "eval" / "weights.parquet")
    assert weights.column_names == ["concept", "class", "weight"] and weights.num_rows > 0
    assert [p.name for p in (run["out"] / "eval").glob(".*")] == [".conceptkit-eval"]  # atomic: no temp files left
    gen = report["generation"]  # where the concepts came from, as the manifest and candidates say
    assert sum(gen["selected_by_source"].values()) == report["n_concepts"] and gen["filtered"]


def test_eval_on_a_test_file_reports_leakage_and_rejects(run, capsys, tmp_path):
    import conceptkit

    train = conceptkit.Run.load(run["out"]).annotations(split="train")
    in_run = {r["id"] for r in run["rows"]}
    fresh = [r for r in demo_rows(per_class=30, classes=CLASSES) if r["id"] not in in_run][:12]
    rows = [dict(r) for r in fresh]
    rows.append({"id": "leak-by-text", "text": train["text"][0], "label": train["label"][0]})
    rows.append({"id": train["item_id"][1], "text": "A new text under a train item's id.", "label": "music"})
    rows.append({"id": "alien", "text": "Something about gardening.", "label": "gardening"})
    path = write_csv(tmp_path / "test.csv", rows)
    result = evaluate_run(run["out"], test_file=path, seeds=2, out=tmp_path / "ev", report=False)
    assert result.summary["test_rejects"] == {"unknown_label": 1}
    assert result.summary["leakage_excluded"] == 2 and result.summary["n_test"] == len(fresh)
    assert any("share an id or text" in n for n in result.summary["notes"])
    assert (tmp_path / "ev" / "eval.json").exists()


def test_eval_bad_input_is_a_one_line_error(run, capsys, tmp_path):
    alien = write_csv(tmp_path / "alien.csv", [{"id": "a", "text": "x y z", "label": "gardening"}])
    empty = tmp_path / "empty.csv"
    empty.write_text("id,text,label\n")
    unlabelled = write_csv(tmp_path / "u.csv", [{"id": "a", "text": "x"}])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own report")
    for argv, needle in [
        (["eval", str(tmp_path / "nope")], "no such run directory"),
        (["eval", str(run["out"]), "--test", str(alien)], "no usable test item"),
        (["eval", str(run["out"]), "--test", str(empty)], "empty"),
        (["eval", str(run["out"]), "--test", str(unlabelled)], "label"),
        (["eval", str(run["out"]), "--shots", "1,x"], "--shots"),
        (["eval", str(run["out"]), "--seeds", "0"], "--seeds"),
        (["eval", str(run["out"]), "--out", str(mine)], "not a conceptkit eval directory"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (argv, err)
    assert (mine / "report.html").read_text() == "my own report"


def test_eval_of_an_unlabelled_run_is_refused(tmp_path, capsys):
    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    rows = [{"id": r["id"], "text": r["text"]} for r in demo_rows(per_class=3, classes=["cooking", "music"])]
    items = write_csv(tmp_path / "u.csv", rows)
    classes = tmp_path / "classes.txt"
    classes.write_text("cooking\nmusic\n")
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp_path, items, items={"classes_file": str(classes)}))
        run_build(cfg)
    assert main(["eval", str(cfg.out_dir())]) == 2
    assert "no labels" in capsys.readouterr().err


def test_python_api_evaluate(run):
    import conceptkit

    report = conceptkit.evaluate(run["out"], seeds=2, out=run["tmp"] / "api-eval")
    assert {r["model"] for r in report["results"]} >= {"bottleneck", "black_box", "random", "zero_shot", "sparse"}
    assert not {"bottleneck_tuned_c", "black_box_tuned_c"} & {r["model"] for r in report["results"]}
    tuned = conceptkit.evaluate(run["out"], seeds=2, out=run["tmp"] / "api-eval-tuned", tune_c=True)
    rows = {r["model"]: r for r in tuned["results"] if r["shots"] == "all"}
    for name in ("bottleneck_tuned_c", "black_box_tuned_c"):
        assert rows[name]["C"] in models.C_GRID and 0 <= rows[name]["accuracy_mean"] <= 1


def test_report_renders_in_a_real_browser(run, capsys):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium")
    assert main(["eval", str(run["out"]), "--seeds", "3"]) == 0
    report = run["out"] / "eval" / "report.html"
    text = report.read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu",
                                          "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.as_uri())
        page.get_by_text("Is this concept set any good?").wait_for()
        images = page.locator("img")
        assert images.count() >= 5
        widths = [images.nth(k).evaluate("img => img.naturalWidth") for k in range(images.count())]
        assert all(w > 100 for w in widths), widths  # every figure decoded and rendered
        assert page.locator("table").count() >= 3
        page.get_by_text("How the concepts were made").wait_for()
        assert "Selected concepts by source:" in page.content()
        shot = run["tmp"] / "eval-report.png"
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert shot.stat().st_size > 10_000  # not a blank page
    if os.environ.get("CONCEPTKIT_UPDATE_SCREENSHOTS"):
        SCREENSHOT.write_bytes(shot.read_bytes())
