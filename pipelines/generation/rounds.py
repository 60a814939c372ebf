"""Grounded, contrastive, iterative generation, driven before the Beam graph runs.

In: the build config, the loaded items, the first round's requests and a chat client. Out: the requests of the
best round (the first round's plus targeted ones) and a record of every round for the manifest. The Beam graph
then asks the same requests again: every answer is in the LLM cache by then, so the graph's filter and selection
steps see what the best round saw, and a rerun of the build makes zero calls.

- ``TrainSample``: at most 128 labelled train items per class (the smallest hashes of their ids), embedded
  through the run's embedding cache (the graph then finds them there), halved by the same hash into a fit part
  and a validation part. The held-out test split is never read.
- Grounding (``class_examples``): facility location over a class's sampled embeddings picks its most
  representative items; they are shown, shortened, with every question about the class.
- Rounds (``generation.rounds`` > 1): after each round the candidates are filtered and selected as the graph
  would (class means from the fit part), a logistic regression on the selected concepts' scores is fitted on the
  fit part and scored on the validation part, and the weakest classes (lowest validation recall, a third of the
  classes) each get a contrastive question against the class they are most confused with, showing items of both.
  A round that does not raise validation accuracy stops the loop; the best round is kept, so a round never makes
  the result worse than the one before. A round whose every call fails is recorded (its ``errors`` in the
  manifest's ``rounds``) and, adding nothing, is not kept; it is never a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from conceptkit.pipelines.generation.prompts import ConceptRequest, shorten

logger = logging.getLogger(__name__)

SAMPLE_PER_CLASS = 128


@dataclass
class TrainSample:
    """Sampled labelled train items of each class with unit-norm embeddings; ``fit`` marks the fit half."""

    texts: dict[str, list[str]]
    vectors: dict[str, np.ndarray]
    fit: dict[str, np.ndarray]
    embedded: int = 0  # items embedded here (not from the cache)


def train_sample(cfg, loaded) -> TrainSample | None:
    """The sample of the module docstring, or None when there is nothing to ground on (no labels, images)."""
    if loaded.modality != "text" or not loaded.labelled:
        return None
    from conceptkit.annotators.embedding import TextEmbedder

    from conceptkit.pipelines.readers.items import labelled_train

    by_class: dict[str, list[tuple[str, str]]] = {}
    for item_id, text, label in labelled_train(loaded):
        if text.strip() and len(text) <= cfg.items.max_text_chars:
            by_class.setdefault(label, []).append((hashlib.sha256(str(item_id).encode()).hexdigest(), text))
    texts = {c: [text for _, text in sorted(by_class[c])[:SAMPLE_PER_CLASS]] for c in loaded.classes if c in by_class}
    if not texts:
        return None
    embedder = TextEmbedder.from_config(cfg.embedding)
    cache = str(cfg.cache_path() / "embeddings") if cfg.embedding.cache else None
    flat = [text for c in texts for text in texts[c]]
    vectors, computed = embedder.encode_cached(flat, cache)
    out, start = {}, 0
    for c, rows in texts.items():
        out[c], start = np.asarray(vectors[start : start + len(rows)], dtype=np.float32), start + len(rows)
    fit = {c: np.arange(len(rows)) % 2 == 0 for c, rows in texts.items()}
    return TrainSample(texts=texts, vectors=out, fit=fit, embedded=computed)


def class_examples(sample: TrainSample | None, n: int, chars: int) -> dict[str, list[str]]:
    """The ``n`` most representative sampled items of every class (facility location), shortened to ``chars``."""
    if sample is None or n <= 0:
        return {}
    from conceptkit.submodular import FacilityLocationSelection

    out = {}
    for c, rows in sample.texts.items():
        picked = FacilityLocationSelection(min(n, len(rows))).fit(sample.vectors[c]).ranking
        out[c] = [shorten(rows[i], chars) for i in picked.tolist()]
    return out


def contrastive_request(cls: str, other: str, *, domain: str, n: int, round_no: int,
                        examples: Sequence[str], other_examples: Sequence[str]) -> ConceptRequest:
    a, b = json.dumps(cls, ensure_ascii=False), json.dumps(other, ensure_ascii=False)
    question = (f"In {domain}, what tells items of class {a} apart from items of class {b}? List properties that "
                f"items of {a} have and items of {b} lack.")
    return ConceptRequest(class_name=cls, prompt_id=f"round{round_no}-vs-{other}", question=question, sample=0, n=n,
                          domain=domain, examples=tuple(examples), contrast_class=other,
                          contrast_examples=tuple(other_examples))


@dataclass
class RoundRecord:
    round: int
    requests: int  # new requests this round
    prompts: list[str]
    targets: list[str]  # "class vs other" asked about this round
    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    accepted: int = 0
    selected: int = 0
    validation_accuracy: float | None = None
    kept: bool = False
    recall: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        if self.validation_accuracy is not None:
            out["validation_accuracy"] = round(self.validation_accuracy, 4)
        out["recall"] = {c: round(v, 3) for c, v in self.recall.items()}
        return out


def _candidates_of(requests, results, model: str) -> list:
    from conceptkit.pipelines.generation.parse import ParseError, max_concepts_per_answer, parse_answer
    from conceptkit.pipelines.selection.filters import Candidate

    out = []
    for request, result in zip(requests, results):
        if result.error:
            continue
        try:
            per_class = parse_answer(result.content, request.classes, batched=bool(request.batch))[0]
        except ParseError:
            continue
        for name, concepts in per_class.items():
            for position, concept in enumerate(concepts[: max_concepts_per_answer(request.n)]):
                out.append(Candidate(raw=concept, classes=[name], prompt_id=request.prompt_id,
                                     prompt=request.question, model=model, sample=request.sample, position=position))
    return out


def evaluate_round(cfg, classes: Sequence[str], sample: TrainSample, candidates: list, embedder, cache):
    """Filter and select ``candidates`` as the graph does, then (validation accuracy, per-class recall,
    confusion matrix, accepted, selected)."""
    from conceptkit.pipelines.evaluation import models
    from conceptkit.pipelines.selection.filters import filter_candidates
    from conceptkit.pipelines.selection.stage import evidence_size, select_concepts

    classes = [c for c in classes if c in sample.texts]
    candidates = [c for c in candidates if c.classes[0] in classes]
    accepted, emb = filter_candidates(candidates, classes, cfg.filters, embedder, cache, domain=cfg.generation.domain)
    if not accepted:
        return 0.0, {}, None, 0, 0
    means = {}
    for c in classes:
        m = sample.vectors[c][sample.fit[c]].mean(axis=0)
        means[c] = (m / (np.linalg.norm(m) or 1.0)).astype(np.float32)
    keep = evidence_size(cfg.selection, len(classes))
    evidence = {c: sample.vectors[c][sample.fit[c]][:keep] for c in classes}
    rows, _ = select_concepts(accepted, emb, classes, class_means=means, cfg=cfg.selection,
                              generic_spread=cfg.filters.generic_spread, class_evidence=evidence)
    concepts = np.array([r["embedding"] for r in rows], dtype=np.float32)
    x_fit = np.concatenate([sample.vectors[c][sample.fit[c]] for c in classes]) @ concepts.T
    x_val = np.concatenate([sample.vectors[c][~sample.fit[c]] for c in classes]) @ concepts.T
    y_fit = np.concatenate([np.full(int(sample.fit[c].sum()), i) for i, c in enumerate(classes)])
    y_val = np.concatenate([np.full(int((~sample.fit[c]).sum()), i) for i, c in enumerate(classes)])
    x_fit, x_val = models.standardise(x_fit, x_val)
    predicted = models.fit_predict(x_fit, y_fit, x_val)
    confusion = models.confusion(y_val, predicted, len(classes))
    recall = {c: float(confusion[i, i] / max(confusion[i].sum(), 1)) for i, c in enumerate(classes)}
    return float((predicted == y_val).mean()), recall, confusion, len(accepted), len(rows)


def targets(classes: Sequence[str], recall: dict[str, float], confusion: np.ndarray | None,
            sample: TrainSample, asked: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """(weak class, the class it is most confused with) for the weakest third of the classes, skipping pairs
    already asked; without confusions the nearest class mean stands in."""
    classes = [c for c in classes if c in recall]
    weakest = sorted((c for c in classes if recall[c] < 1.0), key=lambda c: (recall[c], classes.index(c)))
    means = np.stack([sample.vectors[c].mean(axis=0) for c in classes])
    out = []
    for c in weakest[: max(1, math.ceil(len(classes) / 3))]:
        i = classes.index(c)
        row = confusion[i].astype(float).copy() if confusion is not None else np.zeros(len(classes))
        row[i] = -1
        if row.max() <= 0:
            row = means @ means[i]
            row[i] = -np.inf
        for j in np.argsort(-row, kind="stable").tolist():
            if j != i and (c, classes[j]) not in asked:
                out.append((c, classes[j]))
                break
    return out


def run_rounds(cfg, classes: Sequence[str], base: list[ConceptRequest], sample: TrainSample, client,
               ensure_llm: Callable[[], None]) -> tuple[list[ConceptRequest], list[RoundRecord]]:
    """The requests of the best round and the record of every round (see the module docstring)."""
    from conceptkit.annotators.embedding import TextEmbedder
    from conceptkit.pipelines.generation.client import LLMCache
    from conceptkit.pipelines.progress import Progress

    embedder = TextEmbedder.from_config(cfg.embedding)
    cache = str(cfg.cache_path() / "embeddings") if cfg.embedding.cache else None
    llm_cache = LLMCache(client.settings.cache_path) if client.settings.cache_path else None
    examples = class_examples(sample, 2, cfg.generation.example_chars)
    requests: list[ConceptRequest] = []
    answered: list = []  # (request, result) of every round so far
    records: list[RoundRecord] = []
    new = list(base)
    asked: set[tuple[str, str]] = set()
    best = (-1.0, 0, 0)  # (accuracy, round, number of requests)
    for round_no in range(1, cfg.generation.rounds + 1):
        jobs = [(r.messages(), r.schema(), r.sample) for r in new]
        keys = [client.key_for(m, s) for m, _, s in jobs]
        if not (llm_cache and not client.settings.refresh_cache and llm_cache.has_all(keys)):
            ensure_llm()
        progress = Progress(len(jobs), f"generate (round {round_no})", unit="request")
        try:
            results = client.run_many(jobs, on_done=lambda _: progress.update(1))
        finally:
            progress.close()
        requests += new
        answered += zip(new, results)
        record = RoundRecord(
            round=round_no, requests=len(new), prompts=sorted({r.prompt_id for r in new}),
            targets=[f"{r.class_name} vs {r.contrast_class}" for r in new if r.contrast_class],
            calls=sum(not r.cached and r.error != "budget_exceeded" for r in results),
            cache_hits=sum(r.cached for r in results), errors=sum(r.error is not None for r in results),
            prompt_tokens=sum(r.prompt_tokens for r in results if not r.cached),
            completion_tokens=sum(r.completion_tokens for r in results if not r.cached),
        )
        # Fresh candidates every round: the filters mutate them (merges add classes).
        pool = _candidates_of([q for q, _ in answered], [r for _, r in answered], client.settings.model)
        pool += mined_pool(cfg, classes, sample)
        accuracy, recall, confusion, record.accepted, record.selected = evaluate_round(
            cfg, classes, sample, pool, embedder, cache)
        record.validation_accuracy, record.recall = accuracy, recall
        records.append(record)
        logger.info("round %d: %d requests (%d calls), %d accepted, %d selected, validation accuracy %.3f%s",
                    round_no, len(new), record.calls, record.accepted, record.selected, accuracy,
                    f" (targets: {', '.join(record.targets)})" if record.targets else "")
        if accuracy > best[0]:
            best = (accuracy, round_no, len(requests))
        elif round_no > 1:
            break  # no better than the best round: stop early
        if round_no == cfg.generation.rounds:
            break
        pairs = targets(classes, recall, confusion, sample, asked)
        if not pairs:
            break
        asked.update(pairs)
        new = [contrastive_request(c, o, domain=cfg.generation.domain, n=cfg.generation.concepts_per_prompt,
                                   round_no=round_no + 1, examples=examples.get(c, ()),
                                   other_examples=examples.get(o, ())) for c, o in pairs]
    for record in records:
        record.kept = record.round <= best[1]
    return requests[: best[2]], records


def mined_pool(cfg, classes: Sequence[str], sample: TrainSample) -> list:
    """The mined candidates of the sample's fit part (the graph mines all train items), so a round is judged
    with the mined concepts it will be selected beside."""
    if not cfg.generation.mine_per_class:
        return []
    from conceptkit.pipelines.generation.mining import candidate_rows, mine_phrases
    from conceptkit.pipelines.selection.filters import Candidate

    texts, labels = [], []
    for c in sample.texts:
        for text, fit in zip(sample.texts[c], sample.fit[c]):
            if fit:
                texts.append(text)
                labels.append(c)
    phrases = mine_phrases(texts, labels, list(classes), per_class=cfg.generation.mine_per_class,
                           max_words=cfg.generation.mine_max_words, min_items=cfg.generation.mine_min_items)
    return [Candidate(**row) for row in candidate_rows(phrases)]
