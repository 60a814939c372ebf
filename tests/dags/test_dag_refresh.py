"""concept_dataset_refresh under ``dag.test()``: new items are embedded and annotated, a rerun writes nothing."""

from __future__ import annotations

from datetime import datetime, timezone

import pyarrow.parquet as pq

from conceptkit.annotators.embedding import TextEmbedder


def test_refresh_dag_embeds_only_new_items_and_reruns_cleanly(run_dag, run_copy, shared, new_items, tmp_path,
                                                               monkeypatch):
    encoded: list[str] = []
    encode = TextEmbedder.encode
    monkeypatch.setattr(TextEmbedder, "encode", lambda self, texts: encoded.extend(texts) or encode(self, texts))
    items = shared.write_csv(tmp_path / "items.csv", shared.demo_rows() + new_items)
    conf = {"run": run_copy.name, "items": str(items)}
    when = datetime(2025, 6, 3, tzinfo=timezone.utc)

    assert run_dag("concept_dataset_refresh", when, conf) == {
        "(dag run)": "success", "refresh_annotations": "success", "push_review_tasks": "skipped"}
    assert sorted(encoded) == sorted(r["text"] for r in new_items)
    ids = pq.read_table(run_copy / "annotations", columns=["item_id"]).column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 304

    # The same logical date again: nothing is new, so nothing is embedded or written.
    assert run_dag("concept_dataset_refresh", when, conf) == {
        "(dag run)": "success", "refresh_annotations": "skipped", "push_review_tasks": "skipped"}
    assert len(encoded) == len(new_items)
