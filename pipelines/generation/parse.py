"""Parse an LLM answer into candidate concept strings.

``parse_candidates`` accepts, in order: JSON ``{"concepts": [...]}`` (also fenced in Markdown), a bare JSON list,
and as a last resort a numbered or bulleted list. Anything else raises ``ParseError`` with a typed reason; the
caller turns it into a reject that keeps the raw text. Repetition loops (a small model repeating one item) are cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from conceptkit.pipelines.generation.prompts import batched_classes

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d{1,3}[.)]|\(\d{1,3}\))\s+(.+?)\s*$")


class ParseError(ValueError):
    """The answer holds no usable concept list; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _strings(values: list, where: str) -> list[str]:
    out = []
    for value in values:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict) and isinstance(value.get("concept"), str):
            out.append(value["concept"])
        else:
            raise ParseError("schema_violation", f"{where}: list item {value!r} is not a string")
    return out


def cut_repetition(items: list[str], *, max_repeats: int = 2) -> list[str]:
    """Drop items once the same (case-folded) item has been seen ``max_repeats`` times: a repetition loop."""
    seen: dict[str, int] = {}
    out = []
    for item in items:
        key = " ".join(item.casefold().split())
        seen[key] = seen.get(key, 0) + 1
        if seen[key] <= max_repeats:
            out.append(item)
    return out


def _json_body(text: str | None) -> tuple[str, object]:
    """(the answer without a Markdown fence, its JSON value or None); raises ``ParseError`` for an empty answer."""
    if text is None or not text.strip():
        raise ParseError("empty", "empty answer")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        return body, json.loads(body)
    except json.JSONDecodeError:
        return body, None


def parse_candidates(text: str | None) -> list[str]:
    """Concept strings from an LLM answer; raises ``ParseError`` (reason: empty, schema_violation, unparseable)."""
    body, data = _json_body(text)
    if isinstance(data, dict):
        concepts = data.get("concepts")
        if not isinstance(concepts, list):
            raise ParseError("schema_violation", "JSON object has no 'concepts' list")
        return cut_repetition(_strings(concepts, "concepts"))
    if isinstance(data, list):
        return cut_repetition(_strings(data, "list"))
    if data is not None:
        raise ParseError("schema_violation", f"JSON {type(data).__name__} is not a concept list")
    items = [m.group(1) for line in body.splitlines() if (m := _LIST_ITEM.match(line))]
    if items:
        return cut_repetition(items)
    if body.lstrip().startswith(("{", "[")):
        raise ParseError("malformed_json", "answer looks like JSON but does not parse")
    raise ParseError("unparseable", "answer is neither JSON nor a list")


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


def parse_batch(text: str | None, classes: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """A batched answer (one JSON object, a concept list per class name) -> ({class: concepts}, the classes it
    lacks). Keys match the class names exactly, else ignoring case and spacing; other keys are ignored. Raises
    ``ParseError`` when the answer is not such an object or holds a list for none of ``classes``."""
    body, data = _json_body(text)
    if data is None:
        raise ParseError("malformed_json" if body.lstrip().startswith("{") else "unparseable",
                         "a batched answer must be one JSON object keyed by class name")
    if not isinstance(data, dict):
        raise ParseError("schema_violation", f"JSON {type(data).__name__} is not an object keyed by class name")
    loose = {_key(k): v for k, v in data.items() if isinstance(k, str)}
    found, missing = {}, []
    for name in classes:
        value = data.get(name, loose.get(_key(name)))
        if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
            found[name] = cut_repetition(list(value))
        else:
            missing.append(name)
    if not found:
        raise ParseError("schema_violation", "the answer holds a concept list for none of the classes asked")
    return found, missing


def parse_answer(text: str | None, classes: Sequence[str], *, batched: bool) -> tuple[dict[str, list[str]], list[str]]:
    """({class: concepts}, classes the answer lacks) for a request about ``classes``: ``parse_batch`` for a
    batched request, else one class's ``parse_candidates``. Raises ``ParseError`` as they do."""
    if batched:
        return parse_batch(text, classes)
    return {classes[0]: parse_candidates(text)}, []


def max_concepts_per_answer(asked: int) -> int:
    """How many concepts of one answer are kept: a few times what was asked; the rest is a runaway list."""
    return max(4 * asked, 50)


def answer_parses(text: str | None, schema: dict | None = None) -> bool:
    """Whether an answer holds what was asked: a concept list, or for a batched request (``schema`` keyed by class
    names, prompts.batch_schema) a list for every class. Only those are cached, so a rerun asks again for the
    rest (a batched answer that lacks a class is asked again whole)."""
    classes = batched_classes(schema)
    try:
        if classes:
            return not parse_batch(text, classes)[1]
        parse_candidates(text)
    except ParseError:
        return False
    return True
