"""``fastmetric._linalg`` (LAPACK syevr, PSD projection, BLAS shims) against NumPy.

Tolerances are relative to the scale of each result: ``rtol`` times ``|a| @ |b|``
for products and times ``||A||_2`` for spectral results (a backward-stable
eigensolver is accurate to a multiple of ``eps * ||A||``, not to ``eps`` of each
small eigenvalue).
"""

import numpy as np
import pytest

from fastmetric import _linalg

RTOL = {np.float32: 1e-6, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
SIZES = [1, 2, 5, 17, 40]


def _sym(rng, d, dtype):
    M = rng.normal(size=(d, d))
    return ((M + M.T) / 2).astype(dtype)


def _spectral_tol(A, dtype):
    """``max(rtol, 4 d eps) * ||A||_2``: the eigensolver's backward-error scale.

    In float64 ``rtol`` dominates; in float32 ``d * eps`` passes 1e-6 from d = 3.
    """
    d = A.shape[0]
    norm = np.linalg.norm(A.astype(np.float64), 2)
    rel = max(RTOL[dtype], 4 * d * np.finfo(dtype).eps)
    return rel * max(norm, np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_eigh_matches_numpy(dtype, d):
    rng = np.random.default_rng(d)
    A = _sym(rng, d, dtype)
    A_before = A.copy()
    w = np.empty(d, dtype=dtype)
    V = np.empty((d, d), dtype=dtype)
    _linalg.eigh(A, w, V)
    assert np.array_equal(A, A_before)  # input unchanged
    tol = _spectral_tol(A, dtype)
    w_ref = np.linalg.eigvalsh(A.astype(np.float64))
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=tol)
    assert np.all(np.diff(w) >= 0)  # ascending
    # Eigenvectors are defined up to sign (and rotation in repeated
    # eigenspaces), so check the decomposition rather than V itself.
    V64, w64 = V.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(V64.T @ V64, np.eye(d), rtol=0, atol=RTOL[dtype] * d)
    np.testing.assert_allclose((V64 * w64) @ V64.T, A.astype(np.float64), rtol=0,
                               atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
@pytest.mark.parametrize("k", [1, 3, "d"])
def test_eigh_top_matches_numpy(dtype, d, k):
    k = d if k == "d" else min(k, d)
    rng = np.random.default_rng(10 + d)
    A = _sym(rng, d, dtype)
    A_before = A.copy()
    w = np.empty(k, dtype=dtype)
    V = np.empty((d, k), dtype=dtype)
    _linalg.eigh_top(A, w, V)
    assert np.array_equal(A, A_before)
    tol = _spectral_tol(A, dtype)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A.astype(np.float64))[-k:],
                               rtol=0, atol=tol)
    V64, w64 = V.astype(np.float64), w.astype(np.float64)
    np.testing.assert_allclose(V64.T @ V64, np.eye(k), rtol=0, atol=RTOL[dtype] * d)
    np.testing.assert_allclose(A.astype(np.float64) @ V64, V64 * w64, rtol=0,
                               atol=tol * 4)
    # Without eigenvector columns only the eigenvalues are computed.
    w_only = np.empty(k, dtype=dtype)
    _linalg.eigh_top(A, w_only, np.empty((d, 0), dtype=dtype))
    np.testing.assert_allclose(w_only, w, rtol=0, atol=tol)


@pytest.mark.parametrize("scale", [1e-35, 1e35])
@pytest.mark.parametrize("d,k", [(12, 2), (40, 5)])
def test_eigh_top_far_from_unit_scale(scale, d, k):
    # Entries beyond 1e30 (or below 1e-30) take syevr's index-range path,
    # whose eigenvalue argument LAPACK fills beyond the k requested (it once
    # wrote past a k-sized buffer); clustered top eigenvalues make that likely.
    rng = np.random.default_rng(d)
    U = np.linalg.qr(rng.normal(size=(d, d)))[0]
    lam = np.r_[rng.uniform(-1, 0.5, d - 4), [2.0, 2.0, 2.0, 3.0]]
    A = np.ascontiguousarray(((U * lam) @ U.T) * scale)
    for _ in range(20):
        w = np.empty(k)
        V = np.empty((d, k))
        _linalg.eigh_top(A, w, V)
        np.testing.assert_allclose(w / scale, np.sort(lam)[-k:], rtol=0, atol=1e-12)
        np.testing.assert_allclose(A @ V, V * w, rtol=0, atol=1e-12 * scale)


def test_eigh_top_rejects_bad_shapes():
    A = np.eye(4)
    for w, V in [(np.empty(0), np.empty((4, 0))), (np.empty(5), np.empty((4, 5))),
                 (np.empty(2), np.empty((4, 3))), (np.empty(2), np.empty((3, 2)))]:
        with pytest.raises(ValueError, match="eigh_top"):
            _linalg.eigh_top(A, w, V)


@pytest.mark.parametrize("dtype", DTYPES)
def test_eigh_reads_upper_triangle_only(dtype):
    rng = np.random.default_rng(3)
    A = _sym(rng, 6, dtype)
    garbage = A.copy()
    garbage[np.tril_indices(6, -1)] = 1e3  # the lower triangle must be ignored
    w1, V1 = np.empty(6, dtype), np.empty((6, 6), dtype)
    w2, V2 = np.empty(6, dtype), np.empty((6, 6), dtype)
    _linalg.eigh(A, w1, V1)
    _linalg.eigh(garbage, w2, V2)
    assert np.array_equal(w1, w2)


def _psd_ref(A):
    S = (A + A.T) / 2
    w, V = np.linalg.eigh(S)
    return (V * np.maximum(w, 0)) @ V.T, w


def _psd_project(A):
    d = A.shape[0]
    out = np.full((d, d), np.nan, dtype=A.dtype)
    w = np.empty(d, dtype=A.dtype)
    _linalg.psd_project(A, out, w)
    return out, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_psd_project_matches_numpy(dtype, d):
    rng = np.random.default_rng(100 + d)
    A = rng.normal(size=(d, d)).astype(dtype)  # not symmetric: it is symmetrised
    out, w = _psd_project(A)
    ref, w_ref = _psd_ref(A.astype(np.float64))
    tol = _spectral_tol(A, dtype)
    np.testing.assert_allclose(w, w_ref, rtol=0, atol=tol)
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
    # Exactly symmetric and PSD (to rounding).
    assert np.array_equal(out, out.T)
    assert np.linalg.eigvalsh(out.astype(np.float64)).min() >= -tol


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_psd_project_is_identity_on_psd_input(dtype, d):
    rng = np.random.default_rng(200 + d)
    L = rng.normal(size=(d, max(d // 2, 1)))  # rank-deficient PSD
    A = (L @ L.T).astype(dtype)
    out, w = _psd_project(A)
    np.testing.assert_allclose(out, A, rtol=0, atol=_spectral_tol(A, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_psd_project_of_negative_definite_is_zero(dtype, d):
    rng = np.random.default_rng(300 + d)
    L = rng.normal(size=(d, d))
    A = (-(L @ L.T) - np.eye(d)).astype(dtype)
    out, w = _psd_project(A)
    assert np.all(w < 0)
    assert np.all(out == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_psd_project_one_by_one(dtype):
    for value, expected in [(2.5, 2.5), (-3.0, 0.0), (0.0, 0.0)]:
        out, w = _psd_project(np.array([[value]], dtype=dtype))
        assert out[0, 0] == pytest.approx(expected, rel=RTOL[dtype])
        assert w[0] == pytest.approx(value, rel=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 7), (7, 1, 4), (1, 9, 1),
                                   (4, 6, 1), (64, 33, 17), (17, 64, 33)])
def test_gemm_matches_numpy(dtype, m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.normal(size=(m, k)).astype(dtype)
    b = rng.normal(size=(k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    _linalg.gemm(a, b, out)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = np.abs(a64) @ np.abs(b64)
    assert np.all(np.abs(out - a64 @ b64) <= RTOL[dtype] * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", [(1, 1), (5, 3), (3, 5), (1, 4), (100, 40)])
def test_syrk_matches_numpy(dtype, k, n):
    rng = np.random.default_rng(k * 100 + n)
    a = rng.normal(size=(k, n)).astype(dtype)
    out = np.full((n, n), np.nan, dtype=dtype)
    _linalg.syrk(a, out)
    a64 = a.astype(np.float64)
    scale = np.abs(a64).T @ np.abs(a64)
    assert np.all(np.abs(out - a64.T @ a64) <= RTOL[dtype] * scale)
    assert np.array_equal(out, out.T)


# ---------------------------------------------------------------------------
# The small Jacobi eigensolver of the eigenbasis projections (float64 only).
# ---------------------------------------------------------------------------


def _jacobi_cases():
    rng = np.random.default_rng(11)
    yield "zero", np.zeros((3, 3))
    yield "diagonal", np.diag([3.0, -1.0, 3.0, 0.0])
    yield "one", np.array([[-2.5]])
    Q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    yield "repeated", (Q * [2.0, 2.0, 2.0, -1.0, 0.0, 0.0]) @ Q.T
    yield "graded", (Q * [1e12, 1.0, 1e-6, 0.0, -1e-3, 5.0]) @ Q.T
    for d in (2, 5, 12, 16):
        yield f"random{d}", _sym(rng, d, np.float64)


@pytest.mark.parametrize("name, A", list(_jacobi_cases()))
def test_jacobi_eigh_matches_numpy(name, A):
    d = A.shape[0]
    w = np.empty(d)
    V = np.empty((d, d))
    assert _linalg.jacobi_eigh(A, w, V) == 0
    tol = 8 * d * np.finfo(float).eps * max(np.linalg.norm(A, 2), np.finfo(float).tiny)
    assert np.all(np.diff(w) <= 0)  # descending
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A)[::-1], rtol=0, atol=tol)
    np.testing.assert_allclose(V.T @ V, np.eye(d), rtol=0, atol=1e-13)
    np.testing.assert_allclose((V * w) @ V.T, A, rtol=0, atol=tol)


@pytest.mark.parametrize("d", [1, 2, 7, 50])
@pytest.mark.parametrize("kind", ["indefinite", "low_rank", "scaled"])
def test_certified_below_is_sound_and_tight(d, kind):
    rng = np.random.default_rng(d)
    for _ in range(20):
        if kind == "low_rank":  # MMC's gradients near the optimum: a few
            K = rng.normal(size=(d, min(d, 3)))  # large eigenvalues, many tiny
            M = K @ K.T
        else:
            M = rng.normal(size=(d, d))
            M = M + M.T
        if kind == "scaled":
            M *= 10.0 ** rng.uniform(-150, 150)
        lam = np.linalg.eigvalsh(M)[-1]
        span = max(abs(lam), np.abs(M).max())
        # never claims a bound below the top eigenvalue (soundness) ...
        assert not _linalg.certified_below(M, lam - 1e-9 * span)
        # ... and shows one a little above it (tightness)
        assert _linalg.certified_below(M, lam + 1e-9 * span)


def test_certified_below_rejects_non_finite_and_bad_shapes():
    M = np.eye(3)
    assert not _linalg.certified_below(M, np.nan)
    M[0, 2] = np.inf
    assert not _linalg.certified_below(M, 10.0)
    with pytest.raises(ValueError, match="square"):
        _linalg.certified_below(np.ones((2, 3)), 1.0)
