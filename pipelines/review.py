"""Label Studio export of a run: the labeling config XML and tasks carrying the model's predictions.

In: concept names and annotated items. Out: ``config.xml`` (item review: the text, a checklist of concepts and a
box for missing concepts) and ``tasks.json`` (one task per item; the prediction pre-ticks the item's top concepts,
with ``model_version`` = the run id). Pure functions plus one atomic JSON writer.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from schemas.labelstudio import ChoicesValue, Prediction, PredictionResult, Task, TaskData

FROM_NAME = "concepts"
TO_NAME = "text"


def item_review_config(concepts: Sequence[str]) -> str:
    """Labeling config for item review: text, multi-choice concept checklist, free text for missing concepts."""
    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in concepts)
    return (
        "<View>\n"
        f'  <Header value="Which concepts does this item show?"/>\n'
        f'  <Text name="{TO_NAME}" value="$text"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <TextArea name="missing_concepts" toName="{TO_NAME}" placeholder="Missing concepts, one per line"'
        ' rows="2" editable="true"/>\n'
        "</View>\n"
    )


def item_task(
    *,
    item_id: str,
    text: str,
    label: str | None,
    top_ids: Sequence[int],
    top_scores: Sequence[float],
    concepts: Sequence[str],
    run_id: str,
    min_score: float,
) -> Task:
    """One task: the item and a prediction ticking its top concepts whose score reaches ``min_score``."""
    ticked = [concepts[i] for i, s in zip(top_ids, top_scores) if s >= min_score]
    scores = {concepts[i]: round(float(s), 4) for i, s in zip(top_ids, top_scores)}
    prediction = Prediction(
        model_version=run_id,
        score=round(float(max(top_scores)) if len(top_scores) else 0.0, 4),
        result=[PredictionResult(from_name=FROM_NAME, to_name=TO_NAME, value=ChoicesValue(choices=ticked))]
        if ticked
        else [],
    )
    return Task(data=TaskData(item_id=item_id, text=text, label=label, concept_scores=scores), predictions=[prediction])


def write_tasks(path: str | os.PathLike[str], tasks: Iterable[Task]) -> int:
    """Write tasks as a JSON list, atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[\n")
        for task in tasks:
            f.write(("," if n else "") + json.dumps(task.model_dump(mode="json"), ensure_ascii=False) + "\n")
            n += 1
        f.write("]\n")
    os.replace(tmp, path)
    return n
