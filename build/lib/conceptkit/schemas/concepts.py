"""The selected concepts: the concept set of a run, in selection order.

``concept_id`` is the dense 0-based position used by the index and the annotation score vectors.
``picked_for`` is the class whose budget selected the concept; ``classes`` every class it was proposed for.
``gain`` is the marginal gain at its pick, split into ``discriminability`` and ``coverage_gain``.
``threshold`` is the score above which an item is labelled as showing the concept (calibrated from the score
distribution over the run's items; see ``pipelines/thresholds.py``).
"""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

CONCEPTS = named_schema(
    "concepts",
    1,
    [
        pa.field("concept_id", pa.int32(), nullable=False),
        pa.field("concept", pa.string(), nullable=False),
        pa.field("classes", pa.list_(pa.string()), nullable=False),
        pa.field("picked_for", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("gain", pa.float64(), nullable=False),
        pa.field("discriminability", pa.float64(), nullable=False),
        pa.field("coverage_gain", pa.float64(), nullable=False),
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("threshold", pa.float32(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ],
)
