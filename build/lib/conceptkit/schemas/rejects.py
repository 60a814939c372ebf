"""Everything a run could not use: input rows and LLM outputs, with the stage, a typed reason and the raw text."""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

REJECTS = named_schema(
    "rejects",
    1,
    [
        pa.field("stage", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
    ],
)
