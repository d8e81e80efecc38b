"""The Numba projection kernels against NumPy and the half-space closed form."""

import numpy as np
import pytest

from fastmetric._numba.projections import c1_project, frobenius_dot


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (1, 1), (4, 4), (9, 13)])
def test_frobenius_dot_matches_numpy(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape).astype(dtype)
    b = rng.normal(size=shape).astype(dtype)
    expected = np.sum(a.astype(np.float64) * b.astype(np.float64))
    scale = np.sum(np.abs(a.astype(np.float64) * b))
    # Accumulated in float64, so even float32 inputs are summed exactly enough.
    assert abs(frobenius_dot(a, b) - expected) <= 1e-12 * scale


def test_frobenius_dot_on_a_transposed_view():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    b = rng.normal(size=(8, 5))
    assert frobenius_dot(a, b.T) == pytest.approx(np.sum(a * b.T), rel=1e-12)
