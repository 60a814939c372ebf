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
    def build(cls, embeddings: np.ndarray, ids: np.ndarray, *, model: str, concepts: list[str]) -> "ConceptIndex":
        import faiss

        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError(f"embeddings shape {vectors.shape} does not match {len(ids)} ids")
        faiss.normalize_L2(vectors)
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
        index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
        description = {
            "model": model,
            "dimension": int(vectors.shape[1]),
            "metric": "inner_product (cosine on L2-normalised vectors)",
            "count": int(len(ids)),
            "index_type": "IndexIDMap2(IndexFlatIP)",
            "parameters": {},
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
        if index.ntotal != description["count"]:
            raise ValueError(f"{directory}: index holds {index.ntotal} vectors, description says {description['count']}")
        return cls(index, description)
