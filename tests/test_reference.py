"""The plain-NumPy reference (``fastmetric._reference``) is itself correct.

The reference is ground truth for the kernels and solvers, so it is checked
here against first principles only: finite differences for its gradient, a
direct double loop for its objectives, its own duality gap, and random
feasible matrices for optimality.  Then it is compared with the compiled
objectives and the exact solver.
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import check_grad

from fastmetric import MMC
from fastmetric._mmc_common import mmc_objective
from fastmetric._mmc_diagonal import diagonal_objective
from fastmetric._reference import (
    _project_spectraplex,
    mmc_diagonal_objective_numpy,
    mmc_exact_numpy,
    mmc_objective_numpy,
    sqrt_dist_sum_and_grad_numpy,
)
from fastmetric._validation import PairData


def random_problem(seed, n=None, d=None):
    """Anisotropic Gaussian points and random similar / dissimilar index pairs."""
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 7)) if d is None else d
    n = int(rng.integers(30, 150)) if n is None else n
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, size=d)
    sim = rng.integers(0, n, size=(int(rng.integers(3 * d, 80)), 2))
    dis = rng.integers(0, n, size=(int(rng.integers(5, 80)), 2))
    return X, sim, dis


def random_psd(rng, d):
    """A random PSD matrix whose rank is drawn uniformly from 1..d."""
    rank = int(rng.integers(1, d + 1))
    L = rng.normal(size=(rank, d)) * rng.exponential(size=(rank, 1))
    return L.T @ L


def pair_data(X, pairs):
    return PairData(np.ascontiguousarray(X, dtype=np.float64),
                    np.ascontiguousarray(pairs[:, 0], dtype=np.intp),
                    np.ascontiguousarray(pairs[:, 1], dtype=np.intp))


@pytest.mark.parametrize("seed", range(5))
def test_gradient_matches_finite_differences(seed):
    rng = np.random.default_rng(seed)
    d = 4
    diffs = rng.normal(size=(25, d))
    L = rng.normal(size=(d, d))
    A0 = L.T @ L + 0.5 * np.eye(d)  # positive definite: f is smooth around A0

    def value(a):
        return sqrt_dist_sum_and_grad_numpy(diffs, a.reshape(d, d))[0]

    def grad(a):
        return sqrt_dist_sum_and_grad_numpy(diffs, a.reshape(d, d))[1].ravel()

    err = check_grad(value, grad, A0.ravel(), epsilon=1e-7)
    assert err <= 1e-5 * np.linalg.norm(grad(A0.ravel()))


def test_gradient_ignores_pairs_at_zero_distance():
    diffs = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])
    f, G = sqrt_dist_sum_and_grad_numpy(diffs, np.eye(2))
    assert f == pytest.approx(3.0)
    np.testing.assert_allclose(G, np.diag([0.5, 1.0]))


def test_objectives_match_a_direct_loop():
    X, sim, dis = random_problem(0)
    rng = np.random.default_rng(1)
    A = random_psd(rng, X.shape[1])
    w = rng.uniform(0.0, 2.0, size=X.shape[1])
    sq_sim = sum((X[a] - X[b]) @ A @ (X[a] - X[b]) for a, b in sim)
    root_dis = sum(np.sqrt((X[a] - X[b]) @ A @ (X[a] - X[b])) for a, b in dis)
    assert mmc_objective_numpy(X, sim, dis, A) == pytest.approx(
        root_dis / np.sqrt(sq_sim), rel=1e-12)
    g = (sum(((X[a] - X[b]) ** 2) @ w for a, b in sim)
         - 2.0 * np.log(sum(np.sqrt(((X[a] - X[b]) ** 2) @ w) for a, b in dis)))
    assert mmc_diagonal_objective_numpy(X, sim, dis, w, c=2.0) == pytest.approx(
        g, rel=1e-12)


def test_objective_edge_values():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    same = np.array([[0, 0]])
    apart = np.array([[1, 2]])
    assert mmc_objective_numpy(X, same, apart, np.eye(2)) == np.inf
    assert mmc_objective_numpy(X, same, same, np.eye(2)) == 0.0
    assert mmc_diagonal_objective_numpy(X, apart, same, np.ones(2)) == np.inf


@pytest.mark.parametrize("scale", [0.05, 1.0, 20.0])
def test_spectraplex_projection_is_the_nearest_feasible_point(scale):
    rng = np.random.default_rng(int(scale * 100))
    d = 5
    M = rng.normal(size=(d, d)) * scale
    M = M + M.T
    P = _project_spectraplex(M)
    eig = np.linalg.eigvalsh(P)
    assert eig.min() >= -1e-14 and eig.sum() <= 1 + 1e-12
    # Variational inequality of a projection onto a convex set:
    # <M - P, Y - P> <= 0 for every feasible Y.
    for _ in range(200):
        Y = random_psd(rng, d)
        Y /= max(np.trace(Y), 1.0) * rng.uniform(1.0, 3.0)
        assert np.sum((M - P) * (Y - P)) <= 1e-12 * max(scale, 1.0)


@pytest.mark.parametrize("d", [5, 40, 100])
@pytest.mark.parametrize("rank_hint", [None, 1, 3])
@pytest.mark.parametrize("kind", ["capped", "wide", "negative"])
def test_compiled_spectraplex_projection_matches_reference(d, rank_hint, kind):
    # The solver's projection computes only the top eigenpairs when given a
    # rank hint; with a hint too small for the answer ("wide": trace below 1,
    # every positive eigenvalue survives) it must notice and take them all.
    from fastmetric._mmc_common import _project_spectraplex as compiled

    rng = np.random.default_rng(d)
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    if kind == "capped":  # a few leading directions above the threshold
        u = rng.normal(size=d) / d
        u[:3] += [3.0, 2.0, 1.5]
    elif kind == "wide":
        u = rng.uniform(0.1, 0.9, size=d) / d
    else:
        u = -rng.uniform(0.1, 1.0, size=d)
    M = (Q * u) @ Q.T
    P_ref = _project_spectraplex(M)
    P, lam, V = compiled(M, rank_hint=rank_hint)
    assert lam.size == np.sum(np.linalg.eigvalsh(P_ref) > 1e-12)
    np.testing.assert_allclose(P, P_ref, rtol=0, atol=1e-12)
    assert np.all(lam > 0)
    np.testing.assert_allclose((V * lam) @ V.T, P, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_exact_reaches_tiny_gap_psd_and_scaled(seed):
    X, sim, dis = random_problem(seed)
    A, n_iter, gap = mmc_exact_numpy(X, sim, dis)
    assert gap <= 1e-12
    assert n_iter < 5000
    np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-14 * np.abs(A).max())
    eig = np.linalg.eigvalsh(A)
    assert eig.min() >= -1e-10 * eig.max()
    zs = X[sim[:, 0]] - X[sim[:, 1]]
    # metric-learn's scale with the identity as init.
    assert np.einsum("pk,kl,pl->", zs, A, zs) == pytest.approx(
        np.sum(zs**2) / 100.0, rel=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_exact_beats_random_psd_matrices(seed):
    X, sim, dis = random_problem(seed)
    A, _, _ = mmc_exact_numpy(X, sim, dis)
    best = mmc_objective_numpy(X, sim, dis, A)
    rng = np.random.default_rng(100 + seed)
    d = X.shape[1]
    trials = [random_psd(rng, d) for _ in range(300)]
    # Also small perturbations of the optimum, which probe it locally.
    trials += [A + 1e-3 * np.trace(A) * random_psd(rng, d) for _ in range(100)]
    values = np.array([mmc_objective_numpy(X, sim, dis, B) for B in trials])
    assert np.all(values <= best * (1 + 1e-12))


def test_exact_shrinkage_solves_the_shrunk_problem():
    X, sim, dis = random_problem(3, d=5)
    s = 0.3
    A, _, gap = mmc_exact_numpy(X, sim, dis, shrinkage=s)
    assert gap <= 1e-12
    zs = X[sim[:, 0]] - X[sim[:, 1]]
    zd = X[dis[:, 0]] - X[dis[:, 1]]
    M = (1 - s) * zs.T @ zs + s * np.sum(zs**2) / 5 * np.eye(5)

    def shrunk_J(B):
        root = np.sqrt(np.maximum(np.einsum("pk,kl,pl->p", zd, B, zd), 0)).sum()
        return root / np.sqrt(np.sum(B * M))

    rng = np.random.default_rng(0)
    best = shrunk_J(A)
    assert all(shrunk_J(random_psd(rng, 5)) <= best * (1 + 1e-12)
               for _ in range(200))
    # Shrinkage changes the answer: under the plain objective it is worse.
    A_plain, _, _ = mmc_exact_numpy(X, sim, dis)
    assert mmc_objective_numpy(X, sim, dis, A) < mmc_objective_numpy(
        X, sim, dis, A_plain)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_objectives_agree_with_reference(dtype):
    X, sim, dis = random_problem(4, d=6)
    rng = np.random.default_rng(5)
    A = random_psd(rng, 6)
    w = rng.uniform(0.1, 2.0, size=6)
    Xc = X.astype(dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    ours = mmc_objective(pair_data(Xc, sim), pair_data(Xc, dis), A)
    assert ours == pytest.approx(mmc_objective_numpy(Xc, sim, dis, A), rel=rtol)
    zs = Xc[sim[:, 0]].astype(np.float64) - Xc[sim[:, 1]]
    g, _, _ = diagonal_objective(np.sum(zs**2, axis=0), pair_data(Xc, dis), w, c=1.5)
    assert g == pytest.approx(
        mmc_diagonal_objective_numpy(Xc, sim, dis, w, c=1.5), rel=rtol, abs=rtol)


@pytest.mark.parametrize("seed", range(4))
def test_exact_estimator_reaches_the_reference_optimum(seed):
    # Well-conditioned blobs: the compiled solver must match the reference's J.
    rng = np.random.default_rng(seed)
    d, n, k = 6, 300, 3
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(k, d))[y]
    pairs = rng.integers(0, n, size=(600, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    labels = np.where(y[pairs[:, 0]] == y[pairs[:, 1]], 1, -1)
    A_ref, _, gap = mmc_exact_numpy(X, pairs[labels == 1], pairs[labels == -1])
    assert gap <= 1e-12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mmc = MMC(preprocessor=X).fit(pairs, labels)
    J_ref = mmc_objective_numpy(X, pairs[labels == 1], pairs[labels == -1], A_ref)
    J = mmc_objective_numpy(X, pairs[labels == 1], pairs[labels == -1], mmc.A_)
    assert J == pytest.approx(J_ref, rel=1e-8)
    assert J <= J_ref * (1 + 1e-12)
    # Same scale convention, so the matrices themselves agree too, to the
    # square root of the certified gap (J is flat at its optimum: a relative
    # gap of 1e-8 pins A down to about 1e-4).
    np.testing.assert_allclose(mmc.A_, A_ref, rtol=0,
                               atol=1e-3 * np.abs(A_ref).max())
