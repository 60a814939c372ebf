"""Helpers that attach a name and version to a pyarrow schema and describe differences between schemas."""

from __future__ import annotations

import pyarrow as pa

NAME_KEY = b"conceptkit.schema"
VERSION_KEY = b"conceptkit.version"


def named_schema(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    """A schema carrying its table name and version in the metadata."""
    return pa.schema(fields, metadata={NAME_KEY: name.encode(), VERSION_KEY: str(version).encode()})


def schema_identity(schema: pa.Schema) -> tuple[str | None, int | None]:
    """(name, version) from a schema's metadata, (None, None) when absent."""
    meta = schema.metadata or {}
    name = meta.get(NAME_KEY)
    version = meta.get(VERSION_KEY)
    return (name.decode() if name else None, int(version) if version else None)


def schema_differences(expected: pa.Schema, actual: pa.Schema) -> list[str]:
    """Human-readable field differences, empty when the fields agree (metadata aside)."""
    diffs: list[str] = []
    actual_fields = {f.name: f for f in actual}
    for field in expected:
        other = actual_fields.pop(field.name, None)
        if other is None:
            diffs.append(f"missing field {field.name!r} ({field.type})")
        elif not other.type.equals(field.type):
            diffs.append(f"field {field.name!r} is {other.type}, expected {field.type}")
    diffs.extend(f"unexpected field {name!r} ({f.type})" for name, f in actual_fields.items())
    return diffs
