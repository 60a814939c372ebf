"""Label Studio task models: the JSON that a run exports for human review (tasks with model predictions).

Three review modes share these models; each mode's labeling config (``conceptkit.pipelines.review.tasks``) names its controls with
the constants below, and the pull step (``conceptkit.annotators.labelstudio``) reads annotation results by the same names.

- item review: an item's text and a checklist of its candidate concepts (pre-ticked by the model) plus a box for
  missing concepts. Data: ``TaskData``.
- concept verification: one item and one concept, answered present / absent / unsure. Data: ``ConceptTaskData``.
- concept-list review: a class, its selected concepts, and one of them to keep / reject / edit.
  Data: ``ConceptListTaskData``.

``task_key`` is the stable identity of a task across pushes (the same item and concept give the same key in every
run), ``fingerprint`` a hash of what the reviewer is shown: a push skips a task whose key and fingerprint are
already in the project and updates one whose fingerprint changed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REVIEW_MODES = ("item", "concept", "concept-list")
ReviewMode = Literal["item", "concept", "concept-list"]

# Control names shared by the labeling configs and the pull step.
TEXT = "text"  # the object every control labels
CONCEPTS = "concepts"  # item review: multi-choice checklist
MISSING = "missing_concepts"  # item review: free text, one missing concept per line
VERDICT = "verdict"  # concept verification and concept-list review: single choice
EDITED = "edited_concept"  # concept-list review: the concept's new wording when the verdict is "edit"

CONCEPT_VERDICTS = ("present", "absent", "unsure")
LIST_VERDICTS = ("keep", "reject", "edit")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChoicesValue(_Model):
    choices: list[str]


class PredictionResult(_Model):
    from_name: str
    to_name: str
    type: str = "choices"
    value: ChoicesValue


class Prediction(_Model):
    model_version: str
    score: float
    result: list[PredictionResult]


class ChoiceOption(_Model):
    """One entry of a dynamic checklist (``<Choices value="$options">``)."""

    value: str


class TaskData(_Model):
    item_id: str
    text: str
    label: str | None = None
    # The model's per-concept scores, kept on the task so reviewers' tools (and the pull step) can see them.
    concept_scores: dict[str, float] = Field(default_factory=dict)
    # Set on pushed tasks: the item's candidate concepts as a dynamic checklist, and the task's identity.
    options: list[ChoiceOption] | None = None
    task_key: str | None = None
    fingerprint: str | None = None


class ConceptTaskData(_Model):
    item_id: str
    text: str
    label: str | None = None
    concept: str
    concept_id: int
    score: float
    task_key: str
    fingerprint: str


class ConceptListTaskData(_Model):
    class_name: str
    concept: str
    concept_id: int
    # The class's whole selected list, shown for context (HTML-escaped, one per line).
    class_concepts: str
    text: str  # what the reviewer reads: the concept under review
    # HTML: a few items that score highest and a few near the labelling cut (empty for older runs).
    examples: str = ""
    task_key: str
    fingerprint: str


class Task(_Model):
    data: TaskData | ConceptTaskData | ConceptListTaskData
    predictions: list[Prediction]
