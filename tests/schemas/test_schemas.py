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
