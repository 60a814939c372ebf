"""Every candidate concept (proposed by the LLM or mined from the train items), with the prompt that produced it and the filter verdict.

``status`` is ``accepted`` (passed the filters), ``merged`` (a duplicate or near-duplicate of the candidate named
in ``merged_into``, whose classes it joined) or ``rejected`` (``reason`` says which filter). ``selected`` marks the
accepted candidates that the selection stage kept. ``source`` is ``llm`` or ``mined`` (a phrase of the train
items, ``generation/mining.py``; its ``prompt`` says how many class items hold it and how precisely).
v2 added ``source``.
"""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

STATUSES = ("accepted", "merged", "rejected")

CANDIDATES = named_schema(
    "candidates",
    2,
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("concept", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("classes", pa.list_(pa.string()), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("merged_into", pa.string()),
        pa.field("selected", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ],
)
