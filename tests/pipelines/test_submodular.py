"""Tests for conceptkit.pipelines.selection.submodular: golden rankings, optimiser equivalence, bounds and errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from conceptkit.pipelines.selection import submodular as sm

# Five points on a line at 0, 1, 2, 6, 7: similarity 1 / (1 + distance).
POSITIONS = np.array([0.0, 1.0, 2.0, 6.0, 7.0])
LINE = 1.0 / (1.0 + np.abs(POSITIONS[:, None] - POSITIONS[None, :]))


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    return sm.normalize_rows(np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32))


# ---------------------------------------------------------------- golden


def test_facility_location_golden_line() -> None:
    selection = sm.facility_location_greedy(LINE, 3, optimizer="naive")
    # Point 1 is the centre of the left cluster: 1/2 + 1 + 1/2 + 1/6 + 1/7.
    assert selection.selected.tolist() == [1, 3, 0]
    np.testing.assert_allclose(
        selection.gains, [1 + 0.5 + 0.5 + 1 / 6 + 1 / 7, (1 - 1 / 6) + (0.5 - 1 / 7) + 0.0, 0.5], rtol=1e-6
    )
    np.testing.assert_allclose(selection.objective, selection.gains.sum(), rtol=1e-6)


GOLDEN_SELECTED = [7, 2, 3, 5, 0, 9]
GOLDEN_GAINS = [5.40841, 3.434015, 0.751731, 0.485649, 0.44144, 0.388398]


def test_facility_location_golden_random_cosine() -> None:
    x = _unit(12, 4, seed=7)
    for optimizer in ("naive", "lazy"):
        selection = sm.facility_location_greedy(x @ x.T, 6, optimizer=optimizer)
        assert selection.selected.tolist() == GOLDEN_SELECTED
        np.testing.assert_allclose(selection.gains, GOLDEN_GAINS, atol=2e-6)
    expected_first = float(np.maximum(x @ x.T, 0)[:, 7].sum())
    assert selection.gains[0] == pytest.approx(expected_first, rel=1e-6)


def test_labo_discriminability_golden() -> None:
    association = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 2.0], [-0.3, 0.4]])
    raw = sm.labo_discriminability(association, normalize=False)
    # Class sums after clipping: 1.5 and 2.9; p(y) = 1/2.
    q = np.array([[1 / 1.5, 0.0], [0.5 / 1.5, 0.5 / 2.9], [0.0, 2 / 2.9], [0.0, 0.4 / 2.9]])
    p_cy = q / 2
    p_c = p_cy.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.where(p_cy > 0, p_cy * np.log(p_cy / (p_c * 0.5)), 0.0).sum(axis=1)
    np.testing.assert_allclose(raw, expected, rtol=1e-5)
    assert raw[1] < raw[0]  # shared evenly-ish across classes: less discriminative
    normalised = sm.labo_discriminability(association)
    assert normalised.max() == pytest.approx(1.0)


def test_labo_discriminability_uniform_concept_is_zero() -> None:
    association = np.array([[0.2, 0.2, 0.2], [0.9, 0.1, 0.0], [0.1, 0.2, 0.3]])
    mass = association.sum(axis=0)
    association[0] = mass / mass.sum() * 0.3 * 3  # p(c|y) equal across classes
    raw = sm.labo_discriminability(association, normalize=False)
    assert raw.min() >= 0
    assert raw[1] > raw[0]


# ---------------------------------------------------------------- optimiser properties

similarities = st.builds(
    lambda n, d, seed: (lambda x: x @ x.T)(
        np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    ),
    st.integers(2, 40),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
)


# Small integer similarities: many exact ties, which must go to the lowest index in both optimisers.
tied_similarities = st.builds(
    lambda n, seed: (lambda a: (a + a.T).astype(np.float32))(np.random.default_rng(seed).integers(-1, 3, size=(n, n))),
    st.integers(2, 25),
    st.integers(0, 2**31 - 1),
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(similarities, tied_similarities), st.data())
def test_lazy_equals_naive_dense(similarity: np.ndarray, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, similarity.shape[0]))
    objective = sm.FacilityLocation(similarity)
    naive = sm.naive_greedy(objective, k)
    lazy = sm.lazy_greedy(objective, k)
    assert naive.selected.tolist() == lazy.selected.tolist()
    assert naive.gains.tolist() == lazy.gains.tolist()
    assert np.all(np.diff(naive.gains) <= 0)
    assert naive.objective == pytest.approx(naive.gains.sum(), rel=1e-5, abs=1e-5)


@settings(max_examples=100, deadline=None)
@given(st.integers(5, 60), st.integers(1, 5), st.integers(0, 2**31 - 1), st.data())
def test_lazy_equals_naive_sparse_knn(n: int, neighbors: int, seed: int, data: st.DataObject) -> None:
    x = _unit(n, 8, seed)
    objective = sm.FacilityLocation(sm.knn_graph(x, neighbors))
    k = data.draw(st.integers(1, n))
    naive = sm.naive_greedy(objective, k)
    lazy = sm.lazy_greedy(objective, k)
    assert naive.selected.tolist() == lazy.selected.tolist()
    assert naive.gains.tolist() == lazy.gains.tolist()
    assert np.all(np.diff(naive.gains) <= 1e-12)


def _objectives(similarity: np.ndarray, features: np.ndarray) -> dict[str, sm.Objective]:
    symmetric = (similarity + similarity.T) / 2
    return {
        "graph_cut": sm.GraphCut(symmetric, lam=0.3),
        "saturated": sm.SaturatedCoverage(similarity, gamma=0.3),
        "feature": sm.FeatureBased(features, concave="sqrt"),
        "feature_log": sm.FeatureBased(features, concave="log1p"),
        "mixture": sm.Mixture(
            [(1.0, sm.FacilityLocation(similarity)), (0.5, sm.Modular(features[:, 0])), (0.2, sm.GraphCut(symmetric))]
        ),
    }


@settings(max_examples=60, deadline=None)
@given(st.one_of(similarities, tied_similarities), st.integers(0, 2**31 - 1), st.data())
def test_lazy_equals_naive_other_objectives(similarity: np.ndarray, seed: int, data: st.DataObject) -> None:
    n = similarity.shape[0]
    features = np.random.default_rng(seed).exponential(size=(n, 3))
    k = data.draw(st.integers(1, n))
    for name, objective in _objectives(similarity, features).items():
        naive = sm.naive_greedy(objective, k)
        lazy = sm.lazy_greedy(objective, k)
        assert naive.selected.tolist() == lazy.selected.tolist(), name
        np.testing.assert_allclose(naive.gains, lazy.gains, rtol=1e-12, err_msg=name)
        assert np.all(np.diff(naive.gains) <= 1e-9), name


def _brute_force(objective: sm.Objective, k: int) -> float:
    best = -math.inf
    for subset in itertools.combinations(range(objective.n), k):
        state = objective.init_state()
        for j in subset:
            objective.update(state, j)
        best = max(best, objective.value(state))
    return best


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 8), st.integers(1, 4), st.integers(0, 2**31 - 1), st.data())
def test_greedy_within_bound_of_brute_force(n: int, d: int, seed: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, min(n, 3)))
    x = np.random.default_rng(seed).normal(size=(n, d))
    features = np.abs(x)
    for objective in [sm.FacilityLocation(x @ x.T), *_objectives(x @ x.T, features).values()]:
        optimum = _brute_force(objective, k)
        greedy_value = sm.lazy_greedy(objective, k).objective
        assert greedy_value <= optimum + 1e-6
        assert greedy_value >= (1 - 1 / math.e) * optimum - 1e-6


def test_stochastic_is_seeded_and_close() -> None:
    x = _unit(400, 8, seed=3)
    first = sm.facility_location_greedy(x, 40, metric="cosine", optimizer="stochastic", seed=5)
    second = sm.facility_location_greedy(x, 40, metric="cosine", optimizer="stochastic", seed=5)
    assert first.selected.tolist() == second.selected.tolist()
    exact = sm.facility_location_greedy(x, 40, metric="cosine")
    assert first.objective >= 0.95 * exact.objective
    assert len(set(first.selected.tolist())) == 40


def test_symmetric_flag_matches_transposed_path() -> None:
    x = _unit(50, 5, seed=9)
    similarity = x @ x.T
    plain = sm.lazy_greedy(sm.FacilityLocation(similarity), 10)
    symmetric = sm.lazy_greedy(sm.FacilityLocation(similarity, symmetric=True), 10)
    assert plain.selected.tolist() == symmetric.selected.tolist()
    assert plain.gains.tolist() == symmetric.gains.tolist()
    with pytest.raises(ValueError, match="must be square when symmetric=True"):
        sm.FacilityLocation(similarity[:, :10], symmetric=True)


def test_pruned_large_problem_lazy_equals_naive() -> None:
    # Above _PRUNE_MIN_GROUND the dense rows switch to live sparse entries; both optimisers see it.
    x = _unit(1500, 16, seed=13)
    objective = sm.FacilityLocation.from_embeddings(x)
    naive = sm.naive_greedy(objective, 40)
    lazy = sm.lazy_greedy(objective, 40)
    assert naive.selected.tolist() == lazy.selected.tolist()
    assert naive.gains.tolist() == lazy.gains.tolist()
    assert lazy.objective == pytest.approx(lazy.gains.sum(), rel=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_loops_match_numpy(monkeypatch, threads) -> None:
    # kernels.py's loops (numba) against the numpy path: the same picks, gains to float32 rounding, lazy == naive
    # with the loops, on a problem that prunes (above _PRUNE_MIN_GROUND) and on a thread pool.
    from conceptkit.pipelines.selection import kernels

    pytest.importorskip("numba")
    x = _unit(1500, 16, seed=17)
    similarity = np.maximum(x @ x.T, 0)
    monkeypatch.setattr(sm, "_PARALLEL_MIN_ELEMENTS", 1 << 14)
    sm.set_threads(threads)
    try:
        monkeypatch.setenv("CONCEPTKIT_NUMBA", "0")
        assert kernels.load() is None
        plain = sm.lazy_greedy(sm.FacilityLocation(similarity, symmetric=True), 60)
        monkeypatch.setenv("CONCEPTKIT_NUMBA", "1")
        monkeypatch.setattr(sm, "_KERNEL_MIN_ELEMENTS", 0)
        objective = sm.FacilityLocation(similarity, symmetric=True)
        assert objective._kernels() is not None
        lazy, naive = sm.lazy_greedy(objective, 60), sm.naive_greedy(sm.FacilityLocation(similarity, symmetric=True), 60)
    finally:
        sm.set_threads(None)
    assert lazy.selected.tolist() == naive.selected.tolist() and lazy.gains.tolist() == naive.gains.tolist()
    assert lazy.selected.tolist() == plain.selected.tolist()
    np.testing.assert_allclose(lazy.gains, plain.gains, rtol=1e-5)


def test_compiled_lazy_steps_equal_naive_with_ties(monkeypatch) -> None:
    # After the first prune, lazy greedy runs in kernels.py's heap loop (lazy_sparse) between prunes; with duplicate
    # points (exact ties everywhere) it must still pick what naive greedy picks, lowest index first, through
    # several prunes (32, 64, 128, 256 picks).
    pytest.importorskip("numba")
    monkeypatch.setattr(sm, "_KERNEL_MIN_ELEMENTS", 0)
    x = _unit(800, 12, seed=23)
    x = np.concatenate([x, x[::3]])  # every third point twice: equal rows, equal gains
    similarity = np.maximum(x @ x.T, 0)
    objective = sm.FacilityLocation(similarity, symmetric=True)
    runs = []
    original = objective.lazy_steps

    def spy(*args):
        result = original(*args)
        runs.append(result is not None and len(result[0]))
        return result

    monkeypatch.setattr(objective, "lazy_steps", spy)
    lazy = sm.lazy_greedy(objective, 300)
    naive = sm.naive_greedy(sm.FacilityLocation(similarity, symmetric=True), 300)
    assert sum(r for r in runs if r) == 300 - 32 and len([r for r in runs if r]) >= 4
    assert lazy.selected.tolist() == naive.selected.tolist()
    assert lazy.gains.tolist() == naive.gains.tolist()
    assert lazy.objective == naive.objective


def test_on_the_fly_matches_precomputed() -> None:
    x = _unit(300, 8, seed=11)
    dense = sm.lazy_greedy(sm.FacilityLocation.from_embeddings(x), 30)
    on_demand = sm.lazy_greedy(sm.FacilityLocation.from_embeddings(x, max_dense_bytes=0), 30)
    np.testing.assert_allclose(on_demand.objective, dense.objective, rtol=1e-5)


def test_knn_facility_location_close_to_dense() -> None:
    x = _unit(300, 8, seed=2)
    dense = sm.facility_location_greedy(x, 30, metric="cosine")
    sparse = sm.facility_location_greedy(x, 30, metric="knn", n_neighbors=30)
    dense_value_of_sparse = sm.FacilityLocation(x @ x.T)
    state = dense_value_of_sparse.init_state()
    for j in sparse.selected:
        dense_value_of_sparse.update(state, int(j))
    assert dense_value_of_sparse.value(state) >= 0.97 * dense.objective


def test_knn_graph_approximate_path_has_exact_similarities() -> None:
    x = _unit(3000, 16, seed=4)
    graph = sm.knn_graph(x, 10, exact_below=0, search_dim=8)
    rows, cols = graph.nonzero()
    np.testing.assert_allclose(graph.data, np.einsum("id,id->i", x[rows], x[cols]), rtol=1e-5, atol=1e-6)
    exact = sm.knn_graph(x, 10)
    ivf = sm.knn_graph(x, 10, exact_below=0, search_dim=None)
    overlap = np.mean([len(set(ivf[i].indices) & set(exact[i].indices)) / 10 for i in range(0, 3000, 30)])
    # Uniform random vectors are the hard case for an inverted file (real embeddings: recall 0.99 at 1M in the
    # benchmark); probing every cell is exact search, so the blocks themselves lose nothing.
    assert overlap > 0.45
    every_cell = sm.knn_graph(x, 10, exact_below=0, search_dim=None, nprobe=3000)
    np.testing.assert_allclose(every_cell.toarray(), exact.toarray(), atol=1e-5)


def test_knn_graph_torch_path_equals_exact_search() -> None:
    """The GPU path's arithmetic (blocks, top-k, float32 recompute), run by torch on the CPU: the same graph
    as FAISS's exact search, including across block boundaries."""
    x = _unit(1500, 16, seed=5)
    exact = sm.knn_graph(x, 7, device="cpu")
    sims, ids = sm._knn_torch(x, 7, block=256, device="cpu", dtype="float32")
    torch_graph = sm._knn_csr(sims, ids, len(x))
    np.testing.assert_allclose(torch_graph.toarray(), exact.toarray(), atol=1e-5)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(np.stack([exact[i].indices for i in range(len(x))]), axis=1))


def test_knn_graph_device_choices() -> None:
    x = _unit(200, 8, seed=6)
    with pytest.raises(ValueError, match="device"):
        sm.knn_graph(x, 5, device="tpu")
    if not sm._cuda_available():
        with pytest.raises(ValueError, match="CUDA GPU"):
            sm.knn_graph(x, 5, device="cuda")
        # auto without a GPU is the CPU path
        assert (sm.knn_graph(x, 5, device="auto", exact_below=0) != sm.knn_graph(x, 5, device="cpu", exact_below=0)).nnz == 0


def test_negative_similarities_clip_and_shift() -> None:
    similarity = -np.ones((4, 4)) + 2 * np.eye(4)
    clipped = sm.facility_location_greedy(similarity, 2)
    assert clipped.gains.tolist() == [1.0, 1.0]
    shifted = sm.facility_location_greedy(similarity, 2, negative="shift")
    assert shifted.gains.tolist() == [2.0, 2.0]
    sparse = sm.facility_location_greedy(sp.csr_matrix(similarity), 2)
    assert sparse.gains.tolist() == [1.0, 1.0]


# ---------------------------------------------------------------- LaBo


def _labo_problem(seed: int, n: int = 60, classes: int = 4, per_class: int = 15, shared: int = 6):
    rng = np.random.default_rng(seed)
    x = _unit(n, 6, seed)
    x[: n // 4] = x[n // 4 : n // 2]  # duplicate concepts: exact ties
    membership = np.zeros((n, classes), dtype=bool)
    for c in range(classes):
        membership[rng.choice(n, size=per_class, replace=False), c] = True
    for j in rng.choice(n, size=shared, replace=False):
        membership[j, rng.integers(classes)] = True
    association = x @ _unit(classes, 6, seed + 1).T
    return x, membership, association


def _labo_objective(x, membership, association, selected, alpha, beta) -> float:
    d = np.zeros(len(x)) if association is None else sm.labo_discriminability(association)
    total = 0.0
    chosen = set(selected.tolist())
    for c in range(membership.shape[1]):
        cands = np.flatnonzero(membership[:, c])
        picked = [j for j in cands if j in chosen]
        if not picked:
            continue
        sim = np.maximum(x[cands] @ x[picked].T, 0)
        total += alpha * d[picked].sum() + beta * sim.max(axis=1).sum() / len(cands)
    return total


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 8), st.booleans(), st.sampled_from([(1.0, 1.0), (0.0, 1.0), (2.0, 0.5)]))
def test_labo_lazy_equals_naive(seed: int, k: int, labelled: bool, weights: tuple[float, float]) -> None:
    x, membership, association = _labo_problem(seed)
    association = association if labelled else None
    alpha, beta = weights
    runs = {
        optimizer: sm.select_labo(
            x, membership, class_association=association, k_per_class=k, alpha=alpha, beta=beta, optimizer=optimizer
        )
        for optimizer in ("naive", "lazy")
    }
    naive, lazy = runs["naive"], runs["lazy"]
    assert naive.selected.tolist() == lazy.selected.tolist()
    assert naive.gains.tolist() == lazy.gains.tolist()
    assert naive.picked_for.tolist() == lazy.picked_for.tolist()
    assert len(set(naive.selected.tolist())) == len(naive.selected)
    credited = membership[naive.selected].sum(axis=1)
    np.testing.assert_allclose(naive.gains, alpha * naive.discriminability * credited + naive.coverage_gain, rtol=1e-9)
    expected = _labo_objective(x, membership, association, naive.selected, alpha, beta)
    assert naive.objective == pytest.approx(expected, rel=1e-4)
    # Budgets: no class picks more than k on its own; every pick is a member of its class.
    assert np.all(np.bincount(naive.picked_for, minlength=membership.shape[1]) <= k)
    assert np.all(membership[naive.selected, naive.picked_for])
    assert np.all(naive.ranks < k)
    if not labelled:
        assert np.all(naive.discriminability == 0)


def test_labo_budget_filled_and_global_cap() -> None:
    x, membership, association = _labo_problem(1, shared=0)
    full = sm.select_labo(x, membership, class_association=association, k_per_class=5)
    counts = membership[full.selected].sum(axis=0)
    assert np.all(counts >= 5)
    capped = sm.select_labo(x, membership, class_association=association, k_per_class=5, global_budget=7)
    assert len(capped.selected) == 7
    assert capped.selected.tolist() == full.selected[:7].tolist() or len(set(capped.picked_for.tolist())) >= 4


def test_labo_shared_concept_selected_once_and_counts_for_each() -> None:
    # Concept 0 belongs to both classes and is everyone's best representative.
    x = sm.normalize_rows(np.array([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.9, 0.3], [0.9, -0.3]], dtype=np.float32))
    membership = np.array([[1, 1], [1, 0], [1, 0], [0, 1], [0, 1]], dtype=bool)
    result = sm.select_labo(x, membership, class_association=None, k_per_class=1)
    assert result.selected.tolist() == [0]
    assert result.picked_for.tolist() == [0]
    assert result.ranks.tolist() == [0]


@pytest.mark.parametrize("optimizer", ["naive", "lazy", "stochastic"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labo_no_class_holds_more_than_k(optimizer: str, seed: int) -> None:
    """Shared concepts count for every class they belong to, and a full class takes none: every class holds at
    most k, and a class short of k has no candidate left that it could still take."""
    x, membership, association = _labo_problem(seed, per_class=12, shared=30)
    k = 5
    result = sm.select_labo(x, membership, class_association=association, k_per_class=k, optimizer=optimizer, seed=seed)
    held = membership[result.selected].sum(axis=0)
    assert held.max() <= k
    chosen = set(result.selected.tolist())
    full = held >= k
    for c in np.flatnonzero(~full):  # short: every candidate left is shared with a full class
        left = [j for j in np.flatnonzero(membership[:, c]) if j not in chosen]
        assert all(membership[j][full].any() for j in left)


def test_labo_full_class_blocks_the_concepts_it_shares() -> None:
    # Class 0 holds one concept (k = 1) and fills first; concept 1, class 1's best, is class 0's too: class 1 must
    # take concept 2 instead (before, concept 1 joined class 0 as a second concept).
    x = sm.normalize_rows(np.array([[1.0, 0.0], [0.0, 1.0], [0.2, 1.0]], dtype=np.float32))
    membership = np.array([[1, 0], [1, 1], [0, 1]], dtype=bool)
    association = np.array([[0.9, 0.0], [0.1, 0.5], [0.0, 0.4]])
    for optimizer in ("naive", "lazy"):
        result = sm.select_labo(x, membership, class_association=association, k_per_class=1, optimizer=optimizer)
        assert sorted(result.selected.tolist()) == [0, 2], optimizer
        assert membership[result.selected].sum(axis=0).tolist() == [1, 1]


def test_labo_small_class_takes_all_candidates() -> None:
    x, membership, association = _labo_problem(4, classes=2, per_class=3, shared=0)
    result = sm.select_labo(x, membership, class_association=association, k_per_class=10)
    assert sorted(result.selected.tolist()) == np.flatnonzero(membership.any(axis=1)).tolist()


def test_labo_budgets_above_candidate_count_take_everything() -> None:
    x, membership, association = _labo_problem(2)
    result = sm.select_labo(x, membership, class_association=association, k_per_class=1000, global_budget=1000)
    assert sorted(result.selected.tolist()) == np.flatnonzero(membership.any(axis=1)).tolist()


def test_labo_stochastic_seeded() -> None:
    x, membership, association = _labo_problem(5)
    runs = [
        sm.select_labo(x, membership, class_association=association, k_per_class=4, optimizer="stochastic", seed=3)
        for _ in range(2)
    ]
    assert runs[0].selected.tolist() == runs[1].selected.tolist()
    assert np.all(np.bincount(runs[0].picked_for, minlength=4) <= 4)


def test_labo_negative_association_does_not_crash() -> None:
    x, membership, association = _labo_problem(6)
    result = sm.select_labo(x, membership, class_association=association - 1.0, k_per_class=3)
    assert np.all(np.isfinite(result.gains))
    assert np.all(result.discriminability == 0)  # everything clipped: no evidence


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: sm.facility_location_greedy(np.zeros((0, 0)), 1), "`similarity` must be non-empty"),
        (lambda: sm.facility_location_greedy(LINE, 0), "`k` must be >= 1, got 0"),
        (lambda: sm.facility_location_greedy(LINE, 6), "`k`=6 exceeds the number of candidates n=5"),
        (lambda: sm.facility_location_greedy(LINE, 2.0), "`k` must be an int"),
        (lambda: sm.facility_location_greedy(np.where(np.eye(5) > 0, np.nan, LINE), 2), "`similarity` must be finite"),
        (lambda: sm.facility_location_greedy(np.where(np.eye(5) > 0, np.inf, LINE), 2), "`similarity` must be finite"),
        (lambda: sm.facility_location_greedy(np.ones(5), 2), "`similarity` must be 2-D"),
        (lambda: sm.facility_location_greedy(LINE, 2, optimizer="fast"), "`optimizer` must be one of"),
        (lambda: sm.facility_location_greedy(LINE, 2, metric="l2"), "`metric` must be one of"),
        (lambda: sm.facility_location_greedy(LINE, 2, negative="abs"), "`negative` must be one of"),
        (lambda: sm.facility_location_greedy(LINE, 2, optimizer="stochastic", epsilon=0), "`epsilon` must be in"),
        (lambda: sm.facility_location_greedy(sp.csr_matrix((3, 0)), 1), "`similarity` must be non-empty"),
        (lambda: sm.GraphCut(LINE, lam=0.8), "`lam` must be <= 0.5"),
        (lambda: sm.GraphCut(LINE[:, :3]), "`similarity` must be square"),
        (lambda: sm.FeatureBased(-LINE), "`features` must be non-negative"),
        (lambda: sm.Mixture([(1.0, sm.FacilityLocation(LINE)), (1.0, sm.Modular(np.ones(3)))]), "share one candidate count"),
    ],
)
def test_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        call()


def _labo_kwargs(**override):
    x, membership, association = _labo_problem(0)
    kwargs = dict(concept_embeddings=x, membership=membership, class_association=association, k_per_class=3)
    kwargs.update(override)
    return kwargs


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"k_per_class": 0}, "`k_per_class` must be >= 1, got 0"),
        ({"k_per_class": 2.5}, "`k_per_class` must be an int"),
        ({"global_budget": 0}, "`global_budget` must be >= 1"),
        ({"alpha": -1.0}, "`alpha` must be >= 0, got -1.0"),
        ({"beta": float("nan")}, "`beta` must be a finite number"),
        ({"alpha": 0.0, "beta": 0.0}, "cannot both be 0"),
        ({"membership": np.zeros((60, 4), dtype=int)}, "`membership` must be a bool array"),
        ({"membership": np.zeros((59, 4), dtype=bool)}, "`membership` must have shape"),
        ({"membership": np.zeros((60, 4), dtype=bool)}, "no candidate in any class"),
        ({"class_association": np.zeros((60, 3))}, "`class_association` must have shape"),
        ({"class_association": np.full((60, 4), np.nan)}, "`class_association` must be finite"),
        ({"concept_embeddings": np.zeros((0, 6))}, "`concept_embeddings` must be non-empty"),
        ({"concept_embeddings": np.full((60, 6), np.inf)}, "`concept_embeddings` must be finite"),
        ({"optimizer": "greedy"}, "`optimizer` must be one of"),
    ],
)
def test_labo_errors(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sm.select_labo(**_labo_kwargs(**override))


def test_direction_keeps_a_concept_from_being_picked_for_a_class_it_does_not_point_at():
    # Golden, hand-made: concept 0 ("sports") is a candidate of class 1 ("politics") only, but its association is
    # strongest for class 0 (sports items); concept 1 points at class 1, weakly but truly.
    association = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.2], [0.8, 0.1, 0.1], [0.1, 0.1, 0.9]])
    membership = np.array([[0, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=bool)
    x = np.eye(4, dtype=np.float32)

    def pick_for_politics(direction):
        r = sm.select_labo(x, membership, class_association=association, k_per_class=1, beta=0.0,
                           direction=direction)
        return dict(zip(r.picked_for.tolist(), r.selected.tolist()))[1]

    assert pick_for_politics("off") == 0  # mutual information alone: "sports" is picked for politics
    assert pick_for_politics("soft") == 1 and pick_for_politics("strongest") == 1
    soft = sm.class_direction(association, "soft")
    assert soft[0].tolist() == [1.0, 0.0, 0.0] and soft[1].tolist() == [0.0, 1.0, 0.0]
    assert sm.class_direction(np.array([[0.9, 0.7, 0.5, 0.1]]), "soft")[0] == pytest.approx([1, 1 / 3, 0, 0])
    assert sm.class_direction(association, "strongest")[0].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="direction"):
        sm.select_labo(x, membership, class_association=association, k_per_class=1, direction="sideways")


@pytest.mark.parametrize("metric", ["precomputed", "cosine"])
def test_threads_give_the_same_selection_as_one_thread(monkeypatch, metric):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1500, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = np.maximum(x @ x.T, 0) if metric == "precomputed" else x
    for name in ("_PARALLEL_MIN_ELEMENTS", "_PARALLEL_MIN_ON_DEMAND", "_PARALLEL_TASK_ELEMENTS"):
        monkeypatch.setattr(sm, name, 1)  # every batch through the pool, split over its threads
    monkeypatch.setattr(sm, "_PRUNE_MIN_GROUND", 64)
    results = {}
    for n in (1, 4):
        sm.set_threads(n)
        try:
            results[n] = sm.facility_location_greedy(data, 150, metric=metric)
        finally:
            sm.set_threads(None)
    assert results[1].selected.tolist() == results[4].selected.tolist()
    assert results[1].objective == pytest.approx(results[4].objective, rel=1e-9)
    naive = sm.facility_location_greedy(data, 150, metric=metric, optimizer="naive")
    assert naive.selected.tolist() == results[4].selected.tolist()
    with pytest.raises(ValueError, match="threads"):
        sm.set_threads(-1)
