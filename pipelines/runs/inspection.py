"""What a built run holds, as tables: counts, concept frequencies, score distributions, class-concept means.

In: a run directory. Out: ``inspect_tables`` returns polars DataFrames (for notebooks and tests);
``inspect_run`` renders them as Markdown-style text for ``conceptkit inspect``. Reads only.

Annotations are scanned lazily with polars, so counts and frequencies cover every item whatever the run's size.
Score distributions and class-concept means need the score vectors, which for a large run do not fit in memory:
they use every item up to ``max_score_items`` and beyond that every n-th item (a systematic sample, stated in the
output). Quantiles are computed with numpy over the sampled score matrix; everything else is polars.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from conceptkit.pipelines.runs.run import Run, open_run
from conceptkit.schemas.annotations import packed_matrix, score_storage_of

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
WIDE_CLASS_TABLE_MAX = 8  # more classes than this: list each class's best concepts instead of a concept x class grid


@dataclass
class Inspection:
    run: str
    header: dict[str, str]
    tables: dict[str, pl.DataFrame]
    notes: dict[str, str] = field(default_factory=dict)


def inspect_tables(run_dir: str | os.PathLike[str], *, max_score_items: int = 50_000) -> Inspection:
    """Every table ``conceptkit inspect`` prints, complete (no row limit)."""
    if max_score_items < 1:
        raise ValueError(f"max_score_items must be >= 1, got {max_score_items}")
    run = open_run(run_dir)
    m = run.manifest
    files = run.annotation_files()
    concepts = pl.from_arrow(run.concepts(["concept_id", "concept", "picked_for"]))
    n_items = run.n_annotated()
    tables: dict[str, pl.DataFrame] = {}
    notes: dict[str, str] = {}

    tables["counts"] = pl.DataFrame(
        {"count": list(m.get("counts", {})), "value": [int(v) for v in m.get("counts", {}).values()]}
    )
    tables["files"] = _files(run)

    scan = pl.scan_parquet(files)
    top_k = scan.select(pl.col("top_concept_ids").list.len().max()).collect().item() or 0
    in_top = (
        scan.select(pl.col("top_concept_ids").alias("concept_id")).explode("concept_id")
        .group_by("concept_id").agg(pl.len().alias("in_top_k")).collect()
    )
    first = (
        scan.select(pl.col("top_concept_ids").list.first().alias("concept_id"), "label")
        .join(concepts.lazy().select("concept_id", "picked_for"), on="concept_id", how="left")
        .group_by("concept_id")
        .agg(pl.len().alias("top_1"), (pl.col("label") == pl.col("picked_for")).mean().alias("top_1_label_match"))
        .collect()
    )
    tables["concept_frequencies"] = (
        concepts.join(in_top.with_columns(pl.col("concept_id").cast(pl.Int32)), on="concept_id", how="left")
        .join(first.with_columns(pl.col("concept_id").cast(pl.Int32)), on="concept_id", how="left")
        .with_columns(pl.col("in_top_k", "top_1").fill_null(0).cast(pl.Int64))
        .with_columns((pl.col("in_top_k") / max(n_items, 1)).alias("share_top_k"))
        .select("concept_id", "concept", "picked_for", "top_1", "top_1_label_match", "in_top_k", "share_top_k")
        .sort(["in_top_k", "concept_id"], descending=[True, False])
    )
    notes["concept_frequencies"] = (
        f"over all {n_items} items; top_1_label_match: share of the items whose best concept this is that carry "
        f"the class it was picked for; in_top_k: items with it among their top {top_k}"
    )
    unused = tables["concept_frequencies"].filter(pl.col("in_top_k") == 0)["concept"].to_list()
    if unused:
        notes["concept_frequencies"] += f"; never in any top {top_k}: {len(unused)} ({', '.join(unused[:10])})"

    stride = max(1, math.ceil(n_items / max_score_items))
    sampled = scan.select("label", "scores")
    if stride > 1:
        sampled = sampled.gather_every(stride)
    sample = sampled.collect()
    dtype, layout = score_storage_of(run.path / "annotations")
    if layout == "packed":
        scores = packed_matrix(sample["scores"].to_list(), dtype, concepts.height)
    else:
        scores = sample["scores"].to_numpy().astype(np.float32, copy=False)  # (items, concepts)
    used = f"all {n_items} items"
    if stride > 1:
        used = f"1 item in {stride} ({sample.height} of {n_items}, a systematic sample)"
    names = concepts.sort("concept_id")["concept"].to_list()
    q = np.quantile(scores, QUANTILES, axis=0) if len(scores) else np.full((len(QUANTILES), len(names)), np.nan)
    tables["score_distributions"] = pl.DataFrame(
        {
            "concept_id": np.arange(len(names), dtype=np.int32),
            "concept": names,
            "mean": scores.mean(axis=0) if len(scores) else np.full(len(names), np.nan),
            "min": scores.min(axis=0) if len(scores) else np.full(len(names), np.nan),
            **{f"p{round(p * 100):02d}": q[i] for i, p in enumerate(QUANTILES)},
            "max": scores.max(axis=0) if len(scores) else np.full(len(names), np.nan),
        }
    )
    notes["score_distributions"] = f"cosine similarity item-concept, over {used}"

    labelled = sample["label"].drop_nulls()
    if labelled.len():
        wide = pl.from_numpy(scores, schema=[f"c{i}" for i in range(len(names))]).with_columns(sample["label"])
        means = wide.drop_nulls("label").group_by("label").agg(pl.all().mean()).sort("label")
        classes = means["label"].to_list()
        grid = means.drop("label").transpose(column_names=classes)
        best = np.asarray(grid.to_numpy()).argmax(axis=1) if classes else []
        tables["class_concepts"] = pl.concat(
            [concepts.sort("concept_id").select("concept", "picked_for"), grid], how="horizontal"
        ).with_columns(pl.Series("best_class", [classes[b] for b in best], dtype=pl.String))
        notes["class_concepts"] = (
            f"mean score of each concept over the items of each class label, over {used}; best_class: the class "
            "where the concept scores highest"
        )
        off = tables["class_concepts"].filter(pl.col("best_class") != pl.col("picked_for"))["concept"].to_list()
        if off:
            notes["class_concepts"] += (
                f"; {len(off)} concept(s) score highest outside the class they were picked for: {', '.join(off[:10])}"
            )
    else:
        notes["class_concepts"] = "skipped: the items carry no class labels"

    rejects = pl.from_arrow(run.rejects()) if (run.path / "rejects.parquet").exists() else None
    if rejects is not None:
        tables["rejects"] = rejects.group_by("stage", "reason").agg(pl.len().alias("rows")).sort(
            ["stage", "rows", "reason"], descending=[False, True, False]
        )
    if (run.path / "candidates.parquet").exists():
        tables["candidates"] = (
            pl.from_arrow(run.candidates())
            .group_by("status", "reason").agg(pl.len().alias("candidates"), pl.col("selected").sum().alias("selected"))
            .sort(["status", "candidates", "reason"], descending=[False, True, False], nulls_last=True)
        )
    llm = m.get("llm", {})
    flat = _flatten(llm)
    tables["llm"] = pl.DataFrame({"llm": list(flat), "value": ["" if v is None else str(v) for v in flat.values()]})
    if (run.path / "llm_calls.parquet").exists():
        from conceptkit.schemas.io import read_table
        from conceptkit.schemas.llm_calls import LLM_CALLS

        tables["llm_calls"] = (
            pl.from_arrow(read_table(run.path / "llm_calls.parquet", LLM_CALLS))
            .group_by("class_name")
            .agg(
                pl.len().alias("requests"), pl.col("cached").sum().alias("cached"),
                pl.col("error").is_not_null().sum().alias("errors"), pl.col("retries").sum().alias("retries"),
                pl.col("prompt_tokens").sum(), pl.col("completion_tokens").sum(),
                pl.col("latency_s").filter(~pl.col("cached")).median().alias("latency_s_p50"),
            )
            .sort("class_name")
        )
    timings = m.get("timings_s", {})
    tables["timings"] = pl.DataFrame({"stage": list(timings), "seconds": [float(v) for v in timings.values()]})

    cfg = m.get("config", {})
    header = {
        "run": f"{m.get('run_id', run.name)} (created {m.get('created', '?')})",
        "input": f"{m.get('input', {}).get('path')} ({m.get('input', {}).get('rows')} rows, "
        f"{len(m.get('input', {}).get('classes', []))} classes)",
        "models": f"LLM {llm.get('model')} at {llm.get('endpoint')}; embedding {run.embedding_model}",
        "annotation": f"top {cfg.get('annotation', {}).get('top_k', top_k)} concepts per item, "
        f"{len(names)} concepts, {n_items} items in {len(files)} shard(s)",
    }
    return Inspection(run=str(run.path), header=header, tables=tables, notes=notes)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _files(run: Run) -> pl.DataFrame:
    import pyarrow.parquet as pq

    rows = []
    for path in sorted(run.path.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(run.path).parts):
            n = pq.ParquetFile(path).metadata.num_rows if path.suffix == ".parquet" else None
            rows.append({"file": str(path.relative_to(run.path)), "rows": n, "bytes": path.stat().st_size})
    return pl.DataFrame(rows, schema={"file": pl.String, "rows": pl.Int64, "bytes": pl.Int64})


def _render(df: pl.DataFrame, max_rows: int | None) -> str:
    if df.height == 0:
        return "(none)"
    shown = df if max_rows is None or df.height <= max_rows else df.head(max_rows)
    with pl.Config(
        tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
        tbl_formatting="ASCII_MARKDOWN", tbl_cell_numeric_alignment="RIGHT", float_precision=3,
        fmt_str_lengths=48, tbl_width_chars=10_000,
    ):
        text = str(shown)
    if shown.height < df.height:
        text += f"\n({shown.height} of {df.height} rows shown; --rows 0 shows all)"
    return text


def _class_table(df: pl.DataFrame, max_rows: int | None) -> pl.DataFrame:
    classes = [c for c in df.columns if c not in ("concept", "picked_for", "best_class")]
    if len(classes) <= WIDE_CLASS_TABLE_MAX:
        return df
    # Too many classes for a readable grid: each class with its best concepts by mean score.
    per = 5 if max_rows is None else max(1, min(5, max_rows // max(len(classes), 1)))
    long = df.unpivot(index=["concept", "picked_for"], on=classes, variable_name="class", value_name="mean_score")
    return long.sort(["class", "mean_score"], descending=[False, True]).group_by("class", maintain_order=True).head(per)


TITLES = {
    "counts": "counts (manifest)",
    "files": "files",
    "concept_frequencies": "concept frequencies",
    "score_distributions": "score distributions",
    "class_concepts": "class-concept table",
    "rejects": "rejects by stage and reason",
    "candidates": "candidates by status and reason",
    "llm": "LLM (manifest)",
    "llm_calls": "LLM requests by class (llm_calls.parquet)",
    "timings": "timings (s)",
}


def inspect_run(run_dir: str | os.PathLike[str], *, max_rows: int | None = 50, max_score_items: int = 50_000) -> str:
    """The run's tables as text, each section headed ``## title``; at most ``max_rows`` rows per table (None: all)."""
    result = inspect_tables(run_dir, max_score_items=max_score_items)
    out = [f"# {result.run}"]
    out.extend(f"{key:<11} {value}" for key, value in result.header.items())
    for key, title in TITLES.items():
        if key not in result.tables and key not in result.notes:
            continue
        out.append(f"\n## {title}")
        if key in result.notes:
            out.append(result.notes[key])
        if key in result.tables:
            df = result.tables[key]
            limit = None if key in ("counts", "llm", "timings") else max_rows
            out.append(_render(_class_table(df, limit) if key == "class_concepts" else df, limit))
    return "\n".join(out)
