"""What people said about a run, pulled back from Label Studio, and what the run now believes.

``VERIFIED`` (``verified.parquet``): one row per (annotation, concept) judgement. ``review`` is the mode of the
task (``item``, ``concept``, ``concept-list``); ``label`` is ``present`` / ``absent`` / ``unsure`` for item and
concept reviews (item review: a ticked candidate is present, an unticked one absent) and ``keep`` / ``reject`` /
``edit`` for concept-list reviews, where ``item_id`` is null and ``edited_concept`` holds an edit. ``concept_id``
is null when the concept is not in this run (a task pushed from an older run). ``time`` is the annotation's last
update; the key of a row is (``annotation_id``, ``concept``).

``MERGED`` (``merged.parquet``): one row per (item, concept) that the model predicted, a person judged, or a
re-fitted threshold turned on. ``final`` is the human majority where there is one, else the model
(``final_source`` says which: ``human``, ``model``, ``model_refit``).

``HUMAN_CANDIDATES`` (``human_candidates.parquet``): concepts typed by reviewers (``kind`` = ``missing``) and
concept-list edits (``kind`` = ``edit``, ``replaces`` = the old wording), with ``source`` = ``human``, for the
next selection.
"""

import pyarrow as pa

from conceptkit.schemas.base import named_schema

VERIFIED = named_schema(
    "verified",
    1,
    [
        pa.field("item_id", pa.string()),
        pa.field("concept_id", pa.int32()),
        pa.field("concept", pa.string(), nullable=False),
        pa.field("class_name", pa.string()),
        pa.field("label", pa.string(), nullable=False),
        pa.field("edited_concept", pa.string()),
        pa.field("review", pa.string(), nullable=False),
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("task_id", pa.int64(), nullable=False),
        pa.field("annotation_id", pa.int64(), nullable=False),
        pa.field("project_id", pa.int64(), nullable=False),
        pa.field("task_key", pa.string(), nullable=False),
        pa.field("model_version", pa.string()),
        pa.field("source", pa.string(), nullable=False),
    ],
)

MERGED = named_schema(
    "merged",
    1,
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("concept_id", pa.int32(), nullable=False),
        pa.field("concept", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("model", pa.bool_(), nullable=False),
        pa.field("human", pa.bool_()),
        pa.field("votes_present", pa.int32(), nullable=False),
        pa.field("votes_absent", pa.int32(), nullable=False),
        pa.field("final", pa.bool_(), nullable=False),
        pa.field("final_source", pa.string(), nullable=False),
    ],
)

HUMAN_CANDIDATES = named_schema(
    "human_candidates",
    1,
    [
        pa.field("candidate_id", pa.string(), nullable=False),
        pa.field("concept", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("classes", pa.list_(pa.string()), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("replaces", pa.string()),
        pa.field("item_id", pa.string()),
        pa.field("annotator", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("task_id", pa.int64(), nullable=False),
        pa.field("annotation_id", pa.int64(), nullable=False),
        pa.field("project_id", pa.int64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ],
)
