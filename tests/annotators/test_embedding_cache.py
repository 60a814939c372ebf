import numpy as np

from conceptkit.annotators.embedding_cache import EmbeddingCache


def fake_encode(calls):
    def encode(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    return encode


def test_only_unseen_content_is_encoded(tmp_path):
    calls = []
    cache = EmbeddingCache(tmp_path, "model-a", 3)
    v1, n1 = cache.embed(["a", "bb", "a"], fake_encode(calls))
    v2, n2 = cache.embed(["bb", "ccc"], fake_encode(calls))
    assert (n1, n2) == (2, 1) and calls == [["a", "bb"], ["ccc"]]
    assert v1[0].tolist() == v1[2].tolist() == [1, 1, 0] and v2[1].tolist() == [3, 1, 0]


def test_models_do_not_share_vectors(tmp_path):
    calls = []
    EmbeddingCache(tmp_path, "model-a", 3).embed(["x"], fake_encode(calls))
    _, n = EmbeddingCache(tmp_path, "model-b", 3).embed(["x"], fake_encode(calls))
    assert n == 1 and len(list(tmp_path.glob("embeddings-*.sqlite"))) == 2
