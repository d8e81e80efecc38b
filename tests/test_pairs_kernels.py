"""The Cython pair kernels (``fastmetric._pairs``) against plain NumPy references.

Each reference is written from the formula in the kernel's docstring and runs in
float64 on the same (already rounded) inputs, so the comparison measures only
the kernel's own rounding.  The kernels read float32 or float64 data and
compute in float64, so one tolerance serves both data dtypes.  Tolerances are
relative to the *scale* of each result: the same formula evaluated on absolute
values, which bounds the size of the terms that were summed.  Sizes straddle
the kernels' block of 256 pairs.
"""

import numpy as np
import pytest
from scipy.optimize import check_grad

from fastmetric import _pairs

N_PAIRS = [0, 1, 255, 256, 257, 1000]
DIMS = [1, 3, 8, 9, 40]  # 8 and 9: the last of the small-d paths, the first of BLAS
DTYPES = [np.float32, np.float64]
THREADS = [1, 2]
RTOL = 1e-12


def _case(n_pairs, d, dtype, seed=0, n_points=60):
    """Data in ``dtype``, index pairs (some with i == j), a float64 PSD matrix."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_points, d)).astype(dtype)
    i = rng.integers(0, n_points, size=n_pairs).astype(np.intp)
    j = rng.integers(0, n_points, size=n_pairs).astype(np.intp)
    j[::7] = i[::7]  # zero-distance pairs are legal input
    L = rng.normal(size=(d, d))
    A = L @ L.T / d + 0.1 * np.eye(d)
    return X, i, j, A


def _diffs(X, i, j):
    return X[i].astype(np.float64) - X[j].astype(np.float64)


def _assert_close(actual, expected, scale, dtype, factor=1.0):
    """``|actual - expected| <= rtol * scale`` elementwise (``scale`` >= |terms|)."""
    actual = np.asarray(actual)
    if actual.ndim == 0:
        actual = actual.astype(np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    assert actual.dtype == np.float64  # the kernels return float64 for any data
    tol = factor * RTOL * np.asarray(scale, dtype=np.float64)
    # A tiny absolute floor so that exact zeros compare equal to exact zeros.
    tol = tol + np.finfo(np.float64).tiny
    err = np.abs(actual - expected)
    assert np.all(err <= tol), f"max error {err.max()} vs tolerance {tol.max()}"


# ---------------------------------------------------------------------------
# NumPy references (float64), written from the kernels' docstrings.
# ---------------------------------------------------------------------------


def ref_pair_sq_dists(X, i, j, A):
    D = _diffs(X, i, j)
    A = A.astype(np.float64)
    q = np.einsum("pk,kl,pl->p", D, A, D)
    scale = np.einsum("pk,kl,pl->p", np.abs(D), np.abs(A), np.abs(D))
    return np.maximum(q, 0.0), scale


def ref_pair_sq_dists_diag(X, i, j, w):
    D = _diffs(X, i, j)
    out = (D * D) @ w.astype(np.float64)
    return out, out  # all terms are non-negative: the result is its own scale


def ref_weighted_outer_sum(X, i, j, weights):
    D = _diffs(X, i, j)
    wts = np.ones(i.shape[0]) if weights.size == 0 else weights.astype(np.float64)
    out = D.T @ (wts[:, None] * D)
    scale = np.abs(D).T @ (wts[:, None] * np.abs(D))
    return out, scale


def ref_sqrt_dist_sum_grad(X, i, j, A, eps):
    q, _ = ref_pair_sq_dists(X, i, j, A)
    dist = np.sqrt(q)
    D = _diffs(X, i, j)
    denom = dist + eps
    coef = np.where(denom > 0, 0.5 / np.where(denom > 0, denom, 1.0), 0.0)
    grad = D.T @ (coef[:, None] * D)
    grad_scale = np.abs(D).T @ (coef[:, None] * np.abs(D))
    return dist.sum(), grad, grad_scale


def ref_diag_sqrt_dist_derivs(X, i, j, w):
    U = _diffs(X, i, j) ** 2
    dist = np.sqrt(U @ w.astype(np.float64))
    pos = dist > 0
    safe = np.where(pos, dist, 1.0)
    g_coef = np.where(pos, 0.5 / safe, 0.0)
    h_coef = np.where(pos, 0.25 / safe**3, 0.0)
    grad = U.T @ g_coef
    hess = U.T @ (h_coef[:, None] * U)
    return dist.sum(), grad, hess


def ref_sq_diff_sum(X, i, j):
    return np.sum(_diffs(X, i, j) ** 2, axis=0)


# ---------------------------------------------------------------------------
# Kernel versus reference.
# ---------------------------------------------------------------------------

grid = pytest.mark.parametrize("n_pairs", N_PAIRS)
dims = pytest.mark.parametrize("d", DIMS)
dtypes = pytest.mark.parametrize("dtype", DTYPES)
threads = pytest.mark.parametrize("num_threads", THREADS)
# The low-rank pass through the pairs and through the points: the same sums.
factor_kernels = pytest.mark.parametrize(
    "factor_kernel", [_pairs.sqrt_dist_sum_grad_factor,
                      _pairs.sqrt_dist_sum_grad_points], ids=["pairs", "points"])


@grid
@dims
@dtypes
@threads
def test_pair_sq_dists(n_pairs, d, dtype, num_threads):
    X, i, j, A = _case(n_pairs, d, dtype)
    out = np.full(n_pairs, np.nan)
    _pairs.pair_sq_dists(X, i, j, A, out, num_threads)
    expected, scale = ref_pair_sq_dists(X, i, j, A)
    _assert_close(out, expected, scale, dtype)
    assert np.all(out[i == j] == 0)


def test_pair_sq_dists_clamps_rounding_below_zero():
    # A rank-one PSD matrix and differences in its null space: the exact value
    # is 0, and rounding must not make it negative.
    rng = np.random.default_rng(1)
    v = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    A = np.ascontiguousarray(np.outer(v, v))
    base = rng.normal(size=(300, 3))
    # Differences orthogonal to v: random vectors minus their component along v.
    step = rng.normal(size=(300, 3))
    step -= np.outer(step @ v, v)
    X = np.ascontiguousarray(np.vstack([base, base + step]))
    i = np.arange(300, dtype=np.intp)
    j = i + 300
    out = np.empty(300)
    _pairs.pair_sq_dists(X, i, j, A, out, 2)
    assert np.all(out >= 0)
    assert np.all(out <= 1e-12 * np.sum(step**2, axis=1))


@grid
@dims
@dtypes
@threads
def test_pair_sq_dists_diag(n_pairs, d, dtype, num_threads):
    X, i, j, _ = _case(n_pairs, d, dtype)
    w = np.random.default_rng(2).uniform(0, 2, size=d)
    w[::3] = 0  # zero weights are allowed
    out = np.full(n_pairs, np.nan)
    _pairs.pair_sq_dists_diag(X, i, j, w, out, num_threads)
    expected, scale = ref_pair_sq_dists_diag(X, i, j, w)
    _assert_close(out, expected, scale, dtype)


@grid
@dims
@dtypes
@threads
@pytest.mark.parametrize("weighted", [True, False])
def test_weighted_outer_sum(n_pairs, d, dtype, num_threads, weighted):
    X, i, j, _ = _case(n_pairs, d, dtype)
    if weighted:
        weights = np.random.default_rng(3).uniform(0, 3, size=n_pairs)
        weights[::5] = 0
    else:
        weights = np.empty(0)  # "all ones"
    out = np.full((d, d), np.nan)
    _pairs.weighted_outer_sum(X, i, j, weights, out, num_threads)
    expected, scale = ref_weighted_outer_sum(X, i, j, weights)
    _assert_close(out, expected, scale, dtype)
    assert np.array_equal(out, out.T)


@grid
@dims
@dtypes
@threads
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_sqrt_dist_sum_grad(n_pairs, d, dtype, num_threads, eps):
    X, i, j, A = _case(n_pairs, d, dtype)
    grad = np.full((d, d), np.nan)
    f = _pairs.sqrt_dist_sum_grad(X, i, j, A, grad, eps, num_threads)
    f_ref, grad_ref, grad_scale = ref_sqrt_dist_sum_grad(X, i, j, A, eps)
    assert np.isfinite(f)
    # sqrt halves relative errors, so the sum's scale is the sum itself; the
    # gradient's 1/dist weights pass relative errors of dist straight through.
    _assert_close(f, f_ref, f_ref, dtype)
    _assert_close(grad, grad_ref, grad_scale, dtype, factor=2.0)
    assert np.array_equal(grad, grad.T)


@dtypes
@threads
@pytest.mark.parametrize("n_pairs", [1, 257])
def test_sqrt_dist_sum_grad_zero_distance_pairs_contribute_nothing(
    dtype, num_threads, n_pairs
):
    X, i, _, A = _case(n_pairs, 3, dtype)
    grad = np.full((3, 3), np.nan)
    f = _pairs.sqrt_dist_sum_grad(X, i, i.copy(), A, grad, 0.0, num_threads)
    assert f == 0.0
    assert np.all(grad == 0)

    # Mixing in i == j pairs changes neither f nor the gradient of the others.
    X, i, j, A = _case(n_pairs, 3, dtype, seed=5)
    keep = i != j
    g_all = np.empty((3, 3))
    g_kept = np.empty((3, 3))
    f_all = _pairs.sqrt_dist_sum_grad(X, i, j, A, g_all, 0.0, num_threads)
    f_kept = _pairs.sqrt_dist_sum_grad(
        X, np.ascontiguousarray(i[keep]), np.ascontiguousarray(j[keep]), A, g_kept,
        0.0, num_threads)
    assert np.all(np.isfinite(g_all))
    _assert_close(f_all, f_kept, abs(f_kept), dtype)
    _assert_close(g_all, g_kept, np.abs(g_kept).max(), dtype)


def ref_sqrt_dist_sum_grad_factor(X, i, j, K):
    D = _diffs(X, i, j)
    Y = D @ K.astype(np.float64)
    dist = np.sqrt(np.einsum("pk,pk->p", Y, Y))
    dist_scale = np.sqrt(np.einsum("pk,pk->p", *(np.abs(D) @ np.abs(K),) * 2))
    coef = np.where(dist > 0, 0.5 / np.where(dist > 0, dist, 1.0), 0.0)
    grad = D.T @ (coef[:, None] * D)
    # A distance's rounding is relative to its scale, not to itself (the
    # projection D K can cancel), and the 1/dist weight passes it on.
    amplify = np.where(dist > 0, dist_scale / np.where(dist > 0, dist, 1.0), 0.0)
    grad_scale = np.abs(D).T @ ((coef * amplify)[:, None] * np.abs(D))
    return dist, dist_scale, grad, grad_scale


@grid
@dims
@dtypes
@threads
@pytest.mark.parametrize("rank", [1, 2, "d"])
@factor_kernels
def test_sqrt_dist_sum_grad_factor(n_pairs, d, dtype, num_threads, rank,
                                   factor_kernel):
    X, i, j, _ = _case(n_pairs, d, dtype)
    r = d if rank == "d" else rank
    K = np.random.default_rng(3).normal(size=(d, r))
    grad = np.full((d, d), np.nan)
    dists = np.full(n_pairs, np.nan)
    f = factor_kernel(X, i, j, K, grad, dists, num_threads)
    dist_ref, dist_scale, grad_ref, grad_scale = ref_sqrt_dist_sum_grad_factor(
        X, i, j, K)
    _assert_close(f, dist_ref.sum(), dist_scale.sum(), dtype)
    _assert_close(dists, dist_ref, dist_scale, dtype)
    # Pairs with i == j, and only those here, sit at exactly zero distance.
    assert np.array_equal(dists == 0, dist_ref == 0)
    _assert_close(grad, grad_ref, grad_scale, dtype, factor=2.0)
    assert np.array_equal(grad, grad.T)
    # The same through A = K K^T, and the value-only pass.
    if n_pairs:
        A = K @ K.T
        g_full = np.empty((d, d))
        f_full = _pairs.sqrt_dist_sum_grad(X, i, j, A, g_full, 0.0, num_threads)
        _assert_close(f, f_full, dist_scale.sum(), dtype, factor=4.0)
    f_only = factor_kernel(X, i, j, K, np.empty((0, 0)), np.empty(0), num_threads)
    assert f_only == f


@pytest.mark.parametrize("n_pairs, d", [(1000, 3), (2049, 4), (5000, 2), (4097, 8),
                                         (3000, 9)])
@dtypes
@threads
@factor_kernels
def test_sqrt_dist_sum_grad_factor_with_eps(n_pairs, d, dtype, num_threads,
                                            factor_kernel):
    # eps in the gradient's denominators, as metric-learn's ga-ip takes its
    # gradient (every pair, also those at zero distance, weighs 1/(2(dist+eps))),
    # over many blocks of pairs.  A rank-1 factor puts many pairs at zero
    # distance.
    X, i, j, _ = _case(n_pairs, d, dtype, seed=d)
    rng = np.random.default_rng(7)
    for K in (rng.normal(size=(d, 2)), np.eye(d)[:, :1].copy()):
        X_ = X.copy()
        X_[::3, 0] = 0  # pairs of these rows differ only off K's first axis
        eps = 1e-3
        grad = np.full((d, d), np.nan)
        dists = np.full(n_pairs, np.nan)
        f = factor_kernel(X_, i, j, K, grad, dists, num_threads, eps)
        D = _diffs(X_, i, j)
        dist = np.sqrt(np.einsum("pk,pk->p", *(D @ K,) * 2))
        coef = 0.5 / (dist + eps)
        grad_ref = D.T @ (coef[:, None] * D)
        scale = np.abs(D).T @ (coef[:, None] * np.abs(D)) * (1 + 1 / eps)
        _assert_close(dists, dist, np.sqrt(np.einsum(
            "pk,pk->p", *(np.abs(D) @ np.abs(K),) * 2)), dtype)
        _assert_close(f, dist.sum(), dist.sum() + 1, dtype, factor=n_pairs)
        _assert_close(grad, grad_ref, scale, dtype, factor=4.0)
        # eps = 0 through the same blocks: the plain factor gradient
        g0 = np.empty((d, d))
        factor_kernel(X_, i, j, K, g0, np.empty(0), num_threads)
        _, _, g0_ref, g0_scale = ref_sqrt_dist_sum_grad_factor(X_, i, j, K)
        _assert_close(g0, g0_ref, g0_scale, dtype, factor=2.0)


@dtypes
@threads
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_points_route_keeps_precision_far_from_the_origin(dtype, num_threads, offset):
    # The points route takes distances as differences of T = (X - m) K:
    # centring keeps their rounding relative to the data's spread, not to its
    # offset, and pairs of nearly identical points (which would lose their
    # digits to that rounding) are recomputed from the exact difference.
    rng = np.random.default_rng(5)
    d, n_points, n_pairs = 30, 200, 1500
    X = rng.normal(size=(n_points, d))
    X[1] = X[0] + 1e-9 * rng.normal(size=d)  # a nearly identical pair
    X[3] = X[2]
    X = (X + offset).astype(dtype)
    i = rng.integers(0, n_points, n_pairs).astype(np.intp)
    j = rng.integers(0, n_points, n_pairs).astype(np.intp)
    i[:4], j[:4] = [0, 1, 2, 3], [1, 0, 3, 2]
    K = rng.normal(size=(d, 5))
    grads, dists = [np.empty((d, d)) for _ in range(2)], [np.empty(n_pairs)
                                                         for _ in range(2)]
    fs = [kern(X, i, j, K, g, dd, num_threads, 0.0) for kern, g, dd in zip(
        (_pairs.sqrt_dist_sum_grad_factor, _pairs.sqrt_dist_sum_grad_points),
        grads, dists, strict=True)]
    dist_ref, dist_scale, grad_ref, grad_scale = ref_sqrt_dist_sum_grad_factor(
        X, i, j, K)
    for f, g, dd in zip(fs, grads, dists, strict=True):
        _assert_close(dd, dist_ref, dist_scale, dtype, factor=4.0)
        _assert_close(f, dist_ref.sum(), dist_scale.sum(), dtype, factor=4.0)
        _assert_close(g, grad_ref, grad_scale, dtype, factor=8.0)
    assert dists[1][2] == 0 and dists[1][3] == 0
    if dtype == np.float64 or offset == 0:  # float32 cannot hold the 1e-9 gap
        np.testing.assert_allclose(dists[1][:2], dist_ref[:2], rtol=1e-12)


def test_factor_front_end_routes_through_the_points():
    # More pairs than points and enough features: the front-end takes the
    # points route, with the pair route's value and gradient.
    from fastmetric._mmc_common import _points_flops, factor_dist_sum_and_grad
    from fastmetric._validation import PairData

    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 40))
    i = rng.integers(0, 300, 6000).astype(np.intp)
    j = rng.integers(0, 300, 6000).astype(np.intp)
    K = rng.normal(size=(40, 6))
    data = PairData(X, i, j)
    flops_pairs = 6000 * (2 * 40 * 6 + 40 * 40 + 500.0)
    assert _points_flops(data, 6, True) < flops_pairs
    assert _points_flops(PairData(X[:, :5].copy(), i, j), 6, True) is None
    f, G = factor_dist_sum_and_grad(data, K, n_threads=2)
    g_points, g_pairs = np.empty((40, 40)), np.empty((40, 40))
    assert f == _pairs.sqrt_dist_sum_grad_points(X, i, j, K, g_points, np.empty(0))
    np.testing.assert_array_equal(G, g_points)
    f_pairs = _pairs.sqrt_dist_sum_grad_factor(X, i, j, K, g_pairs, np.empty(0))
    np.testing.assert_allclose(f, f_pairs, rtol=1e-13)
    np.testing.assert_allclose(G, g_pairs, rtol=1e-12, atol=1e-12 * np.abs(
        g_pairs).max())


def test_points_route_rejects_bad_shapes():
    X = np.zeros((10, 4))
    i = j = np.zeros(3, dtype=np.intp)
    with pytest.raises(ValueError, match="K"):
        _pairs.sqrt_dist_sum_grad_points(X, i, j, np.zeros((3, 2)),
                                         np.empty((4, 4)), np.empty(0))
    with pytest.raises(ValueError, match="dists"):
        _pairs.sqrt_dist_sum_grad_points(X, i, j, np.zeros((4, 2)),
                                         np.empty((4, 4)), np.empty(2))


@grid
@dims
@dtypes
@threads
def test_diag_sqrt_dist_derivs(n_pairs, d, dtype, num_threads):
    X, i, j, _ = _case(n_pairs, d, dtype)
    w = np.random.default_rng(4).uniform(0.1, 2, size=d)
    if d > 1:
        w[0] = 0  # a zero weight: still no pair at zero distance unless i == j
    grad = np.full(d, np.nan)
    hess = np.full((d, d), np.nan)
    f = _pairs.diag_sqrt_dist_derivs(X, i, j, w, grad, hess, num_threads)
    f_ref, grad_ref, hess_ref = ref_diag_sqrt_dist_derivs(X, i, j, w)
    # Every term is non-negative, so each result is its own scale; the 1/dist^3
    # weights of the Hessian amplify dist's relative error threefold.
    _assert_close(f, f_ref, f_ref, dtype)
    _assert_close(grad, grad_ref, grad_ref, dtype, factor=2.0)
    _assert_close(hess, hess_ref, hess_ref, dtype, factor=4.0)
    assert np.array_equal(hess, hess.T)


@dtypes
def test_diag_sqrt_dist_derivs_zero_distance(dtype):
    # Pairs that differ only in zero-weighted features sit at distance 0: they
    # must add nothing (and no NaN) to the derivatives.
    X = np.array([[0.0, 0.0], [0.0, 5.0], [1.0, 0.0]], dtype=dtype)
    i = np.array([0, 0, 1], dtype=np.intp)
    j = np.array([1, 0, 1], dtype=np.intp)
    w = np.array([1.0, 0.0])
    grad = np.empty(2)
    hess = np.empty((2, 2))
    f = _pairs.diag_sqrt_dist_derivs(X, i, j, w, grad, hess, 1)
    assert f == 0.0
    assert np.all(grad == 0) and np.all(hess == 0)


@grid
@dims
@dtypes
def test_sq_diff_sum(n_pairs, d, dtype):
    X, i, j, _ = _case(n_pairs, d, dtype)
    out = np.full(d, np.nan)
    _pairs.sq_diff_sum(X, i, j, out)
    expected = ref_sq_diff_sum(X, i, j)
    _assert_close(out, expected, expected, dtype)


# ---------------------------------------------------------------------------
# Any thread count gives the same bits: the sums are split into chunks that
# depend on the number of pairs and d only.
# ---------------------------------------------------------------------------


def _run_all(X, i, j, A, w, weights, num_threads):
    n, d = i.shape[0], X.shape[1]
    dt = np.float64
    res = {}
    res["sq"] = np.empty(n, dt)
    _pairs.pair_sq_dists(X, i, j, A, res["sq"], num_threads)
    res["sq_diag"] = np.empty(n, dt)
    _pairs.pair_sq_dists_diag(X, i, j, w, res["sq_diag"], num_threads)
    res["outer"] = np.empty((d, d), dt)
    _pairs.weighted_outer_sum(X, i, j, weights, res["outer"], num_threads)
    res["grad"] = np.empty((d, d), dt)
    res["f"] = _pairs.sqrt_dist_sum_grad(X, i, j, A, res["grad"], 0.0, num_threads)
    res["dgrad"] = np.empty(d, dt)
    res["dhess"] = np.empty((d, d), dt)
    res["df"] = _pairs.diag_sqrt_dist_derivs(X, i, j, w, res["dgrad"], res["dhess"],
                                             num_threads)
    K = np.ascontiguousarray(np.linalg.cholesky(A)[:, :3])
    res["kgrad"] = np.empty((d, d), dt)
    res["kdists"] = np.empty(n, dt)
    res["kf"] = _pairs.sqrt_dist_sum_grad_factor(X, i, j, K, res["kgrad"],
                                                 res["kdists"], num_threads)
    res["pgrad"] = np.empty((d, d), dt)
    res["pdists"] = np.empty(n, dt)
    res["pf"] = _pairs.sqrt_dist_sum_grad_points(X, i, j, K, res["pgrad"],
                                                 res["pdists"], num_threads)
    res["kh"] = np.empty((3 * d, 3 * d), dt)
    res["khf"] = _pairs.factor_hessian(X, i, j, np.empty((0, 0)), K, res["kh"],
                                       num_threads)
    return res


@dtypes
@pytest.mark.parametrize("n_pairs", [257, 1000, 3000, 64 * 256 + 5])
def test_any_thread_count_gives_the_same_bits(dtype, n_pairs):
    X, i, j, A = _case(n_pairs, 7, dtype, seed=11)
    rng = np.random.default_rng(12)
    w = rng.uniform(0.1, 1, size=7)
    weights = rng.uniform(0, 1, size=n_pairs)
    one = _run_all(X, i, j, A, w, weights, 1)
    for nt in (2, 3):
        other = _run_all(X, i, j, A, w, weights, nt)
        for key, value in one.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(other[key]),
                                          err_msg=f"{key}, {nt} threads")


# ---------------------------------------------------------------------------
# Finite-difference checks of the derivatives.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 4])
def test_sqrt_dist_sum_grad_matches_finite_differences(d):
    rng = np.random.default_rng(20)
    X = rng.normal(size=(80, d))
    i = rng.integers(0, 80, size=300).astype(np.intp)
    j = (i + rng.integers(1, 80, size=300)) % 80  # no i == j pairs
    j = j.astype(np.intp)
    L = rng.normal(size=(d, d))
    A0 = L @ L.T + 0.5 * np.eye(d)

    def f(a_flat):
        g = np.empty((d, d))
        return _pairs.sqrt_dist_sum_grad(X, i, j, a_flat.reshape(d, d).copy(), g,
                                         0.0, 1)

    def grad(a_flat):
        g = np.empty((d, d))
        _pairs.sqrt_dist_sum_grad(X, i, j, a_flat.reshape(d, d).copy(), g, 0.0, 1)
        return g.ravel()

    g0 = grad(A0.ravel())
    # Each entry of A is an independent variable: the quadratic form depends on
    # A[k, l] through D_k D_l, which is exactly the kernel's D D^T gradient.
    err = check_grad(f, grad, A0.ravel(), epsilon=1e-6)
    assert err <= 1e-5 * np.linalg.norm(g0)


@pytest.mark.parametrize("d", [1, 5])
def test_diag_sqrt_dist_derivs_match_finite_differences(d):
    rng = np.random.default_rng(21)
    X = rng.normal(size=(70, d))
    i = rng.integers(0, 70, size=400).astype(np.intp)
    j = ((i + rng.integers(1, 70, size=400)) % 70).astype(np.intp)
    w0 = rng.uniform(0.5, 2.0, size=d)

    def evaluate(w):
        g = np.empty(d)
        h = np.empty((d, d))
        f = _pairs.diag_sqrt_dist_derivs(X, i, j, np.ascontiguousarray(w), g, h, 1)
        return f, g, h

    f0, g0, h0 = evaluate(w0)
    err = check_grad(lambda w: evaluate(w)[0], lambda w: evaluate(w)[1], w0,
                     epsilon=1e-6)
    assert err <= 1e-6 * np.linalg.norm(g0)

    # hess is minus the Hessian: central differences of the gradient.
    step = 1e-5
    fd_hess = np.empty((d, d))
    for k in range(d):
        e = np.zeros(d)
        e[k] = step
        fd_hess[:, k] = (evaluate(w0 + e)[1] - evaluate(w0 - e)[1]) / (2 * step)
    np.testing.assert_allclose(h0, -fd_hess, rtol=1e-6,
                               atol=1e-6 * np.abs(h0).max())


# ---------------------------------------------------------------------------
# float32 data: read as float32, computed in float64.
# ---------------------------------------------------------------------------


@threads
def test_float32_data_is_computed_in_float64(num_threads):
    # A float32 data set defines its problem exactly: every kernel must give
    # bit for bit what it gives on the same values stored as float64 (sums in
    # float32 would carry rounding above the solvers' optimality targets).
    X32, i, j, A = _case(1000, 9, np.float32, seed=13)
    X64 = X32.astype(np.float64)
    rng = np.random.default_rng(14)
    w = rng.uniform(0.1, 1, size=9)
    weights = rng.uniform(0, 1, size=1000)
    K = rng.normal(size=(9, 3))
    a, b = (_run_all(X, i, j, A, w, weights, num_threads) for X in (X32, X64))
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    outs = []
    for X in (X32, X64):
        grad, dists = np.empty((9, 9)), np.empty(1000)
        f = _pairs.sqrt_dist_sum_grad_factor(X, i, j, K, grad, dists, num_threads)
        s = np.empty(9)
        _pairs.sq_diff_sum(X, i, j, s)
        outs.append((f, grad, dists, s))
    for u, v in zip(*outs, strict=True):
        assert np.array_equal(u, v)


def ref_factor_hessian(X, i, j, P, L):
    D = _diffs(X, i, j)
    Z = D if P.size == 0 else D @ P
    Y = Z @ L
    s = np.sqrt(np.einsum("pk,pk->p", Y, Y))
    ok = s > 0
    Psi = np.concatenate([Z * Y[:, c:c + 1] for c in range(L.shape[1])], axis=1)
    Psi = Psi[ok] / s[ok, None] ** 1.5
    scale = np.abs(Psi).T @ np.abs(Psi)
    return s.sum(), Psi.T @ Psi, scale


@grid
@dims
@dtypes
@threads
@pytest.mark.parametrize("whiten", [False, True])
def test_factor_hessian(n_pairs, d, dtype, num_threads, whiten):
    X, i, j, _ = _case(n_pairs, d, dtype)
    rng = np.random.default_rng(5)
    k = max(d - 1, 1) if whiten else d
    P = rng.normal(size=(d, k)) if whiten else np.empty((0, 0))
    L = rng.normal(size=(k, 2))
    H = np.full((2 * k, 2 * k), np.nan)
    f = _pairs.factor_hessian(X, i, j, P, L, H, num_threads)
    f_ref, H_ref, scale = ref_factor_hessian(X, i, j, P, L)
    _assert_close(f, f_ref, max(f_ref, 1.0), dtype, factor=4.0)
    _assert_close(H, H_ref, scale, dtype, factor=16.0)
    assert np.array_equal(H, H.T)


def test_factor_hessian_rejects_bad_shapes():
    X, i, j, _ = _case(10, 4, np.float64)
    with pytest.raises(ValueError, match="factor_hessian"):
        _pairs.factor_hessian(X, i, j, np.empty((0, 0)), np.ones((3, 2)),
                              np.empty((6, 6)), 1)
    with pytest.raises(ValueError, match="factor_hessian"):
        _pairs.factor_hessian(X, i, j, np.ones((4, 3)), np.ones((3, 2)),
                              np.empty((5, 5)), 1)


@grid
@dims
@dtypes
@threads
def test_pair_project(n_pairs, d, dtype, num_threads):
    X, i, j, _ = _case(n_pairs, d, dtype)
    W = np.random.default_rng(6).normal(size=(d, 3))
    out = np.full((n_pairs + 1, 3), np.nan)
    _pairs.pair_project(X, i, j, W, out, num_threads)
    D = _diffs(X, i, j)
    _assert_close(out[:n_pairs], D @ W, np.abs(D) @ np.abs(W), dtype, factor=2.0)
    assert np.isnan(out[n_pairs]).all()  # rows beyond the pairs untouched
    with pytest.raises(ValueError, match="pair_project"):
        _pairs.pair_project(X, i, j, W[:, :2].copy(), out, num_threads)


@grid
@dims
@dtypes
@threads
def test_points_project(n_pairs, d, dtype, num_threads):
    # an offset far above the spread: the points route centres first, so its
    # rounding follows the spread (X - mean), not the offset
    X, i, j, _ = _case(n_pairs, d, dtype)
    X = (X + dtype(100.0)).astype(dtype)
    # a near-identical pair, whose difference T cannot resolve: recomputed
    near = min(n_pairs, 2)
    X[1] = X[0]
    X[1, 0] = np.nextafter(X[0, 0], dtype(np.inf))
    i[:near], j[:near] = 0, 1
    W = np.random.default_rng(6).normal(size=(d, 3))
    out = np.full((n_pairs + 1, 3), np.nan)
    _pairs.points_project(X, i, j, W, out, num_threads)
    D = _diffs(X, i, j)
    C = X.astype(np.float64) - X.astype(np.float64).mean(axis=0)
    scale = (np.abs(C[i]) + np.abs(C[j])) @ np.abs(W)
    _assert_close(out[:n_pairs], D @ W, scale, np.float64, factor=8.0 * d)
    _assert_close(out[:near], D[:near] @ W, np.abs(D[:near]) @ np.abs(W),
                  np.float64, factor=2.0 * d)
    assert np.all(out[:n_pairs][i == j] == 0)  # identical points: exactly 0
    assert np.isnan(out[n_pairs]).all()  # rows beyond the pairs untouched
    if num_threads == 2:  # each row depends on its pair alone
        other = np.empty((n_pairs, 3))
        _pairs.points_project(X, i, j, W, other, 1)
        assert np.array_equal(other, out[:n_pairs])
    with pytest.raises(ValueError, match="points_project"):
        _pairs.points_project(X, i, j, W[:, :2].copy(), out, num_threads)


@pytest.mark.parametrize("n_points, n_pairs, route", [
    (200, 3000, "points_project"),  # more pairs than points: through the points
    (3000, 200, "pair_project"),    # the other way round: by the pairs
])
def test_pair_projection_routes(monkeypatch, n_points, n_pairs, route):
    from fastmetric._mmc_common import pair_projection
    from fastmetric._validation import PairData

    X, i, j, _ = _case(n_pairs, 30, np.float64, n_points=n_points)
    W = np.random.default_rng(7).normal(size=(30, 5))
    used = []
    for name in ("pair_project", "points_project"):
        kernel = getattr(_pairs, name)
        monkeypatch.setattr(_pairs, name, lambda *a, _k=kernel, _n=name: (
            used.append(_n), _k(*a))[1])
    out = pair_projection(PairData(X, i, j), W, n_pairs + 2, n_threads=2)
    assert used == [route]
    D = _diffs(X, i, j)
    assert out.shape == (n_pairs + 2, 5)
    np.testing.assert_allclose(out[:n_pairs], D @ W, rtol=0, atol=1e-12)
    assert not out[n_pairs:].any()
