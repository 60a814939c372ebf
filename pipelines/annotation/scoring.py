"""Scoring a staged unit against the concept set: the calibration histograms and the annotation of every item.

In: a unit's unit-norm item embeddings (and the items' classes), the (concepts x d) concept matrix and the run's
``LabelRule``. Out: ``histograms`` (concepts x bins counts, the calibration pass) and ``Scored`` (top-k ids and
scores, the score vectors in the storage dtype, each item's positive concept ids as CSR lists, and its review
uncertainty), everything a shard and a review task need, in item order.

Two engines give the same results within float tolerance (tests/pipelines/test_scoring.py):

- ``numpy`` (the CPU default): one matrix product per unit, the top-k from the run's concept index, the rule's
  margins in numpy;
- ``torch`` (``--embedding-device cuda``; also runs on the CPU, which is how CI checks it): the unit goes to the
  device once, and the product, top-k, histogram, margins and positives are computed there; only what the shard
  keeps comes back (the scores already in the storage dtype, the positives as index pairs).

Labels are decided on the stored scores (float16 shards decide on float16 scores), so a reader that re-decides
from a shard gets the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conceptkit.pipelines.annotation.labels import _EPS, LabelRule
from conceptkit.pipelines.annotation.thresholds import BINS, HIGH, LOW, score_histograms
from conceptkit.schemas.annotations import as_stored

ENGINES = ("numpy", "torch")


@dataclass
class Scored:
    """Row i is item i of the unit; its positives are ``positive_ids[positive_indptr[i]:positive_indptr[i+1]]``
    (ascending concept ids)."""

    top_ids: np.ndarray  # (n, k) int32, best first
    top_scores: np.ndarray  # (n, k) float32
    scores: np.ndarray  # (n, concepts) in the storage dtype
    positive_indptr: np.ndarray  # (n + 1,) int64
    positive_ids: np.ndarray  # int32
    uncertainty: np.ndarray  # (n,) float64: exp(-min |margin|), 1 on the decision boundary


def engine_for(device: str | None) -> tuple[str, str]:
    """(engine, torch device) for an embedding device: a CUDA device scores with torch there, anything else
    with numpy."""
    if device and str(device).startswith("cuda"):
        return "torch", str(device)
    return "numpy", "cpu"


class UnitScorer:
    """One concept set on one engine; ``annotate`` needs the rule, ``histograms`` does not."""

    def __init__(self, matrix: np.ndarray, *, top_k: int, score_dtype: str = "float32", engine: str = "numpy",
                 device: str = "cpu", index=None) -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.k = min(top_k, self.matrix.shape[0])
        self.score_dtype = score_dtype
        self.engine = engine
        self.index = index  # a ConceptIndex for the numpy engine's top-k (the torch engine takes it on the device)
        self._torch = None
        if engine == "torch":
            import torch

            self._torch = torch
            self.device = torch.device(device)
            self._concepts = torch.from_numpy(self.matrix).to(self.device)
            self._rule_key = None

    # ------------------------------------------------------------------ calibration
    def histograms(self, embeddings: np.ndarray) -> np.ndarray:
        """(concepts, BINS) int64 counts of the unit's scores (bins over [-1, 1], as ``score_histograms``)."""
        if self.engine == "numpy":
            return score_histograms(np.ascontiguousarray(embeddings, dtype=np.float32) @ self.matrix.T)
        torch = self._torch
        with torch.inference_mode():
            s = self._scores(embeddings)
            idx = ((s - LOW) / (HIGH - LOW) * BINS).long().clamp_(0, BINS - 1)
            idx += torch.arange(s.shape[1], device=self.device).mul_(BINS)[None, :]
            counts = torch.bincount(idx.reshape(-1), minlength=s.shape[1] * BINS)
        return counts.reshape(s.shape[1], BINS).cpu().numpy().astype(np.int64)

    # ------------------------------------------------------------------ annotation
    def annotate(self, embeddings: np.ndarray, labels, rule: LabelRule) -> Scored:
        if self.engine == "numpy":
            return self._annotate_numpy(embeddings, labels, rule)
        return self._annotate_torch(embeddings, labels, rule)

    def _annotate_numpy(self, embeddings, labels, rule: LabelRule) -> Scored:
        from conceptkit.annotators.embedding import annotate

        top_ids, top_scores, scores = annotate(embeddings, self.matrix, top_k=self.k, index=self.index)
        scores = as_stored(scores, self.score_dtype)
        margins = rule.margins(scores, labels)
        rows, cols = np.nonzero(margins >= 0)
        return Scored(top_ids=top_ids, top_scores=top_scores, scores=scores,
                      positive_indptr=_indptr(rows, len(margins)), positive_ids=cols.astype(np.int32),
                      uncertainty=np.exp(-np.abs(margins).min(axis=1)).astype(np.float64))

    def _scores(self, embeddings):
        torch = self._torch
        if isinstance(embeddings, torch.Tensor):  # a unit held on the device (units.keep_on_device)
            return embeddings.to(self.device) @ self._concepts.T
        items = torch.from_numpy(np.require(embeddings, np.float32, ["C", "W"]))  # a read-only Arrow view is copied
        if self.device.type == "cuda":
            items = items.pin_memory()
        return items.to(self.device, non_blocking=True) @ self._concepts.T

    def _to_host(self, x):
        """A device tensor copied (asynchronously) into page-locked host memory (copies into pageable memory ran
        at ~1.2 GB/s on the H200 machine: 8.7 s for a million float16 score vectors of 5,000). torch's caching
        host allocator reuses the pages once the arrays that view them (a shard being written) are gone."""
        if self.device.type != "cuda":
            return x
        host = self._torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        return host.copy_(x, non_blocking=True)

    def _rule_tensors(self, rule: LabelRule, labels):
        """The rule's per-concept vectors on the device (cached per rule) and each item's row of the class
        penalty table, or None without class context."""
        torch = self._torch
        key = id(rule)
        if self._rule_key != key:
            m = rule.n_concepts
            cut = np.zeros(m, dtype=np.float32)
            for cid, value in rule.refits.items():
                if 0 <= cid < m:
                    cut[cid] = np.float32(value)
            self._mean = torch.from_numpy(np.asarray(rule.mean, dtype=np.float32)).to(self.device)
            self._std = torch.from_numpy(np.maximum(np.asarray(rule.std, dtype=np.float32), _EPS)).to(self.device)
            self._cut = torch.from_numpy(cut).to(self.device)
            # One row per known class and a last row of zeros (no class, or an unknown one): the rule's own
            # class_penalty, gathered per item on the device.
            known = sorted({c for cs in rule.classes for c in cs})
            table = rule.class_penalty([*known, None])
            self._class_row = {label: r for r, label in enumerate(known)}
            self._penalty = None if table is None else torch.from_numpy(table).to(self.device)
            self._rule_key = key
        if labels is None or self._penalty is None:
            return None
        none_row = self._penalty.shape[0] - 1
        rows = np.array([self._class_row.get(label, none_row) for label in labels], dtype=np.int64)
        return torch.from_numpy(rows).to(self.device)

    def _annotate_torch(self, embeddings, labels, rule: LabelRule) -> Scored:
        torch = self._torch
        n = len(embeddings)
        store = torch.float16 if self.score_dtype == "float16" else torch.float32
        with torch.inference_mode():
            s = self._scores(embeddings)
            top_scores, top_ids = torch.topk(s, self.k, dim=1)  # ties: which of two equal scores is not pinned
            stored = s.to(store)
            decided = stored.float()
            penalty_rows = self._rule_tensors(rule, labels)
            z = (decided - self._mean) / self._std
            if rule.item_context:
                z = (z - z.mean(dim=1, keepdim=True)) / z.std(dim=1, unbiased=False, keepdim=True).clamp(min=_EPS)
            margins = z - rule.effective_z
            if penalty_rows is not None:
                margins -= self._penalty[penalty_rows]
            margins -= self._cut
            pairs = (margins >= 0).nonzero().int()
            uncertainty = torch.exp(-margins.abs().amin(dim=1))
            out = [self._to_host(x) for x in (top_ids.int(), top_scores, stored, pairs, uncertainty.double())]
            if self.device.type == "cuda":
                torch.cuda.current_stream(self.device).synchronize()
        top_ids, top_scores, stored, pairs, uncertainty = (x.numpy() for x in out)
        return Scored(top_ids=top_ids, top_scores=top_scores.astype(np.float32),
                      scores=stored if self.score_dtype == "float16" else stored.astype(np.float32),
                      positive_indptr=_indptr(pairs[:, 0], n), positive_ids=pairs[:, 1].astype(np.int32),
                      uncertainty=uncertainty)


def _indptr(rows: np.ndarray, n: int) -> np.ndarray:
    """CSR row pointers of sorted row indices."""
    return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
