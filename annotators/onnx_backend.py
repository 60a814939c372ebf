"""Sentence embeddings through ONNX Runtime: the CPU backend ``onnx`` (fp32) and ``onnx-int8`` (dynamic int8).

In: a local sentence-transformers model directory of the mean-pooled BERT kind (Transformer, mean Pooling,
Normalize; all-MiniLM-L6-v2 and most sentence-transformers text models). Out: unit-norm float32 vectors, like
``SentenceTransformer.encode(normalize_embeddings=True)``.

The graph (encoder, mean pooling over the attention mask, L2 normalisation) is exported once from the local
model with ``torch.onnx.export`` (no hub access) and, for ``onnx-int8``, quantised with ONNX Runtime's dynamic
int8 quantisation (MatMul weights int8 per channel, activations quantised per batch). Both files are cached under
``<cache>/onnx/<model digest>/`` (written to a temporary name, then renamed: two processes exporting at once
both end with a whole file). Texts are tokenised with the model's fast tokenizer and batched by length, as
sentence-transformers does, so short texts are not padded to long ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class BackendError(ValueError):
    """The model cannot run on the asked backend; the message names the model and why."""


def model_digest(model_dir: Path) -> str:
    """A digest of the model's files (names, sizes, config contents): a changed model gets a new export."""
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        h.update(f"{rel}\x1f{path.stat().st_size}\x1e".encode())
        if path.suffix == ".json":
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def check_supported(model_dir: Path) -> int:
    """The model's max sequence length, or ``BackendError`` if it is not Transformer + mean Pooling + Normalize."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling_dir = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
        pooling = json.loads((model_dir / pooling_dir / "config.json").read_text())
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise BackendError(f"model {model_dir}: cannot read its sentence-transformers modules ({exc})") from None
    mean = pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode") == "mean"  # older / newer format
    if types[:1] != ["Transformer"] or "Normalize" not in types or not mean:
        raise BackendError(f"model {model_dir}: the onnx backends support mean-pooled, normalised models "
                           f"(Transformer, Pooling mean, Normalize); this one has {types}; use --embedding-backend torch")
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        try:
            value = json.loads((model_dir / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, (int, float)) and 0 < value <= 8192:
            return int(value)
    return 512


def export(model_dir: Path, out_dir: Path, *, quantize: bool) -> Path:
    """The cached ONNX file for ``model_dir`` (exported, and quantised, on first use)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.onnx"
    target = out_dir / ("model-int8.onnx" if quantize else "model.onnx")
    if target.exists():
        return target
    if not fp32.exists():
        import torch
        from transformers import AutoModel, AutoTokenizer

        logger.info("exporting %s to ONNX (once; cached in %s)", model_dir, out_dir)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        encoder = AutoModel.from_pretrained(str(model_dir)).eval()

        class Pooled(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        sample = tokenizer(["a short text", "a somewhat longer text for the trace"], padding=True,
                           return_tensors="pt")
        if "token_type_ids" not in sample:
            sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
        tmp = out_dir / f".model-{uuid.uuid4().hex}.onnx"
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(Pooled(encoder).eval(), tuple(sample[k] for k in INPUTS), str(tmp),
                              input_names=list(INPUTS), output_names=["embedding"], opset_version=17,
                              dynamic_axes={**{k: {0: "batch", 1: "sequence"} for k in INPUTS},
                                            "embedding": {0: "batch"}}, dynamo=False)
        os.replace(tmp, fp32)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = out_dir / f".model-int8-{uuid.uuid4().hex}.onnx"
        # Per-channel int8 weights of the MatMuls only: per-tensor scales cost 0.03 of median cosine to torch
        # (0.965 against 0.9935 on the demo texts), and quantising the embedding Gather buys no speed.
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
        os.replace(tmp, target)
    return target


class OnnxEncoder:
    """Encode texts with an exported model through ONNX Runtime on the CPU."""

    def __init__(self, model_dir: str, *, backend: str, cache_dir: str | os.PathLike[str], threads: int = 1,
                 batch_size: int = 32) -> None:
        if backend not in ("onnx", "onnx-int8"):
            raise BackendError(f"unknown onnx backend {backend!r}; choose one of {BACKENDS}")
        import onnxruntime as ort
        from transformers import AutoTokenizer

        directory = Path(model_dir)
        self.max_length = check_supported(directory)
        path = export(directory, Path(cache_dir) / model_digest(directory), quantize=backend == "onnx-int8")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.batch_size = batch_size
        self.dimension = int(self.session.get_outputs()[0].shape[-1] or 0) or int(
            json.loads((directory / "config.json").read_text())["hidden_size"])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, like sentence-transformers
        for lo in range(0, len(texts), self.batch_size):
            idx = order[lo : lo + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            feed = {k: batch[k].astype(np.int64) for k in INPUTS if k in batch}
            if "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            out[idx] = self.session.run(None, feed)[0]
        return out
