"""The ONNX Runtime backends give the torch backend's vectors within tolerance, are exported once and cached,
and refuse what they cannot run with a one-line reason."""

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from conceptkit.annotators.embedding import TextEmbedder
from conceptkit.annotators.onnx_backend import BackendError, check_supported
from conftest import DEMO_ITEMS

MODEL = "packaged:all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def texts():
    import csv

    with open(DEMO_ITEMS, newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return rows[:120] + ["", "x", "a much longer text " * 40]


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def reference(texts):
    return TextEmbedder(MODEL, batch_size=32).encode(texts)


@pytest.mark.parametrize("backend,min_cos", [("onnx", 0.9999), ("onnx-int8", 0.97)])
def test_backends_agree_with_torch(texts, reference, onnx_dir, backend, min_cos):
    emb = TextEmbedder(MODEL, backend=backend, onnx_dir=onnx_dir, batch_size=16)
    vectors = emb.encode(texts)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cos = (vectors * reference).sum(axis=1)
    assert cos.min() >= min_cos, (backend, float(cos.min()))
    # nearest neighbours agree: the top-5 of each text among the others, as annotation ranks concepts
    sims, ref_sims = vectors @ vectors.T, reference @ reference.T
    overlap = np.mean([len(set(np.argsort(-sims[i])[:5]) & set(np.argsort(-ref_sims[i])[:5])) / 5
                       for i in range(len(texts))])
    assert overlap >= (0.99 if backend == "onnx" else 0.8), overlap
    assert emb.model_id.endswith(f"|{backend}")  # their own embedding cache entries


def test_export_is_cached_and_reused(onnx_dir, texts):
    TextEmbedder(MODEL, backend="onnx-int8", onnx_dir=onnx_dir).encode(texts[:2])
    files = sorted(p.name for p in onnx_dir.rglob("*.onnx"))
    assert files == ["model-int8.onnx", "model.onnx"]  # no temporary files left
    stamp = {p: p.stat().st_mtime_ns for p in onnx_dir.rglob("*.onnx")}
    import conceptkit.annotators.embedding as embedding

    embedding._LOADED.clear()  # a new process: loads the cached files, exports nothing
    TextEmbedder(MODEL, backend="onnx-int8", onnx_dir=onnx_dir).encode(texts[:2])
    assert {p: p.stat().st_mtime_ns for p in onnx_dir.rglob("*.onnx")} == stamp


def test_unsupported_models_and_devices_are_refused(tmp_path):
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                        "type": "sentence_transformers.models.Transformer"},
                                                       {"idx": 1, "name": "1", "path": "1_Pooling",
                                                        "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(BackendError, match="mean-pooled"):
        check_supported(tmp_path)
    with pytest.raises(BackendError, match="runs on the CPU"):
        TextEmbedder(MODEL, backend="onnx", device="cuda")
    with pytest.raises(BackendError, match="unknown embedding backend"):
        TextEmbedder(MODEL, backend="tensorrt")


def test_a_build_on_the_int8_backend(tmp_path, fake_llm, monkeypatch):
    from conftest import demo_rows, fake_overrides, write_csv
    from conceptkit.pipelines.build import run_build
    from conceptkit.pipelines.config import load_config

    monkeypatch.setenv("CONCEPTKIT_ONNX_CACHE", str(tmp_path / "onnx"))
    items = write_csv(tmp_path / "items.csv", demo_rows(per_class=6, classes=["cooking", "sports", "weather"]))
    cfg = load_config(None, fake_overrides(fake_llm, tmp_path, items, embedding={"backend": "onnx-int8"}))
    summary = run_build(cfg)
    assert summary.counts["concepts_selected"] > 0
    manifest = json.loads((cfg.out_dir() / "manifest.json").read_text())
    assert manifest["config"]["embedding"]["backend"] == "onnx-int8"
    assert (tmp_path / "onnx").is_dir()
