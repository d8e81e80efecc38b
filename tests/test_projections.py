"""The Numba projection kernels against NumPy and the half-space closed form."""

import numpy as np
import pytest

from fastmetric._numba.projections import c1_project, c1_project_cfunc


def _problem(d, seed, shift):
    """A matrix A, the S-matrix W (PSD) and a bound t = <W, A> + shift."""
    rng = np.random.default_rng(seed)
    D = rng.normal(size=(3 * d, d))
    W = D.T @ D
    M = rng.normal(size=(d, d))
    A = (M + M.T) / 2
    w_norm = np.linalg.norm(W)
    t = float(np.sum(W * A)) + shift * w_norm
    return A, W, w_norm, t


def _project(A, W, w_norm, t):
    out = A.copy()
    dot = c1_project(out, W / w_norm, t, t / w_norm)
    return out, dot


@pytest.mark.parametrize("d", [1, 3, 20])
@pytest.mark.parametrize("shift", [0.0, 0.5, 7.0])
def test_feasible_point_is_unchanged(d, shift):
    A, W, w_norm, t = _problem(d, d, shift)
    out, dot = _project(A, W, w_norm, t)
    assert np.array_equal(out, A)
    assert dot == pytest.approx(np.sum(W * A) / w_norm, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("d", [1, 3, 20])
@pytest.mark.parametrize("shift", [-1e-3, -0.5, -30.0])
def test_infeasible_point_goes_to_the_nearest_point_of_the_hyperplane(d, shift):
    A, W, w_norm, t = _problem(d, 10 + d, shift)
    out, dot = _project(A, W, w_norm, t)
    assert dot == pytest.approx(np.sum(W * A) / w_norm, rel=1e-12)
    # On the hyperplane <W, A'> = t ...
    assert np.sum(W * out) == pytest.approx(t, rel=1e-10, abs=1e-10 * w_norm)
    # ... at the closed-form Frobenius projection A - (<W, A> - t) / ||W||^2 W ...
    closed = A - (np.sum(W * A) - t) / w_norm**2 * W
    np.testing.assert_allclose(out, closed, rtol=1e-12, atol=1e-12 * np.abs(A).max())
    # ... which no other feasible point beats.
    rng = np.random.default_rng(d)
    dist = np.linalg.norm(out - A)
    for _ in range(50):
        B = out + rng.normal(size=A.shape)
        excess = np.sum(W * B) - t
        if excess > 0:
            B -= excess / w_norm**2 * W  # push it back into the half-space
        assert np.linalg.norm(B - A) >= dist * (1 - 1e-12)


def _numpy_projection_loop(A, W, t, max_proj, eps):
    """Metric-learn's loop in plain NumPy: full eigh, clip, rebuild."""
    A = A.copy()
    w_norm = np.linalg.norm(W)
    W1, t1 = W / w_norm, t / w_norm
    for rnd in range(1, max_proj + 1):
        dot = np.sum(W1 * A)
        if dot > t1:
            A = A + (t1 - dot) * W1
        lam, V = np.linalg.eigh((A + A.T) / 2)
        A = (V * np.maximum(lam, 0)) @ V.T
        if (np.sum(W * A) - t) / t < eps:
            return A, True, rnd
    return A, False, max_proj


def _eigenbasis(W):
    omega, Q = np.linalg.eigh(W)
    return np.ascontiguousarray(Q), np.maximum(omega, 0.0)


@pytest.mark.parametrize("d", [1, 3, 20, 45])
@pytest.mark.parametrize("start_rank", [1, 4, "full"])
@pytest.mark.parametrize("blas_threads", [1, 2])
@pytest.mark.parametrize("basis", [False, True])
def test_gaip_projection_loop_matches_numpy(d, start_rank, blas_threads, basis):
    from fastmetric._linalg import gaip_projections
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(d)
    r = d if start_rank == "full" else min(start_rank, d)
    K = rng.normal(size=(d, r))
    M = rng.normal(size=(d, d))
    # a PSD part plus a symmetric perturbation, as after a gradient step
    A0 = K @ K.T + 0.3 * (M + M.T)
    D = rng.normal(size=(3 * d, d))
    W = D.T @ D
    t = 0.2 * abs(float(np.sum(W * (K @ K.T)))) + 1e-3
    for max_proj, eps in ((1, 0.01), (7, -1.0), (10_000, 0.01)):
        ref, ok_ref, n_ref = _numpy_projection_loop(A0, W, t, max_proj, eps)
        A = A0.copy()
        counts = np.zeros(3, dtype=np.int64)
        extra = dict(zip(("Q", "omega"), _eigenbasis(W), strict=True)) if basis else {}
        with threadpool_limits(blas_threads):
            ok, n = gaip_projections(A, W, W / np.linalg.norm(W), t,
                                     t / np.linalg.norm(W), max_proj, eps,
                                     c1_project_cfunc.address, counts=counts,
                                     **extra)
        assert (ok, n) == (ok_ref, n_ref)
        assert counts[0] + counts[1] == n
        if not basis:
            assert counts[1] == 0
        np.testing.assert_allclose(A, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
        np.testing.assert_array_equal(A, A.T)
        assert np.linalg.eigvalsh(A).min() >= -1e-10 * np.abs(A).max()


def _gaip_problem(rng, d, kind):
    """(A0, W, t) as ga-ip meets them: a PSD part plus a gradient step."""
    n_rows = 3 * d
    if kind == "singular":  # similar pairs that do not span the space
        n_rows = max(1, d // 2)
    D = rng.normal(size=(n_rows, d))
    if kind == "graded":  # S-matrix eigenvalues over ten decades
        D *= np.logspace(-5, 5, d)
    if kind == "flat":  # W = c I: every omega equal
        W = 7.0 * np.eye(d)
    else:
        W = D.T @ D
    r = max(1, min(d, int(rng.integers(1, 6))))
    K = rng.normal(size=(d, r))
    if kind == "repeated" and r > 1:  # equal eigenvalues in A
        K = np.linalg.qr(K)[0]
    M = rng.normal(size=(d, d))
    A0 = K @ K.T + 0.05 * (M + M.T)
    t = 0.2 * abs(float(np.sum(W * (K @ K.T)))) + 1e-3
    return A0, W, t


@pytest.mark.parametrize("kind", ["plain", "singular", "graded", "flat", "repeated"])
def test_gaip_eigenbasis_rounds_match_dense_rounds(kind):
    # The O(d r^2) rounds in W's eigenbasis against the dense rounds (and
    # metric-learn's loop in NumPy), on S-matrices that are singular, badly
    # conditioned or multiples of I and iterates with repeated eigenvalues;
    # most rounds must actually run in the eigenbasis.
    from fastmetric._linalg import gaip_projections

    rng = np.random.default_rng(["plain", "singular", "graded", "flat",
                                 "repeated"].index(kind))
    used = total = 0
    for _ in range(12):
        d = int(rng.integers(2, 31))
        A0, W, t = _gaip_problem(rng, d, kind)
        w_norm = np.linalg.norm(W)
        Q, omega = _eigenbasis(W)
        for eps in (0.01, 1e-5):
            ref, ok_ref, n_ref = _numpy_projection_loop(A0, W, t, 1000, eps)
            results = []
            for extra in ({}, {"Q": Q, "omega": omega}):
                A = A0.copy()
                factor = np.full((d, d), np.nan)
                counts = np.zeros(3, dtype=np.int64)
                ok, n = gaip_projections(A, W, W / w_norm, t, t / w_norm, 1000, eps,
                                         c1_project_cfunc.address, factor=factor,
                                         counts=counts, **extra)
                rank = int(counts[2])
                # the factor reproduces A
                np.testing.assert_allclose(factor[:, :rank] @ factor[:, :rank].T, A,
                                           rtol=0, atol=1e-12 * np.abs(A).max())
                results.append((A, ok, n, counts.copy()))
            (A_d, ok_d, n_d, c_d), (A_b, ok_b, n_b, c_b) = results
            assert (ok_b, n_b) == (ok_d, n_d) == (ok_ref, n_ref)
            scale = np.abs(ref).max()
            np.testing.assert_allclose(A_b, A_d, rtol=0, atol=1e-10 * scale)
            np.testing.assert_allclose(A_b, ref, rtol=0, atol=1e-10 * scale)
            assert c_d[1] == 0
            used += c_b[1]
            total += n_b
    assert used >= 0.8 * total


def test_gaip_projections_rejects_bad_eigenbasis_shapes():
    from fastmetric._linalg import gaip_projections

    A0, W, t = _gaip_problem(np.random.default_rng(0), 4, "plain")
    w_norm = np.linalg.norm(W)
    with pytest.raises(ValueError, match="Q"):
        gaip_projections(A0.copy(), W, W / w_norm, t, t / w_norm, 10, 0.01,
                         c1_project_cfunc.address, np.eye(3), np.ones(4))
    with pytest.raises(ValueError, match="factor"):
        gaip_projections(A0.copy(), W, W / w_norm, t, t / w_norm, 10, 0.01,
                         c1_project_cfunc.address, factor=np.empty((4, 3)))


@pytest.mark.parametrize("start", ["orthogonal", "skewed", "close"])
def test_basis_round_matches_numpy(start):
    # One eigenbasis round, PSD part of U0 U0^T - beta diag(omega), against
    # numpy.linalg.eigh: from orthogonal columns in descending order (the
    # rounds' usual input, taken as they are), from skewed columns (rotated
    # by the small Jacobi solver first), and with column norms tied to 1e-9
    # (where the perturbation start must not be used across the tie).  A
    # round may refuse (nonzero info: the caller then runs the dense round),
    # but what it returns must be right; the usual input must never be refused.
    from fastmetric._linalg import basis_positive_part

    rng = np.random.default_rng(["orthogonal", "skewed", "close"].index(start))
    accepted = 0
    for _ in range(40):
        d = int(rng.integers(2, 40))
        r = int(rng.integers(1, min(d, 12) + 1))
        Qr, _ = np.linalg.qr(rng.standard_normal((d, r)))
        if start == "close":
            norms = 1.0 + 1e-9 * rng.standard_normal(r)
        else:
            norms = rng.uniform(0.2, 3.0, r)
        U0 = Qr * np.sort(norms)[::-1]
        if start == "skewed":
            U0 = U0 @ np.linalg.qr(rng.standard_normal((r, r)))[0]
        omega = rng.uniform(0.0, 2.0, d)
        beta = float(rng.uniform(0.0, 0.3))
        info, Unew = basis_positive_part(U0, omega, beta)
        if info != 0:
            continue
        accepted += 1
        M = U0 @ U0.T - beta * np.diag(omega)
        lam, V = np.linalg.eigh(M)
        ref = (V * np.maximum(lam, 0)) @ V.T
        np.testing.assert_allclose(Unew @ Unew.T, ref, rtol=0,
                                   atol=1e-12 * np.abs(M).max())
    assert accepted >= {"orthogonal": 40, "skewed": 30, "close": 10}[start]


def test_basis_round_rejects_bad_shapes():
    from fastmetric._linalg import basis_positive_part

    with pytest.raises(ValueError, match="omega"):
        basis_positive_part(np.ones((4, 2)), np.ones(3), 0.1)


def test_basis_round_with_tied_uncoupled_columns():
    # equal column norms that W does not couple (disjoint supports, constant
    # omega): the perturbation start's terms are 0 / 0 there and must be
    # skipped, not turned into NaN (which refuses the round)
    from fastmetric._linalg import basis_positive_part

    U0 = np.zeros((10, 3))
    U0[[0, 4, 7], [0, 1, 2]] = 1.5
    beta = 0.2
    info, Unew = basis_positive_part(U0, np.ones(10), beta)
    assert info == 0
    np.testing.assert_allclose(Unew @ Unew.T, U0 @ U0.T * (2.25 - beta) / 2.25,
                               rtol=0, atol=1e-13)
