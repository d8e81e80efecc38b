"""The compiled projected-gradient path of the exact MMC solver.

Its kernels against NumPy (:mod:`fastmetric._reference`), its certificate,
and the solver with and without it on the same problems (float32 and float64
data, one and two threads).
"""

import numpy as np
import pytest

import fastmetric._mmc_exact as exact
from fastmetric import MMC, _linalg
from fastmetric._mmc_common import _project_capped_simplex
from fastmetric._reference import (
    mmc_exact_numpy,
    mmc_objective_numpy,
    sqrt_dist_sum_and_grad_numpy,
)

capped_simplex = _linalg.capped_simplex
spg_spectraplex = _linalg.spg_spectraplex
spg_value_grad = _linalg.spg_value_grad

_ROWS = 512  # rows per BLAS block in the compiled value pass (SPG_ROWS)


def _psd(d, rank, seed):
    rng = np.random.default_rng(seed)
    K = rng.normal(size=(d, rank))
    B = K @ K.T
    return B / np.trace(B)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("n", [1, 7, _ROWS, 2 * _ROWS + 3, 7 * _ROWS - 1])
@pytest.mark.parametrize("d,rank", [(1, 1), (5, 2), (12, 12), (13, 4)])
def test_value_grad_matches_numpy(n, d, rank, num_threads, packed):
    rng = np.random.default_rng(n + d)
    Z = rng.normal(size=(n, d))
    Z[::5] = 0.0  # pairs of identical points: distance 0, no gradient
    B = _psd(d, rank, d)
    G = np.full((d, d), np.nan)
    dists = np.full(n, np.nan)
    f = spg_value_grad(Z, B, G, dists, num_threads, packed)
    f_ref, G_ref = sqrt_dist_sum_and_grad_numpy(Z, B)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(G, G_ref, rtol=1e-10, atol=1e-12 * np.abs(G_ref).max())
    np.testing.assert_array_equal(G, G.T)
    np.testing.assert_allclose(dists, np.sqrt(np.einsum("pk,pk->p", Z @ B, Z)),
                               rtol=1e-12, atol=1e-300)
    assert np.all(dists[::5] == 0)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("n", [3 * _ROWS + 5, 9 * _ROWS])
def test_value_grad_bitwise_same_for_any_thread_count(n, packed):
    # per-block partial sums added in block order: the compiled loop takes
    # the same path whatever n_jobs is
    rng = np.random.default_rng(n)
    Z = rng.normal(size=(n, 7))
    B = _psd(7, 3, 1)
    outs = []
    for nt in (1, 2, 3):
        G, dists = np.empty((7, 7)), np.empty(n)
        outs.append((spg_value_grad(Z, B, G, dists, nt, packed), G, dists))
    for f, G, dists in outs[1:]:
        assert f == outs[0][0]
        np.testing.assert_array_equal(G, outs[0][1])
        np.testing.assert_array_equal(dists, outs[0][2])


@pytest.mark.parametrize("packed", [False, True])
def test_compiled_loop_same_iterates_for_one_and_two_threads(packed):
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(4 * _ROWS + 1, 6)) * rng.uniform(0.2, 3.0, 6)
    runs = []
    for nt in (1, 2):
        B = np.eye(6) / 6
        h, g = np.empty(200), np.empty(200)
        n_iter, f, gap, G, status = spg_spectraplex(Z, B, 200, 1e-10, 0, 200,
                                                    h, g, nt, packed)
        runs.append((n_iter, f, B, h[:n_iter].copy()))
    assert runs[0][0] == runs[1][0] > 0
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    np.testing.assert_array_equal(runs[0][3], runs[1][3])


def test_compiled_loop_packed_and_blocked_passes_agree():
    # the two ways of evaluating f differ by rounding only: same optimum,
    # both certified
    rng = np.random.default_rng(4)
    Z = rng.normal(size=(3 * _ROWS + 7, 5)) * rng.uniform(0.2, 3.0, 5)
    out = {}
    for packed in (False, True):
        B = np.eye(5) / 5
        h, g = np.empty(300), np.empty(300)
        n_iter, f, gap, G, status = spg_spectraplex(Z, B, 300, 1e-10, 0, 300,
                                                    h, g, 1, packed)
        assert status == 0 and gap <= 1e-10
        out[packed] = (f, B)
    assert out[True][0] == pytest.approx(out[False][0], rel=1e-12)
    np.testing.assert_allclose(out[True][1], out[False][1], atol=1e-5)


def _gap_at(Z, B, n_identical):
    """The certified gap spg_spectraplex reports at B without iterating."""
    h, g = np.empty(1), np.empty(1)
    n_iter, f, gap, G, status = spg_spectraplex(Z, B.copy(), 0, 1e-300,
                                                n_identical, 8, h, g)
    assert n_iter == 0
    return f, gap, G


def test_fw_gap_is_inf_when_a_moving_pair_collapses():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(50, 4))
    B = np.diag([1.0, 0, 0, 0])  # pairs along the other axes collapse
    Z[:3, 0] = 0.0
    assert _gap_at(Z, B, 0)[1] == np.inf
    Z[:3] = 0.0  # now they are identical points, which never count
    f, gap, G = _gap_at(Z, B, 3)
    assert gap == pytest.approx((np.linalg.eigvalsh(G)[-1] - f / 2) / f, rel=1e-12)
    f_ref, G_ref = sqrt_dist_sum_and_grad_numpy(Z, B)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(G, G_ref, rtol=1e-12, atol=1e-14)


def test_spg_reports_status_3_when_every_distance_is_zero():
    Z = np.zeros((5, 3))
    Z[:, 0] = 1.0
    h, g = np.empty(10), np.empty(10)
    out = spg_spectraplex(Z, np.diag([0.0, 0.5, 0.5]), 10, 1e-8, 0, 8, h, g)
    assert out[0] == 0 and out[4] == 3


@pytest.mark.parametrize("seed", range(6))
def test_capped_simplex_matches_python(seed):
    rng = np.random.default_rng(seed)
    lam = rng.normal(scale=[0.1, 1.0, 10.0][seed % 3], size=1 + seed * 3)
    out = capped_simplex(lam)
    np.testing.assert_allclose(out, _project_capped_simplex(lam), atol=1e-15)
    assert out.min() >= 0 and out.sum() <= 1 + 1e-12


def _whitened_problem(d, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    X = rng.normal(size=(300, d)) + 2.0 * rng.normal(size=(3, d))[y]
    X *= rng.uniform(0.3, 3.0, size=d)
    a, b = rng.integers(0, 300, size=(2, 4 * n))
    keep = a != b
    a, b = a[keep], b[keep]
    same = y[a] == y[b]
    sim = np.stack([a[same], b[same]], 1)[:n]
    dis = np.stack([a[~same], b[~same]], 1)[:n]
    return X, sim, dis


@pytest.mark.parametrize("d,n", [(3, 200), (8, 500), (20, 400)])
def test_spg_reaches_the_reference_optimum(d, n):
    X, sim, dis = _whitened_problem(d, n, d)
    Zs = X[sim[:, 0]] - X[sim[:, 1]]
    mu, V = np.linalg.eigh(Zs.T @ Zs)
    P = V / np.sqrt(mu)
    Z = np.ascontiguousarray((X[dis[:, 0]] - X[dis[:, 1]]) @ P)
    B = np.diag(mu / mu.sum())
    hist, gaps = np.empty(500), np.empty(500)
    n_iter, f, gap, G, status = spg_spectraplex(Z, B, 500, 1e-9, 0, 500, hist, gaps)
    assert status == 0 and gap <= 1e-9
    assert np.all(np.diff(hist[:n_iter]) > -1e-9 * f)  # (non-monotone, but barely)
    # the certificate bounds how far J is from the reference's optimum
    A_ref = mmc_exact_numpy(X, sim, dis, gap_tol=1e-12)[0]
    J_ref = mmc_objective_numpy(X, sim, dis, A_ref)
    J = mmc_objective_numpy(X, sim, dis, P @ B @ P.T)
    assert J == pytest.approx(J_ref, rel=2e-9)
    assert J <= J_ref * (1 + 1e-12)
    assert np.trace(B) <= 1 + 1e-12 and np.linalg.eigvalsh(B).min() > -1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_jobs", [1, 2])
@pytest.mark.parametrize("d,n", [(4, 300), (15, 600)])
def test_compiled_and_python_paths_agree(monkeypatch, dtype, n_jobs, d, n):
    X, sim, dis = _whitened_problem(d, n, 100 + d)
    X = X.astype(dtype)
    pairs = np.concatenate([sim, dis])
    labels = np.r_[np.ones(len(sim)), -np.ones(len(dis))]
    fitted = {}
    for name, max_d in (("compiled", 64), ("python", 0)):
        monkeypatch.setattr(exact, "_COMPILED_MAX_D", max_d)
        fitted[name] = MMC(preprocessor=X, n_jobs=n_jobs).fit(pairs, labels)
    a, b = fitted["compiled"], fitted["python"]
    assert a.converged_ and b.converged_
    J = [mmc_objective_numpy(X, sim, dis, m.A_) for m in (a, b)]
    tol = 1e-8 if dtype == np.float64 else 1e-5
    assert J[0] == pytest.approx(J[1], rel=tol)
    np.testing.assert_allclose(a.A_, b.A_, rtol=0, atol=1e3 * tol * np.abs(b.A_).max())


def test_compiled_path_hands_over_to_newton_on_ill_conditioned_data(monkeypatch):
    # Strongly correlated features: projected gradient alone is slow, so the
    # compiled loop stops early and the Newton rounds finish the job.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    base = rng.normal(size=(400, 3)) + 1.5 * y[:, None]
    X = base @ rng.normal(size=(3, 12)) + 1e-3 * rng.normal(size=(400, 12))
    idx = rng.integers(0, 400, size=(3000, 2))
    idx = idx[idx[:, 0] != idx[:, 1]]
    labels = np.where(y[idx[:, 0]] == y[idx[:, 1]], 1, -1)
    calls = []
    real = exact._factor_newton

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(exact, "_factor_newton", counting)
    model = MMC(preprocessor=X, n_jobs=1).fit(idx, labels)
    assert model.converged_
    sim, dis = idx[labels == 1], idx[labels == -1]
    J = mmc_objective_numpy(X, sim, dis, model.A_)
    J_ref = mmc_objective_numpy(X, sim, dis,
                                mmc_exact_numpy(X, sim, dis, gap_tol=1e-12)[0])
    assert J == pytest.approx(J_ref, rel=1e-7)
    assert calls, "expected the compiled loop to hand over to Newton"


# --- diagonal MMC's cached passes ---------------------------------------------


def _diag_problem(n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(max(n // 3, 4), d)).astype(dtype)
    i = rng.integers(0, X.shape[0], n).astype(np.intp)
    j = rng.integers(0, X.shape[0], n).astype(np.intp)
    j[::7] = i[::7]  # identical points: zero distance
    w = rng.uniform(0.0, 2.0, d)
    w[::3] = 0.0
    return X, i, j, w


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blas_threads", [1, 2])
@pytest.mark.parametrize("n,d", [(1, 1), (50, 4), (3000, 17)])
def test_diagonal_cached_passes_match_numpy(dtype, blas_threads, n, d):
    from threadpoolctl import threadpool_limits

    from fastmetric._numba.mmc import (
        diag_derivs_cached,
        diag_dist_sum_cached,
        diag_hess_block,
        gather_sq_diff_t,
    )

    X, i, j, w = _diag_problem(n, d, dtype)
    Q = (X[i].astype(np.float64) - X[j]) ** 2
    Qt = np.empty((d, n))
    gather_sq_diff_t(X, i, j, Qt)
    np.testing.assert_array_equal(Qt, Q.T)
    s = Q @ w
    dist = np.sqrt(s)
    pos = s > 0
    a = np.where(pos, 0.5 / np.where(pos, dist, 1.0), 0.0)
    c2 = np.where(pos, 0.25 / np.where(pos, s * dist, 1.0), 0.0)
    grad_ref = Q.T @ a
    hess_ref = (Q * c2[:, None]).T @ Q
    grad, hdiag, c2_out = np.empty(d), np.empty(d), np.empty(n)
    with threadpool_limits(blas_threads):
        f = diag_derivs_cached(Qt, w, grad, hdiag, c2_out)
        f_value = diag_dist_sum_cached(Qt, w)
        cols = np.flatnonzero(w > 0) if d > 1 else np.arange(1)
        H = diag_hess_block(Qt, c2_out, cols)
    assert f == pytest.approx(dist.sum(), rel=1e-12)
    assert f_value == pytest.approx(dist.sum(), rel=1e-12)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-11)
    np.testing.assert_allclose(hdiag, np.diag(hess_ref), rtol=1e-11)
    np.testing.assert_allclose(c2_out, c2, rtol=1e-13)
    np.testing.assert_allclose(H, hess_ref[np.ix_(cols, cols)], rtol=1e-11)
    np.testing.assert_array_equal(H, H.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_diagonal_solver_same_result_cached_or_not(monkeypatch, dtype):
    import fastmetric._mmc_diagonal as diag

    X, sim, dis = _whitened_problem(12, 800, 5)
    X = X.astype(dtype)
    pairs = np.concatenate([sim, dis])
    labels = np.r_[np.ones(len(sim)), -np.ones(len(dis))]
    out = []
    for limit in (diag._CACHE_ELEMENTS, 0):
        monkeypatch.setattr(diag, "_CACHE_ELEMENTS", limit)
        out.append(MMC(preprocessor=X, diagonal=True, n_jobs=2).fit(pairs, labels))
    a, b = out
    assert a.converged_ and b.converged_
    tol = 1e-7 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(np.diag(a.A_), np.diag(b.A_), rtol=tol,
                               atol=tol * np.abs(b.A_).max())


@pytest.mark.parametrize("kind", ["diagonal", "low-rank", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_distance_structure_paths_match_numpy(monkeypatch, kind, dtype):
    rng = np.random.default_rng(1)
    # (above 8 features: up to 8 every non-diagonal A takes the dense path)
    d = 12
    X = rng.normal(size=(60, d)).astype(dtype)
    if kind == "diagonal":
        A = np.diag(rng.uniform(0, 2, d))
        A[2, 2] = 0.0
    else:
        K = rng.normal(size=(d, 2 if kind == "low-rank" else d))
        A = K @ K.T
    model = MMC(preprocessor=X).fit(*_fit_pairs(rng))
    model.A_ = A
    from fastmetric.base import components_from_metric

    model.components_ = components_from_metric(A)
    idx = rng.integers(0, 60, size=(200, 2))
    idx[:5, 1] = idx[:5, 0]
    diff = X[idx[:, 0]].astype(np.float64) - X[idx[:, 1]]
    ref = np.sqrt(np.maximum(np.einsum("pk,kl,pl->p", diff, A, diff), 0))
    import fastmetric.base as base

    calls = {"diag": 0, "factor": 0}
    for name, key in (("diag_sq_distances", "diag"),
                      ("factor_dist_sum_and_grad", "factor")):
        real = getattr(base, name)

        def counted(*args, _real=real, _key=key, **kwargs):
            calls[_key] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(base, name, counted)
    got = model.pair_distance(idx)
    assert calls == {"diagonal": {"diag": 1, "factor": 0},
                     "low-rank": {"diag": 0, "factor": 1},
                     "full": {"diag": 0, "factor": 0}}[kind]
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * ref.max())
    assert np.all(got[:5] == 0)


def _fit_pairs(rng):
    y = rng.integers(0, 2, 60)
    idx = rng.integers(0, 60, size=(80, 2))
    idx = idx[idx[:, 0] != idx[:, 1]]
    return idx, np.where(y[idx[:, 0]] == y[idx[:, 1]], 1, -1)


@pytest.mark.parametrize("seed", range(40))
def test_best_accuracy_cut_is_the_largest_best_threshold(seed):
    from fastmetric._numba.mmc import best_accuracy_cut

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    scores = (rng.integers(-4, 4, n).astype(float) if seed % 2
              else rng.normal(size=n))
    y = rng.choice([-1, 1], size=n) if seed % 5 else np.full(n, seed % 3 - 1 or 1)
    c, correct = best_accuracy_cut(np.sort(scores[y == 1]), np.sort(scores[y == -1]))
    cands = np.r_[scores, scores.max() + 1]
    acc = {cc: int(np.sum(np.where(scores >= cc, 1, -1) == y)) for cc in cands}
    best = max(acc.values())
    assert correct == best == acc[c]
    assert c == max(cc for cc, v in acc.items() if v == best)


def test_tiny_dissimilar_difference_does_not_crash_the_diagonal_solver():
    X, sim, dis = _whitened_problem(3, 100, 7)
    X = np.vstack([X, X[:1]])
    X[-1, 0] += 1e-120  # a dissimilar pair whose s^1.5 underflows
    pairs = np.concatenate([sim, dis, [[0, len(X) - 1]]])
    labels = np.r_[np.ones(len(sim)), -np.ones(len(dis) + 1)]
    with np.errstate(all="ignore"):
        model = MMC(preprocessor=X, diagonal=True, n_jobs=1).fit(pairs, labels)
    assert np.all(np.isfinite(model.A_))


@pytest.mark.parametrize("kw", [{"max_iter": 2**31}, {"max_iter": 10**10},
                                {"solver": "ga-ip", "max_proj": 2**31}])
def test_huge_iteration_budgets_are_accepted(kw):
    X, sim, dis = _whitened_problem(4, 100, 8)
    pairs = np.concatenate([sim, dis])
    labels = np.r_[np.ones(len(sim)), -np.ones(len(dis))]
    model = MMC(preprocessor=X, n_jobs=1, **kw).fit(pairs, labels)
    assert model.converged_


def test_collapsed_moving_pair_hands_over_from_the_compiled_loop():
    # One dissimilar pair 1e-160 apart: its squared distance underflows, the
    # Frank-Wolfe gap is inf, and the Python loop's floored certificate must
    # take over instead of the compiled loop spending max_iter.
    X, sim, dis = _whitened_problem(4, 200, 9)
    X = np.vstack([X, X[:1]])
    X[-1, 1] += 1e-160
    pairs = np.concatenate([sim, dis, [[0, len(X) - 1]]])
    labels = np.r_[np.ones(len(sim)), -np.ones(len(dis) + 1)]
    with np.errstate(all="ignore"):
        model = MMC(preprocessor=X, n_jobs=1, max_iter=1000).fit(pairs, labels)
    assert model.converged_ and model.n_iter_ < 200
