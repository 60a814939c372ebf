"""conceptkit.pipelines.annotation.refresh on a copy of the built demo run: only new or changed items are embedded, each item once."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from conceptkit.annotators.embedding import TextEmbedder
from conceptkit.pipelines.annotation.refresh import RunChangedError, check_run, refresh_run

class CountingEmbedder(TextEmbedder):
    """The run's model, recording every text it embeds."""

    def __init__(self) -> None:
        super().__init__("packaged:all-MiniLM-L6-v2")
        self.texts: list[str] = []

    def encode(self, texts):
        self.texts.extend(texts)
        return super().encode(texts)


@pytest.fixture(scope="module")
def embedder() -> CountingEmbedder:
    return CountingEmbedder()


def annotated_ids(run_dir) -> list[str]:
    return pq.read_table(run_dir / "annotations", columns=["item_id"]).column("item_id").to_pylist()


def test_only_new_items_are_embedded(run_copy, shared, new_items, embedder, tmp_path):
    items = shared.write_csv(tmp_path / "items.csv", shared.demo_rows() + new_items)
    embedder.texts.clear()
    summary = refresh_run(run_copy, items, embedder=embedder)
    assert summary.changed
    assert summary.counts == {"items_in": 304, "new": 4, "changed": 0, "unchanged": 300, "rejected": 0,
                              "embedded": 4}
    assert sorted(embedder.texts) == sorted(r["text"] for r in new_items)
    ids = annotated_ids(run_copy)
    assert len(ids) == len(set(ids)) == 304
    assert check_run(run_copy)["review_tasks"] == 304
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert manifest["counts"]["items_in"] == manifest["counts"]["items_annotated"] == 304
    assert manifest["refreshes"][-1]["counts"]["embedded"] == 4

    embedder.texts.clear()  # the same file again: item_hashes.parquet now says everything is known
    again = refresh_run(run_copy, items, embedder=embedder)
    assert not again.changed and embedder.texts == []


def test_changed_and_invalid_items_replace_their_annotation(run_copy, shared, embedder, tmp_path):
    rows = shared.demo_rows()
    rows[0] = dict(rows[0], text="A completely different text about guitar strings.")
    rows[1] = dict(rows[1], text="   ")
    items = shared.write_csv(tmp_path / "items.csv", rows)
    embedder.texts.clear()
    summary = refresh_run(run_copy, items, embedder=embedder)
    assert (summary.counts["changed"], summary.counts["rejected"], summary.counts["embedded"]) == (1, 1, 1)
    assert embedder.texts == [rows[0]["text"]]
    ids = annotated_ids(run_copy)
    assert len(ids) == len(set(ids)) == 299 and rows[1]["id"] not in ids
    rejects = pq.read_table(run_copy / "rejects.parquet").to_pylist()
    assert [(r["key"], r["reason"]) for r in rejects if r["stage"] == "items"] == [(rows[1]["id"], "empty_text")]
    counts = check_run(run_copy)
    assert (counts["items_annotated"], counts["items_rejected"], counts["review_tasks"]) == (299, 1, 299)


def test_nothing_new_writes_nothing(run_copy, embedder):
    before = {p: p.stat().st_ino for p in run_copy.rglob("*")}
    embedder.texts.clear()
    summary = refresh_run(run_copy, embedder=embedder)  # the build's own input
    assert not summary.changed and summary.counts["unchanged"] == 300
    assert embedder.texts == []
    assert {p: p.stat().st_ino for p in run_copy.rglob("*")} == before


def test_a_concurrent_write_aborts_the_refresh(run_copy, shared, new_items, tmp_path):
    class PullingMeanwhile(CountingEmbedder):
        def encode(self, texts):  # a Label Studio pull writes into the run while the refresh works
            (run_copy / "review.json").write_text("{}")
            return super().encode(texts)

    items = shared.write_csv(tmp_path / "items.csv", shared.demo_rows() + new_items)
    with pytest.raises(RunChangedError):
        refresh_run(run_copy, items, embedder=PullingMeanwhile())
    assert len(annotated_ids(run_copy)) == 300 and (run_copy / "review.json").read_text() == "{}"
    assert not [p for p in run_copy.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]  # the staged copy is gone
