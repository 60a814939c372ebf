"""Per-item concept annotations, written as Parquet shards under ``annotations/``.

``text`` is what was embedded (the item's text, or its image path); ``split`` the item's split (``train`` unless
the items file or ``conceptkit annotate --split`` said otherwise), which also names the shard: ``<split>-*.parquet``.
``scores`` is the full cosine-similarity vector over the run's concepts, indexed by ``concept_id``; its length is
fixed per run (``annotations_schema(n_concepts)``), its element type is the run's ``annotation.score_dtype``
(float32, or float16 at half the size; ``stored_schema`` reads which from the shards). ``top_concept_ids``/``top_scores`` are the best ``k`` of it in
descending order. ``concept_ids`` are the concepts whose score reaches the concept's threshold (the binary
labels, stored sparsely).
"""

import uuid

import numpy as np
import pyarrow as pa

from conceptkit.schemas.base import named_schema

VERSION = 2  # 2: text and split
SCORE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}


def annotations_schema(n_concepts: int, score_dtype: str = "float32") -> pa.Schema:
    """The annotations schema of a run with ``n_concepts`` concepts and scores stored as ``score_dtype``."""
    if n_concepts < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n_concepts}")
    if score_dtype not in SCORE_DTYPES:
        raise ValueError(f"score_dtype must be one of {', '.join(SCORE_DTYPES)}, got {score_dtype!r}")
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
            pa.field("scores", pa.list_(SCORE_DTYPES[score_dtype], n_concepts), nullable=False),
        ],
    )


def score_dtype_of(directory) -> str:
    """The score dtype of the shards in an annotations ``directory`` (from the first shard's footer; float32 when
    there is none)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    for shard in sorted(Path(directory).glob("*.parquet")):
        schema = pq.read_schema(shard)
        if "scores" in schema.names and pa.types.is_fixed_size_list(schema.field("scores").type):
            return "float16" if schema.field("scores").type.value_type == pa.float16() else "float32"
        return "float32"  # not an annotations shard: the schema check that follows names the problem
    return "float32"


def stored_schema(directory, n_concepts: int) -> pa.Schema:
    """The annotations schema that the shards in ``directory`` were written with (their score dtype)."""
    return annotations_schema(n_concepts, score_dtype_of(directory))


def as_stored(scores: np.ndarray, score_dtype: str) -> np.ndarray:
    """Scores rounded to what a shard of ``score_dtype`` keeps (decide labels on these, so every reader that
    re-decides from the stored scores gets the same labels)."""
    return np.asarray(scores, dtype=np.float16 if score_dtype == "float16" else np.float32)


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
