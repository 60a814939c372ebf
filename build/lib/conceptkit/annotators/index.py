"""A FAISS index of concept embeddings, saved with a JSON description and loaded back by id.

Vectors are L2-normalised and searched by inner product (cosine). Ids are the concepts' ``concept_id``.
Files: ``<dir>/concepts.faiss`` and ``<dir>/index.json`` (model, dimension, metric, count, index type, ids).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

INDEX_FILE = "concepts.faiss"
DESCRIPTION_FILE = "index.json"


class ConceptIndex:
    def __init__(self, index, description: dict[str, Any]) -> None:
        self.index = index
        self.description = description

    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        ids: np.ndarray,
        *,
        model: str,
        concepts: list[str],
        kind: str = "auto",
        auto_threshold: int = 50_000,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 128,
        ivf_nlist: int | None = None,
        ivf_nprobe: int = 16,
    ) -> "ConceptIndex":
        """An index over unit-normalised ``embeddings``: exact inner product below ``auto_threshold`` vectors
        (``kind="auto"``), HNSW above it; ``kind`` forces ``flat``, ``hnsw`` or ``ivf``."""
        import faiss

        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"embeddings shape {vectors.shape} does not match {len(ids)} ids")
        if kind not in ("auto", "flat", "hnsw", "ivf"):
            raise ValueError(f"index kind must be auto, flat, hnsw or ivf; got {kind!r}")
        faiss.normalize_L2(vectors)
        n, d = vectors.shape
        if kind == "auto":
            kind = "flat" if n < auto_threshold else "hnsw"
        parameters: dict[str, Any] = {}
        if kind == "flat":
            inner, name = faiss.IndexFlatIP(d), "IndexIDMap2(IndexFlatIP)"
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = hnsw_ef_search
            name, parameters = "IndexIDMap2(IndexHNSWFlat)", {"M": hnsw_m, "efSearch": hnsw_ef_search}
        else:
            nlist = ivf_nlist or max(1, min(int(4 * np.sqrt(n)), n // 39 or 1))
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.train(vectors)
            inner.nprobe = min(ivf_nprobe, nlist)
            name, parameters = "IndexIDMap2(IndexIVFFlat)", {"nlist": nlist, "nprobe": inner.nprobe}
        index = faiss.IndexIDMap2(inner)
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        description = {
            "model": model,
            "dimension": int(d),
            "metric": "inner_product (cosine on L2-normalised vectors)",
            "count": int(len(ids)),
            "index_type": name,
            "kind": kind,
            "parameters": parameters,
            "ids": {"field": "concept_id", "values": [int(i) for i in ids]},
            "concepts": concepts,
        }
        return cls(index, description)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def save(self, directory: str | os.PathLike[str]) -> Path:
        import faiss

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        (directory / DESCRIPTION_FILE).write_text(json.dumps(self.description, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "ConceptIndex":
        import faiss

        directory = Path(directory)
        description = json.loads((directory / DESCRIPTION_FILE).read_text())
        index = faiss.read_index(str(directory / INDEX_FILE))
        # Search-time parameters are not all stored in the file: restore them from the description.
        params = description.get("parameters", {})
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
        if "efSearch" in params and hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = params["efSearch"]
        if "nprobe" in params and hasattr(inner, "nprobe"):
            inner.nprobe = params["nprobe"]
        if index.ntotal != description["count"]:
            raise ValueError(f"{directory}: index holds {index.ntotal} vectors, description says {description['count']}")
        return cls(index, description)
