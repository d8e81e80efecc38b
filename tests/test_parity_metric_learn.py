"""Parity with metric-learn 0.7.0's ``MMC`` and ``MMC_Supervised``.

These tests run only where metric-learn is installed (CI: ``pytest -m parity``
with scikit-learn<1.8).  They check that fastmetric is a drop-in: the same
constructor, the same fitted attributes and methods, the same accepted inputs;
that ``solver='ga-ip'`` returns metric-learn's matrix; and that the default
exact solver and the diagonal solver do at least as well as metric-learn on
the objectives both libraries claim to optimise.  Objectives are computed here
in NumPy, from the formed pairs, independently of fastmetric's kernels.
"""

import copy
import functools
import inspect
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from threadpoolctl import threadpool_limits

import fastmetric

pytestmark = [
    pytest.mark.parity,
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
    # metric-learn 0.7.0 passes scikit-learn's deprecated ``force_all_finite``.
    pytest.mark.filterwarnings("ignore:'force_all_finite':FutureWarning"),
]

RTOL_A = 1e-6


# ----------------------------------------------------------------------------
# Data: every case is a (pairs, y) problem, built once and shared by the tests.
# ----------------------------------------------------------------------------


def _standardise(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _gaussian(seed=0, n=150, d=10, n_classes=3):
    """Gaussian clusters in d dimensions with features on different scales."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(n_classes, d))
    y = rng.integers(0, n_classes, n)
    scales = rng.uniform(0.3, 3.0, d)
    X = centres[y] + rng.normal(size=(n, d)) * scales
    return X, y


@functools.cache
def _points(name):
    if name == "iris":
        return load_iris(return_X_y=True)
    if name == "wine":
        return load_wine(return_X_y=True)
    if name == "gauss":
        return _gaussian()
    if name == "cancer":
        X, y = load_breast_cancer(return_X_y=True)
        return _standardise(X), y
    raise KeyError(name)


@functools.cache
def _index_pairs(name, n_pairs, seed=0):
    """Random index pairs (no self-pairs) labelled +1 within a class, else -1."""
    X, y = _points(name)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, X.shape[0], n_pairs)
    j = rng.integers(0, X.shape[0], n_pairs)
    keep = i != j
    i, j = i[keep], j[keep]
    labels = np.where(y[i] == y[j], 1, -1)
    assert 0 < np.sum(labels == 1) < labels.size
    return i, j, labels


def _pairs(name, n_pairs, seed=0):
    X, _ = _points(name)
    i, j, labels = _index_pairs(name, n_pairs, seed)
    return np.stack([X[i], X[j]], axis=1), labels


def _spd(d, seed):
    rng = np.random.default_rng(seed)
    B = rng.normal(size=(d, d))
    return B @ B.T / d + 0.5 * np.eye(d)


def _init(spec, d):
    return _spd(d, seed=7) if spec == "spd" else spec


def _quiet_single_thread(func, *args):
    """Call metric-learn without its warnings and with one BLAS thread.

    Its projection loop runs thousands of small ``eigh`` calls, which threaded
    BLAS slows down several times over on a busy machine.
    """
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("ignore")
        return func(*args)


def _ml_mmc(metric_learn, name, n_pairs, init="identity", max_iter=100, *,
            diagonal=False, diagonal_c=1.0):
    """metric-learn's MMC on one case (cached: several tests share a fit)."""
    return _ml_mmc_cached(metric_learn, name, n_pairs, init, max_iter, diagonal,
                          diagonal_c)


@functools.cache
def _ml_mmc_cached(metric_learn, name, n_pairs, init, max_iter, diagonal,
                   diagonal_c):
    pairs, y = _pairs(name, n_pairs)
    est = metric_learn.MMC(init=_init(init, pairs.shape[2]), diagonal=diagonal,
                           diagonal_c=diagonal_c, max_iter=max_iter)
    return _quiet_single_thread(est.fit, pairs, y)


def _fm_gaip(name, n_pairs, init="identity", max_iter=100):
    """fastmetric's MMC(solver='ga-ip') on one case (cached)."""
    return _fm_gaip_cached(name, n_pairs, init, max_iter)


@functools.cache
def _fm_gaip_cached(name, n_pairs, init, max_iter):
    pairs, y = _pairs(name, n_pairs)
    est = fastmetric.MMC(init=_init(init, pairs.shape[2]), solver="ga-ip",
                         max_iter=max_iter)
    return est.fit(pairs, y)


SUPERVISED_KWARGS = dict(n_constraints=40, random_state=0, max_iter=50)


@functools.cache
def _ml_supervised(metric_learn, name):
    """metric-learn's MMC_Supervised on one data set (cached)."""
    X, y = _points(name)
    return _quiet_single_thread(metric_learn.MMC_Supervised(**SUPERVISED_KWARGS).fit,
                                X, y)


def _rel_err(A, B):
    return np.linalg.norm(A - B) / np.linalg.norm(B)


def _sq_dists(pairs, A):
    diff = pairs[:, 0, :] - pairs[:, 1, :]
    return np.einsum("pi,ij,pj->p", diff, A, diff)


def _J(pairs, y, A):
    """MMC's scale-free objective sum_D ||x-y||_A / sqrt(sum_S ||x-y||_A^2)."""
    q = np.maximum(_sq_dists(pairs, A), 0.0)
    return np.sum(np.sqrt(q[y == -1])) / np.sqrt(np.sum(q[y == 1]))


def _g_diag(pairs, y, w, c):
    """The diagonal objective sum_S ||x-y||_w^2 - c log(sum_D ||x-y||_w)."""
    sq = (pairs[:, 0, :] - pairs[:, 1, :]) ** 2
    return sq[y == 1].sum(axis=0) @ w - c * np.log(
        np.sum(np.sqrt(np.maximum(sq[y == -1] @ w, 0.0))))


def _assert_psd(A, d):
    assert A.shape == (d, d)
    np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-10 * np.abs(A).max())
    w = np.linalg.eigvalsh((A + A.T) / 2)
    assert w.min() >= -1e-10 * w.max()
    assert w.max() > 0


# ----------------------------------------------------------------------------
# 1. API surface
# ----------------------------------------------------------------------------

EXTRA_KEYWORD_ONLY = {"solver", "shrinkage", "callback", "n_jobs"}

USER_FACING = ("A_", "components_", "n_iter_", "converged_", "threshold_",
               "n_features_in_", "transform", "fit_transform",
               "get_mahalanobis_matrix", "get_metric", "pair_distance",
               "pair_score", "score_pairs", "decision_function", "predict",
               "score", "set_threshold", "calibrate_threshold", "classes_")


@pytest.mark.parametrize("cls_name", ["MMC", "MMC_Supervised"])
def test_constructor_matches_metric_learn(cls_name):
    metric_learn = pytest.importorskip("metric_learn")
    theirs = inspect.signature(getattr(metric_learn, cls_name)).parameters
    ours = inspect.signature(getattr(fastmetric, cls_name)).parameters
    positional = [p for p in ours.values() if p.kind is not p.KEYWORD_ONLY]
    # Same names, same order, same defaults.
    assert [p.name for p in positional] == list(theirs)
    for p in positional:
        assert p.default == theirs[p.name].default, p.name
        assert p.kind is theirs[p.name].kind, p.name
    extra = {name for name, p in ours.items() if p.kind is p.KEYWORD_ONLY}
    assert extra == EXTRA_KEYWORD_ONLY


def _fitted_pair(metric_learn, cls_name, diagonal):
    """One fitted estimator of each library on the same data."""
    if cls_name == "MMC":
        pairs, y = _pairs("iris", 100)
        args, kwargs = (pairs, y), {}
    else:
        args, kwargs = _points("iris"), {"n_constraints": 30, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(metric_learn, cls_name)(diagonal=diagonal, max_iter=20,
                                                 **kwargs).fit(*args)
    ours = getattr(fastmetric, cls_name)(diagonal=diagonal, max_iter=20,
                                         **kwargs).fit(*args)
    return theirs, ours


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("cls_name", ["MMC", "MMC_Supervised"])
def test_fitted_names_match_metric_learn(cls_name, diagonal):
    metric_learn = pytest.importorskip("metric_learn")
    theirs, ours = _fitted_pair(metric_learn, cls_name, diagonal)
    checked = [name for name in USER_FACING if hasattr(theirs, name)]
    # The list is not vacuous: metric-learn sets the core names.
    assert {"A_", "components_", "transform", "pair_distance"} <= set(checked)
    missing = [name for name in checked if not hasattr(ours, name)]
    assert missing == []
    # Every public name of metric-learn's fitted estimator exists on ours.
    public = {n for n in dir(theirs) if not n.startswith("_")}
    assert public - set(dir(ours)) == set()
    # The learned state has the same shapes and types.
    d = theirs.A_.shape[0]
    assert ours.A_.shape == (d, d)
    # metric-learn's MMC stores the tuple size (2) as n_features_in_ for formed
    # pairs; ours stores the number of features, as scikit-learn defines it.
    assert ours.n_features_in_ == d
    if cls_name == "MMC_Supervised":
        assert theirs.n_features_in_ == d
    assert ours.components_.shape == theirs.components_.shape
    for name in ("n_iter_", "converged_"):
        if hasattr(theirs, name):
            assert type(getattr(ours, name)) is type(getattr(theirs, name)), name


def test_convergence_threshold_alias_warns_and_takes_effect():
    metric_learn = pytest.importorskip("metric_learn")
    pairs, y = _pairs("iris", 150)
    tol = 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC(convergence_threshold=tol).fit(pairs, y)
    with pytest.warns(FutureWarning, match="convergence_threshold"):
        ours = fastmetric.MMC(solver="ga-ip", convergence_threshold=tol).fit(pairs, y)
    reference = fastmetric.MMC(solver="ga-ip", tol=tol).fit(pairs, y)
    default = _fm_gaip("iris", 150)
    # The alias changes the result (the default tol is 1e-3) exactly as tol does,
    # and as metric-learn's alias does.
    assert ours.n_iter_ < default.n_iter_
    assert ours.n_iter_ == reference.n_iter_ == theirs.n_iter_
    np.testing.assert_array_equal(ours.A_, reference.A_)
    assert _rel_err(ours.A_, theirs.A_) < RTOL_A


def test_num_constraints_alias_warns_and_takes_effect():
    metric_learn = pytest.importorskip("metric_learn")
    X, y = _points("iris")
    common = dict(random_state=0, max_iter=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC_Supervised(num_constraints=15, **common)
    assert theirs.n_constraints == 15
    with pytest.warns(FutureWarning, match="num_constraints"):
        ours = fastmetric.MMC_Supervised(num_constraints=15, **common).fit(X, y)
    reference = fastmetric.MMC_Supervised(n_constraints=15, **common).fit(X, y)
    other = fastmetric.MMC_Supervised(n_constraints=60, **common).fit(X, y)
    np.testing.assert_array_equal(ours.A_, reference.A_)
    assert not np.allclose(ours.A_, other.A_)


def test_tol_alias_conflict_alias_wins_in_both():
    """Both the alias and tol given: metric-learn uses the alias; so do we."""
    metric_learn = pytest.importorskip("metric_learn")
    pairs, y = _pairs("iris", 150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC(tol=1e-6, convergence_threshold=0.02).fit(pairs, y)
    with pytest.warns(FutureWarning):
        ours = fastmetric.MMC(solver="ga-ip", tol=1e-6,
                              convergence_threshold=0.02).fit(pairs, y)
    assert ours.n_iter_ == theirs.n_iter_
    # Even the default tol=1e-3 (looser than 1e-6) runs longer: the alias won.
    assert ours.n_iter_ < _fm_gaip("iris", 150).n_iter_
    assert _rel_err(ours.A_, theirs.A_) < RTOL_A


# ----------------------------------------------------------------------------
# 2. solver='ga-ip' reproduces metric-learn's full-matrix MMC
# ----------------------------------------------------------------------------

# (data, number of pairs, init, max_iter).  Unconverged runs are cut at 40
# iterations to keep metric-learn's time down (its 100 take up to 9 s each).
GAIP_CASES = [
    ("iris", 200, "identity", 100),
    ("iris", 200, "covariance", 100),
    ("iris", 200, "spd", 100),
    ("wine", 200, "identity", 40),
    ("wine", 200, "covariance", 100),
    ("gauss", 300, "identity", 40),
    ("gauss", 300, "covariance", 100),
    ("gauss", 300, "spd", 40),
]


@pytest.mark.parametrize("name, n_pairs, init, max_iter", GAIP_CASES)
def test_gaip_reproduces_metric_learn(name, n_pairs, init, max_iter):
    metric_learn = pytest.importorskip("metric_learn")
    theirs = _ml_mmc(metric_learn, name, n_pairs, init, max_iter)
    ours = _fm_gaip(name, n_pairs, init, max_iter)
    assert _rel_err(ours.A_, theirs.A_) < RTOL_A
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_
    np.testing.assert_allclose(ours.threshold_, theirs.threshold_, rtol=RTOL_A)
    np.testing.assert_allclose(ours.get_mahalanobis_matrix(),
                               theirs.get_mahalanobis_matrix(), rtol=0,
                               atol=RTOL_A * np.linalg.norm(theirs.A_))
    # The same coordinates, not only the same distances -- where the factor is
    # determined: for a numerically singular A, whether Cholesky passes on
    # rounding-level pivots decides metric-learn's factor by the last bits
    # (we take the eigenvectors then, as metric-learn does when it fails).
    w = np.linalg.eigvalsh(theirs.A_)
    try:
        np.linalg.cholesky(theirs.A_)
        theirs_cholesky = True
    except np.linalg.LinAlgError:
        theirs_cholesky = False
    pairs, _ = _pairs(name, n_pairs)
    points = pairs[:, 0, :]
    theirs_t, ours_t = theirs.transform(points), ours.transform(points)
    atol = 1e-5 * np.abs(theirs_t).max()
    if w[0] > 100 * w.size * np.finfo(float).eps * w[-1]:
        np.testing.assert_allclose(ours_t, theirs_t, rtol=0, atol=atol)
    elif not theirs_cholesky:
        # eigenvector axes: same order, each up to its sign (LAPACK's choice
        # of sign can flip under a perturbation of A at rounding level)
        signs = np.where(np.sum(ours_t * theirs_t, axis=0) < 0, -1.0, 1.0)
        np.testing.assert_allclose(ours_t * signs, theirs_t, rtol=0, atol=atol)


@pytest.mark.parametrize("init_scale", [1e-200, 1e-100])
def test_gaip_with_a_tiny_init_reproduces_metric_learn(init_scale):
    # the init's norm underflows: metric-learn divides by 0 (inf) and goes on
    metric_learn = pytest.importorskip("metric_learn")
    pairs, y = _pairs("iris", 200)
    A0 = init_scale * np.eye(pairs.shape[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC(init=A0, max_iter=30).fit(pairs, y)
        ours = fastmetric.MMC(solver="ga-ip", init=A0, max_iter=30).fit(pairs, y)
    assert ours.n_iter_ == theirs.n_iter_
    # (compared at unit scale: the norms of such matrices underflow)
    assert _rel_err(ours.A_ / init_scale, theirs.A_ / init_scale) < RTOL_A


@pytest.mark.parametrize("kind", ["definite", "singular", "diagonal", "zero"])
def test_components_from_metric_as_metric_learn(kind):
    ml_util = pytest.importorskip("metric_learn._util")
    rng = np.random.default_rng(4)
    d = 6
    K = rng.normal(size=(d, {"definite": d, "singular": 2}.get(kind, 1)))
    A = {"definite": K @ K.T, "singular": K @ K.T,
         "diagonal": np.diag(rng.uniform(0, 2, d)), "zero": np.zeros((d, d))}[kind]
    A = (A + A.T) / 2
    ours = fastmetric.components_from_metric(A)
    np.testing.assert_allclose(ours, ml_util.components_from_metric(A), rtol=0,
                               atol=1e-12 * max(np.abs(A).max(), 1.0))
    np.testing.assert_allclose(ours.T @ ours, A, rtol=0,
                               atol=1e-12 * max(np.abs(A).max(), 1.0))


def test_gaip_cases_exercise_the_algorithm():
    """The parity cases are not trivial: the matrix moves away from init, and
    both converged and unconverged runs (several iterations each) are covered."""
    metric_learn = pytest.importorskip("metric_learn")
    seen_converged = set()
    n_iters = []
    for name, n_pairs, init, max_iter in GAIP_CASES:
        theirs = _ml_mmc(metric_learn, name, n_pairs, init, max_iter)
        seen_converged.add(theirs.converged_)
        n_iters.append(theirs.n_iter_)
        d = theirs.A_.shape[0]
        A0 = np.eye(d) if init == "identity" else _init(init, d)
        if not isinstance(A0, str):
            # The result is not a multiple of the initial matrix.
            scale = np.sum(theirs.A_ * A0) / np.sum(A0 * A0)
            assert _rel_err(theirs.A_, scale * A0) > 1e-3
    assert seen_converged == {True, False}
    assert sum(n >= 30 for n in n_iters) >= 3


# ----------------------------------------------------------------------------
# 3. The exact solver reaches at least metric-learn's objective
# ----------------------------------------------------------------------------

QUALITY_CASES = [
    # (data, pairs, init of both, metric-learn's max_iter); the first five reuse
    # the ga-ip parity fits.
    ("iris", 200, "identity", 100),
    ("iris", 200, "covariance", 100),
    ("wine", 200, "identity", 40),
    ("gauss", 300, "identity", 40),
    ("gauss", 300, "spd", 40),
    # Ill conditioned: all 30 standardised breast-cancer features.
    ("cancer", 3000, "identity", 30),
]


@pytest.mark.parametrize("name, n_pairs, init, max_iter", QUALITY_CASES)
def test_exact_solver_objective_at_least_metric_learn(name, n_pairs, init, max_iter):
    metric_learn = pytest.importorskip("metric_learn")
    pairs, y = _pairs(name, n_pairs)
    theirs = _ml_mmc(metric_learn, name, n_pairs, init, max_iter)
    ours = fastmetric.MMC(init=_init(init, pairs.shape[2])).fit(pairs, y)
    assert ours.converged_
    j_theirs = _J(pairs, y, theirs.A_)
    j_ours = _J(pairs, y, ours.A_)
    assert np.isfinite(j_ours)
    assert j_ours >= j_theirs * (1 - 1e-9)
    # objective_ reports the same J.
    np.testing.assert_allclose(ours.objective_, j_ours, rtol=1e-8)


# ----------------------------------------------------------------------------
# 4. Diagonal: ours minimises g better than metric-learn (or metric-learn fails)
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal_c", [1.0, 0.1])
@pytest.mark.parametrize("name, n_pairs", [("iris", 300), ("wine", 300),
                                           ("gauss", 300), ("cancer", 500)])
def test_diagonal_objective_lower_than_metric_learn(name, n_pairs, diagonal_c):
    metric_learn = pytest.importorskip("metric_learn")
    pairs, y = _pairs(name, n_pairs)
    ours = fastmetric.MMC(diagonal=True, diagonal_c=diagonal_c).fit(pairs, y)
    A = ours.A_
    np.testing.assert_array_equal(A, np.diag(np.diag(A)))
    w_ours = np.diag(A)
    assert np.all(w_ours >= 0)
    g_ours = _g_diag(pairs, y, w_ours, diagonal_c)
    assert np.isfinite(g_ours)
    try:
        theirs = _ml_mmc(metric_learn, name, n_pairs, diagonal=True,
                         diagonal_c=diagonal_c)
    except Exception:  # metric-learn's Newton steps can end in NaN
        return
    g_theirs = _g_diag(pairs, y, np.diag(theirs.A_), diagonal_c)
    if not np.isfinite(g_theirs):
        return
    assert g_ours < g_theirs


# ----------------------------------------------------------------------------
# 5. Supervised fits, and the metric's methods given the same matrix
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["iris", "gauss"])
def test_supervised_fits_psd_metric_in_both(name):
    metric_learn = pytest.importorskip("metric_learn")
    X, y = _points(name)
    theirs = _ml_supervised(metric_learn, name)
    ours = fastmetric.MMC_Supervised(**SUPERVISED_KWARGS).fit(X, y)
    d = X.shape[1]
    _assert_psd(theirs.A_, d)
    _assert_psd(ours.A_, d)
    assert ours.transform(X).shape == theirs.transform(X).shape == X.shape
    # Same seed, same pairs: refitting ours gives the same matrix.
    again = fastmetric.MMC_Supervised(**SUPERVISED_KWARGS).fit(X, y)
    np.testing.assert_array_equal(again.A_, ours.A_)


def _query_pairs(name, n_pairs, seed):
    return _pairs(name, n_pairs, seed=seed)


def test_methods_agree_given_the_same_matrix():
    metric_learn = pytest.importorskip("metric_learn")
    X, y = _points("gauss")
    theirs = _ml_supervised(metric_learn, "gauss")
    # A short fit of ours, then metric-learn's learned matrix put in its place.
    ours = fastmetric.MMC_Supervised(n_constraints=40, random_state=0,
                                     max_iter=5).fit(X, y)
    ours.components_ = theirs.components_.copy()
    ours.A_ = theirs.A_.copy()
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.get_mahalanobis_matrix(),
                               theirs.get_mahalanobis_matrix(), rtol=1e-12)
    pairs, _ = _query_pairs("gauss", 60, seed=3)
    np.testing.assert_allclose(ours.pair_distance(pairs),
                               theirs.pair_distance(pairs), rtol=1e-10)
    np.testing.assert_allclose(ours.pair_score(pairs), theirs.pair_score(pairs),
                               rtol=1e-10)
    m_ours, m_theirs = ours.get_metric(), theirs.get_metric()
    for u, v in pairs[:5]:
        np.testing.assert_allclose(m_ours(u, v), m_theirs(u, v), rtol=1e-10)
        np.testing.assert_allclose(m_ours(u, v, squared=True),
                                   m_theirs(u, v, squared=True), rtol=1e-10)


def test_pair_classifier_methods_agree_given_the_same_matrix():
    metric_learn = pytest.importorskip("metric_learn")
    name, n_pairs, init, max_iter = GAIP_CASES[-1]
    theirs = _ml_mmc(metric_learn, name, n_pairs, init, max_iter)
    pairs, y = _pairs(name, n_pairs)
    # Ours fitted by the exact solver, then given metric-learn's matrix and
    # threshold.
    ours = fastmetric.MMC().fit(pairs, y)
    ours.components_ = theirs.components_.copy()
    ours.A_ = theirs.A_.copy()
    ours.threshold_ = theirs.threshold_
    query, labels = _query_pairs(name, 80, seed=9)
    np.testing.assert_allclose(ours.decision_function(query),
                               theirs.decision_function(query), rtol=1e-10)
    np.testing.assert_array_equal(ours.predict(query), theirs.predict(query))
    assert len(set(ours.predict(query))) == 2
    np.testing.assert_allclose(ours.score(query, labels), theirs.score(query, labels),
                               rtol=1e-12)
    # Calibrating on the training pairs gives back metric-learn's threshold.
    ours.calibrate_threshold(pairs, y)
    np.testing.assert_allclose(ours.threshold_, theirs.threshold_, rtol=1e-10)


@pytest.mark.parametrize("name, n_pairs, init, max_iter",
                         [GAIP_CASES[0], GAIP_CASES[-1]])
def test_pair_classifier_methods_agree_on_gaip_fits(name, n_pairs, init, max_iter):
    metric_learn = pytest.importorskip("metric_learn")
    # Copies: the thresholds are recalibrated below.
    theirs = copy.deepcopy(_ml_mmc(metric_learn, name, n_pairs, init, max_iter))
    ours = copy.deepcopy(_fm_gaip(name, n_pairs, init, max_iter))
    query, labels = _query_pairs(name, 80, seed=5)
    np.testing.assert_allclose(ours.pair_distance(query),
                               theirs.pair_distance(query), rtol=1e-6)
    np.testing.assert_allclose(ours.decision_function(query),
                               theirs.decision_function(query), rtol=1e-6)
    np.testing.assert_array_equal(ours.predict(query), theirs.predict(query))
    np.testing.assert_allclose(ours.score(query, labels), theirs.score(query, labels),
                               rtol=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(ours.score_pairs(query), theirs.score_pairs(query),
                                   rtol=1e-6)
    # components_ differ by a rotation (ours: eigenvectors, theirs: Cholesky),
    # so the embeddings agree up to it: same Gram matrix.
    X, _ = _points(name)
    Z_ours, Z_theirs = ours.transform(X), theirs.transform(X)
    np.testing.assert_allclose(Z_ours @ Z_ours.T, Z_theirs @ Z_theirs.T,
                               rtol=0, atol=1e-6 * np.abs(Z_theirs @ Z_theirs.T).max())
    # Threshold calibration with the other strategies picks the same threshold.
    for params in [dict(strategy="f_beta", beta=2.0),
                   dict(strategy="max_tpr", min_rate=0.5),
                   dict(strategy="max_tnr", min_rate=0.5)]:
        theirs.calibrate_threshold(query, labels, **params)
        ours.calibrate_threshold(query, labels, **params)
        np.testing.assert_allclose(ours.threshold_, theirs.threshold_, rtol=1e-6)
        np.testing.assert_array_equal(ours.predict(query), theirs.predict(query))
    threshold = float(np.median(theirs.pair_distance(query)))
    theirs.set_threshold(threshold)
    ours.set_threshold(threshold)
    assert ours.threshold_ == theirs.threshold_ == threshold
    np.testing.assert_array_equal(ours.predict(query), theirs.predict(query))


# ----------------------------------------------------------------------------
# 6. Inputs metric-learn accepts are accepted by ours (with the same result)
# ----------------------------------------------------------------------------


def _pair_inputs(kind):
    """(estimator kwargs, pairs, y) in one of the input forms metric-learn takes."""
    X, _ = _points("iris")
    i, j, labels = _index_pairs("iris", 120)
    if kind == "lists":
        pairs = np.stack([X[i], X[j]], axis=1).tolist()
        return {}, pairs, labels.tolist()
    if kind == "int":
        Xi = np.round(X * 10).astype(np.int64)
        return {}, np.stack([Xi[i], Xi[j]], axis=1), labels.astype(np.int32)
    if kind == "array_preprocessor":
        return {"preprocessor": X}, np.stack([i, j], axis=1), labels
    if kind == "list_preprocessor":
        return {"preprocessor": X.tolist()}, np.stack([i, j], axis=1).tolist(), labels
    if kind == "callable_preprocessor":
        keys = np.array([f"p{k}" for k in range(X.shape[0])])
        lookup = {key: row for key, row in zip(keys, X, strict=True)}

        def preprocessor(names):
            return np.array([lookup[name] for name in names])

        return ({"preprocessor": preprocessor},
                np.stack([keys[i], keys[j]], axis=1), labels)
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["lists", "int", "array_preprocessor",
                                  "list_preprocessor", "callable_preprocessor"])
def test_pair_inputs_accepted_like_metric_learn(kind):
    metric_learn = pytest.importorskip("metric_learn")
    kwargs, pairs, y = _pair_inputs(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC(max_iter=30, **kwargs).fit(pairs, y)
        d_theirs = theirs.pair_distance(pairs)
        pred_theirs = theirs.predict(pairs)
    ours = fastmetric.MMC(solver="ga-ip", max_iter=30, **kwargs).fit(pairs, y)
    assert _rel_err(ours.A_, theirs.A_) < RTOL_A
    np.testing.assert_allclose(ours.pair_distance(pairs), d_theirs, rtol=1e-6)
    np.testing.assert_array_equal(ours.predict(pairs), pred_theirs)
    # The default solver takes the same input too.
    exact = fastmetric.MMC(**kwargs).fit(pairs, y)
    assert exact.pair_distance(pairs).shape == (len(y),)


@pytest.mark.parametrize("kind", ["lists", "int", "array_preprocessor",
                                  "callable_preprocessor"])
def test_supervised_inputs_accepted_like_metric_learn(kind):
    metric_learn = pytest.importorskip("metric_learn")
    X, y = _points("iris")
    kwargs = {}
    X_in, y_in, X_query = X, y, X
    if kind == "lists":
        X_in, y_in, X_query = X.tolist(), y.tolist(), X.tolist()
    elif kind == "int":
        X_in = X_query = np.round(X * 10).astype(np.int64)
        y_in = y.astype(np.int32)
    elif kind == "array_preprocessor":
        kwargs = {"preprocessor": X}
        X_in = X_query = np.arange(X.shape[0])
    else:
        kwargs = {"preprocessor": lambda idx: X[np.asarray(idx, dtype=np.intp)]}
        X_in = X_query = np.arange(X.shape[0])
    common = dict(n_constraints=30, random_state=0, max_iter=20, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = metric_learn.MMC_Supervised(**common).fit(X_in, y_in)
        Z_theirs = theirs.transform(X_query)
    ours = fastmetric.MMC_Supervised(**common).fit(X_in, y_in)
    Z_ours = ours.transform(X_query)
    assert Z_ours.shape == Z_theirs.shape == X.shape
    assert np.isfinite(Z_ours).all()
    # Ours on this input equals ours on the plain float array.
    plain = fastmetric.MMC_Supervised(n_constraints=30, random_state=0,
                                      max_iter=20).fit(
        np.asarray(X_in, dtype=float) if kind in ("lists", "int") else X, y)
    np.testing.assert_allclose(ours.A_, plain.A_, rtol=1e-12, atol=1e-14)
