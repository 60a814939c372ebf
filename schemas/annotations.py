"""Per-item concept annotations, written as Parquet shards under ``annotations/``.

``scores`` is the full cosine-similarity vector over the run's concepts, indexed by ``concept_id``; its length is
fixed per run (``annotations_schema(n_concepts)``). ``top_concept_ids``/``top_scores`` are the best ``k`` of it in
descending order. ``concept_ids`` are the concepts whose score reaches the concept's threshold (the binary
labels, stored sparsely).
"""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

VERSION = 1


def annotations_schema(n_concepts: int) -> pa.Schema:
    """The annotations schema of a run with ``n_concepts`` concepts."""
    if n_concepts < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n_concepts}")
    return named_schema(
        "annotations",
        VERSION,
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("top_concept_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("top_scores", pa.list_(pa.float32()), nullable=False),
            pa.field("concept_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("scores", pa.list_(pa.float32(), n_concepts), nullable=False),
        ],
    )
