"""Reading a run directory, committed or still staged: its manifest and its tables under their schemas.

In: a directory written by ``conceptkit build`` (it holds ``manifest.json``). Out: a ``Run`` whose readers check
every table's schema name, version and fields (``conceptkit.schemas.io``). ``RunNotFound`` when the directory is missing or
is not a run (no ``manifest.json``); the CLI turns it into a one-line error and exit 2. Reads only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.schemas.annotations import stored_schema
from conceptkit.schemas.candidates import CANDIDATES
from conceptkit.schemas.concepts import CONCEPTS
from conceptkit.schemas.io import check_schema, read_table
from conceptkit.schemas.rejects import REJECTS

MANIFEST = "manifest.json"


class RunNotFound(ValueError):
    """The directory does not exist or is not a conceptkit run directory."""


@dataclass(frozen=True)
class Run:
    path: Path
    manifest: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config", {})

    @property
    def name(self) -> str:
        out = self.config.get("out")
        return self.config.get("name") or (Path(out).name if out else self.path.name)

    @property
    def embedding_model(self) -> str:
        return self.manifest.get("models", {}).get("embedding") or self.config["embedding"]["model"]

    def cache_dir(self) -> Path:
        """The run's cache directory: ``cache_dir`` from its config, else ``.cache`` beside the run directory."""
        configured = self.config.get("cache_dir")
        return Path(configured) if configured else self.path.parent / ".cache"

    def concepts(self, columns: list[str] | None = None) -> pa.Table:
        table = read_table(self.path / "concepts.parquet", CONCEPTS)
        return table.select(columns) if columns else table

    def candidates(self) -> pa.Table:
        return read_table(self.path / "candidates.parquet", CANDIDATES)

    def rejects(self) -> pa.Table:
        return read_table(self.path / "rejects.parquet", REJECTS)

    def n_concepts(self) -> int:
        return pq.ParquetFile(self.path / "concepts.parquet").metadata.num_rows

    def annotation_files(self) -> list[Path]:
        """The annotation shards, each checked against the run's annotations schema (footer reads only)."""
        files = sorted((self.path / "annotations").glob("*.parquet"))
        if not files:
            raise RunNotFound(f"{self.path}: no annotation shards in annotations/")
        expected = stored_schema(self.path / "annotations", self.n_concepts())
        for file in files:
            check_schema(pq.read_schema(file), expected, where=str(file))
        return files

    def n_annotated(self) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.annotation_files())


def open_run(run_dir: str | os.PathLike[str]) -> Run:
    """The run in ``run_dir``; ``RunNotFound`` (one line, naming the directory) when there is none."""
    path = Path(run_dir)
    if not path.exists():
        raise RunNotFound(f"{path}: no such run directory")
    if not path.is_dir():
        raise RunNotFound(f"{path}: not a directory")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise RunNotFound(f"{path}: not a conceptkit run directory (no {MANIFEST})")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunNotFound(f"{manifest_path}: unreadable manifest ({exc})") from None
    for required in ("concepts.parquet", "annotations"):
        if not (path / required).exists():
            raise RunNotFound(f"{path}: incomplete run directory (no {required})")
    return Run(path=path, manifest=manifest)
