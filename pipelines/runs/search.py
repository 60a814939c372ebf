"""Nearest concepts, and optionally nearest items, to a text query in a built run.

In: a run directory and a query. Out: a ``SearchResult`` (``format_search`` renders it for people).

Concepts come from the run's saved FAISS index (``index/``), queried with the query embedded by the run's own
embedding model; ``index.json`` must name the same model as the manifest, since vectors from two models are not
comparable.

Items: ``items=True`` ranks the annotated items (every split, including items added by ``conceptkit annotate``)
by the cosine of their text's embedding to the query. The texts are the annotations' own ``text`` column; their
vectors come from the run's embedding cache (``<cache_dir>/embeddings``, filled by the build and by annotate), so
a search needs neither the input file nor, after the first time, any embedding work. Side effect: vectors that
were not cached yet are embedded and cached.
"""

from __future__ import annotations

import logging
import os
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
    items_source: str | None = None  # how many items, how many embedded now, where the vectors came from
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
    embedder = embedder or TextEmbedder(model, device=device,
                                        backend=run.config.get("embedding", {}).get("backend", "torch"))
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
        [pq.read_table(f, columns=["item_id", "text", "label", "top_concept_ids"]) for f in run.annotation_files()]
    )
    ids = annotations.column("item_id").to_pylist()
    texts = annotations.column("text").to_pylist()
    matrix, source = item_embeddings(run, ids, texts, embedder=embedder)
    scores = matrix @ vector
    n = min(k, len(scores))
    top = np.argpartition(-scores, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    top = top[np.lexsort((top, -scores[top]))]  # by score, ties by position: stable output
    labels = annotations.column("label").to_pylist()
    tops = annotations.column("top_concept_ids").to_pylist()
    hits = [ItemHit(rank=rank + 1, item_id=ids[i], score=float(scores[i]), label=labels[i], text=texts[i],
                    top_concepts=[by_id[c]["concept"] for c in tops[i][:3]]) for rank, i in enumerate(top)]
    result.items, result.n_items, result.items_source = hits, len(ids), source


def item_embeddings(
    run: Run, item_ids: list[str], texts: list[str], *, embedder: TextEmbedder
) -> tuple[np.ndarray, str]:
    """(unit-norm matrix in ``item_ids`` order, where the vectors came from) for the annotated items' texts."""
    embedding = run.config.get("embedding", {})
    cache = run.cache_dir() / "embeddings" if embedding.get("cache", True) else None
    matrix, computed = embedder.encode_cached(texts, str(cache) if cache else None)
    where = f"the run's embedding cache {cache}" if cache else "embedded now (the run's embedding cache is off)"
    source = f"{len(item_ids)} annotated items, {computed} embedded now; vectors from {where}"
    return matrix, source


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
