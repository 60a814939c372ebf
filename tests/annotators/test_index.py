import numpy as np
import pytest

from conceptkit.annotators.index import ConceptIndex


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_kinds_save_load_and_find_neighbours(tmp_path, kind):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 2100)
    index = ConceptIndex.build(vectors, ids, model="m", concepts=[str(i) for i in ids], kind=kind)
    index.save(tmp_path)
    loaded = ConceptIndex.load(tmp_path)
    assert loaded.description["kind"] == kind and loaded.description["count"] == 2000
    scores, found = loaded.search(vectors[:50], 10)
    assert (found[:, 0] == ids[:50]).mean() >= 0.9  # each vector finds itself (approximate kinds may miss a few)
    assert np.allclose(scores[:, 0][found[:, 0] == ids[:50]], 1.0, atol=1e-4)


def test_auto_switches_to_hnsw_above_the_threshold():
    v = np.eye(8, dtype=np.float32)
    assert ConceptIndex.build(v, np.arange(8), model="m", concepts=[], auto_threshold=100).description["kind"] == "flat"
    assert ConceptIndex.build(v, np.arange(8), model="m", concepts=[], auto_threshold=4).description["kind"] == "hnsw"


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="index kind must be"):
        ConceptIndex.build(np.eye(2, dtype=np.float32), np.arange(2), model="m", concepts=[], kind="lsh")
