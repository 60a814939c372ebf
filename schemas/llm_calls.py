"""One row per LLM request of a run: the accounting behind the manifest's LLM section.

``cached`` rows were answered from the cache (no tokens, no latency, no cost). ``error`` is the typed reason of a
failed request (``http_503``, ``timeout``, ``budget_exceeded``...), null on success. ``class_name`` is the class
asked about, or for a request of several classes (``generation.classes_per_request``) their names as a JSON list.
"""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

LLM_CALLS = named_schema(
    "llm_calls",
    1,
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("cached", pa.bool_(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("status", pa.int32()),
        pa.field("retries", pa.int32(), nullable=False),
        pa.field("latency_s", pa.float64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("response_mode", pa.string()),
    ],
)
