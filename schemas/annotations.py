"""Per-item concept annotations, written as Parquet shards under ``annotations/``.

``text`` is what was embedded (the item's text, or its image path); ``split`` the item's split (``train`` unless
the items file or ``conceptkit annotate --split`` said otherwise), which also names the shard: ``<split>-*.parquet``.
``scores`` is the full cosine-similarity vector over the run's concepts, indexed by ``concept_id``; its length is
fixed per run (``annotations_schema(n_concepts)``), its element type is the run's ``annotation.score_dtype``
(float32, or float16 at half the size; ``stored_schema`` reads which from the shards). Its layout is the run's
``annotation.score_layout``: ``list`` (default), a fixed-size list any Parquet reader opens as numbers; or
``packed``, the same values as raw little-endian bytes in one ``fixed_size_binary`` cell per item (the field's
metadata names dtype and length), 4x cheaper to write and 5x to read, opened with ``score_matrix``.
``top_concept_ids``/``top_scores`` are the best ``k`` of it in descending order. ``concept_ids`` are the concepts whose score reaches the concept's threshold (the binary
labels, stored sparsely).
"""

import uuid

import numpy as np
import pyarrow as pa

from conceptkit.schemas.base import named_schema

VERSION = 2  # 2: text and split
SCORE_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
SCORE_LAYOUTS = ("list", "packed")
PACKED_KEY = b"conceptkit.packed"  # field metadata of packed scores: b"float16[5000]"


def score_field(n_concepts: int, score_dtype: str = "float32", score_layout: str = "list") -> pa.Field:
    """The ``scores`` field: a fixed-size list of ``score_dtype``, or (``packed``) one fixed-size binary cell of
    the same bytes per item, its dtype and length in the field's metadata."""
    if score_layout == "packed":
        width = n_concepts * np.dtype(score_dtype).itemsize
        return pa.field("scores", pa.binary(width), nullable=False,
                        metadata={PACKED_KEY: f"{score_dtype}[{n_concepts}]".encode()})
    return pa.field("scores", pa.list_(SCORE_DTYPES[score_dtype], n_concepts), nullable=False)


def annotations_schema(n_concepts: int, score_dtype: str = "float32", score_layout: str = "list") -> pa.Schema:
    """The annotations schema of a run with ``n_concepts`` concepts and scores stored as ``score_dtype`` in
    ``score_layout``."""
    if n_concepts < 1:
        raise ValueError(f"n_concepts must be >= 1, got {n_concepts}")
    if score_dtype not in SCORE_DTYPES:
        raise ValueError(f"score_dtype must be one of {', '.join(SCORE_DTYPES)}, got {score_dtype!r}")
    if score_layout not in SCORE_LAYOUTS:
        raise ValueError(f"score_layout must be one of {', '.join(SCORE_LAYOUTS)}, got {score_layout!r}")
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
            score_field(n_concepts, score_dtype, score_layout),
        ],
    )


def packed_storage(field: pa.Field) -> tuple[str, int] | None:
    """(dtype, length) of a packed ``scores`` field, None for any other field."""
    meta = (field.metadata or {}).get(PACKED_KEY)
    if meta is None or not pa.types.is_fixed_size_binary(field.type):
        return None
    dtype, _, rest = meta.decode().partition("[")
    return dtype, int(rest.rstrip("]"))


def score_storage_of(directory) -> tuple[str, str]:
    """(score dtype, score layout) of the shards in an annotations ``directory``, from the first shard's footer;
    (float32, list) when there is none."""
    from pathlib import Path

    import pyarrow.parquet as pq

    for shard in sorted(Path(directory).glob("*.parquet")):
        schema = pq.read_schema(shard)
        if "scores" not in schema.names:
            break  # not an annotations shard: the schema check that follows names the problem
        field = schema.field("scores")
        packed = packed_storage(field)
        if packed is not None and packed[0] in SCORE_DTYPES:
            return packed[0], "packed"
        if pa.types.is_fixed_size_list(field.type):
            return ("float16" if field.type.value_type == pa.float16() else "float32"), "list"
        break
    return "float32", "list"


def score_dtype_of(directory) -> str:
    """The score dtype of the shards in an annotations ``directory`` (``score_storage_of``)."""
    return score_storage_of(directory)[0]


def stored_schema(directory, n_concepts: int) -> pa.Schema:
    """The annotations schema that the shards in ``directory`` were written with (their score dtype and layout)."""
    return annotations_schema(n_concepts, *score_storage_of(directory))


def score_column(scores: np.ndarray, score_layout: str = "list") -> pa.Array:
    """An (items x concepts) score matrix, already in its storage dtype, as the ``scores`` column (no copy of
    the values for ``packed``)."""
    scores = np.ascontiguousarray(scores)
    n, m = scores.shape
    if score_layout == "packed":
        data = scores.astype(scores.dtype.newbyteorder("<"), copy=False)
        return pa.FixedSizeBinaryArray.from_buffers(pa.binary(m * data.dtype.itemsize), n,
                                                    [None, pa.py_buffer(data)])
    return pa.FixedSizeListArray.from_arrays(pa.array(scores.reshape(-1)), m)


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
    """The ``scores`` column of an annotations table (either layout) as an (items x concepts) float32 matrix."""
    column = table.column("scores").combine_chunks()
    packed = packed_storage(table.schema.field("scores"))
    if packed is not None:
        dtype, m = packed
        if len(column) == 0:
            return np.zeros((0, m), dtype=np.float32)
        raw = np.frombuffer(column.buffers()[1], dtype=np.dtype(dtype).newbyteorder("<"),
                            count=(column.offset + len(column)) * m)
        return raw[column.offset * m:].reshape(len(column), m).astype(np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(table.num_rows, column.type.list_size)


def packed_matrix(cells, dtype: str, n_concepts: int) -> np.ndarray:
    """Packed score cells (bytes per item, e.g. a Polars binary column's values) -> (items x concepts) float32."""
    raw = b"".join(cells)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(-1, n_concepts).astype(np.float32)
