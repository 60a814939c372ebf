"""Embedding and scoring on a CUDA GPU at the hardware's pace, for mean-pooled BERT-type sentence-transformers models.

Plain ``SentenceTransformer.encode`` on a fast GPU is bound by the host: it tokenises in the calling thread,
converts every batch through Python lists, and copies pageable memory. Here:

- texts are sorted by length and cut into batches, and the batches are tokenised ahead in worker processes
  (the Rust tokenizer from ``tokenizer.json``, padded per batch, int32 arrays back), so the GPU never waits for
  one Python thread;
- each batch goes to the GPU from pinned memory (non-blocking), the encoder runs in the model's dtype (float16 by
  default), and mean pooling, normalisation, the concept scores, the top-k and the per-concept thresholds are
  computed there;
- only what a shard needs comes back: top-k ids and scores, the positive labels (as concept id lists), and the
  score vector in the storage dtype asked for (``score_dtype``), straight into slices of pinned host buffers.

In: a local model directory (``onnx_backend.check_supported`` decides which ones), texts, and optionally unit-norm
concept vectors and thresholds. Out: ``encode`` gives unit-norm float32 vectors in input order, like
``SentenceTransformer.encode(normalize_embeddings=True)``; ``annotate`` gives an ``Annotated`` (top ids, top
scores, scores, positives) with rows in length order and the permutation that says which text each row is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_TOKENIZER = None


def _init_worker(tokenizer_file: str, max_length: int) -> None:
    global _TOKENIZER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker process; the processes are the parallelism
    from tokenizers import Tokenizer

    _TOKENIZER = Tokenizer.from_file(tokenizer_file)
    _TOKENIZER.enable_truncation(max_length)
    _TOKENIZER.no_padding()


def _tokenize(texts: list[str]) -> np.ndarray:
    """(n, longest) int32 token ids, 0-padded (BERT's [PAD] is 0)."""
    encodings = _TOKENIZER.encode_batch(texts)
    ids = [e.ids for e in encodings]
    width = max((len(x) for x in ids), default=1)
    out = np.zeros((len(ids), width), dtype=np.int32)
    for row, x in zip(out, ids):
        row[: len(x)] = x
    return out


class CudaEncoder:
    """One model on one CUDA device; a pool of tokenising processes (``workers``, default cores - 2)."""

    def __init__(self, model_dir: str, *, device: str = "cuda", dtype: str = "float16", batch_size: int = 1024,
                 workers: int | None = None, timeout_s: float = 300.0) -> None:
        import torch
        from transformers import AutoModel

        from conceptkit.annotators.onnx_backend import check_supported

        directory = Path(model_dir)
        self.max_length = check_supported(directory)
        self.tokenizer_file = str(directory / "tokenizer.json")
        if not Path(self.tokenizer_file).exists():
            raise ValueError(f"model {directory}: no tokenizer.json (the CUDA path needs a fast tokenizer file)")
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype)
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.workers = workers or max(1, (os.cpu_count() or 2) - 2)
        # The pool starts before CUDA work in this process would make fork unsafe: spawn is used regardless.
        self._pool = mp.get_context("spawn").Pool(self.workers, _init_worker, (self.tokenizer_file, self.max_length))
        self.model = AutoModel.from_pretrained(str(directory), torch_dtype=self.dtype).to(self.device).eval()
        self.dimension = int(self.model.config.hidden_size)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order
        try:
            self.close()
        except Exception:
            pass

    def _batches(self, texts: Sequence[str]):
        """(positions, token ids) per batch, longest texts first, tokenised ahead by the pool."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        tokenised = self._pool.imap(_tokenize, ([texts[i] for i in c] for c in chunks), chunksize=1)
        for chunk in chunks:
            try:  # bounded: a pool whose workers cannot start (or died) would otherwise wait forever
                ids = tokenised.next(timeout=self.timeout_s)
            except mp.TimeoutError:
                self.close()
                raise RuntimeError(f"the tokenizer worker processes gave no batch in {self.timeout_s:.0f} s "
                                   "(could they import conceptkit?)") from None
            yield chunk, ids

    def _embed(self, ids_host):
        import torch

        ids = torch.from_numpy(ids_host).pin_memory().to(self.device, non_blocking=True).long()
        mask = ids != 0
        hidden = self.model(input_ids=ids, attention_mask=mask.long(),
                            token_type_ids=torch.zeros_like(ids)).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled.float(), dim=1)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        # Rows land in length order in one pinned buffer, each batch copied back without waiting for it, so the
        # host queues the next batch while the GPU runs this one; one wait at the end, then input order.
        ordered = torch.empty((len(texts), self.dimension), dtype=torch.float32, pin_memory=True)
        order = np.empty(len(texts), dtype=np.int64)
        lo = 0
        with torch.inference_mode():
            for positions, ids in self._batches(texts):
                hi = lo + len(positions)
                order[lo:hi] = positions
                ordered[lo:hi].copy_(self._embed(ids), non_blocking=True)
                lo = hi
            torch.cuda.current_stream(self.device).synchronize()
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        out[order] = ordered.numpy()
        return out

    def annotate(self, texts: Sequence[str], concepts: np.ndarray, thresholds: np.ndarray, *, top_k: int,
                 score_dtype: str = "float32") -> "Annotated":
        """Scores of every text against ``concepts``, rows in length order (``Annotated.order`` says which text
        each row is): the GPU writes each batch straight into its slice of pinned host buffers, so nothing is
        copied twice; a caller writes its rows (item ids, labels, ...) in that order too."""
        import torch

        texts = list(texts)
        c = torch.from_numpy(np.ascontiguousarray(concepts, dtype=np.float32)).to(self.device, self.dtype)
        th = torch.from_numpy(np.asarray(thresholds, dtype=np.float32)).to(self.device)
        n, m, k = len(texts), c.shape[0], min(top_k, c.shape[0])
        store = getattr(torch, score_dtype)
        top_ids = torch.empty((n, k), dtype=torch.int32, pin_memory=True)
        top_scores = torch.empty((n, k), dtype=torch.float32, pin_memory=True)
        scores = torch.empty((n, m), dtype=store, pin_memory=True)
        order = np.empty(n, dtype=np.int64)
        positives: list = []  # (rows, cols) per batch, on the host once its event fired
        pending = []
        lo = 0
        with torch.inference_mode():
            for positions, ids in self._batches(texts):
                hi = lo + len(positions)
                order[lo:hi] = positions
                emb = self._embed(ids).to(self.dtype)
                s = (emb @ c.T).float()
                ts, ti = torch.topk(s, k, dim=1)
                top_ids[lo:hi].copy_(ti.int(), non_blocking=True)
                top_scores[lo:hi].copy_(ts, non_blocking=True)
                scores[lo:hi].copy_(s.to(store), non_blocking=True)
                nz = (s >= th).nonzero().int()
                nz[:, 0] += lo
                host_nz = nz.to("cpu", non_blocking=True)
                event = torch.cuda.Event()
                event.record()
                pending.append((event, host_nz))
                if len(pending) > 2:
                    event, host_nz = pending.pop(0)
                    event.synchronize()
                    positives.append(host_nz)
                lo = hi
            for event, host_nz in pending:
                event.synchronize()
                positives.append(host_nz)
        pairs = torch.cat(positives).numpy() if positives else np.zeros((0, 2), dtype=np.int32)
        counts = np.bincount(pairs[:, 0], minlength=n) if len(pairs) else np.zeros(n, dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return Annotated(order=order, top_ids=top_ids.numpy(), top_scores=top_scores.numpy(), scores=scores.numpy(),
                         positive_indptr=indptr, positive_ids=pairs[:, 1].astype(np.int32))


@dataclass
class Annotated:
    """Row i is the text ``order[i]``; its positive concepts (score >= threshold) are
    ``positive_ids[positive_indptr[i]:positive_indptr[i + 1]]`` (ascending)."""

    order: np.ndarray
    top_ids: np.ndarray
    top_scores: np.ndarray
    scores: np.ndarray
    positive_indptr: np.ndarray
    positive_ids: np.ndarray
