"""Label Studio task models: the JSON that a run exports for human review (tasks with model predictions)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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


class TaskData(_Model):
    item_id: str
    text: str
    label: str | None = None
    # The model's per-concept scores, kept on the task so reviewers' tools (and the pull step) can see them.
    concept_scores: dict[str, float] = Field(default_factory=dict)


class Task(_Model):
    data: TaskData
    predictions: list[Prediction]
