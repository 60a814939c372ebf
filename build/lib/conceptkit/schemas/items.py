"""The validated items table: every usable input row, with its id, text and optional class label."""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

ITEMS = named_schema(
    "items",
    1,
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("label", pa.string()),
    ],
)
