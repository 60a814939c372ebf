"""Schemas are pinned (golden text), written atomically and checked on read."""

from pathlib import Path

import pyarrow as pa
import pytest

from conceptkit.schemas.annotations import annotations_schema
from conceptkit.schemas.candidates import CANDIDATES
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import SchemaMismatch, read_table, write_table
from conceptkit.schemas.items import ITEMS
from conceptkit.schemas.rejects import REJECTS

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "schemas.golden.txt"


def render_all() -> str:
    parts = []
    for name, schema in [("items", ITEMS), ("candidates", CANDIDATES), ("concepts", CONCEPTS),
                         ("annotations(3)", annotations_schema(3)), ("rejects", REJECTS)]:
        parts.append(f"## {name}\n{schema.to_string(show_schema_metadata=True)}\n")
    return "\n".join(parts)


def test_schemas_match_golden():
    # A schema change must be deliberate: regenerate tests/data/schemas.golden.txt with render_all() and bump
    # the schema's version.
    assert render_all() == GOLDEN.read_text()


def test_round_trip_and_atomic(tmp_path):
    rows = [{"stage": "items", "key": "a", "reason": "empty_text", "detail": None, "raw": ""}]
    path = write_table(tmp_path / "rejects.parquet", rows, REJECTS)
    table = read_table(path, REJECTS)
    assert table.to_pylist() == rows
    assert [p.name for p in tmp_path.iterdir()] == ["rejects.parquet"]  # no temporary file left


def test_unknown_field_is_an_error(tmp_path):
    with pytest.raises(SchemaMismatch, match="not in schema 'rejects'.*bogus"):
        write_table(tmp_path / "r.parquet", [{"stage": "x", "key": "k", "reason": "r", "bogus": 1}], REJECTS)


def test_read_refuses_other_schema(tmp_path):
    write_table(tmp_path / "r.parquet", [{"stage": "x", "key": "k", "reason": "r"}], REJECTS)
    with pytest.raises(SchemaMismatch, match=r"'rejects' v1, expected 'concepts' v1.*missing field 'concept_id'"):
        read_table(tmp_path / "r.parquet", CONCEPTS)


def test_read_refuses_unnamed_file(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"stage": ["x"]}), tmp_path / "plain.parquet")
    with pytest.raises(SchemaMismatch, match="schema is None"):
        read_table(tmp_path / "plain.parquet", REJECTS)


def test_annotations_vector_length_is_fixed():
    assert annotations_schema(7).field("scores").type == pa.list_(pa.float32(), 7)
    with pytest.raises(ValueError, match="n_concepts must be >= 1"):
        annotations_schema(0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_annotation_shard_encodings(tmp_path, dtype):
    """Score vectors: no min/max statistics (they filter nothing), no dictionary; byte-stream split only where
    every Parquet reader decodes it (float32); ids and texts keep statistics and dictionaries."""
    import pyarrow.parquet as pq

    row = {"item_id": "a", "text": "t", "label": None, "split": "train", "top_concept_ids": [1, 0],
           "top_scores": [0.5, 0.25], "concept_ids": [1], "scores": [0.25, 0.5, 0.125]}
    path = write_table(tmp_path / "s.parquet", [row, {**row, "item_id": "b"}], annotations_schema(3, dtype))
    meta = pq.ParquetFile(path).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    scores, item_id = columns["scores.list.element"], columns["item_id"]
    assert not scores.is_stats_set and not columns["top_scores.list.element"].is_stats_set
    assert item_id.is_stats_set and item_id.statistics.min == "a" and columns["concept_ids.list.element"].is_stats_set
    assert "RLE_DICTIONARY" not in scores.encodings and "RLE_DICTIONARY" in item_id.encodings
    assert ("BYTE_STREAM_SPLIT" in scores.encodings) == (dtype == "float32")
    assert read_table(path, annotations_schema(3, dtype)).column("scores").to_pylist()[1] == [0.25, 0.5, 0.125]
