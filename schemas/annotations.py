"""Per-item concept annotations, written as Parquet shards under ``annotations/``.

``text`` is what was embedded (the item's text, or its image path); ``split`` the item's split (``train`` unless
the items file or ``conceptkit annotate --split`` said otherwise), which also names the shard: ``<split>-*.parquet``.
``scores`` is the full cosine-similarity vector over the run's concepts, indexed by ``concept_id``; its length is
fixed per run (``annotations_schema(n_concepts)``). ``top_concept_ids``/``top_scores`` are the best ``k`` of it in
descending order. ``concept_ids`` are the concepts whose score reaches the concept's threshold (the binary
labels, stored sparsely).
"""

import uuid

import numpy as np
import pyarrow as pa

from conceptkit.schemas.base import named_schema

VERSION = 2  # 2: text and split


def annotations_schema(n_concepts: int) -> pa.Schema:
    """The annotations schema of a run with ``n_concepts`` concepts."""
    if n_concepts < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n_concepts}")
    return named_schema(
        "annotations",
        VERSION,
        [
            pa.field("item_id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("label", pa.string()),
            pa.field("split", pa.string(), nullable=False),
            pa.field("top_concept_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("top_scores", pa.list_(pa.float32()), nullable=False),
            pa.field("concept_ids", pa.list_(pa.int32()), nullable=False),
            pa.field("scores", pa.list_(pa.float32(), n_concepts), nullable=False),
        ],
    )


def shard_name(split: str) -> str:
    """A new, unique shard file name for rows of ``split``: ``<split>-<16 hex>.parquet``."""
    return f"{split}-{uuid.uuid4().hex[:16]}.parquet"


def shard_split(name: str) -> str:
    """The split a shard file holds, from its name (``test-0a1b....parquet`` -> ``test``)."""
    return name.rsplit("-", 1)[0]


def score_matrix(table: pa.Table) -> np.ndarray:
    """The ``scores`` column of an annotations table as an (items x concepts) float32 matrix."""
    column = table.column("scores").combine_chunks()
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, column.type.list_size)
