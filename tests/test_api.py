"""The public Python API as a notebook uses it, `conceptkit annotate`, and the run as a Hugging Face dataset.

One build against the loopback fake LLM (real Beam, real embedding model); a train/test items file with a split
column; then held-out items annotated through the CLI and through ``Run.annotate``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import conceptkit
from conftest import DEMO_ANSWERS, ROOT, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM

CLASSES = ["cooking", "sports", "weather"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    rows = demo_rows(per_class=10, classes=CLASSES)
    for i, row in enumerate(rows):
        row["split"] = "test" if i % 5 == 0 else "train"
    items = write_csv(tmp / "items.csv", rows[:24])
    write_csv(tmp / "new.csv", [{k: v for k, v in r.items() if k != "split"} for r in rows[24:]])
    with FakeLLM(DEMO_ANSWERS) as fake:
        built = conceptkit.build(fake_overrides(fake, tmp, items, selection={"k_per_class": 3}))
    return dict(run=built, tmp=tmp, rows=rows)


def test_build_returns_a_run_with_concepts_and_split_annotations(run):
    r = run["run"]
    assert isinstance(r, conceptkit.Run)
    assert len(r.concepts) == r.manifest["counts"]["concepts_selected"] > 0
    assert set(r.concepts["picked_for"].to_list()) <= set(CLASSES)
    train, test = r.annotations(split="train"), r.annotations(split="test")
    assert (len(train), len(test)) == (19, 5)
    assert {"item_id", "text", "label", "split", "scores", "concept_ids"} <= set(train.columns)
    assert set(test["split"].to_list()) == {"test"}
    assert r.annotations(columns=["item_id"], backend="pyarrow").column_names == ["item_id"]
    assert r.annotations(split="test", columns=["item_id"]).columns == ["item_id"]
    assert sorted(p.name.split("-")[0] for p in (r.path / "annotations").glob("*.parquet")) == ["test", "train"]


def test_held_out_items_are_not_selection_evidence(run):
    """The test split is annotated, but selection's class means come from train items only."""
    sel = run["run"].manifest["selection"]
    assert sel["uses_item_evidence"] and sel["evidence_items"] == 19


def test_search_and_load(run):
    r = conceptkit.Run.load(run["run"].path)
    hits = r.search("heavy rain and strong wind tomorrow", k=3)
    assert len(hits) == 3 and hits[0]["picked_for"] == "weather"
    with pytest.raises(conceptkit.UserError, match="no such run directory"):
        conceptkit.Run.load(run["tmp"] / "nope")


def test_annotate_cli_adds_a_test_split_and_the_card_follows(run):
    r = run["run"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "annotate", str(r.path),
                           "--items", str(run["tmp"] / "new.csv"), "--split", "test"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6 new and 0 changed items annotated" in done.stdout and str(r.path) in done.stdout
    r = conceptkit.Run.load(r.path)
    assert len(r.annotations(split="test")) == 11 and len(r.annotations(split="train")) == 19
    card = (r.path / "README.md").read_text()
    assert "30 items in 3 classes" in card and "splits: test 11, train 19" in card
    # unchanged items again: nothing written
    again = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "annotate", str(r.path),
                            "--items", str(run["tmp"] / "new.csv"), "--split", "test"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0 and "nothing written" in again.stdout


def test_annotate_cli_user_errors_exit_2(run, tmp_path):
    for argv, needle in [
        ([str(tmp_path / "missing-run"), "--items", str(run["tmp"] / "new.csv")], "no such run directory"),
        ([str(run["run"].path), "--items", str(tmp_path / "missing.csv")], "items file not found"),
        ([str(run["run"].path), "--items", str(run["tmp"] / "new.csv"), "--split", "te/st"], "split names"),
    ]:
        done = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "annotate", *argv],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_run_annotate_from_rows(run):
    r = run["run"]
    summary = r.annotate([{"id": "nb-1", "text": "Snow is forecast for the mountains tonight.", "label": "weather"}],
                         split="validation")
    assert summary.counts["new"] == 1
    val = r.annotations(split="validation")
    assert val["item_id"].to_list() == ["nb-1"] and val["label"].to_list() == ["weather"]


def test_load_dataset_gives_the_splits_and_columns(run):
    datasets = pytest.importorskip("datasets")
    r = conceptkit.Run.load(run["run"].path)
    ds = datasets.load_dataset(str(r.path), cache_dir=str(run["tmp"] / "hf-cache"))
    counts = {name: ds[name].num_rows for name in ds}
    assert counts == {name: len(r.annotations(split=name)) for name in counts}
    assert {"train", "test"} <= set(counts)
    features = ds["train"].features
    assert isinstance(features["label"], datasets.ClassLabel) and features["label"].names == CLASSES
    assert {"item_id", "text", "split", "scores", "top_concept_ids", "concept_ids"} <= set(features)
    row = ds["test"][0]
    assert row["split"] == "test" and len(row["scores"]) == len(r.concepts) and row["text"]
    concepts = datasets.load_dataset(str(r.path), "concepts", cache_dir=str(run["tmp"] / "hf-cache"))["train"]
    assert concepts.num_rows == len(r.concepts)


def test_notebook_script(run, tmp_path):
    """What a notebook does, in a fresh interpreter from another directory: only `import conceptkit`."""
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np
        import conceptkit
        from conceptkit.submodular import FacilityLocationSelection
        run = conceptkit.Run.load({str(run["run"].path)!r})
        print(run)
        scores = np.stack(run.annotations(split="train")["scores"].to_numpy())
        assert scores.shape[1] == len(run.concepts)
        sel = FacilityLocationSelection(5, metric="cosine").fit(scores)
        assert len(sel.ranking) == 5 and sel.transform(scores).shape == (5, scores.shape[1])
        print("ok", conceptkit.__version__)
    """))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"ok {conceptkit.__version__}")


def test_submodular_matches_the_engine():
    from conceptkit.pipelines.selection.submodular import facility_location_greedy
    from conceptkit.submodular import FacilityLocationSelection

    x = np.random.default_rng(1).normal(size=(60, 6)).astype(np.float32)
    ours = FacilityLocationSelection(7, metric="cosine").fit(x)
    engine = facility_location_greedy(x, 7, metric="cosine")
    assert ours.ranking.tolist() == engine.selected.tolist()
    assert np.allclose(ours.gains, engine.gains) and ours.objective == pytest.approx(engine.objective)
    with pytest.raises(ValueError, match="fit"):
        FacilityLocationSelection(3).transform(x)


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "conceptkit.pipelines.cli.main", "--version"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"conceptkit {conceptkit.__version__}"
