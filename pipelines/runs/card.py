"""The dataset card: ``README.md`` in a run directory, saying what the run holds and how it was made.

In: a run directory, committed or still staged (everything is read from the directory itself: ``manifest.json``,
the Parquet footers, ``index/index.json``; paths in the card use the run's configured ``out``, where the run ends
up). Out: the path of the card, written atomically (temporary file, then rename). The card carries no time of its
own writing, so rewriting it for the same run gives the same bytes.
"""

from __future__ import annotations

import html
import importlib
import json
import re
import unicodedata
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.pipelines.runs.guard import RUN_MARKER, STAGING_MARKER, is_run_dir
from conceptkit.pipelines.runs.run import RunNotFound, open_run
from conceptkit.schemas.annotations import score_storage_of, shard_split
from conceptkit.schemas.base import schema_identity

CARD = "README.md"
CONCEPTS_LISTED_PER_CLASS = 30


def write_dataset_card(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/README.md`` from the run's own files; returns its path. Only into a directory conceptkit
    wrote (a run, or a build's staged run): a folder that merely looks like one keeps its own README.md."""
    run = open_run(run_dir)
    if not (is_run_dir(run.path) or (run.path / STAGING_MARKER).is_file()):
        raise RunNotFound(f"{run.path}: not a conceptkit run directory (no {RUN_MARKER}); its README.md is left alone")
    text = render_card(run.path, run.manifest)
    from conceptkit.schemas.io import write_text_atomic

    return write_text_atomic(run.path / CARD, text)


def _parquet_tables(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """(name as shown, files) for every Parquet table in the run: single files, and directories of shards."""
    tables = []
    for path in sorted(run_dir.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        if path.is_file() and path.suffix == ".parquet":
            tables.append((path.name, [path]))
        elif path.is_dir():
            shards = sorted(path.glob("*.parquet"))
            if shards:
                tables.append((f"{path.name}/", shards))
    return tables


def _schema_doc(schema: pa.Schema) -> tuple[str, str]:
    """(``name vN``, first paragraph of the schema module's docstring) from a file's schema metadata."""
    name, version = schema_identity(schema)
    if name is None:
        return "(no schema name)", ""
    try:
        doc = importlib.import_module(f"conceptkit.schemas.{name}").__doc__ or ""
    except ImportError:
        doc = ""
    first = " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "`")  # reST literals to Markdown
    return f"`{name}` v{version}", first


def _fields(schema: pa.Schema) -> list[str]:
    rows = ["| field | type | nullable |", "|---|---|---|"]
    rows.extend(f"| `{f.name}` | `{f.type}` | {'yes' if f.nullable else 'no'} |" for f in schema)
    return rows


def _label_rule(cfg: dict[str, Any]) -> str:
    """How the binary labels were decided, for the card (empty for runs built before the label rule)."""
    z = _get(cfg, "annotation.label_z")
    if z is None:
        return ""
    margin = _get(cfg, "annotation.class_margin")
    text = (f"; binary labels (`concept_ids`) where the concept's double z-score (per concept over the items, then "
            f"per item over the concepts) reaches {z}")
    if margin is not None:
        text += f", {margin} more for a concept not proposed for the item's class"
    layout = _get(cfg, "annotation.score_layout", "list")
    return (text + f" (`labels.json`); scores stored as {_get(cfg, 'annotation.score_dtype', 'float32')}"
            + (" packed bytes per item (see Loading)" if layout == "packed" else ""))


def _get(tree: dict[str, Any], dotted: str, default: Any = None) -> Any:
    for key in dotted.split("."):
        if not isinstance(tree, dict) or key not in tree:
            return default
        tree = tree[key]
    return tree


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()#|!~>-])")


def _one_line(text: object) -> str:
    """``text`` on one line: control characters (newlines included) become spaces, runs of spaces one."""
    return " ".join("".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(text)).split())


def md(text: object) -> str:
    """Data as inert Markdown text: one line, HTML escaped (no live tags, images or scripts), Markdown syntax
    escaped (no links, emphasis or table breaks)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(_one_line(text), quote=True))


def code(text: object) -> str:
    """Data as a Markdown code span: one line, and no backtick inside that could end the span early."""
    return "`" + _one_line(text).replace("`", "'") + "`"


def _hf_dtype(field: pa.Field, classes: list[str]) -> dict[str, Any]:
    """A Hugging Face ``features`` entry for one annotations field (the YAML ``datasets`` reads from a card)."""
    kind = field.type
    if field.name == "label" and classes:
        return {"dtype": {"class_label": {"names": {str(i): c for i, c in enumerate(classes)}}}}
    if pa.types.is_fixed_size_binary(kind):
        return {"dtype": "binary"}  # packed scores: score_matrix (conceptkit) or numpy.frombuffer
    if pa.types.is_fixed_size_list(kind):
        return {"list": str(kind.value_type), "length": kind.list_size}
    if pa.types.is_list(kind):
        return {"list": str(kind.value_type)}
    return {"dtype": "string" if pa.types.is_string(kind) else str(kind)}


def split_counts(run_dir: Path) -> dict[str, int]:
    """Annotated items per split, from the shard footers (``<split>-*.parquet``)."""
    counts: dict[str, int] = {}
    for shard in sorted((run_dir / "annotations").glob("*.parquet")):
        name = shard_split(shard.name)
        counts[name] = counts.get(name, 0) + pq.ParquetFile(shard).metadata.num_rows
    return counts


def front_matter(run_dir: Path, manifest: dict[str, Any], splits: dict[str, int], name: str) -> str:
    """Hugging Face dataset-card YAML: one ``data_files`` pattern per split, features with the label's ClassLabel
    names, so ``datasets.load_dataset(run_dir)`` gives the splits with the right columns."""
    import yaml

    classes = list(manifest.get("input", {}).get("classes", []))
    shards = sorted((run_dir / "annotations").glob("*.parquet"))
    features = []
    if shards:
        features = [{"name": f.name, **_hf_dtype(f, classes)} for f in pq.read_schema(shards[0])]
    image = manifest.get("config", {}).get("items", {}).get("image_column")
    meta = {
        "license": "other",  # placeholder: the items' own license applies; set it before publishing
        "pretty_name": f"conceptkit concept dataset {name}",
        "task_categories": ["image-classification" if image else "text-classification"],
        "tags": ["conceptkit", "concept-bottleneck", "interpretability"],
        "configs": [
            {"config_name": "default", "default": True,
             "data_files": [{"split": s, "path": f"annotations/{s}-*.parquet"} for s in sorted(splits)]},
            {"config_name": "concepts", "data_files": [{"split": "train", "path": "concepts.parquet"}]},
        ],
        "dataset_info": [{"config_name": "default", "features": features}],
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def render_card(run_dir: Path, manifest: dict[str, Any]) -> str:
    cfg = manifest.get("config", {})
    counts = manifest.get("counts", {})
    llm = manifest.get("llm", {})
    inp = manifest.get("input", {})
    # Name and path where the run ends up: a staged directory has a temporary name of its own.
    name = cfg.get("name") or (Path(cfg["out"]).name if cfg.get("out") else run_dir.name)
    out = cfg.get("out") or f"runs/{name}"
    classes = inp.get("classes", [])
    index_desc = {}
    if (run_dir / "index" / "index.json").is_file():
        index_desc = json.loads((run_dir / "index" / "index.json").read_text(encoding="utf-8"))
    concepts = pq.read_table(run_dir / "concepts.parquet", columns=["concept_id", "concept", "picked_for", "classes"]).to_pylist()
    top_k = _get(cfg, "annotation.top_k")
    # Counted from the files, never copied from the manifest: refresh, annotate and pull change them later.
    splits = split_counts(run_dir)
    n_items = sum(splits.values())
    embedding = _get(manifest, "models.embedding") or _get(cfg, "embedding.model")

    lines = [
        front_matter(run_dir, manifest, splits, name),
        f"# Concept dataset {code(name)}",
        "",
        f"Run `{manifest.get('run_id')}`, built {manifest.get('created')} with conceptkit "
        f"{_get(manifest, 'versions.conceptkit', '?')}"
        + (f" ({code('conceptkit ' + ' '.join(manifest['command']))})." if manifest.get("command") else "."),
        "",
        f"{n_items} items in {len(classes)} classes ({', '.join(md(c) for c in classes)}) annotated "
        f"with {len(concepts)} concepts; splits: " + ", ".join(f"{s} {n}" for s, n in sorted(splits.items())) + ". "
        f"The concepts were proposed by an LLM "
        f"({code(llm.get('model'))}), filtered, and selected per class by submodular optimisation; each item carries "
        f"its cosine similarity to every concept in the embedding space of `{embedding}` and its top {top_k} "
        "concepts.",
        "",
        "## What is in it",
        "",
        "| path | rows | holds |",
        "|---|---|---|",
    ]
    described = {"index/": "FAISS index of the concept embeddings (`concepts.faiss`) and its description "
                           "(`index.json`: model, dimension, metric, index type, concept ids)",
                 "labelstudio/": "Label Studio labelling config (`config.xml`) and review tasks (`tasks.json`)",
                 "manifest.json": "config, input hash, versions, models, counts, LLM accounting and timings of the run",
                 "labels.json": "the label rule's per-concept statistics (how `concept_ids` were decided)",
                 CARD: "this card"}
    tables = _parquet_tables(run_dir)
    schemas = []
    for shown, files in tables:
        schema = pq.read_schema(files[0])
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        ident, doc = _schema_doc(schema)
        shards = f" ({len(files)} shards)" if len(files) > 1 else ""
        lines.append(f"| `{shown}` | {rows}{shards} | {doc or ident} |")
        schemas.append((shown, ident, schema))
    shown_tables = {shown for shown, _ in tables}
    for entry, what in described.items():
        if entry == CARD or (entry not in shown_tables and (run_dir / entry.rstrip("/")).exists()):
            lines.append(f"| `{entry}` | | {what} |")

    lines += ["", "## How it was made", ""]
    lines += [
        f"1. **Input**: {code(inp.get('path'))} (sha256 `{inp.get('sha256')}`), {inp.get('rows')} rows, "
        f"{'labelled' if inp.get('labelled') else 'unlabelled (classes from a class list)'}; "
        f"{counts.get('items_rejected', 0)} rows rejected (see `rejects.parquet`, stage `items`).",
        f"2. **Candidate concepts**: {code(llm.get('model'))} at {code(llm.get('endpoint'))}, prompt family "
        f"{code(_get(cfg, 'generation.family'))}, domain \"{md(_get(cfg, 'generation.domain'))}\", "
        f"{_get(cfg, 'generation.concepts_per_prompt')} concepts per prompt, {_get(cfg, 'llm.samples')} sample(s) "
        f"per prompt at temperature {_get(cfg, 'llm.temperature')}, seed {_get(cfg, 'llm.seed')}; "
        f"{counts.get('llm_requests')} requests ({llm.get('calls')} calls, {llm.get('cache_hits')} cache hits, "
        f"{llm.get('errors')} errors), {counts.get('candidates_proposed')} candidates proposed.",
        f"3. **Filters**: {counts.get('candidates_accepted')} accepted, {counts.get('candidates_merged')} merged as "
        f"(near-)duplicates, {counts.get('candidates_rejected')} rejected; settings "
        + ", ".join(f"{k} {v}" for k, v in (_get(cfg, "filters", {}) or {}).items() if v not in ({}, [], None))
        + ". Every candidate and its verdict is in `candidates.parquet`.",
        f"4. **Selection**: {_get(cfg, 'selection.k_per_class')} concepts per class "
        f"(alpha {_get(cfg, 'selection.alpha')} discriminability, beta {_get(cfg, 'selection.beta')} coverage, "
        f"{_get(cfg, 'selection.optimizer')} greedy); {len(concepts)} concepts selected. Discriminability "
        + {"items": "was measured on the train items (how well a concept's scores separate each class's items from "
                    "the other classes', an AUC over a sample of them).",
           "labo": "was LaBo's score from the class means of the train items.",
           "none": "was not used: no labelled items, coverage only."}.get(
               _get(manifest, "selection.discriminability", "labo"), "was LaBo's score."),
        f"5. **Embedding and index**: `{embedding}`"
        + (f", dimension {index_desc.get('dimension')}, {index_desc.get('index_type')}, metric "
           f"{index_desc.get('metric')}" if index_desc else "") + ".",
        f"6. **Annotation**: each item's full score vector over the concepts and its top {top_k} concepts, "
        f"{n_items} items{_label_rule(cfg)}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in manifest.get("versions", {}).items()) + ".",
        "",
        "## Concepts by the class they were picked for",
        "",
    ]
    k = _get(cfg, "selection.k_per_class") or 0
    # A class's budget of k counts every concept it holds: picked for it, or picked for another class that also
    # proposed it (a shared concept counts for each of its classes).
    held = {c: sum(c in r["classes"] for r in concepts) for c in classes}
    short = [c for c in classes if held[c] < k]
    if short:
        budget = _get(cfg, "selection.global_budget")
        lines += [f"Fewer than k = {k} concepts were selected for {len(short)} of {len(classes)} classes: "
                  + ", ".join(f"{md(c)} ({held[c]})" for c in short)
                  + " (too few candidates survived generation and filtering, or those left are shared with classes "
                  "already full"
                  + (f", or the global budget of {budget} ran out" if budget else "") + ").", ""]
    over = [c for c in classes if held[c] > k]
    shared = sum(len(r["classes"]) > 1 for r in concepts)
    if shared:
        verbs = ("belongs", "counts") if shared == 1 else ("belong", "count")
        lines += [f"{shared} of the {len(concepts)} concepts {verbs[0]} to more than one class and {verbs[1]} toward the "
                  f"budget of k = {k} of each: so a class can have fewer concepts picked for it than k"
                  + (f", and {len(over)} classes hold more than k (up to {max(held[c] for c in over)}: concepts "
                     "pinned in review are kept beyond the budget)" if over else "")
                  + ". Concepts held per class: "
                  + (", ".join(f"{md(c)} {held[c]}" for c in classes) if len(classes) <= 30 else
                     f"{min(held.values())} to {max(held.values())}, median {sorted(held.values())[len(classes) // 2]}")
                  + ".", ""]
    filtered = manifest.get("filtered") or {}
    if filtered:
        lines += ["Candidates the filters removed: " + ", ".join(f"{n} {md(k.replace(':', ' '))}"
                                                                for k, n in filtered.items()) + ".", ""]
    by_class: dict[str, list[str]] = {}
    for row in sorted(concepts, key=lambda r: r["concept_id"]):
        by_class.setdefault(row["picked_for"], []).append(md(row["concept"]))
    for cls in sorted(by_class):
        names = by_class[cls]
        more = f", and {len(names) - CONCEPTS_LISTED_PER_CLASS} more" if len(names) > CONCEPTS_LISTED_PER_CLASS else ""
        lines.append(f"- **{md(cls)}** ({len(names)}): {', '.join(names[:CONCEPTS_LISTED_PER_CLASS])}{more}")

    lines += ["", "## Schemas", "",
              "Every table carries its schema name and version in the Parquet metadata (`conceptkit.schema`, "
              "`conceptkit.version`). `concept_id` is the dense 0-based position of a concept: the index ids and the "
              "positions in `scores` use it."]
    for shown, ident, schema in schemas:
        lines += ["", f"### `{shown}` ({ident})", ""] + _fields(schema)

    n = len(concepts)
    dtype, layout = score_storage_of(run_dir / "annotations")
    if layout == "packed":
        scores_line = [
            "import numpy as np",
            f"scores = np.frombuffer(b\"\".join(annotations[\"scores\"]), \"<f{np.dtype(dtype).itemsize}\").reshape(-1, {n})"
            f"  # packed {dtype}, column j = concept_id j"]
    else:
        scores_line = [f"scores = annotations[\"scores\"].to_numpy()  # (items, {n}) float32, column j = concept_id j"]
    lines += [
        "", "## Loading", "",
        "```python",
        "import polars as pl",
        f'concepts = pl.read_parquet("{out}/concepts.parquet")',
        f'annotations = pl.read_parquet("{out}/annotations/*.parquet")',
        *scores_line,
        "top = annotations.explode(\"top_concept_ids\", \"top_scores\").join(",
        '    concepts.select("concept_id", "concept"), left_on="top_concept_ids", right_on="concept_id")',
        "",
        "# Hugging Face datasets: the splits and columns come from this card's YAML header",
        "import datasets",
        f'ds_splits = datasets.load_dataset("{out}")  # ' + ", ".join(sorted(splits)) + "; label is a ClassLabel",
        f'concept_table = datasets.load_dataset("{out}", "concepts")["train"]',
        "",
        "import pyarrow.dataset as ds",
        f'table = ds.dataset("{out}/annotations", format="parquet").to_table(columns=["item_id", "top_concept_ids"])',
        "",
        "# schema-checked reads, and the concept index (conceptkit installed)",
        "from conceptkit.schemas.io import read_table",
        "from conceptkit.schemas.annotations import stored_schema",
        f'annotations = read_table("{out}/annotations", stored_schema("{out}/annotations", {n}))',
        "from conceptkit.annotators.index import ConceptIndex",
        f'index = ConceptIndex.load("{out}/index")  # index.search(unit_vectors, k) -> (scores, concept_ids)',
        "```",
        "",
        f"From the command line: `conceptkit inspect {out}` prints counts, concept frequencies, score distributions "
        f"and class-concept tables; `conceptkit search {out} \"some text\" --items` finds the nearest concepts and items.",
        "",
        "## Intended use and limitations",
        "",
        "- Meant for building and studying interpretable (concept-bottleneck style) models and for exploring what "
        "distinguishes the classes; a starting point for human review (`labelstudio/`), not verified ground truth.",
        f"- The concepts are what {code(llm.get('model'))} proposed for the class names, after automatic filters: they can "
        "be vague, redundant, culturally narrow or wrong, and they reflect the model's biases. Read them before "
        "relying on them.",
        f"- Scores are cosine similarities in `{embedding}`'s space, not probabilities; they are comparable within "
        "a concept across items, less so across concepts, and inherit the embedding model's blind spots (negation, "
        "rare words, long texts truncated to the model's input length).",
        "- Concept selection used the class labels of these items, so measuring a classifier on concept scores "
        "with the same items overstates how well the concepts generalise; hold out items built into no run.",
        "- The items are what the input file held"
        + (f" ({inp.get('rows')} rows); " if inp.get("rows") is not None else "; ")
        + "conclusions hold for data like them only.",
        "",
    ]
    return "\n".join(lines)
