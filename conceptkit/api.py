"""The Python API: build a run, open one, read its tables, search it, reselect it, annotate new items with it.

Everything here calls the same code as the ``conceptkit`` command line (``conceptkit.pipelines``), so a notebook and
the CLI produce the same run directories. Errors a user can fix raise ``conceptkit.UserError`` (the CLI's exit 2).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

    from conceptkit.pipelines.annotation.refresh import RefreshSummary
    from conceptkit.pipelines.config import BuildConfig

PathLike = str | os.PathLike[str]


def _user_error() -> type[Exception]:
    from conceptkit.pipelines.build import UserError

    return UserError


def _config(config: BuildConfig | Mapping[str, Any] | PathLike | None, overrides: Mapping[str, Any]) -> BuildConfig:
    """A ``BuildConfig`` from a config object, a dict, a YAML path or nothing, with ``overrides`` (nested dicts)."""
    from pydantic import ValidationError

    from conceptkit.pipelines.config import BuildConfig, ConfigError, _deep_merge, _format_validation_error, load_config

    try:
        if isinstance(config, (BuildConfig, Mapping)):
            base = config.model_dump() if isinstance(config, BuildConfig) else dict(config)
            return BuildConfig.model_validate(_deep_merge(base, dict(overrides)))
        return load_config(os.fspath(config) if config is not None else None, dict(overrides))
    except ValidationError as exc:
        raise _user_error()(_format_validation_error(exc, "config")) from None
    except ConfigError as exc:
        raise _user_error()(str(exc)) from None


def build(config: BuildConfig | Mapping[str, Any] | PathLike | None = None, /, **overrides: Any) -> Run:
    """Build a run, as ``conceptkit build`` does, and return it.

    ``config`` is a YAML path, a dict shaped like the YAML, or a ``BuildConfig``; keyword arguments override its
    keys, nested as in the YAML (``build("configs/demo.yaml", out="runs/x", selection={"k_per_class": 4})``).
    """
    from conceptkit.pipelines.build import run_build

    summary = run_build(_config(config, overrides), argv=None)
    return Run.load(summary.out)


class Run:
    """A committed run directory (``conceptkit build``'s output), read under its declared schemas."""

    def __init__(self, path: PathLike) -> None:
        from conceptkit.pipelines.runs.run import RunNotFound, open_run

        try:
            self._run = open_run(path)
        except RunNotFound as exc:
            raise _user_error()(str(exc)) from None
        self.path = Path(path)

    @classmethod
    def load(cls, path: PathLike) -> Run:
        """The run in ``path``; ``UserError`` when it is missing or not a conceptkit run."""
        return cls(path)

    def __repr__(self) -> str:
        counts = self.manifest.get("counts", {})
        return (f"Run({str(self.path)!r}, concepts={counts.get('concepts_selected')}, "
                f"items={counts.get('items_annotated')})")

    @property
    def manifest(self) -> dict[str, Any]:
        """The run's manifest.json (config, counts, timings, LLM accounting), as a dict."""
        return self._run.manifest

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["input"]["classes"])

    @property
    def concepts(self) -> pl.DataFrame:
        """concepts.parquet as a polars DataFrame (one row per selected concept, in ``concept_id`` order)."""
        import polars as pl

        return pl.from_arrow(self._run.concepts())

    def annotations(self, split: str | None = None, *, columns: list[str] | None = None,
                    backend: str = "polars") -> pl.DataFrame | pa.Table:
        """The annotation shards as one table; ``split`` keeps one split (``"train"``, ``"test"``, ...).

        ``backend="pyarrow"`` returns a ``pyarrow.Table`` instead of a polars DataFrame.
        """
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if backend not in ("polars", "pyarrow"):
            raise ValueError(f"backend must be 'polars' or 'pyarrow', got {backend!r}")
        read = None if columns is None else list(dict.fromkeys([*columns, *(["split"] if split else [])]))
        table = pa.concat_tables([pq.read_table(f, columns=read) for f in self._run.annotation_files()])
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split))
            if columns is not None and "split" not in columns:
                table = table.drop_columns(["split"])
        if backend == "pyarrow":
            return table
        import polars as pl

        return pl.from_arrow(table)

    def search(self, text: str, *, k: int = 10, items: bool = False) -> list[dict[str, Any]]:
        """The ``k`` concepts nearest to ``text`` (``items=True``: the nearest annotated items), best first."""
        from dataclasses import asdict

        from conceptkit.pipelines.runs.search import SearchError, search_run

        try:
            result = search_run(self.path, text, k=k, items=items)
        except SearchError as exc:
            raise _user_error()(str(exc)) from None
        return [asdict(hit) for hit in (result.items or [] if items else result.concepts)]

    def select(self, *, out: PathLike | None = None, **selection: Any) -> Run:
        """Reselect the concepts with other ``selection`` parameters (``k_per_class``, ``global_budget``, ``alpha``,
        ``beta``, ``optimizer``) from the cached LLM answers; in place unless ``out`` is given. No LLM call."""
        from conceptkit.pipelines.build import run_build

        saved = dict(self.manifest["config"])
        saved["selection"] = {**saved.get("selection", {}), **selection}
        saved["out"] = os.fspath(out) if out is not None else str(self.path)
        saved["llm"] = {**saved.get("llm", {}), "refresh_cache": False, "cache": True}
        summary = run_build(_config(saved, {}), cached_only=True)
        return Run.load(summary.out)

    def evaluate(self, *, test: PathLike | None = None, compare: list[PathLike] | tuple = (), seeds: int = 10,
                 out: PathLike | None = None, **options: Any) -> dict[str, Any]:
        """What ``conceptkit eval`` does: eval.json's content (``results`` rows and the summary), written to
        ``RUN/eval/`` (or ``out``) with weights.parquet and report.html."""
        from conceptkit.pipelines.evaluation.run import EvalError, evaluate_run

        try:
            result = evaluate_run(self.path, test_file=test, compare=compare, seeds=seeds, out=out, **options)
        except EvalError as exc:
            raise _user_error()(str(exc)) from None
        return {"results": result.results, **result.summary, "out": str(result.out)}

    def annotate(self, items: PathLike | Iterable[Mapping[str, Any]], *, split: str | None = None,
                 id_column: str | None = None, text_column: str | None = None,
                 label_column: str | None = None) -> RefreshSummary:
        """Annotate new or changed items with this run's concepts (no LLM), into this run, under ``split``.

        ``items`` is an items file (.parquet/.csv/.jsonl) or rows (dicts with the run's column names). Items already
        annotated with the same content are left alone; embeddings are cached like the build's.
        """
        from conceptkit.pipelines.annotation.refresh import refresh_run

        columns = {"id_column": id_column, "text_column": text_column, "label_column": label_column}
        if isinstance(items, (str, os.PathLike)):
            summary = refresh_run(self.path, items, split=split, columns=columns)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [dict(r) for r in items]
            if not rows:
                raise _user_error()("annotate: no items given")
            with tempfile.TemporaryDirectory(prefix="conceptkit-annotate-") as tmp:
                path = Path(tmp) / "items.parquet"
                pq.write_table(pa.Table.from_pylist(rows), path)
                summary = refresh_run(self.path, path, split=split, columns=columns)
        self._run = Run.load(self.path)._run
        return summary


def evaluate(run: PathLike | Run, **options: Any) -> dict[str, Any]:
    """``conceptkit eval`` from Python: ``Run.load(run).evaluate(**options)``."""
    return (run if isinstance(run, Run) else Run.load(run)).evaluate(**options)
