"""search / inspect / card on a real run built once against the loopback fake LLM."""

import argparse
import json
import re
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from conceptkit.annotators.embedding import TextEmbedder
from conftest import DEMO_ANSWERS, demo_rows, fake_overrides, write_csv
from fake_llm import FakeLLM
from conceptkit.pipelines.build import run_build
from conceptkit.pipelines.runs.card import write_dataset_card
from conceptkit.pipelines.config import load_config
from conceptkit.pipelines.cli.explore import register
from conceptkit.pipelines.runs.inspection import inspect_run, inspect_tables
from conceptkit.pipelines.runs.run import RunNotFound
from conceptkit.pipelines.runs.search import SearchError, format_search, search_run

CLASSES = ["cooking", "music", "weather"]
PER_CLASS = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explore")
    rows = demo_rows(per_class=PER_CLASS, classes=CLASSES)
    rows.append({"id": "bad-1", "text": "   ", "label": "cooking"})
    items = write_csv(tmp / "items.csv", rows)
    with FakeLLM(DEMO_ANSWERS) as fake:
        cfg = load_config(None, fake_overrides(fake, tmp, items, selection={"k_per_class": 3}))
        run_build(cfg)
    return dict(out=cfg.out_dir(), cache=cfg.cache_path(), tmp=tmp, n_items=len(rows) - 1)


@pytest.fixture(scope="module")
def embedder(built):
    manifest = json.loads((built["out"] / "manifest.json").read_text())
    return TextEmbedder(manifest["models"]["embedding"])


def copy_run(built, tmp_path, **manifest_changes):
    """A copy of the run with its own empty cache dir and the manifest keys changed (dotted keys)."""
    out = tmp_path / "runs" / "copy"
    shutil.copytree(built["out"], out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config"]["cache_dir"] = str(tmp_path / "cache")
    for dotted, value in manifest_changes.items():
        *parents, leaf = dotted.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[leaf] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# --- search ---------------------------------------------------------------------------------------------------


def test_search_finds_the_weather_concept_first(built, embedder):
    result = search_run(built["out"], "heavy rain tomorrow", k=5, embedder=embedder)
    assert result.concepts[0].picked_for == "weather"
    assert "rain" in result.concepts[0].concept
    scores = [h.score for h in result.concepts]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5
    assert result.items is None
    text = format_search(result)
    assert text.splitlines()[1].split()[2:4] == result.concepts[0].concept.split()[:2]
    assert text.splitlines()[-1].startswith("conceptkit search: searched 9 concepts of ")


def test_search_k_larger_than_concepts_returns_all(built, embedder):
    result = search_run(built["out"], "guitar", k=100, embedder=embedder)
    assert len(result.concepts) == result.n_concepts == 9
    assert result.concepts[0].picked_for == "music"


def test_search_items_reads_the_build_s_vectors_from_the_embedding_cache(built, embedder):
    first = search_run(built["out"], "heavy rain tomorrow", k=3, items=True, embedder=embedder)
    assert first.items_source.startswith(f"{built['n_items']} annotated items, 0 embedded now")  # the build's vectors
    assert first.n_items == built["n_items"]
    assert [h.label for h in first.items] == ["weather"] * 3
    assert all(h.top_concepts for h in first.items)
    second = search_run(built["out"], "heavy rain tomorrow", k=3, items=True, embedder=embedder)
    ranked = [[(h.item_id, round(h.score, 5)) for h in r.items] for r in (first, second)]
    assert ranked[0] == ranked[1]
    assert "items nearest to 'heavy rain tomorrow':" in format_search(second)


def test_item_vectors_reproduce_the_annotation_scores(built, embedder):
    from conceptkit.pipelines.runs.run import open_run
    from conceptkit.pipelines.runs.search import item_embeddings

    annotations = pl.read_parquet(built["out"] / "annotations" / "*.parquet")
    matrix, _ = item_embeddings(open_run(built["out"]), annotations["item_id"].to_list(),
                                annotations["text"].to_list(), embedder=embedder)
    concepts = pl.read_parquet(built["out"] / "concepts.parquet").sort("concept_id")
    recomputed = matrix @ np.stack(concepts["embedding"].to_list()).T
    np.testing.assert_allclose(recomputed, np.stack(annotations["scores"].to_numpy()), atol=1e-5)


def test_search_items_needs_no_input_file_and_finds_annotated_items(built, embedder, tmp_path):
    out = copy_run(built, tmp_path, **{"input.path": str(tmp_path / "gone.csv"), "input.sha256": "0" * 64})
    import conceptkit

    conceptkit.Run.load(out).annotate([{"id": "added-1", "text": "A blizzard closed every road in the valley.",
                                        "label": "weather"}], split="test")
    found = search_run(out, "snowstorm closes the roads", k=3, items=True, embedder=embedder)
    assert "added-1" in [h.item_id for h in found.items]
    assert found.items_source.startswith(f"{built['n_items'] + 1} annotated items")


def test_search_bad_arguments(built, embedder, tmp_path):
    with pytest.raises(SearchError, match="query is empty"):
        search_run(built["out"], "  ", embedder=embedder)
    with pytest.raises(SearchError, match="k must be >= 1, got 0"):
        search_run(built["out"], "rain", k=0, embedder=embedder)
    with pytest.raises(RunNotFound, match="no such run directory"):
        search_run(tmp_path / "nope", "rain")
    out = copy_run(built, tmp_path, **{"models.embedding": "some-other-model"})
    with pytest.raises(SearchError, match="index/index.json names embedding model"):
        search_run(out, "rain", embedder=embedder)


# --- inspect --------------------------------------------------------------------------------------------------


def test_inspect_tables_add_up(built):
    result = inspect_tables(built["out"])
    n = built["n_items"]
    freq = result.tables["concept_frequencies"]
    assert freq.height == 9
    assert freq["top_1"].sum() == n
    assert freq["in_top_k"].sum() == n * 5  # top_k 5 of 9 concepts
    dist = result.tables["score_distributions"]
    ordered = dist.select("min", "p05", "p25", "p50", "p75", "p95", "max").to_numpy()
    assert (np.diff(ordered, axis=1) >= 0).all()
    scores = pl.read_parquet(built["out"] / "annotations" / "*.parquet")
    matrix, labels = scores["scores"].to_numpy(), np.array(scores["label"].to_list())
    classes = result.tables["class_concepts"]
    assert set(CLASSES) <= set(classes.columns)
    np.testing.assert_allclose(classes["weather"].to_numpy(), matrix[labels == "weather"].mean(axis=0), atol=1e-6)
    # on this easy data every concept scores highest in the class it was picked for
    assert classes.filter(pl.col("best_class") != pl.col("picked_for")).height == 0
    calls = result.tables["llm_calls"]
    assert calls["class_name"].to_list() == CLASSES and calls["errors"].sum() == 0
    rejects = result.tables["rejects"]
    assert rejects.filter((pl.col("stage") == "items") & (pl.col("reason") == "empty_text"))["rows"].to_list() == [1]


def test_inspect_run_text(built):
    text = inspect_run(built["out"])
    for section in ("## counts", "## files", "## concept frequencies", "## score distributions",
                    "## class-concept table", "## rejects by stage and reason", "## candidates by status and reason",
                    "## LLM (manifest)", "## LLM requests by class", "## timings (s)"):
        assert section in text
    assert re.search(r"\| items_annotated\s+\|\s+24 \|", text)
    assert re.search(r"\| items\s+\| empty_text\s+\|\s+1 \|", text)
    assert "over all 24 items" in text
    assert "| fake-model" in text


def test_inspect_samples_scores_above_the_limit_and_limits_rows(built):
    text = inspect_run(built["out"], max_rows=4, max_score_items=5)
    assert "1 item in 5 (5 of 24, a systematic sample)" in text
    assert "(4 of 9 rows shown; --rows 0 shows all)" in text
    assert "over all 24 items; top_1_label_match" in text  # frequencies still count every item


# --- card -----------------------------------------------------------------------------------------------------


def test_card_describes_the_run_and_its_snippet_runs(built, tmp_path):
    path = write_dataset_card(built["out"])
    assert path == built["out"] / "README.md"
    card = path.read_text()
    for needle in ("# Concept dataset `t`", "## What is in it", "## How it was made", "## Schemas",
                   "## Loading", "## Intended use and limitations", "| `annotations/` | 24 (2 shards) |",
                   "| `concepts.parquet` | 9 |", "`fake-model`", "fixed_size_list<element: float>[9]",
                   "- **weather** (3):"):
        assert needle in card
    assert write_dataset_card(built["out"]).read_text() == card  # same run, same bytes
    assert not list(built["out"].glob(".README.md.*"))
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # the loading instructions work as written
    assert namespace["scores"].shape == (24, 9)
    path.unlink()


def test_card_on_a_staged_directory_uses_the_final_path(built, tmp_path):
    staged = tmp_path / ".t.tmp-abc123"
    shutil.copytree(built["out"], staged)
    card = write_dataset_card(staged).read_text()
    assert f'pl.read_parquet("{built["out"]}/concepts.parquet")' in card
    assert ".tmp-abc123" not in card


# --- CLI ------------------------------------------------------------------------------------------------------


def cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="conceptkit")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc = args.func(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err.strip()


@pytest.mark.parametrize("command", [["search", "{}", "rain"], ["inspect", "{}"], ["card", "{}"]])
def test_cli_missing_and_non_run_directories(command, tmp_path, capsys):
    for target, message in ((tmp_path / "nope", "no such run directory"),
                            (tmp_path, "not a conceptkit run directory (no manifest.json)")):
        argv = [a.format(target) for a in command]
        rc, out, err = cli(argv, capsys)
        assert rc == 2 and not out
        assert len(err.splitlines()) == 1 and message in err and err.startswith(f"conceptkit {command[0]}: error:")


def test_cli_commands_say_what_they_did(built, capsys):
    rc, out, _ = cli(["search", str(built["out"]), "heavy rain tomorrow", "--k", "2"], capsys)
    assert rc == 0 and out.strip().splitlines()[-1].startswith("conceptkit search: searched 9 concepts")
    rc, out, _ = cli(["inspect", str(built["out"]), "--rows", "0"], capsys)
    assert rc == 0 and out.strip().splitlines()[-1] == f"conceptkit inspect: described {built['out']}"
    rc, out, _ = cli(["inspect", str(built["out"]), "--rows", "-1"], capsys)
    assert rc == 2
    rc, out, _ = cli(["card", str(built["out"])], capsys)
    assert rc == 0 and out.strip() == f"conceptkit card: wrote the dataset card {built['out'] / 'README.md'}"
    (built["out"] / "README.md").unlink()
