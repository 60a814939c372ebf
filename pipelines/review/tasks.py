"""Label Studio review of a run: labeling configs and tasks for three review modes, what to send, what came back.

In: a run's concepts, annotations and ``labelstudio/tasks.json``; later the verified labels pulled back. Out (all
pure, no HTTP): labeling config XML per mode, tasks with predictions (``model_version`` = the run id) and stable
task keys, the budgeted choice of what to review (uncertainty near the pre-tick threshold, then diversity by
facility location), and the merge of human and model labels with re-fitted thresholds and agreement metrics.
``write_tasks`` is the one writer (atomic JSON).

Review modes (``conceptkit.schemas.labelstudio.REVIEW_MODES``):
- ``item``: the item's text and a checklist of its candidate concepts, pre-ticked by the model, plus a box for
  missing concepts;
- ``concept``: one item and one concept, present / absent / unsure;
- ``concept-list``: a class, its selected concepts, and one of them to keep / reject / edit.
"""

from __future__ import annotations

import hashlib
import html
import re
import json
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from conceptkit.schemas.labelstudio import (
    CONCEPT_VERDICTS,
    CONCEPTS,
    EDITED,
    LIST_VERDICTS,
    MISSING,
    TEXT,
    VERDICT,
    ChoiceOption,
    ChoicesValue,
    ConceptListTaskData,
    ConceptTaskData,
    Prediction,
    PredictionResult,
    Task,
    TaskData,
)

FROM_NAME = CONCEPTS
TO_NAME = TEXT


def group_control(k: int) -> str:
    """The name of the ``k``-th class group's checklist in item review (all start with ``concepts``)."""
    return f"{CONCEPTS}__{k}"


def is_concept_control(name: str) -> bool:
    return name == CONCEPTS or name.startswith(f"{CONCEPTS}__")


def concept_controls(label_config: str) -> list[str]:
    """The item-review checklist names (``concepts``, ``concepts__<k>``) of a labeling config."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(label_config or "<View/>")
    except ET.ParseError:
        return []
    return [el.get("name") for el in root.iter("Choices") if is_concept_control(el.get("name") or "")]


def concept_groups(concepts: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """(class, its concepts in concept_id order) for every class a run's concepts were picked for, by class name."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for row in sorted(concepts, key=lambda r: r["concept_id"]):
        by_class[row["picked_for"]].append(row["concept"])
    return sorted(by_class.items())


def uncertainty(margin: float) -> float:
    """A prediction score that means something to a reviewer: 1 on the decision boundary, towards 0 far from it
    (``exp(-|margin|)``, margin in the label rule's units), so sorting by it in Label Studio is the
    active-learning order."""
    return round(float(np.exp(-abs(float(margin)))), 4)


def fingerprint(shown: Mapping[str, Any]) -> str:
    """A short stable hash of what a reviewer is shown; a changed fingerprint means the task must be updated."""
    return hashlib.sha256(json.dumps(shown, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def task_key(mode: str, *parts: str) -> str:
    """The identity of a task across runs: the mode and what it is about (item id, concept text, class)."""
    return ":".join([mode, *parts])


# ---------------------------------------------------------------- labeling configs


def _choice_tags(values: Sequence[str]) -> str:
    """One escaped ``<Choice>`` line per value, indented for a ``<Choices>`` block."""
    return "\n".join(f"    <Choice value={quoteattr(xml_safe(v))}/>" for v in values)


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold at all (NUL and other control characters)."""
    return _NOT_XML.sub(" ", text)


def item_review_config(concepts: Sequence[str] = (), *, groups: Sequence[tuple[str, Sequence[str]]] | None = None,
                       dynamic: bool = False, retired: Sequence[str] = ()) -> str:
    """Labeling config for item review: the item's text and class, the run's concept checklist, free text for
    missing concepts.

    ``groups`` (class, concepts) shows the whole concept list grouped by the class each concept was picked for,
    one checklist per class (``group_control(k)``); ``dynamic=True`` takes each task's checklist from its
    ``options`` instead (older pushes); else one checklist of ``concepts``. ``retired`` names checklists that
    existing annotations use but the run no longer has (an older push, a reselection with fewer classes): they
    stay in the config, empty, because Label Studio refuses a config that orphans annotations.
    """
    head = (
        "<View>\n"
        '  <Header value="Which concepts does this item show?"/>\n'
        '  <Header value="Tick every concept it shows, untick the pre-ticked ones it does not (the full list is '
        'grouped by the class each concept was made for)" size="6"/>\n'
        '  <Header value="Class: $label" size="6"/>\n'
        f'  <Text name="{TO_NAME}" value="$text"/>\n'
    )
    if groups is not None:
        blocks = []
        for k, (class_name, names) in enumerate(groups):
            blocks.append(f'  <Header value={quoteattr("Concepts of " + xml_safe(class_name))} size="6"/>\n'
                          f'  <Choices name="{group_control(k)}" toName="{TO_NAME}" choice="multiple" showInline="true">\n'
                          f"{_choice_tags(names)}\n  </Choices>\n")
        for name in retired:
            if not any(name == group_control(k) for k in range(len(groups))):
                blocks.append(f'  <Choices name={quoteattr(name)} toName="{TO_NAME}" choice="multiple" '
                              'value="$retired_options"/>\n')
        choices_tag = "".join(blocks)
    elif dynamic:
        choices_tag = (f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false"'
                       ' value="$options"/>\n')
    else:
        choices = _choice_tags(concepts)
        choices_tag = (f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="multiple" showInline="false">\n'
                       f"{choices}\n  </Choices>\n")
    return (
        head
        + choices_tag
        + f'  <TextArea name="{MISSING}" toName="{TO_NAME}" placeholder="Missing concepts, one per line"'
        ' rows="2" editable="true"/>\n'
        "</View>\n"
    )


def concept_review_config() -> str:
    """Labeling config for concept verification: one item, one concept, present / absent / unsure."""
    choices = _choice_tags(CONCEPT_VERDICTS)
    return (
        "<View>\n"
        '  <Header value="Does this item show the concept below?"/>\n'
        '  <Header value="$concept" size="4"/>\n'
        f'  <Text name="{TEXT}" value="$text"/>\n'
        f'  <Choices name="{VERDICT}" toName="{TEXT}" choice="single-radio" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def concept_list_review_config() -> str:
    """Labeling config for concept-list review: a class, its concepts, keep / reject / edit one of them."""
    choices = _choice_tags(LIST_VERDICTS)
    return (
        "<View>\n"
        '  <Header value="$class_name"/>\n'
        '  <HyperText name="class_concepts" value="$class_concepts" inline="true"/>\n'
        '  <Header value="Keep, reject or edit this concept for the class:" size="5"/>\n'
        f'  <Text name="{TEXT}" value="$text"/>\n'
        '  <Header value="Items that score highest, and items near the labelling cut:" size="6"/>\n'
        '  <HyperText name="examples" value="$examples" inline="true"/>\n'
        f'  <Choices name="{VERDICT}" toName="{TEXT}" choice="single-radio" showInline="true" required="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        f'  <TextArea name="{EDITED}" toName="{TEXT}" placeholder="New wording (when editing)" rows="1"'
        ' maxSubmissions="1" editable="true"/>\n'
        "</View>\n"
    )


def review_config(mode: str, groups: Sequence[tuple[str, Sequence[str]]] = (), retired: Sequence[str] = ()) -> str:
    """The labeling config a push uses for ``mode`` (item review lists ``groups``, the run's concepts by class,
    and keeps the ``retired`` checklists of earlier pushes)."""
    if mode == "item":
        return item_review_config(groups=list(groups), retired=retired)
    if mode == "concept":
        return concept_review_config()
    if mode == "concept-list":
        return concept_list_review_config()
    raise ValueError(f"review mode must be one of item, concept, concept-list; got {mode!r}")


# ---------------------------------------------------------------- tasks


def _choices_prediction(run_id: str, score: float, from_name: str, choices: Sequence[str]) -> Prediction:
    result = [PredictionResult(from_name=from_name, to_name=TO_NAME, value=ChoicesValue(choices=list(choices)))]
    return Prediction(model_version=run_id, score=round(float(score), 4), result=result if choices else [])


def item_task(
    *,
    item_id: str,
    text: str,
    label: str | None,
    top_ids: Sequence[int],
    top_scores: Sequence[float],
    concepts: Sequence[str],
    run_id: str,
    min_score: float | None = None,
    ticked: Sequence[int] | None = None,
    dynamic: bool = False,
    uncertainty: float | None = None,
) -> Task:
    """One task: the item and a prediction ticking ``ticked`` (concept ids), or else its top concepts whose
    score reaches ``min_score``.

    ``dynamic=True`` adds what a push needs: the checklist (the item's top concepts) and the task key and
    fingerprint.
    """
    if ticked is not None:
        ticked = [concepts[i] for i in ticked]
    elif min_score is not None:
        ticked = [concepts[i] for i, s in zip(top_ids, top_scores) if s >= min_score]
    else:
        raise ValueError("item_task needs ticked or min_score")
    scores = {concepts[i]: round(float(s), 4) for i, s in zip(top_ids, top_scores)}
    score = uncertainty if uncertainty is not None else (max(top_scores) if len(top_scores) else 0.0)
    prediction = _choices_prediction(run_id, score, FROM_NAME, ticked)
    extra: dict[str, Any] = {}
    if dynamic:
        options = [concepts[i] for i in top_ids]
        extra = dict(
            options=[ChoiceOption(value=c) for c in options],
            task_key=task_key("item", item_id),
            fingerprint=fingerprint({"text": text, "label": label, "options": options, "ticked": ticked}),
        )
    data = TaskData(item_id=item_id, text=text, label=label, concept_scores=scores, **extra)
    return Task(data=data, predictions=[prediction])


def item_tasks_jsonl(*, item_ids: Sequence[str], texts: Sequence[str], labels: Sequence[str | None],
                     top_ids: np.ndarray, top_scores: np.ndarray, positive_indptr: np.ndarray,
                     positive_ids: np.ndarray, uncertainty: np.ndarray, concepts: Sequence[str], run_id: str) -> str:
    """JSON Lines of ``item_task(..., ticked=positives, uncertainty=...)`` for a whole unit, without a pydantic
    model or a dict per item: one ``%`` format per line, names quoted once per unit, scores as ``%.4f`` (the
    same number as ``round(x, 4)``: both round the exact double to the nearest, ties to even), so the lines parse
    to what ``item_task`` gives (tests/pipelines/test_scoring.py). The annotate pass writes a task per item, tens of
    thousands a second on a GPU machine."""
    from json.encoder import encode_basestring as quote  # ensure_ascii=False, as the tasks file is written

    names = [quote(c) for c in concepts]
    formats = [f"{name.replace('%', '%%')}: %.4f" for name in names]
    n, k = top_ids.shape if top_ids.ndim == 2 else (len(item_ids), 0)
    head = '{"data": {"item_id": %s, "text": %s, "label": %s, "concept_scores": {'
    tail = ('}, "options": null, "task_key": null, "fingerprint": null}, "predictions": [{"model_version": '
            + quote(run_id).replace("%", "%%") + ', "score": %.4f, ')
    ticked_head = f'"result": [{{"from_name": {quote(FROM_NAME)}, "to_name": {quote(TO_NAME)}, "type": "choices", "value": {{"choices": ['
    unticked = '"result": []}]}\n'
    top_ids, top_scores = top_ids.tolist(), top_scores.tolist()
    ptr, ids, unc = positive_indptr.tolist(), positive_ids.tolist(), uncertainty.tolist()
    lines = []
    for i in range(n):
        row = top_ids[i]
        if len(set(row)) == len(row):
            scores = ", ".join([formats[c] % v for c, v in zip(row, top_scores[i])])
        else:  # a repeated concept keeps its last score, as the dict in item_task does
            scores = ", ".join(formats[c] % v for c, v in {c: v for c, v in zip(row, top_scores[i])}.items())
        label = labels[i]
        start = head % (quote(item_ids[i]), quote(texts[i]), "null" if label is None else quote(label))
        ticked = ids[ptr[i]:ptr[i + 1]]
        lines.append(start + scores + tail % unc[i]
                     + (ticked_head + ", ".join([names[c] for c in ticked]) + "]}}]}]}\n"
                        if ticked else unticked))
    return "".join(lines)


def ticked_choices(task: Task) -> list[str]:
    """The concepts a task's (first) prediction ticks."""
    for prediction in task.predictions[:1]:
        for result in prediction.result:
            if result.from_name == FROM_NAME:
                return list(result.value.choices)
    return []


def item_push_task(
    *, item_id: str, text: str, label: str | None, ticked: Sequence[str], groups: Sequence[tuple[str, Sequence[str]]],
    score: float, run_id: str,
) -> Task:
    """The pushed item task: the item and its class (the checklist is the project's config, ``groups``), and a
    prediction ticking ``ticked`` in each class group; ``score`` is the prediction's uncertainty. The fingerprint
    covers the data only: new pre-ticks come as a new prediction (``run_id`` is the model version)."""
    ticked_set = set(ticked)
    result = []
    for k, (_, names) in enumerate(groups):
        chosen = [c for c in names if c in ticked_set]
        if chosen:
            result.append(PredictionResult(from_name=group_control(k), to_name=TO_NAME,
                                           value=ChoicesValue(choices=chosen)))
    data = TaskData(item_id=item_id, text=text, label=label, task_key=task_key("item", item_id),
                    fingerprint=fingerprint({"text": text, "label": label}))
    return Task(data=data, predictions=[Prediction(model_version=run_id, score=round(float(score), 4), result=result)])


def concept_task(
    *, item_id: str, text: str, label: str | None, concept: str, concept_id: int, score: float, predicted: bool,
    run_id: str, doubt: float | None = None,
) -> Task:
    """Concept verification of one (item, concept); the prediction says present when the model's label does; its
    score is ``doubt`` (the uncertainty), else the raw score."""
    verdict = "present" if predicted else "absent"
    data = ConceptTaskData(
        item_id=item_id, text=text, label=label, concept=concept, concept_id=concept_id, score=round(float(score), 4),
        task_key=task_key("concept", item_id, concept),
        fingerprint=fingerprint({"text": text, "label": label, "concept": concept, "predicted": verdict}),
    )
    return Task(data=data, predictions=[_choices_prediction(run_id, score if doubt is None else doubt, VERDICT,
                                                            [verdict])])


def examples_html(top: Sequence[str], near: Sequence[str]) -> str:
    """A concept's example items for concept-list review: the highest-scoring ones, then ones near the cut."""
    def block(title: str, texts: Sequence[str]) -> str:
        if not texts:
            return ""
        items = "".join(f"<li>{html.escape(t if len(t) <= 300 else t[:299] + '…')}</li>" for t in texts)
        return f"<p><b>{title}</b></p><ul>{items}</ul>"

    return block("Highest scores", top) + block("Near the labelling cut", near) or "<p>(no items)</p>"


def concept_list_tasks(
    concepts: Sequence[Mapping[str, Any]], *, run_id: str, examples: Mapping[int, str] | None = None
) -> list[Task]:
    """Concept-list review: one task per (class, selected concept), showing the class's whole list and the
    concept's ``examples`` (HTML by concept_id, see ``examples_html``).

    ``concepts`` rows carry ``concept_id``, ``concept``, ``picked_for`` (the class) and ``gain``; the prediction
    is "keep" (the selection kept it), its score the doubt: 1 - gain / the class's best gain (the last pick of a
    class is the one to look at first).
    """
    examples = examples or {}
    by_class: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in concepts:
        by_class[row["picked_for"]].append(row)
    tasks = []
    for class_name in sorted(by_class):
        rows = by_class[class_name]
        listing = "<ul>" + "".join(f"<li>{html.escape(r['concept'])}</li>" for r in rows) + "</ul>"
        best = max((float(r.get("gain", 0.0)) for r in rows), default=0.0)
        for row in rows:
            shown = examples.get(int(row["concept_id"]), "")
            data = ConceptListTaskData(
                class_name=class_name, concept=row["concept"], concept_id=int(row["concept_id"]),
                class_concepts=listing, text=row["concept"], examples=shown,
                task_key=task_key("concept-list", class_name, row["concept"]),
                fingerprint=fingerprint({"class": class_name, "concept": row["concept"], "list": listing,
                                         "examples": shown}),
            )
            score = 1.0 - float(row.get("gain", 0.0)) / best if best > 0 else 0.0
            tasks.append(Task(data=data, predictions=[_choices_prediction(run_id, score, VERDICT, ["keep"])]))
    return tasks


_PUSH_ONLY = ("options", "task_key", "fingerprint")


def task_json(task: Task) -> dict[str, Any]:
    """A task as Label Studio JSON; the push-only fields of an item task are left out when unset, and so is an
    empty ``concept_scores`` (pushed item tasks carry no raw JSON columns)."""
    out = task.model_dump(mode="json")
    for name in _PUSH_ONLY:
        if out["data"].get(name, "") is None:
            del out["data"][name]
    if out["data"].get("concept_scores", None) == {}:
        del out["data"]["concept_scores"]
    return out


def join_task_files(directory: str | os.PathLike[str], path: str | os.PathLike[str]) -> int:
    """Join the JSON Lines task files of ``directory`` (in name order) into one JSON list at ``path``, streaming
    and atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("[\n")
        for part in sorted(Path(directory).glob("*.jsonl")):
            with open(part, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        out.write(("," if n else "") + line.rstrip("\n") + "\n")
                        n += 1
        out.write("]\n")
    os.replace(tmp, path)
    return n


def write_tasks(path: str | os.PathLike[str], tasks: Iterable[Task]) -> int:
    """Write tasks as a JSON list, atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[\n")
        for task in tasks:
            f.write(("," if n else "") + json.dumps(task_json(task), ensure_ascii=False) + "\n")
            n += 1
        f.write("]\n")
    os.replace(tmp, path)
    return n


# ---------------------------------------------------------------- what to send


def select_uncertain_diverse(
    margins: np.ndarray, embeddings: np.ndarray, budget: int, *, pool_factor: int = 3, seed: int = 0
) -> np.ndarray:
    """Indices of ``budget`` rows to review: the ``pool_factor * budget`` smallest margins, then a diverse subset.

    Diversity is facility location (``conceptkit.pipelines.selection.submodular``) over the pool's embeddings, centred so that
    cosine similarity reflects differences rather than the shared direction of all score vectors. Returns every
    row (in margin order) when the budget covers them all. Deterministic (stable sort, seeded optimiser).
    """
    from conceptkit.pipelines.selection.submodular import facility_location_greedy

    margins = np.asarray(margins, dtype=np.float64)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    order = np.argsort(margins, kind="stable")
    if budget >= len(order):
        return order
    pool = order[: min(len(order), max(budget, pool_factor * budget))]
    if budget == len(pool):
        return pool
    emb = np.asarray(embeddings, dtype=np.float32)[pool]
    emb = emb - emb.mean(axis=0, keepdims=True)
    emb += 1e-6 * (np.arange(emb.shape[1], dtype=np.float32) + 1)  # no all-zero row (identical items)
    selection = facility_location_greedy(emb, budget, metric="cosine", seed=seed)
    return pool[np.asarray(selection.selected, dtype=np.int64)]


# ---------------------------------------------------------------- what came back


@dataclass(frozen=True)
class Refit:
    threshold: float
    n: int
    f1: float


def human_votes(verified: Iterable[Mapping[str, Any]]) -> dict[tuple[str, int], dict[str, str]]:
    """(item_id, concept_id) -> {annotator: present|absent}, each annotator's latest judgement (unsure dropped)."""
    latest: dict[tuple[str, int, str], tuple[Any, str]] = {}
    for row in verified:
        if row["item_id"] is None or row["concept_id"] is None or row["review"] not in ("item", "concept"):
            continue
        key = (row["item_id"], int(row["concept_id"]), row["annotator"])
        if key not in latest or row["time"] >= latest[key][0]:
            latest[key] = (row["time"], row["label"])
    votes: dict[tuple[str, int], dict[str, str]] = defaultdict(dict)
    for (item_id, concept_id, annotator), (_, label) in sorted(latest.items()):
        if label in ("present", "absent"):
            votes[(item_id, concept_id)][annotator] = label
    return dict(votes)


def majority(votes: Mapping[str, str]) -> bool | None:
    """True/False by majority of present/absent votes; None on a tie."""
    present = sum(v == "present" for v in votes.values())
    absent = len(votes) - present
    return None if present == absent else present > absent


def refit_threshold(scores: np.ndarray, labels: np.ndarray, *, min_labels: int = 10, min_each: int = 2) -> Refit | None:
    """The score threshold that best separates human labels (max F1, ties to accuracy), or None without enough.

    Needs ``min_labels`` labelled pairs with at least ``min_each`` positives and negatives; the threshold is the
    midpoint between neighbouring scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if len(labels) < min_labels or n_pos < min_each or len(labels) - n_pos < min_each:
        return None
    uniq = np.unique(scores)
    cuts = np.concatenate([[uniq[0] - 1e-6], (uniq[:-1] + uniq[1:]) / 2, [uniq[-1] + 1e-6]])
    best: tuple[float, float, float] | None = None
    for t in cuts:
        pred = scores >= t
        tp = int((pred & labels).sum())
        f1 = 2 * tp / (pred.sum() + n_pos) if (pred.sum() + n_pos) else 0.0
        acc = float((pred == labels).mean())
        if best is None or (f1, acc) > (best[1], best[2]):
            best = (float(t), f1, acc)
    return Refit(threshold=round(best[0], 6), n=len(labels), f1=round(best[1], 4))


def _prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": _round(precision), "recall": _round(recall), "f1": _round(f1)}


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def krippendorff_alpha_nominal(units: Iterable[Sequence[str]]) -> float | None:
    """Krippendorff's alpha for nominal labels; ``units`` are the labels given to each unit (>= 2 count)."""
    coincidence: dict[tuple[str, str], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for a in range(m):
            for b in range(m):
                if a != b:
                    coincidence[(values[a], values[b])] += 1 / (m - 1)
    totals: dict[str, float] = defaultdict(float)
    for (c, _), v in coincidence.items():
        totals[c] += v
    n = sum(totals.values())
    if n <= 1:
        return None
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k)
    if expected == 0:
        return None  # everyone gave the same label: agreement is perfect but alpha is undefined
    return round(1 - (n - 1) * observed / expected, 4)


def merge_labels(
    *,
    item_ids: Sequence[str],
    scores: np.ndarray,
    predicted: set[tuple[str, int]],
    concepts: Sequence[str],
    verified: Sequence[Mapping[str, Any]],
    min_labels: int = 10,
    margins: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Human labels over model labels, re-fitted thresholds, and agreement metrics.

    ``scores`` is the run's (items x concepts) matrix in ``item_ids`` order; ``predicted`` the (item, concept)
    pairs the run ticked; ``margins`` the label rule's (items x concepts) margins before any human cut
    (``LabelRule.margins``), on which each concept's cut is fitted (default: the raw scores, a plain threshold).
    Returns the merged rows (``conceptkit.schemas.verified.MERGED``) and the ``review`` metrics:
    per-concept model-vs-human precision/recall/F1 (of the run's labels, before any refit), re-fitted thresholds
    and inter-annotator agreement.
    """
    scores = np.asarray(scores, dtype=np.float32)
    values = scores if margins is None else np.asarray(margins, dtype=np.float32)
    row_of = {item_id: i for i, item_id in enumerate(item_ids)}
    votes = {k: v for k, v in human_votes(verified).items() if k[0] in row_of and 0 <= k[1] < len(concepts)}
    human = {k: majority(v) for k, v in votes.items()}

    refits: dict[int, Refit] = {}
    by_concept: dict[int, list[tuple[str, bool]]] = defaultdict(list)
    for (item_id, cid), label in human.items():
        if label is not None:
            by_concept[cid].append((item_id, label))
    for cid, pairs in sorted(by_concept.items()):
        s = np.array([values[row_of[i], cid] for i, _ in pairs])
        refit = refit_threshold(s, np.array([lab for _, lab in pairs]), min_labels=min_labels)
        if refit is not None:
            refits[cid] = refit

    keys = set(predicted) | set(votes)
    for cid, refit in refits.items():
        on = np.nonzero(values[:, cid] >= refit.threshold)[0]
        keys.update((item_ids[i], cid) for i in on)
    rows = []
    for item_id, cid in sorted(keys, key=lambda k: (row_of.get(k[0], -1), k[1])):
        if item_id not in row_of:
            continue
        score = float(scores[row_of[item_id], cid])
        model = (item_id, cid) in predicted
        label = human.get((item_id, cid))
        v = votes.get((item_id, cid), {})
        if label is not None:
            final, source = label, "human"
        elif cid in refits:
            final, source = float(values[row_of[item_id], cid]) >= refits[cid].threshold, "model_refit"
        else:
            final, source = model, "model"
        rows.append({
            "item_id": item_id, "concept_id": cid, "concept": concepts[cid], "score": score, "model": model,
            "human": label, "votes_present": sum(x == "present" for x in v.values()),
            "votes_absent": sum(x == "absent" for x in v.values()), "final": bool(final), "final_source": source,
        })

    per_concept = {}
    totals = [0, 0, 0, 0]
    for cid in sorted({cid for (_, cid), lab in human.items() if lab is not None}):
        tp = fp = fn = tn = 0
        for (item_id, c), label in human.items():
            if c != cid or label is None:
                continue
            model = (item_id, cid) in predicted
            tp += model and label
            fp += model and not label
            fn += (not model) and label
            tn += (not model) and (not label)
        totals = [totals[0] + tp, totals[1] + fp, totals[2] + fn, totals[3] + tn]
        entry: dict[str, Any] = {"concept": concepts[cid], "n": tp + fp + fn + tn, **_prf(tp, fp, fn)}
        if cid in refits:
            entry["refit_cut"] = refits[cid].threshold
            entry["refit_f1"] = refits[cid].f1
        per_concept[concepts[cid]] = entry
    multi = [list(v.values()) for v in votes.values() if len(v) >= 2]
    pairwise = [(a == b) for labels in multi for i, a in enumerate(labels) for b in labels[i + 1:]]
    metrics = {
        "judged_pairs": sum(lab is not None for lab in human.values()),
        "tied_pairs": sum(lab is None for lab in human.values()),
        "model_vs_human": {"overall": {"n": sum(totals), **_prf(*totals[:3])}, "per_concept": per_concept},
        # each concept's cut fitted to people's answers, in the units of ``margins`` (the label rule's)
        "thresholds": {concepts[c]: {"cut": r.threshold, "n": r.n, "f1": r.f1} for c, r in refits.items()},
        "inter_annotator": {
            "pairs_with_several": len(multi),
            "percent_agreement": _round(sum(pairwise) / len(pairwise)) if pairwise else None,
            "krippendorff_alpha": krippendorff_alpha_nominal(multi),
        },
        "final_sources": {s: sum(r["final_source"] == s for r in rows) for s in ("human", "model_refit", "model")},
    }
    return rows, metrics
