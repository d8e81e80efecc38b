"""The pair and triplet losses against NumPy references, finite differences, errors.

``_loss_reference`` lists every pair and triplet explicitly and evaluates the
formulas term by term; the kernels never form a triplet (sorted ranks and
prefix sums) and share log-sum-exps per row, so agreement on batches with
duplicates, one class, singleton classes and mined tuples checks the
bookkeeping.  Gradients are checked by central differences in float64.
"""

import _loss_reference as ref
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmetric._threads
from fastmetric import _loss_common as lc
from fastmetric import losses

LOSSES = {
    "contrastive": (losses.contrastive_loss, ref.contrastive,
                    {"pos_margin": 0.1, "neg_margin": 1.2}),
    "triplet": (losses.triplet_margin_loss, ref.triplet, {"margin": 0.3}),
    "lifted": (losses.lifted_structure_loss, ref.lifted,
               {"pos_margin": 0.1, "neg_margin": 0.9}),
    "generalized_lifted": (losses.generalized_lifted_structure_loss,
                           ref.generalized_lifted,
                           {"pos_margin": 0.2, "neg_margin": 0.8}),
}
NAMES = list(LOSSES)
REDUCTIONS = ["avg_nonzero", "mean", "sum"]


def _layout(name, seed, B=12, m=4):
    """A batch and its labels for a named label layout."""
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((B, m))
    if name == "random":
        y = rng.integers(0, 3, B)
    elif name == "duplicates":  # identical rows, within and across classes
        y = rng.integers(0, 3, B)
        E[B // 2:] = E[: B - B // 2]
        E[1] = E[0]
    elif name == "single_class":
        y = np.zeros(B, dtype=int)
    elif name == "all_distinct":
        y = np.arange(B)
    elif name == "one_row":
        E, y = E[:1], np.array([7])
    elif name == "two_rows":
        E, y = E[:2], np.array([1, 2])
    elif name == "singletons_and_pairs":
        y = np.array([0, 0, 1, 2, 3, 3, 4, 5, 5, 5, 6, 7])[:B]
    else:
        raise AssertionError(name)
    return E, y


LAYOUTS = ["random", "duplicates", "single_class", "all_distinct", "one_row",
           "two_rows", "singletons_and_pairs"]


def _mined(seed, B, kind, n_tuples=15):
    rng = np.random.default_rng(seed)
    if kind == "triplets":
        return tuple(rng.integers(0, B, n_tuples) for _ in range(3))
    return (rng.integers(0, B, n_tuples), rng.integers(0, B, n_tuples),
            rng.integers(0, B, n_tuples + 3), rng.integers(0, B, n_tuples + 3))


def _disjoint_pairs(seed, B, n_tuples=15):
    """Pairs (a1, p, a2, n) with no pair both positive and negative."""
    rng = np.random.default_rng(seed)
    cells = rng.permutation(B * B)[: 2 * n_tuples]
    i, j = np.divmod(cells, B)
    return i[:n_tuples], j[:n_tuples], i[n_tuples:], j[n_tuples:]


def _central_diff(f, E, h=1e-6):
    grad = np.zeros_like(E)
    for idx in np.ndindex(*E.shape):
        Ep = E.copy()
        Em = E.copy()
        Ep[idx] += h
        Em[idx] -= h
        grad[idx] = (f(Ep) - f(Em)) / (2 * h)
    return grad


# ----------------------------------------------------------------------------
# Values against the references
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_reference(name, layout, reduction, normalize):
    fn, reference, options = LOSSES[name]
    for seed in range(2):
        E, y = _layout(layout, seed)
        loss, grad = fn(E, y, normalize=normalize, reduction=reduction, **options)
        expected = reference(E, y, normalize=normalize, reduction=reduction, **options)
        assert type(loss) is float
        np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-12)
        assert grad.shape == E.shape and grad.dtype == np.float64
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("name", NAMES)
def test_pml_default_margins_match_reference(name):
    fn, reference, _ = LOSSES[name]
    E, y = _layout("random", 3, B=16, m=6)
    np.testing.assert_allclose(fn(E, y)[0], reference(E, y), rtol=1e-10)


@pytest.mark.parametrize("name", ["contrastive", "triplet", "lifted"])
@pytest.mark.parametrize("kind", ["triplets", "pairs"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mined_tuples_match_reference(name, kind, reduction):
    fn, reference, options = LOSSES[name]
    for seed in range(3):
        E, y = _layout("random", seed)
        tuples = _mined(seed, len(y), kind)
        loss, grad = fn(E, y, indices_tuple=tuples, reduction=reduction, **options)
        expected = reference(E, y, indices_tuple=tuples, reduction=reduction,
                             **options)
        np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-12)
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_generalized_lifted_mined_pairs_match_reference(reduction):
    fn, reference, options = LOSSES["generalized_lifted"]
    for seed in range(3):
        E, y = _layout("random", seed)
        tuples = _disjoint_pairs(seed, len(y))
        # listing a pair twice marks it once
        tuples = tuple(np.concatenate([t, t[:3]]) for t in tuples)
        loss, _ = fn(E, y, indices_tuple=tuples, reduction=reduction, **options)
        expected = reference(E, y, indices_tuple=tuples, reduction=reduction,
                             **options)
        np.testing.assert_allclose(loss, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("layout", ["random", "duplicates", "singletons_and_pairs"])
def test_all_pairs_as_mined_tuples_equal_labels(name, layout):
    """Listing every pair (or triplet) explicitly gives the labels' result."""
    fn, _, options = LOSSES[name]
    E, y = _layout(layout, 5)
    if name == "triplet":
        tuples = tuple(np.array(t, dtype=np.int64).reshape(-1)
                       for t in zip(*ref.all_triplets(y), strict=True))
        pair_tuples = tuple(np.array(t, dtype=np.int64) for t in ref.all_pairs(y))
    else:
        tuples = tuple(np.array(t, dtype=np.int64) for t in ref.all_pairs(y))
        pair_tuples = None
    loss, grad = fn(E, y, **options)
    mined_loss, mined_grad = fn(E, None, indices_tuple=tuples, **options)
    np.testing.assert_allclose(mined_loss, loss, rtol=1e-12)
    np.testing.assert_allclose(mined_grad, grad, rtol=1e-10, atol=1e-13)
    if pair_tuples is not None:  # all pairs -> all the triplets they imply
        pair_loss, pair_grad = fn(E, None, indices_tuple=pair_tuples, **options)
        np.testing.assert_allclose(pair_loss, loss, rtol=1e-12)
        np.testing.assert_allclose(pair_grad, grad, rtol=1e-10, atol=1e-13)


def test_triplet_many_positives_per_anchor():
    """Above 128 positives per anchor the ranks come from binary search."""
    rng = np.random.default_rng(8)
    y = np.repeat([0, 1, 2], [140, 20, 20])
    E = rng.standard_normal((180, 5))
    blocks = []
    for a in range(len(y)):
        pos = np.flatnonzero((y == y[a]) & (np.arange(len(y)) != a))
        neg = np.flatnonzero(y != y[a])
        p, n = np.meshgrid(pos, neg, indexing="ij")
        blocks.append(np.stack([np.full(p.size, a), p.ravel(), n.ravel()]))
    triplets = np.concatenate(blocks, axis=1)
    pairs = tuple(np.array(t, dtype=np.int64) for t in ref.all_pairs(y))
    for reduction in REDUCTIONS:
        loss, grad = losses.triplet_margin_loss(E, y, margin=0.3, reduction=reduction)
        for tuples in (tuple(triplets), pairs):
            t_loss, t_grad = losses.triplet_margin_loss(
                E, None, margin=0.3, reduction=reduction, indices_tuple=tuples)
            np.testing.assert_allclose(loss, t_loss, rtol=1e-11)
            np.testing.assert_allclose(grad, t_grad, rtol=1e-9,
                                       atol=1e-12 * np.abs(grad).max())


def test_triplet_from_pairs_counts_repeats():
    E, y = _layout("random", 1)
    a1 = np.array([0, 0, 3, 3, 0])
    p = np.array([1, 2, 4, 4, 1])  # (0, 1) and (3, 4) listed twice
    a2 = np.array([0, 3, 3, 5])
    n = np.array([5, 6, 6, 0])
    for reduction in REDUCTIONS:
        loss, _ = losses.triplet_margin_loss(E, y, margin=0.4, reduction=reduction,
                                             indices_tuple=(a1, p, a2, n))
        expected = ref.triplet(E, y, margin=0.4, reduction=reduction,
                               indices_tuple=(a1, p, a2, n))
        np.testing.assert_allclose(loss, expected, rtol=1e-12)


def test_single_mined_pair_is_not_dropped():
    """PML returns 0 when every list has <= 1 entry; a single pair is a loss here."""
    E, y = _layout("random", 0)
    tuples = (np.array([0]), np.array([2]), np.array([0]), np.array([1]))
    for name in ["contrastive", "lifted", "generalized_lifted"]:
        fn, reference, options = LOSSES[name]
        loss, _ = fn(E, y, indices_tuple=tuples, **options)
        np.testing.assert_allclose(loss, reference(E, y, indices_tuple=tuples,
                                                   **options), rtol=1e-12)
        assert loss > 0


def test_no_terms_give_zero_loss_and_gradient():
    E = np.random.default_rng(0).standard_normal((6, 3))
    zero = {
        "triplet single class": losses.triplet_margin_loss(E, np.zeros(6, int)),
        "triplet all distinct": losses.triplet_margin_loss(E, np.arange(6)),
        "lifted single class": losses.lifted_structure_loss(E, np.zeros(6, int)),
        "lifted all distinct": losses.lifted_structure_loss(E, np.arange(6)),
        "lifted no negative pair": losses.lifted_structure_loss(
            E, None, indices_tuple=([0, 1], [1, 2], [], [])),
        "contrastive one row": losses.contrastive_loss(E[:1], [0]),
        "generalized one row": losses.generalized_lifted_structure_loss(E[:1], [0]),
        "triplet empty tuples": losses.triplet_margin_loss(
            E, None, indices_tuple=([], [], [])),
        "contrastive empty tuples": losses.contrastive_loss(
            E, None, indices_tuple=([], [], [], [])),
    }
    for what, (loss, grad) in zero.items():
        assert loss == 0.0, what
        assert not np.any(grad), what
    # One class: the contrastive and generalized lifted losses keep their
    # positive terms (as PML's do).
    assert losses.contrastive_loss(E, np.zeros(6, int))[0] > 0
    assert losses.generalized_lifted_structure_loss(E, np.zeros(6, int))[0] > 0


# ----------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_matches_finite_differences(name, normalize, reduction):
    fn, _, options = LOSSES[name]
    E, y = _layout("random", 11, B=9, m=3)
    if not normalize:
        E = E * 0.4  # distances on the margins' scale
    loss, grad = fn(E, y, normalize=normalize, reduction=reduction, **options)
    assert loss > 0
    fd = _central_diff(
        lambda Z: fn(Z, y, normalize=normalize, reduction=reduction, **options)[0], E)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mined", [False, True])
@pytest.mark.parametrize("B, nm", [(11, 1.2), (96, 0.7), (96, 2.5)])
def test_contrastive_direct_gradient_equals_dense_route(normalize, reduction, mined,
                                                        B, nm):
    """The contrastive kernel sums its gradient pair by pair (or, for rows with
    many active negatives, through a product by row block); the dL/dD route of
    the shared plumbing must give the same, duplicates and a near pair included.
    B=96: rows with a few active negatives (pair by pair) and rows with many."""
    E, y = _layout("duplicates", 3, B=B, m=3)
    E[4] += 1e-9
    y[4], y[9] = 0, 1  # the near pair (4, 9) is an active negative pair
    if not normalize:
        E = E * 0.4
    tuples = _mined(2, B, "pairs", 30) if mined else None
    pm = 0.1
    _, grad = losses.contrastive_loss(E, y, pos_margin=pm, neg_margin=nm,
                                      normalize=normalize, reduction=reduction,
                                      indices_tuple=tuples)
    X, norms = lc.l2_normalize(E) if normalize else (E, None)
    D, sq = lc.distance_matrix(X, 1)
    a1, p, a2, n = ref.pairs_of(y, tuples)
    C = np.zeros((B, B))
    for pairs, slope, sign in (((a1, p), lambda d: d - pm, 1.0),
                               ((a2, n), lambda d: nm - d, -1.0)):
        terms = np.array([slope(D[i, j]) for i, j in zip(*pairs, strict=True)])
        active = terms > 0
        count = {"sum": 1, "mean": len(terms), "avg_nonzero": active.sum()}[reduction]
        for (i, j), on in zip(zip(*pairs, strict=True), active, strict=True):
            if on:
                C[i, j] += sign / count
    dense = lc.distance_backward(C, D, X, sq, 1)
    if normalize:
        dense = lc.l2_normalize_backward(dense, X, norms)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, dense, rtol=1e-9, atol=1e-12 * np.abs(dense).max())


@pytest.mark.parametrize("name", NAMES)
def test_gradient_of_mined_tuples_matches_finite_differences(name):
    fn, _, options = LOSSES[name]
    E, y = _layout("random", 2, B=9, m=3)
    tuples = (_disjoint_pairs(4, 9, n_tuples=12) if name == "generalized_lifted"
              else _mined(4, 9, "pairs", n_tuples=12))
    loss, grad = fn(E, None, indices_tuple=tuples, **options)
    assert loss > 0
    fd = _central_diff(lambda Z: fn(Z, None, indices_tuple=tuples, **options)[0], E)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
    if name == "triplet":
        triplets = _mined(4, 9, "triplets", n_tuples=20)
        fd = _central_diff(
            lambda Z: fn(Z, None, indices_tuple=triplets, **options)[0], E)
        grad = fn(E, None, indices_tuple=triplets, **options)[1]
        np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("normalize", [True, False])
def test_gradient_finite_at_identical_embeddings(name, normalize):
    fn, _, options = LOSSES[name]
    y = np.array([0, 0, 1, 1, 2, 2])
    for E in (np.ones((6, 3)), np.zeros((6, 3)),
              np.repeat(np.random.default_rng(0).standard_normal((3, 3)), 2, axis=0)):
        loss, grad = fn(E, y, normalize=normalize, **options)
        assert np.isfinite(loss)
        assert np.all(np.isfinite(grad))


def test_duplicates_get_gradient_from_other_pairs():
    """A zero-distance pair contributes nothing; the other pairs still do."""
    E, y = _layout("duplicates", 0, B=10, m=3)
    for name in NAMES:
        fn, _, options = LOSSES[name]
        _, grad = fn(E, y, **options)
        assert np.abs(grad).max() > 0
        fd = _central_diff(lambda Z, fn=fn, o=options: fn(Z, y, **o)[0], E)
        # rows without a duplicate are smooth points of the loss
        smooth = [i for i in range(10)
                  if not any(np.array_equal(E[i], E[j]) for j in range(10) if j != i)]
        np.testing.assert_allclose(grad[smooth], fd[smooth], rtol=1e-5,
                                   atol=1e-7 * np.abs(fd).max())


def test_large_unnormalised_distances_stay_finite():
    """Far-apart points: every exp(neg_margin - d) underflows without the max shift."""
    rng = np.random.default_rng(0)
    E = rng.standard_normal((10, 3)) * 1e3
    y = np.arange(10) % 3
    for name in NAMES:
        fn, reference, options = LOSSES[name]
        loss, grad = fn(E, y, normalize=False, **options)
        assert np.isfinite(loss) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(loss, reference(E, y, normalize=False, **options),
                                   rtol=1e-10)


# ----------------------------------------------------------------------------
# Threads and dtypes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mined", [False, True])
def test_one_thread_equals_two(name, mined, monkeypatch):
    # every kernel call gets both threads, whatever its size
    monkeypatch.setattr(fastmetric._threads, "_FLOPS_PER_THREAD", 1.0)
    fn, _, options = LOSSES[name]
    rng = np.random.default_rng(1)
    E = rng.standard_normal((150, 8))
    y = rng.integers(0, 6, 150)
    kwargs = dict(options)
    if mined:
        kwargs["indices_tuple"] = (_disjoint_pairs(1, 150, 400)
                                   if name == "generalized_lifted"
                                   else _mined(1, 150, "pairs", 400))
    loss1, grad1 = fn(E, y, n_jobs=1, **kwargs)
    loss2, grad2 = fn(E, y, n_jobs=2, **kwargs)
    np.testing.assert_allclose(loss2, loss1, rtol=1e-12)
    np.testing.assert_allclose(grad2, grad1, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", NAMES)
def test_float32_input_gives_float32_gradient(name):
    fn, _, options = LOSSES[name]
    E, y = _layout("random", 4, B=20, m=5)
    loss64, grad64 = fn(E, y, **options)
    loss32, grad32 = fn(E.astype(np.float32), y, **options)
    assert grad32.dtype == np.float32
    assert type(loss32) is float
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-3,
                               atol=1e-5 * np.abs(grad64).max())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("normalize", [True, False])
def test_float32_products_keep_float32_accuracy_near_duplicates(name, normalize):
    """float32 input runs its matrix products in float32: near-duplicate rows
    (pairs recomputed from their differences) and ordinary pairs must still
    match the float64 path on the same values to float32 tolerance."""
    fn, _, options = LOSSES[name]
    rng = np.random.default_rng(7)
    base = rng.standard_normal((16, 48))
    scales = np.array([0.0, 1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.3])
    E = np.repeat(base, 8, axis=0)
    E += np.tile(scales, 16)[:, None] * rng.standard_normal(E.shape)
    E *= rng.uniform(0.5, 3.0, (len(E), 1))
    y = rng.integers(0, 6, len(E))
    E32 = E.astype(np.float32)
    loss64, grad64 = fn(E32.astype(np.float64), y, normalize=normalize, **options)
    loss32, grad32 = fn(E32, y, normalize=normalize, **options)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(loss32, loss64, rtol=2e-6)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4,
                               atol=2e-6 * np.abs(grad64).max())


@pytest.mark.parametrize("name", NAMES)
def test_reused_work_arrays_do_not_leak_between_calls(name):
    """Calls reuse their B x B buffers: results must not alias them, and a call
    after calls of other sizes, dtypes and losses gives the same numbers."""
    fn, _, options = LOSSES[name]
    rng = np.random.default_rng(3)
    E = rng.standard_normal((40, 6))
    y = rng.integers(0, 4, 40)
    loss1, grad1 = fn(E, y, **options)
    kept = grad1.copy()
    for other in NAMES:
        for B, dtype in ((40, np.float32), (25, np.float64), (40, np.float64)):
            LOSSES[other][0](rng.standard_normal((B, 6)).astype(dtype),
                             rng.integers(0, 4, B), **LOSSES[other][2])
    np.testing.assert_array_equal(grad1, kept)
    loss2, grad2 = fn(E, y, **options)
    assert loss2 == loss1
    np.testing.assert_array_equal(grad2, grad1)


def test_labels_and_indices_may_be_lists_or_other_ints():
    E, y = _layout("random", 0)
    expected = losses.triplet_margin_loss(E, y)
    got = losses.triplet_margin_loss(E.tolist(), y.astype(np.uint8).tolist())
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
    got = losses.triplet_margin_loss(E, y.astype(np.float64))  # integral floats
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
    tuples = _mined(0, len(y), "triplets")
    a = losses.contrastive_loss(E, y, indices_tuple=tuples)
    b = losses.contrastive_loss(E, y, indices_tuple=[t.astype(np.int32).tolist()
                                                     for t in tuples])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_errors(name):
    fn, _, _ = LOSSES[name]
    E, y = _layout("random", 0)
    bad_E = E.copy()
    bad_E[2, 1] = np.nan
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        fn(bad_E, y)
    bad_E[2, 1] = np.inf
    with pytest.raises(ValueError, match="embeddings contains infinity"):
        fn(bad_E, y)
    with pytest.raises(ValueError, match="embeddings must be a 2D array"):
        fn(E[0], y)
    with pytest.raises(ValueError, match="embeddings is empty"):
        fn(np.zeros((0, 3)), [])
    with pytest.raises(ValueError, match="labels has 11 entries but the batch has 12"):
        fn(E, y[:-1])
    with pytest.raises(ValueError, match="labels must be a 1D array"):
        fn(E, y[:, None])
    with pytest.raises(TypeError, match="labels must hold integer class labels"):
        fn(E, y + 0.5)
    with pytest.raises(ValueError, match="labels are required"):
        fn(E, None)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fn(E, y, reduction="max")
    with pytest.raises(TypeError, match="normalize must be a bool"):
        fn(E, y, normalize="yes")
    with pytest.raises(ValueError, match="n_jobs == 0"):
        fn(E, y, n_jobs=0)
    margin_names = ["margin"] if name == "triplet" else ["pos_margin", "neg_margin"]
    for margin in margin_names:
        with pytest.raises(ValueError, match=f"{margin} must be finite"):
            fn(E, y, **{margin: np.inf})
        with pytest.raises(ValueError, match=f"{margin} must be finite"):
            fn(E, y, **{margin: np.nan})
        with pytest.raises(TypeError, match=f"{margin} must be a real number"):
            fn(E, y, **{margin: "0.1"})


@pytest.mark.parametrize("name", NAMES)
def test_bad_indices_tuple_errors(name):
    fn, _, _ = LOSSES[name]
    E, y = _layout("random", 0)
    ok = np.array([0, 1])
    with pytest.raises(ValueError, match=r"indices_tuple\[1\] \(p\) contains index 12"):
        fn(E, y, indices_tuple=(ok, np.array([3, 12]), ok))
    with pytest.raises(ValueError, match=r"indices_tuple\[3\] \(n\) contains index -1"):
        fn(E, y, indices_tuple=(ok, ok, ok, np.array([-1, 2])))
    with pytest.raises(TypeError, match=r"indices_tuple\[0\] \(a\) must hold integer"):
        fn(E, y, indices_tuple=(ok + 0.5, ok, ok))
    with pytest.raises(ValueError, match="must hold arrays of one length"):
        fn(E, y, indices_tuple=(ok, ok, ok[:1]))
    with pytest.raises(ValueError, match="must have the same length"):
        fn(E, y, indices_tuple=(ok, ok[:1], ok, ok))
    with pytest.raises(ValueError, match="must be a 1D array of indices"):
        fn(E, y, indices_tuple=(ok[None], ok[None], ok[None]))
    with pytest.raises(ValueError, match="indices_tuple must be None, a tuple"):
        fn(E, y, indices_tuple=(ok, ok))
    with pytest.raises(ValueError, match="indices_tuple must be None, a tuple"):
        fn(E, y, indices_tuple=np.zeros((3, 2), dtype=int))


def test_generalized_lifted_rejects_pair_both_positive_and_negative():
    E, y = _layout("random", 0)
    with pytest.raises(ValueError, match=r"pair \(2, 5\) as both positive and"):
        losses.generalized_lifted_structure_loss(
            E, y, indices_tuple=([0, 2], [1, 5], [2], [5]))


# ----------------------------------------------------------------------------
# Property test
# ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(B=st.integers(1, 9), m=st.integers(1, 4), n_classes=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1), normalize=st.booleans(),
       reduction=st.sampled_from(REDUCTIONS), dup=st.booleans())
def test_random_shapes_match_reference(B, m, n_classes, seed, normalize, reduction,
                                       dup):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((B, m))
    if dup and B > 1:
        E[-1] = E[0]
    y = rng.integers(0, n_classes, B)
    for fn, reference, options in LOSSES.values():
        loss, grad = fn(E, y, normalize=normalize, reduction=reduction, **options)
        expected = reference(E, y, normalize=normalize, reduction=reduction,
                             **options)
        np.testing.assert_allclose(loss, expected, rtol=1e-9, atol=1e-12)
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("product_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_distance_matrix_matches_numpy(product_dtype, n_threads, block_bytes,
                                       monkeypatch):
    """Blocked Gram distances (one or many row blocks per task) against the
    plain differences, with exact duplicates and a near pair in the batch."""
    monkeypatch.setattr(lc, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(lc, "BLOCK_ROWS", (3, 256))
    rng = np.random.default_rng(3)
    X = rng.standard_normal((37, 5))
    X[7] = X[2]
    X[11] = X[5] + 1e-7
    D, sq = lc.distance_matrix(X, n_threads, product_dtype)
    ref_D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=-1))
    np.testing.assert_allclose(sq, (X * X).sum(axis=1), rtol=1e-12)
    # float32 products: ~1e-5 relative in d^2 away from the near pairs, which
    # are recomputed from their difference in float64
    rtol = 1e-5 if product_dtype == np.float32 else 1e-10
    np.testing.assert_allclose(D, ref_D, rtol=rtol, atol=1e-12)
    assert D[2, 7] == 0.0 and D[7, 2] == 0.0
    np.testing.assert_allclose(D[5, 11], ref_D[5, 11], rtol=1e-9)
    assert np.all(np.diag(D) == 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_contrastive_many_row_blocks_equal_one(dtype, monkeypatch):
    """The fused contrastive kernel gives the same answer whatever its row
    blocking (tiny blocks: many per task, the last one partial)."""
    E, y = _layout("duplicates", 3, B=23, m=4)
    E = E.astype(dtype)
    loss1, grad1 = losses.contrastive_loss(E, y, neg_margin=1.3, n_jobs=2)
    monkeypatch.setattr(lc, "BLOCK_BYTES", 16)
    monkeypatch.setattr(lc, "BLOCK_ROWS", (3, 256))
    monkeypatch.setattr(fastmetric._threads, "_FLOPS_PER_THREAD", 1.0)
    loss2, grad2 = losses.contrastive_loss(E, y, neg_margin=1.3, n_jobs=2)
    assert loss1 == pytest.approx(loss2, rel=1e-12)
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(grad1, grad2, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_embeddings_are_accepted_and_untouched(name, normalize, dtype):
    fn, _, options = LOSSES[name]
    E, y = _layout("random", 5, B=16, m=3)
    E = E.astype(dtype)
    expected = fn(E.copy(), y, normalize=normalize, **options)
    E.flags.writeable = False
    before = E.copy()
    loss, grad = fn(E, y, normalize=normalize, **options)
    np.testing.assert_array_equal(E, before)
    assert loss == expected[0]
    np.testing.assert_array_equal(grad, expected[1])


def test_float32_rows_near_float32_limit_give_finite_distances():
    """Finite float32 rows whose squared distances exceed float32's range."""
    E = np.array([[1.2e19, 0.0], [-1.2e19, 0.0], [0.0, 1.2e19]], dtype=np.float32)
    D, _ = lc.distance_matrix(E.astype(np.float64), 1, np.float32)
    np.testing.assert_allclose(D[0, 1], 2.4e19, rtol=1e-6)
    loss, grad = losses.contrastive_loss(E, [0, 0, 1], normalize=False,
                                         neg_margin=1e20)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
