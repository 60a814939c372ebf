"""Write tables under their declared schema, atomically, and read them back with a schema check.

``write_text_atomic`` gives text files (JSON, Markdown) the same all-or-nothing write.

``write_table`` casts rows to the schema (never infers one), writes to a temporary file beside the target and
renames it into place, so a reader never sees a half-written file. ``read_table`` refuses a file whose schema
name, version or fields differ from the expected schema, listing the differences.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.schemas.base import schema_differences, schema_identity


class SchemaMismatch(ValueError):
    """A Parquet file does not carry the schema its reader expects."""


def to_table(rows: Iterable[Mapping[str, Any]] | pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows (dicts) or a table, cast to ``schema``; unknown or missing columns are an error."""
    if isinstance(rows, pa.Table):
        diffs = [d for d in schema_differences(schema, rows.schema) if not d.startswith("field ")]
        if diffs:
            raise SchemaMismatch(f"table does not fit schema {schema_identity(schema)[0]!r}: " + "; ".join(diffs))
        return rows.select(schema.names).cast(schema)
    rows = list(rows)
    names = set(schema.names)
    for i, row in enumerate(rows):
        extra = set(row) - names
        if extra:
            raise SchemaMismatch(
                f"row {i} has fields not in schema {schema_identity(schema)[0]!r}: {sorted(extra)}"
            )
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(
    path: str | os.PathLike[str],
    rows: Iterable[Mapping[str, Any]] | pa.Table,
    schema: pa.Schema,
    *,
    row_group_size: int = 65_536,
) -> Path:
    """Write ``rows`` to ``path`` as Parquet under ``schema``; atomic (temporary file, then rename)."""
    path = Path(path)
    table = to_table(rows, schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    dictionary, split, statistics = encodings(table.schema)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd", use_dictionary=dictionary,
                       use_byte_stream_split=split, write_statistics=statistics)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def encodings(schema: pa.Schema) -> tuple[list[str], list[str], list[str]]:
    """(columns to dictionary-encode, float columns to write BYTE_STREAM_SPLIT, columns with min/max
    statistics), as Parquet leaf paths.

    Dictionaries only for strings: on a float column Parquet builds one and gives it up, which made a
    20,000 x 5,000 float16 score shard take 2x as long to write (benchmarks/README.md, "Annotation at scale").
    Byte-stream split for float32/float64 (every reader of Parquet 2.8 knows it; not float16: Parquet 2.11
    added it there and some readers, Polars among them, cannot decode it yet): zstd then compresses the
    exponent bytes apart from the noisy mantissas, smaller and faster. No statistics on floats inside lists
    (score vectors): a row group's min/max over millions of list elements filters nothing, and computing it
    took 40 % of a float16 score shard's write; none on fixed-size binary cells (packed score vectors) either."""
    dictionary, split, statistics = [], [], []

    def walk(path: str, kind: pa.DataType, in_list: bool) -> None:
        if pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind):
            walk(f"{path}.list.element", kind.value_type, True)
            return
        if pa.types.is_struct(kind):
            for child in kind:
                walk(f"{path}.{child.name}", child.type, in_list)
            return
        floating = pa.types.is_floating(kind)
        if not (floating and in_list) and not pa.types.is_fixed_size_binary(kind):
            statistics.append(path)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            dictionary.append(path)
        elif pa.types.is_float32(kind) or pa.types.is_float64(kind):
            split.append(path)

    for field in schema:
        walk(field.name, field.type, False)
    return dictionary, split, statistics


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename: readers see the old file or the
    new one, never a part; a hard link to the old content is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_schema(actual: pa.Schema, expected: pa.Schema, *, where: str) -> None:
    """Raise ``SchemaMismatch`` naming ``where`` unless ``actual`` is ``expected`` (name, version, fields)."""
    want_name, want_version = schema_identity(expected)
    name, version = schema_identity(actual)
    problems = []
    if (name, version) != (want_name, want_version):
        problems.append(f"schema is {name!r} v{version}, expected {want_name!r} v{want_version}")
    problems.extend(schema_differences(expected, actual))
    if problems:
        raise SchemaMismatch(f"{where}: " + "; ".join(problems))


def read_table(path: str | os.PathLike[str], expected: pa.Schema) -> pa.Table:
    """Read a Parquet file (or a directory of shards) and check it carries ``expected``."""
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise SchemaMismatch(f"{path}: no Parquet files")
    tables = []
    for file in files:
        table = pq.read_table(file)
        check_schema(table.schema, expected, where=str(file))
        tables.append(table)
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
