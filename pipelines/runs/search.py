"""Nearest concepts, and optionally nearest items, to a text query in a built run.

In: a run directory and a query. Out: a ``SearchResult`` (``format_search`` renders it for people).

Concepts come from the run's saved FAISS index (``index/``), queried with the query embedded by the run's own
embedding model; ``index.json`` must name the same model as the manifest, since vectors from two models are not
comparable.

Items: a run stores no item embeddings (annotations keep concept scores, not vectors), and ranking items by their
concept-score profiles would answer a different question. So ``items=True`` embeds the annotated items' texts
with the run's model, read from the input file the manifest names (``input.path``) after checking its sha256
against ``input.sha256``, and caches the matrix with the ids and texts under ``<cache>/search/`` keyed by that hash
and the model (``<cache>`` is the run's ``cache_dir``, default ``.cache`` beside the run directory). Later searches
read the cache and need neither the input file nor the model for items. Side effect: that cache, written
atomically. ``SearchError`` when the input file is gone or changed and nothing is cached.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conceptkit.annotators.embedding import TextEmbedder
from conceptkit.annotators.index import ConceptIndex
from conceptkit.pipelines.runs.run import Run, open_run

logger = logging.getLogger(__name__)


class SearchError(ValueError):
    """A search cannot be answered (bad arguments, a model mismatch, item texts unavailable)."""


@dataclass(frozen=True)
class ConceptHit:
    rank: int
    concept_id: int
    concept: str
    score: float
    picked_for: str
    classes: list[str]


@dataclass(frozen=True)
class ItemHit:
    rank: int
    item_id: str
    score: float
    label: str | None
    text: str
    top_concepts: list[str]


@dataclass
class SearchResult:
    run: str
    query: str
    model: str
    n_concepts: int
    concepts: list[ConceptHit]
    items: list[ItemHit] | None = None
    n_items: int = 0
    items_source: str | None = None  # "cache <path>" or "embedded <n> items from <input>; cached at <path>"
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_run(
    run_dir: str | os.PathLike[str],
    query: str,
    *,
    k: int = 10,
    items: bool = False,
    device: str = "cpu",
    embedder: TextEmbedder | None = None,
) -> SearchResult:
    """The ``k`` concepts (and with ``items`` the ``k`` items) nearest to ``query`` by cosine similarity."""
    if not query or not query.strip():
        raise SearchError("query is empty; give the text to search for")
    if k < 1:
        raise SearchError(f"k must be >= 1, got {k}")
    run = open_run(run_dir)
    index = ConceptIndex.load(run.path / "index")
    model = index.description.get("model")
    if model != run.embedding_model:
        raise SearchError(
            f"{run.path}: index/index.json names embedding model {model!r}, the manifest {run.embedding_model!r}"
        )
    embedder = embedder or TextEmbedder(model, device=device)
    vector = embedder.encode([query.strip()])

    concepts = run.concepts(["concept_id", "concept", "picked_for", "classes"])
    by_id = {row["concept_id"]: row for row in concepts.to_pylist()}
    scores, ids = index.search(vector, min(k, index.index.ntotal))
    hits = [
        ConceptHit(rank=r + 1, concept_id=int(cid), concept=by_id[int(cid)]["concept"], score=float(s),
                   picked_for=by_id[int(cid)]["picked_for"], classes=list(by_id[int(cid)]["classes"]))
        for r, (cid, s) in enumerate(zip(ids[0], scores[0]))
        if cid >= 0
    ]
    result = SearchResult(run=str(run.path), query=query, model=model, n_concepts=len(by_id), concepts=hits)
    if items:
        _search_items(run, vector[0], k=k, embedder=embedder, by_id=by_id, result=result)
    return result


def _search_items(
    run: Run, vector: np.ndarray, *, k: int, embedder: TextEmbedder, by_id: dict, result: SearchResult
) -> None:
    annotations = pa.concat_tables(
        [pq.read_table(f, columns=["item_id", "label", "top_concept_ids"]) for f in run.annotation_files()]
    )
    ids, texts, matrix, source = item_embeddings(run, annotations.column("item_id").to_pylist(), embedder=embedder)
    scores = matrix @ vector
    n = min(k, len(scores))
    top = np.argpartition(-scores, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    top = top[np.lexsort((top, -scores[top]))]  # by score, ties by position: stable output
    position = {item_id: i for i, item_id in enumerate(annotations.column("item_id").to_pylist())}
    labels = annotations.column("label").to_pylist()
    tops = annotations.column("top_concept_ids").to_pylist()
    hits = []
    for rank, i in enumerate(top):
        row = position[ids[i]]
        hits.append(ItemHit(rank=rank + 1, item_id=ids[i], score=float(scores[i]), label=labels[row], text=texts[i],
                            top_concepts=[by_id[c]["concept"] for c in tops[row][:3]]))
    result.items, result.n_items, result.items_source = hits, len(ids), source


def item_embeddings(
    run: Run, item_ids: list[str], *, embedder: TextEmbedder
) -> tuple[list[str], list[str], np.ndarray, str]:
    """(ids, texts, unit-norm matrix, where they came from) for the run's annotated items; cached when possible."""
    sha = run.manifest.get("input", {}).get("sha256")
    if not sha:
        raise SearchError(f"{run.path}: the manifest records no input.sha256; cannot tie item texts to this run")
    model_key = hashlib.sha256(embedder.model_name.encode()).hexdigest()[:12]
    stem = run.cache_dir() / "search" / f"items-{sha[:20]}-{model_key}"
    wanted = set(item_ids)
    if stem.with_suffix(".npy").exists() and stem.with_suffix(".parquet").exists():
        table = pq.read_table(stem.with_suffix(".parquet"))
        matrix = np.load(stem.with_suffix(".npy"), mmap_mode="r")
        cached_ids = table.column("item_id").to_pylist()
        if len(cached_ids) == len(matrix) and wanted <= set(cached_ids):
            keep = [i for i, item_id in enumerate(cached_ids) if item_id in wanted]
            texts = table.column("text").to_pylist()
            return ([cached_ids[i] for i in keep], [texts[i] for i in keep], np.asarray(matrix[keep]),
                    f"cache {stem.with_suffix('.npy')}")
        logger.info("search cache %s does not cover this run's items; embedding again", stem)

    path = _input_file(run, sha)
    from conceptkit.pipelines.config import ItemsConfig
    from conceptkit.pipelines.readers.items import load_items

    items_cfg = ItemsConfig.model_validate({**run.config.get("items", {}), "path": str(path)})
    loaded = load_items(items_cfg).table
    texts_by_id = dict(zip(loaded.column("item_id").to_pylist(), loaded.column("text").to_pylist()))
    missing = [i for i in item_ids if i not in texts_by_id]
    if missing:
        raise SearchError(f"{path}: {len(missing)} annotated items are not in the input file (first: {missing[0]!r})")
    texts = [texts_by_id[i] for i in item_ids]
    logger.info("embedding %d item texts from %s with %s", len(texts), path, embedder.model_name)
    matrix = embedder.encode(texts)
    _save_cache(stem, item_ids, texts, matrix)
    source = f"embedded {len(texts)} items from {path}; cached at {stem.with_suffix('.npy')}"
    return list(item_ids), texts, matrix, source


def _input_file(run: Run, sha: str) -> Path:
    recorded = run.manifest.get("input", {}).get("path")
    if not recorded:
        raise SearchError(f"{run.path}: the manifest records no input.path")
    candidates = [Path(recorded)]
    if not Path(recorded).is_absolute():
        # input.path is relative to where the build ran; runs usually live at <project>/runs/<name>.
        candidates.append(run.path.resolve().parent.parent / recorded)
    from conceptkit.pipelines.build import _file_sha256  # the very hash the build recorded in input.sha256

    for candidate in candidates:
        if candidate.is_file():
            actual = _file_sha256(str(candidate))
            if actual != sha:
                raise SearchError(
                    f"{candidate}: input file changed since the build (sha256 {actual[:12]}..., manifest "
                    f"{sha[:12]}...); --items needs the texts the run was built from"
                )
            return candidate
    raise SearchError(
        f"--items needs the item texts: input file {recorded!r} (manifest input.path) not found from "
        f"{Path.cwd()} or beside {run.path}, and no search cache holds them"
    )


def _save_cache(stem: Path, ids: list[str], texts: list[str], matrix: np.ndarray) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    tmp_npy = stem.parent / f".{stem.name}.{tag}.npy"
    tmp_pq = stem.parent / f".{stem.name}.{tag}.parquet"
    try:
        np.save(tmp_npy, np.ascontiguousarray(matrix, dtype=np.float32))
        pq.write_table(pa.table({"item_id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())}), tmp_pq)
        # Matrix first: a reader needs both files, and a stale matrix with fresh ids fails the length check.
        os.replace(tmp_npy, stem.with_suffix(".npy"))
        os.replace(tmp_pq, stem.with_suffix(".parquet"))
    finally:
        tmp_npy.unlink(missing_ok=True)
        tmp_pq.unlink(missing_ok=True)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_search(result: SearchResult) -> str:
    """The result as plain text: ranked concepts, then items, then one line saying what was searched."""
    lines = [f"concepts nearest to {result.query!r}:"]
    width = max((len(h.concept) for h in result.concepts), default=0)
    for h in result.concepts:
        others = [c for c in h.classes if c != h.picked_for]
        also = f", also proposed for {', '.join(others)}" if others else ""
        lines.append(f"  {h.rank:>3}  {h.score:6.3f}  {h.concept:<{width}}  (picked for {h.picked_for}{also})")
    if result.items is not None:
        lines.append(f"items nearest to {result.query!r}:")
        for h in result.items:
            label = f"[{h.label}] " if h.label else ""
            lines.append(f"  {h.rank:>3}  {h.score:6.3f}  {h.item_id}  {label}{_clip(h.text, 80)}")
            lines.append(f"                top concepts: {', '.join(h.top_concepts)}")
    searched = f"{result.n_concepts} concepts"
    if result.items is not None:
        searched += f" and {result.n_items} items ({result.items_source})"
    lines.append(f"conceptkit search: searched {searched} of {result.run} with {result.model}")
    return "\n".join(lines)
