"""Behaviour of the MMC estimators: fitted state, metric, thresholds, options.

Data are small and well conditioned (standardised iris and wine, Gaussian
blobs), so these tests do not depend on how the exact solver handles
ill-conditioned problems.  Reference values are computed here in NumPy.
"""

import functools
import warnings

import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import check_grad
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils import get_tags

import fastmetric
from fastmetric import MMC, MMC_Supervised

# ga-ip stops at max_iter on purpose in several tests (it converges slowly);
# convergence of the other solvers is asserted explicitly where it matters.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SOLVERS = {
    "exact": {},
    "ga-ip": {"solver": "ga-ip", "max_iter": 30},
    "diagonal": {"diagonal": True},
}


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def _standardise(X):
    return (X - X.mean(axis=0)) / X.std(axis=0)


@functools.cache
def iris():
    X, y = load_iris(return_X_y=True)
    return _standardise(X), y


@functools.cache
def wine():
    X, y = load_wine(return_X_y=True)
    return _standardise(X), y


def blobs(seed, n=300, d=5, k=3):
    """Gaussian classes around random centres."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(k, d))[y]
    return X, y


def index_pairs(y, n_pairs, seed):
    """Balanced random index pairs (n_pairs, 2) and labels (+1 same class, -1 not)."""
    rng = np.random.default_rng(seed)
    half = n_pairs // 2
    similar, dissimilar = [], []
    while len(similar) < half or len(dissimilar) < n_pairs - half:
        a, b = rng.choice(y.size, size=2, replace=False)
        if y[a] == y[b] and len(similar) < half:
            similar.append((a, b))
        elif y[a] != y[b] and len(dissimilar) < n_pairs - half:
            dissimilar.append((a, b))
    idx = np.array(similar + dissimilar, dtype=np.intp)
    labels = np.r_[np.ones(half, dtype=int), -np.ones(n_pairs - half, dtype=int)]
    order = rng.permutation(n_pairs)
    return idx[order], labels[order]


@functools.cache
def iris_pairs(n_pairs=120, seed=0):
    X, y = iris()
    idx, labels = index_pairs(y, n_pairs, seed)
    return X, idx, X[idx], labels


def mahalanobis_np(pairs, A):
    """sqrt((x - y)^T A (x - y)) for formed pairs, in NumPy."""
    diff = pairs[:, 0, :] - pairs[:, 1, :]
    return np.sqrt(np.maximum(np.einsum("pi,ij,pj->p", diff, A, diff), 0.0))


@functools.cache
def fitted_mmc(solver):
    X, idx, pairs, labels = iris_pairs()
    return MMC(n_jobs=1, **SOLVERS[solver]).fit(pairs, labels)


def assert_psd(A, rtol=1e-10):
    np.testing.assert_allclose(A, A.T, rtol=0, atol=1e-12 * np.abs(A).max())
    w = np.linalg.eigvalsh((A + A.T) / 2)
    assert w.max() > 0
    assert w.min() >= -rtol * w.max()


# ----------------------------------------------------------------------------
# Fitted state and the learned metric
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_fit_returns_self_and_sets_attributes(solver):
    X, idx, pairs, labels = iris_pairs()
    model = MMC(n_jobs=1, **SOLVERS[solver])
    assert model.fit(pairs, labels) is model
    sup = MMC_Supervised(n_constraints=100, random_state=0, n_jobs=1,
                         **SOLVERS[solver])
    assert sup.fit(*iris()) is sup
    for m in (model, sup):
        assert m.n_features_in_ == X.shape[1]
        assert isinstance(m.n_iter_, int | np.integer) and m.n_iter_ >= 0
        assert isinstance(m.converged_, bool | np.bool_)
        assert np.isfinite(m.objective_)
        assert m.A_.shape == (X.shape[1], X.shape[1])
        if solver != "ga-ip":
            assert m.converged_
    assert np.isfinite(model.threshold_)


@pytest.mark.parametrize("solver", SOLVERS)
def test_matrix_psd_and_components(solver):
    model = fitted_mmc(solver)
    A = model.A_
    assert_psd(A)
    L = model.components_
    np.testing.assert_allclose(L.T @ L, A, rtol=0, atol=1e-12 * np.abs(A).max())
    M = model.get_mahalanobis_matrix()
    np.testing.assert_allclose(M, A, rtol=0, atol=1e-12 * np.abs(A).max())
    M[0, 0] += 1.0  # a copy: editing it leaves the model alone
    assert model.get_mahalanobis_matrix()[0, 0] != M[0, 0]
    if solver == "diagonal":
        np.testing.assert_array_equal(A, np.diag(np.diag(A)))


def test_objective_matches_numpy():
    X, idx, pairs, labels = iris_pairs()
    for solver in ("exact", "ga-ip"):
        model = fitted_mmc(solver)
        d = mahalanobis_np(pairs, model.A_)
        J = d[labels == -1].sum() / np.sqrt(np.sum(d[labels == 1] ** 2))
        assert model.objective_ == pytest.approx(J, rel=1e-10)
    model = fitted_mmc("diagonal")
    w = np.diag(model.A_)
    g = _diag_objective(w, *_diag_terms(pairs, labels), c=model.diagonal_c)
    assert model.objective_ == pytest.approx(g, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_pair_distance_transform_and_scores(solver):
    X, idx, pairs, labels = iris_pairs()
    model = fitted_mmc(solver)
    expected = mahalanobis_np(pairs, model.A_)
    dist = model.pair_distance(pairs)
    scale = expected.max()
    np.testing.assert_allclose(dist, expected, rtol=1e-9, atol=1e-7 * scale)
    np.testing.assert_array_equal(model.pair_score(pairs), -dist)
    np.testing.assert_array_equal(model.decision_function(pairs), -dist)
    with pytest.warns(FutureWarning, match="pair_distance"):
        np.testing.assert_array_equal(model.score_pairs(pairs), dist)
    emb = model.transform(X)
    np.testing.assert_allclose(emb, X @ model.components_.T, rtol=1e-12,
                               atol=1e-12 * np.abs(emb).max())
    emb_dist = np.linalg.norm(emb[idx[:, 0]] - emb[idx[:, 1]], axis=1)
    np.testing.assert_allclose(emb_dist, expected, rtol=1e-9, atol=1e-7 * scale)
    assert model.score(pairs, labels) == pytest.approx(roc_auc_score(labels, -dist))


def test_transform_and_distances_validate_input():
    model = fitted_mmc("exact")
    X, idx, pairs, labels = iris_pairs()
    with pytest.raises(ValueError, match="features"):
        model.transform(X[:, :3])
    with pytest.raises(ValueError, match="features"):
        model.pair_distance(pairs[:, :, :3])
    with pytest.raises(ValueError, match="Reshape"):
        model.transform(X[0])
    with pytest.raises(NotFittedError):
        MMC().transform(X)
    with pytest.raises(NotFittedError):
        MMC_Supervised().pair_distance(pairs)


def test_get_metric_with_kneighbors_and_refit():
    X, y = iris()
    rng = np.random.default_rng(0)
    sub = rng.choice(X.shape[0], 60, replace=False)
    model = MMC_Supervised(n_constraints=100, random_state=0, n_jobs=1).fit(X, y)
    metric = model.get_metric()
    emb = model.transform(X)
    knn_metric = KNeighborsClassifier(n_neighbors=3, metric=metric,
                                      algorithm="ball_tree").fit(X[sub], y[sub])
    knn_emb = KNeighborsClassifier(n_neighbors=3).fit(emb[sub], y[sub])
    dist_m, ind_m = knn_metric.kneighbors(X[:30])
    dist_e, ind_e = knn_emb.kneighbors(emb[:30])
    np.testing.assert_allclose(dist_m, dist_e, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(knn_metric.predict(X[:30]), knn_emb.predict(emb[:30]))
    u, v = X[0], X[100]
    d_uv = metric(u, v)
    assert d_uv == pytest.approx(model.pair_distance(np.array([[u, v]]))[0], rel=1e-10)
    assert metric(u, v, squared=True) == pytest.approx(d_uv**2, rel=1e-12)
    # A later refit on other data changes the model but not the earlier metric.
    Xb, yb = blobs(1, d=X.shape[1])
    model.fit(Xb, yb)
    assert metric(u, v) == d_uv
    assert model.get_metric()(u, v) != pytest.approx(d_uv, rel=1e-3)


points3 = arrays(np.float64, (3, 4),
                 elements=st.floats(-100, 100, allow_nan=False, allow_infinity=False))


@pytest.mark.parametrize("solver", ["exact", "diagonal"])
@settings(max_examples=60, deadline=None)
@given(points=points3)
def test_learned_distance_is_a_pseudometric(solver, points):
    model = fitted_mmc(solver)
    x, y, z = points
    pairs = np.array([[x, y], [y, x], [y, z], [x, z], [x, x], [z, z]])
    d_xy, d_yx, d_yz, d_xz, d_xx, d_zz = model.pair_distance(pairs)
    assert min(d_xy, d_yz, d_xz) >= 0
    assert d_xx == 0 and d_zz == 0
    assert d_xy == pytest.approx(d_yx, rel=1e-12, abs=1e-12)
    # Rounding in (x-y)^T A (x-y) is about eps |A| |x-y|^2, so the distance can
    # be off by sqrt(eps |A|) |x-y| when it is close to 0.
    slack = 1e-7 * np.sqrt(np.abs(model.A_).max()) * np.abs(points).max() + 1e-12
    assert d_xz <= d_xy + d_yz + slack
    metric = model.get_metric()
    assert metric(x, y) == pytest.approx(d_xy, rel=1e-9, abs=slack)
    assert metric(x, x) == 0


# ----------------------------------------------------------------------------
# Thresholds and classification of pairs
# ----------------------------------------------------------------------------


def test_predict_uses_threshold():
    X, idx, pairs, labels = iris_pairs()
    model = clone(fitted_mmc("exact")).fit(pairs, labels)
    dist = model.pair_distance(pairs)
    np.testing.assert_array_equal(model.predict(pairs),
                                  np.where(dist <= model.threshold_, 1, -1))
    for t in np.quantile(dist, [0.1, 0.5, 0.9]):
        assert model.set_threshold(t) is model
        assert model.threshold_ == t
        pred = model.predict(pairs)
        np.testing.assert_array_equal(pred, np.where(dist <= t, 1, -1))
        assert set(np.unique(pred)) == {-1, 1}
    for bad in ("abc", None, np.nan, np.inf):
        with pytest.raises(ValueError, match="threshold"):
            model.set_threshold(bad)


def _confusion(y, pred):
    tp = np.sum((pred == 1) & (y == 1))
    fp = np.sum((pred == 1) & (y == -1))
    tn = np.sum((pred == -1) & (y == -1))
    fn = np.sum((pred == -1) & (y == 1))
    return tp, fp, tn, fn


def _criterion(strategy, y, pred, min_rate=None, beta=1.0):
    tp, fp, tn, fn = _confusion(y, pred)
    tpr, tnr = tp / (tp + fn), tn / (tn + fp)
    if strategy == "accuracy":
        return (tp + tn) / y.size
    if strategy == "f_beta":
        precision = tp / (tp + fp) if tp + fp else 0.0
        denom = beta**2 * precision + tpr
        return (1 + beta**2) * precision * tpr / denom if denom else 0.0
    if strategy == "max_tpr":
        return tpr if tnr >= min_rate else -np.inf
    return tnr if tpr >= min_rate else -np.inf


CALIBRATIONS = [
    {"strategy": "accuracy"},
    {"strategy": "f_beta", "beta": 1.0},
    {"strategy": "f_beta", "beta": 0.5},
    {"strategy": "f_beta", "beta": 2},
    {"strategy": "max_tpr", "min_rate": 0.5},
    {"strategy": "max_tpr", "min_rate": 0.9},
    {"strategy": "max_tnr", "min_rate": 0.3},
    {"strategy": "max_tnr", "min_rate": 0.95},
]


@pytest.mark.parametrize("params", CALIBRATIONS)
@pytest.mark.parametrize("seed", range(4))
def test_calibrate_threshold_is_best_among_all_thresholds(params, seed):
    # Wine pairs under a metric fitted on other pairs: classes overlap, so
    # every criterion has a non-trivial optimum.
    X, y = wine()
    model = fitted_wine_mmc()
    idx, labels = index_pairs(y, 150, seed + 10)
    pairs = X[idx]
    dist = model.pair_distance(pairs)
    candidates = np.r_[dist.min() - 1.0, np.unique(dist)]
    best = max(_criterion(y=labels, pred=np.where(dist <= t, 1, -1), **params)
               for t in candidates)
    assert np.isfinite(best)
    assert model.calibrate_threshold(pairs, labels, **params) is model
    pred = model.predict(pairs)
    np.testing.assert_array_equal(pred, np.where(dist <= model.threshold_, 1, -1))
    assert _criterion(y=labels, pred=pred, **params) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_calibration_classifies_tied_distances_alike(seed):
    # Repeated pairs with both labels: the threshold must not split a tie,
    # and the accuracy reached is the best any threshold gives.
    X, y = wine()
    model = fitted_wine_mmc()
    idx, labels = index_pairs(y, 40, seed + 20)
    rng = np.random.default_rng(seed)
    rep = rng.integers(0, len(idx), size=120)
    idx, labels = idx[rep], np.where(rng.random(120) < 0.6, labels[rep],
                                     -labels[rep])
    pairs = X[idx]
    dist = model.pair_distance(pairs)
    candidates = np.r_[dist.min() - 1.0, np.unique(dist)]
    best = max(_criterion("accuracy", labels, np.where(dist <= t, 1, -1))
               for t in candidates)
    model.calibrate_threshold(pairs, labels)
    pred = model.predict(pairs)
    assert _criterion("accuracy", labels, pred) == pytest.approx(best, abs=1e-12)


@functools.cache
def fitted_wine_mmc():
    X, y = wine()
    idx, labels = index_pairs(y, 60, 99)
    return MMC(n_jobs=1, shrinkage=0.1).fit(X[idx], labels)


@pytest.mark.parametrize("params", [
    {"strategy": "best"},
    {"strategy": "max_tpr"},
    {"strategy": "max_tpr", "min_rate": 1.5},
    {"strategy": "max_tnr", "min_rate": -0.1},
    {"strategy": "max_tnr", "min_rate": "0.5"},
    {"strategy": "f_beta", "beta": "one"},
    {"strategy": "f_beta", "beta": None},
])
def test_calibration_params_are_validated(params):
    X, idx, pairs, labels = iris_pairs()
    model = clone(fitted_mmc("exact")).fit(pairs, labels)
    before = model.threshold_
    with pytest.raises(ValueError):
        model.calibrate_threshold(pairs, labels, **params)
    assert model.threshold_ == before
    with pytest.raises(ValueError):
        MMC().fit(pairs, labels, calibration_params=params)


@pytest.mark.parametrize("strategy", ["max_tpr", "max_tnr"])
@pytest.mark.parametrize("label", [1, -1])
def test_rate_calibration_needs_both_kinds_of_pair(strategy, label):
    # a rate of one kind of pair is undefined without any: this was an
    # accidental "argmax of an empty sequence"
    X, idx, pairs, labels = iris_pairs()
    model = clone(fitted_mmc("exact")).fit(pairs, labels)
    one = labels == label
    with pytest.raises(ValueError, match="both similar .* and dissimilar"):
        model.calibrate_threshold(pairs[one], labels[one], strategy=strategy,
                                  min_rate=0.5)


@pytest.mark.parametrize("params", [
    None,
    {"strategy": "accuracy"},
    {"strategy": "f_beta", "beta": 0.5},
    {"strategy": "max_tpr", "min_rate": 0.9},
    {"strategy": "max_tnr", "min_rate": 0.8},
])
@pytest.mark.parametrize("kw", [{}, {"diagonal": True}, {"solver": "ga-ip"}])
@pytest.mark.parametrize("indexed", [False, True])
def test_fit_calibration_params(params, kw, indexed):
    # fit calibrates on the pairs it has validated already: the threshold
    # must be exactly the one calibrate_threshold gives on the same pairs
    X, idx, pairs, labels = iris_pairs()
    given = idx if indexed else pairs
    make = (lambda: MMC(n_jobs=1, preprocessor=X, **kw)) if indexed else \
        (lambda: MMC(n_jobs=1, **kw))
    model = make().fit(given, labels, calibration_params=params)
    ref = make().fit(given, labels).calibrate_threshold(given, labels,
                                                       **(params or {}))
    assert model.threshold_ == ref.threshold_
    assert np.isfinite(model.threshold_)


def test_pair_labels_are_validated():
    X, idx, pairs, labels = iris_pairs()
    with pytest.raises(ValueError, match="dissimilar"):
        MMC().fit(pairs, np.ones(len(pairs)))
    with pytest.raises(ValueError, match="similar"):
        MMC().fit(pairs, -np.ones(len(pairs)))
    with pytest.raises(ValueError, match=r"\+1"):
        MMC().fit(pairs, np.where(labels == 1, 1, 0))
    with pytest.raises(ValueError, match="labels"):
        MMC().fit(pairs, labels[:-1])


def test_mmc_is_a_binary_pair_classifier():
    assert is_classifier(MMC())
    tags = get_tags(MMC())
    assert tags.input_tags.three_d_array
    assert not tags.classifier_tags.multi_class
    X, idx, pairs, labels = iris_pairs()
    np.testing.assert_array_equal(fitted_mmc("exact").classes_,
                                  np.unique(fitted_mmc("exact").predict(pairs)))
    # As a classifier MMC gets stratified folds and its own score (ROC AUC).
    scores = cross_val_score(MMC(n_jobs=1), pairs, labels, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.8)


def test_supervised_tags():
    tags = get_tags(MMC_Supervised())
    assert tags.target_tags.required
    assert "float32" in tags.transformer_tags.preserves_dtype


# ----------------------------------------------------------------------------
# Inputs: preprocessor, dtype
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_preprocessor_array_and_callable_match_formed_pairs(solver):
    X, idx, pairs, labels = iris_pairs()
    formed = fitted_mmc(solver)
    by_array = MMC(preprocessor=X, n_jobs=1, **SOLVERS[solver]).fit(idx, labels)
    by_callable = MMC(preprocessor=lambda rows: X[rows], n_jobs=1,
                      **SOLVERS[solver]).fit(idx, labels)
    for model in (by_array, by_callable):
        np.testing.assert_allclose(model.A_, formed.A_, rtol=1e-10,
                                   atol=1e-12 * np.abs(formed.A_).max())
        np.testing.assert_allclose(model.pair_distance(idx),
                                   formed.pair_distance(pairs), rtol=1e-9)
        np.testing.assert_allclose(model.transform(np.arange(5)),
                                   formed.transform(X[:5]), rtol=1e-9, atol=1e-12)
        assert model.threshold_ == pytest.approx(formed.threshold_, rel=1e-9)


def test_supervised_preprocessor_with_indices():
    X, y = iris()
    ref = MMC_Supervised(n_constraints=100, random_state=0, n_jobs=1).fit(X, y)
    model = MMC_Supervised(n_constraints=100, random_state=0, n_jobs=1,
                           preprocessor=X).fit(np.arange(X.shape[0]), y)
    np.testing.assert_allclose(model.A_, ref.A_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.transform(np.arange(10)), ref.transform(X[:10]),
                               rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="index"):
        model.transform(np.array([0, X.shape[0]]))


def test_non_finite_rows_no_pair_uses_are_legal():
    # As in metric-learn, only the rows the pairs (or points) use are checked.
    X_p, idx, pairs, labels = iris_pairs()
    unused = np.setdiff1d(np.arange(X_p.shape[0]), idx)[0]
    X_bad = X_p.copy()
    X_bad[unused, 1] = np.nan
    ref = MMC(preprocessor=X_p, n_jobs=1).fit(idx, labels)
    got = MMC(preprocessor=X_bad, n_jobs=1).fit(idx, labels)
    np.testing.assert_array_equal(got.A_, ref.A_)
    np.testing.assert_array_equal(got.pair_distance(idx), ref.pair_distance(idx))
    used = idx[0, 0]
    with pytest.raises(ValueError, match="NaN"):
        got.transform(np.array([used, unused]))
    X_bad[used, 0] = np.inf
    with pytest.raises(ValueError, match=f"row {used}, used by pairs.*infinity"):
        MMC(preprocessor=X_bad).fit(idx, labels)

    X, y = iris()
    X_sup = np.vstack([X, np.full((1, X.shape[1]), np.nan)])
    kw = dict(n_constraints=100, random_state=0, n_jobs=1)
    sup = MMC_Supervised(preprocessor=X_sup, **kw).fit(np.arange(X.shape[0]), y)
    np.testing.assert_array_equal(sup.A_, MMC_Supervised(**kw).fit(X, y).A_)


def test_callable_preprocessor_takes_object_keys():
    X_p, idx, pairs, labels = iris_pairs()
    names = np.array([f"img_{k}.png" for k in range(X_p.shape[0])], dtype=object)
    table = dict(zip(names, X_p, strict=True))

    def lookup(keys):
        return np.array([table[key] for key in keys])

    got = MMC(preprocessor=lookup, n_jobs=1).fit(names[idx], labels)
    ref = MMC(preprocessor=X_p, n_jobs=1).fit(idx, labels)
    np.testing.assert_allclose(got.A_, ref.A_, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.pair_distance(names[idx[:5]]),
                               ref.pair_distance(idx[:5]), rtol=1e-12)
    with pytest.raises(TypeError, match="dtype object"):
        MMC(preprocessor=X_p).fit(idx.astype(object), labels)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_input(solver):
    X, y = iris()
    kw = dict(n_constraints=100, random_state=0, n_jobs=1, **SOLVERS[solver])
    m64 = MMC_Supervised(**kw).fit(X, y)
    m32 = MMC_Supervised(**kw).fit(X.astype(np.float32), y)
    assert m32.A_.dtype == np.float64
    assert np.all(np.isfinite(m32.A_))
    assert np.linalg.norm(m32.A_ - m64.A_) <= 1e-4 * np.linalg.norm(m64.A_)
    emb = m32.transform(X.astype(np.float32))
    assert emb.dtype == np.float32
    np.testing.assert_allclose(emb, m64.transform(X), rtol=1e-3, atol=1e-3)
    X_pairs, idx, pairs, labels = iris_pairs()
    dist = fitted_mmc(solver).pair_distance(pairs.astype(np.float32))
    assert dist.dtype == np.float64
    np.testing.assert_allclose(dist, fitted_mmc(solver).pair_distance(pairs),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_data_is_solved_as_exactly_as_float64(solver):
    # The kernels read float32 data and compute in float64, so a float32 data
    # set is fitted exactly as the same values stored in float64 (a float32
    # gradient could certify a point short of the optimum).
    X, y = wine()
    X32 = X.astype(np.float32)
    kw = dict(n_constraints=300, random_state=0, n_jobs=1, **SOLVERS[solver])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m32 = MMC_Supervised(**kw).fit(X32, y)
        m64 = MMC_Supervised(**kw).fit(X32.astype(np.float64), y)
    assert np.array_equal(m32.A_, m64.A_)
    assert m32.n_iter_ == m64.n_iter_ and m32.converged_ == m64.converged_


# ----------------------------------------------------------------------------
# Threads, randomness, solver options
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_same_seed_same_result_for_any_thread_count(solver, monkeypatch):
    # 600 + 600 pairs: several blocks of the pair kernels, so two threads
    # really split the sums (and sum in a different order).  Small calls
    # normally run on one thread; lift that threshold so both counts run.
    monkeypatch.setattr("fastmetric._threads._FLOPS_PER_THREAD", 0)
    X, y = blobs(0)
    kw = dict(n_constraints=600, random_state=3, init="random", **SOLVERS[solver])
    A1 = MMC_Supervised(n_jobs=1, **kw).fit(X, y).A_
    A2 = MMC_Supervised(n_jobs=2, **kw).fit(X, y).A_
    assert np.linalg.norm(A2 - A1) <= 1e-10 * np.linalg.norm(A1)
    A_other = MMC_Supervised(n_jobs=1, **{**kw, "random_state": 4}).fit(X, y).A_
    assert not np.allclose(A_other, A1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_callback_once_per_iteration_and_early_stop(solver):
    X, y = wine()
    kw = dict(n_constraints=200, random_state=0, n_jobs=1, **SOLVERS[solver])
    calls = []

    def record(A, n_iter):
        calls.append((A.copy(), n_iter))

    model = MMC_Supervised(callback=record, **kw).fit(X, y)
    # metric-learn's gradient-ascent loop reports the 0-based index of its last
    # cycle as n_iter_; the other solvers report the number of iterations.
    offset = 1 if solver == "ga-ip" else 0
    numbers = [n for _, n in calls]
    assert len(calls) >= 3
    assert numbers[-1] == model.n_iter_ + offset
    assert numbers == list(range(1, len(calls) + 1))
    d = X.shape[1]
    for A, _ in calls:
        assert A.shape == (d, d)
        assert_psd(A, rtol=1e-8)
    np.testing.assert_allclose(calls[-1][0], model.A_, rtol=1e-10,
                               atol=1e-12 * np.abs(model.A_).max())

    stops = []

    def stop_at_second_call(A, n_iter):
        stops.append(n_iter)
        return len(stops) == 2

    with warnings.catch_warnings():
        # a stop the user asked for is not a failure to converge
        warnings.simplefilter("error", ConvergenceWarning)
        stopped = MMC_Supervised(callback=stop_at_second_call, **kw).fit(X, y)
    assert len(stops) == 2
    assert stopped.n_iter_ == stops[-1] - offset < model.n_iter_
    assert not stopped.converged_
    assert not np.allclose(stopped.A_, model.A_)
    with pytest.raises(TypeError, match="callback"):
        MMC_Supervised(callback=3, **kw).fit(X, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_verbose_prints_progress(solver, capsys):
    X, y = iris()
    kw = dict(n_constraints=100, random_state=0, n_jobs=1, **SOLVERS[solver])
    MMC_Supervised(**kw).fit(X, y)
    assert capsys.readouterr().out == ""
    model = MMC_Supervised(verbose=True, **kw).fit(X, y)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "iter" in ln]
    assert len(lines) >= min(model.n_iter_, 1) >= 1


def _random_spd(d, seed):
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(d, d))
    return G @ G.T + 0.1 * np.eye(d)


@pytest.mark.parametrize("solver", SOLVERS)
def test_init_variants(solver):
    X, y = iris()
    d = X.shape[1]
    kw = dict(n_constraints=100, random_state=0, n_jobs=1, tol=1e-8,
              **SOLVERS[solver])
    models = {}
    for init in ("identity", "covariance", "random", _random_spd(d, 0)):
        key = init if isinstance(init, str) else "array"
        models[key] = MMC_Supervised(init=init, **kw).fit(X, y)
        assert np.all(np.isfinite(models[key].A_))
        assert_psd(models[key].A_, rtol=1e-8)
    again = MMC_Supervised(init="random", **kw).fit(X, y)
    np.testing.assert_array_equal(again.A_, models["random"].A_)
    if solver != "ga-ip":
        # Both problems are convex: every start reaches the same optimal value
        # (J is scale-free; the diagonal result's scale does not depend on init).
        objectives = np.array([m.objective_ for m in models.values()])
        np.testing.assert_allclose(objectives, objectives[0], rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="init"):
        MMC_Supervised(init="bogus", **kw).fit(X, y)
    with pytest.raises(ValueError, match="init"):
        MMC_Supervised(init=-np.eye(d), **kw).fit(X, y)
    with pytest.raises(ValueError, match="init"):
        MMC_Supervised(init=np.eye(d + 1), **kw).fit(X, y)


def test_supervised_is_mmc_on_the_drawn_pairs():
    X, y = wine()
    n, seed = 80, 5
    sup = MMC_Supervised(n_constraints=n, random_state=seed, n_jobs=1).fit(X, y)
    a, b, c, d = fastmetric.Constraints(y).positive_negative_pairs(
        n, random_state=seed)
    assert a.size == n and c.size == n
    pairs = np.concatenate([np.stack([X[a], X[b]], 1), np.stack([X[c], X[d]], 1)])
    labels = np.r_[np.ones(a.size), -np.ones(c.size)]
    ref = MMC(tol=sup.tol, n_jobs=1).fit(pairs, labels)
    np.testing.assert_allclose(sup.A_, ref.A_, rtol=1e-9,
                               atol=1e-12 * np.abs(ref.A_).max())
    other = MMC_Supervised(n_constraints=3 * n, random_state=seed, n_jobs=1).fit(X, y)
    assert not np.allclose(other.A_, sup.A_)


def test_supervised_leaves_unlabelled_points_out():
    # Negative labels mark unlabelled points, as in metric-learn's Constraints:
    # they must not become a class of their own.
    X, y = wine()
    y = y.copy()
    y[np.random.default_rng(1).random(y.size) < 0.6] = -1
    n, seed = 60, 3
    sup = MMC_Supervised(n_constraints=n, random_state=seed, n_jobs=1).fit(X, y)
    a, b, c, d = fastmetric.Constraints(y).positive_negative_pairs(
        n, random_state=seed)
    assert np.all(y[np.r_[a, b, c, d]] >= 0)
    pairs = np.concatenate([np.stack([X[a], X[b]], 1), np.stack([X[c], X[d]], 1)])
    labels = np.r_[np.ones(a.size), -np.ones(c.size)]
    ref = MMC(tol=sup.tol, n_jobs=1).fit(pairs, labels)
    np.testing.assert_allclose(sup.A_, ref.A_, rtol=1e-9,
                               atol=1e-12 * np.abs(ref.A_).max())
    one_class = np.where(y == 0, 0, -1)
    with pytest.raises(ValueError, match="1 class"):
        MMC_Supervised().fit(X, one_class)


def test_deprecated_aliases_warn_and_take_effect():
    X, y = wine()
    kw = dict(random_state=0, n_jobs=1)
    ref = MMC_Supervised(n_constraints=40, **kw).fit(X, y)
    with pytest.warns(FutureWarning, match="n_constraints"):
        old = MMC_Supervised(num_constraints=40, **kw).fit(X, y)
    np.testing.assert_array_equal(old.A_, ref.A_)
    default = MMC_Supervised(**kw).fit(X, y)  # 20 * n_classes**2 pairs
    assert not np.allclose(default.A_, ref.A_)

    ga = dict(solver="ga-ip", max_iter=200, n_constraints=100, **kw)
    tight = MMC_Supervised(tol=1e-8, **ga).fit(X, y)
    loose = MMC_Supervised(tol=0.05, **ga).fit(X, y)
    with pytest.warns(FutureWarning, match="tol"):
        old = MMC_Supervised(convergence_threshold=0.05, **ga).fit(X, y)
    assert old.n_iter_ == loose.n_iter_ < tight.n_iter_
    np.testing.assert_array_equal(old.A_, loose.A_)
    X_p, idx, pairs, labels = iris_pairs()
    with pytest.warns(FutureWarning, match="tol"):
        MMC(convergence_threshold=1e-3, n_jobs=1).fit(pairs, labels)


def test_set_params_of_the_new_name_drops_the_deprecated_alias():
    # A grid search over tol (or n_constraints) must not be overridden by an
    # alias given to the constructor.
    X_p, idx, pairs, labels = iris_pairs()
    kw = dict(solver="ga-ip", n_jobs=1)
    with pytest.warns(FutureWarning):
        loose = MMC(convergence_threshold=0.5, **kw).fit(pairs, labels)
    tight = MMC(convergence_threshold=0.5, **kw).set_params(tol=1e-4)
    assert tight.get_params()["convergence_threshold"] == "deprecated"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        tight.fit(pairs, labels)
    assert tight.n_iter_ > loose.n_iter_
    assert tight.n_iter_ == MMC(tol=1e-4, **kw).fit(pairs, labels).n_iter_

    X, y = wine()
    sup_kw = dict(random_state=0, n_jobs=1)
    est = MMC_Supervised(num_constraints=5, **sup_kw).set_params(n_constraints=40)
    ref = MMC_Supervised(n_constraints=40, **sup_kw).fit(X, y)
    np.testing.assert_array_equal(est.fit(X, y).A_, ref.A_)
    both = MMC_Supervised(**sup_kw).set_params(num_constraints=40, n_constraints=5)
    with pytest.warns(FutureWarning, match="n_constraints"):
        both.fit(X, y)  # the alias, set explicitly, still takes effect


def test_supervised_input_errors():
    X, y = iris()
    with pytest.raises(ValueError, match="2 classes"):
        MMC_Supervised().fit(X, np.zeros(X.shape[0]))
    with pytest.raises(ValueError, match="requires y"):
        MMC_Supervised().fit(X, None)
    with pytest.raises(TypeError, match="[Ss]parse"):
        MMC_Supervised().fit(scipy.sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="1 sample"):
        MMC_Supervised().fit(X[:1], y[:1])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MMC_Supervised().fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        MMC_Supervised().fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError):
        MMC_Supervised(n_constraints=0).fit(X, y)
    with pytest.raises(ValueError, match="n_jobs"):
        MMC_Supervised(n_jobs=0).fit(X, y)


def test_parameter_validation():
    X, idx, pairs, labels = iris_pairs()
    for bad in ({"max_iter": 0}, {"tol": -1.0}, {"diagonal_c": 0.0},
                {"shrinkage": 1.0}, {"shrinkage": -0.1}, {"solver": "newton"}):
        with pytest.raises(ValueError):
            MMC(**bad).fit(pairs, labels)
    with pytest.raises(TypeError):
        MMC(max_iter=2.5).fit(pairs, labels)


# ----------------------------------------------------------------------------
# The diagonal objective: KKT conditions and gradient
# ----------------------------------------------------------------------------


def _diag_terms(pairs, labels):
    diff2 = (pairs[:, 0, :] - pairs[:, 1, :]) ** 2
    return diff2[labels == 1].sum(axis=0), diff2[labels == -1]


def _diag_objective(w, s_sum, dis2, c=1.0):
    """g(w) = sum_S ||x-y||_w^2 - c log(sum_D ||x-y||_w)."""
    return float(s_sum @ w - c * np.log(np.sqrt(dis2 @ w).sum()))


def _diag_gradient(w, s_sum, dis2, c=1.0):
    dist = np.sqrt(dis2 @ w)
    inner = (dis2 / (2.0 * dist[:, None]))[dist > 0].sum(axis=0)
    return s_sum - c * inner / dist.sum()


def test_diagonal_gradient_against_finite_differences():
    X, idx, pairs, labels = iris_pairs()
    s_sum, dis2 = _diag_terms(pairs, labels)
    rng = np.random.default_rng(0)
    for c in (0.5, 1.0, 3.0):
        w = rng.uniform(0.2, 2.0, size=s_sum.size)
        err = check_grad(_diag_objective, _diag_gradient, w, s_sum, dis2, c)
        assert err <= 1e-5 * np.linalg.norm(_diag_gradient(w, s_sum, dis2, c))


@pytest.mark.parametrize(("data", "c"), [("iris", 1.0), ("wine", 1.0), ("wine", 5.0),
                                          ("blobs", 0.3)])
def test_diagonal_solution_satisfies_kkt(data, c):
    if data == "blobs":
        X, y = blobs(2, n=200, d=6)
        # Noise features make some weights hit the bound w_k = 0.
        X = np.c_[X, np.random.default_rng(2).normal(size=(X.shape[0], 3)) * 4]
    else:
        X, y = iris() if data == "iris" else wine()
    idx, labels = index_pairs(y, 200, 1)
    pairs = X[idx]
    model = MMC(diagonal=True, diagonal_c=c, tol=1e-6, n_jobs=1).fit(pairs, labels)
    assert model.converged_
    w = np.diag(model.A_)
    assert np.all(w >= 0) and np.any(w > 0)
    s_sum, dis2 = _diag_terms(pairs, labels)
    grad = _diag_gradient(w, s_sum, dis2, c) / s_sum  # relative to each s_k
    free = w > 0
    assert np.all(np.abs(grad[free]) <= 1e-6)
    assert np.all(grad[~free] >= -1e-6)
    # And it is a minimum: no feasible perturbation does better.
    g_opt = _diag_objective(w, s_sum, dis2, c)
    rng = np.random.default_rng(0)
    for _ in range(20):
        w_try = np.maximum(w * np.exp(rng.normal(scale=0.05, size=w.size))
                           + rng.uniform(0, 1e-3, size=w.size) * w.max(), 0.0)
        assert _diag_objective(w_try, s_sum, dis2, c) >= g_opt - 1e-9 * abs(g_opt)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("seed", range(8))
def test_diagonal_does_not_stop_where_a_dissimilar_pair_collapses(monkeypatch,
                                                                  seed, cached):
    # Dissimilar differences supported on few features: a weight at 0 can
    # put a pair at distance 0, where the objective's slope along that weight
    # is -inf but the kernels see no gradient.  The solver must not stop there.
    from scipy.optimize import minimize

    import fastmetric._mmc_diagonal as diag

    if not cached:
        monkeypatch.setattr(diag, "_CACHE_ELEMENTS", 0)
    rng = np.random.default_rng(seed)
    d = 4
    S = rng.uniform(0, 1, size=(6, d))
    D = rng.uniform(0, 1, size=(14, d)) * (rng.random((14, d)) < 0.35)
    D[np.flatnonzero(~D.any(axis=1)), rng.integers(0, d)] = 0.5
    diffs = np.r_[S, D]
    pairs = np.stack([np.zeros_like(diffs), diffs], axis=1)
    labels = np.r_[np.ones(len(S)), -np.ones(len(D))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = MMC(diagonal=True, tol=1e-6, n_jobs=1).fit(pairs, labels)
    w = np.diag(model.A_)
    s_sum, dis2 = _diag_terms(pairs, labels)
    assert model.converged_
    assert np.all(dis2 @ w > 0)  # every dissimilar pair differs: none collapsed
    rel = _diag_gradient(w, s_sum, dis2) / s_sum
    assert np.all(np.abs(rel[w > 0]) <= 1e-6) and np.all(rel[w == 0] >= -1e-6)
    g = _diag_objective(w, s_sum, dis2)
    with np.errstate(divide="ignore"):  # L-BFGS-B may try w = 0
        ref = minimize(_diag_objective, np.full(d, 0.1), args=(s_sum, dis2),
                       bounds=[(0, None)] * d, method="L-BFGS-B",
                       options={"ftol": 1e-15, "gtol": 1e-12})
    assert g <= ref.fun + 1e-9 * abs(ref.fun)


def _mixed_scale_problem(seed):
    """Difference pairs whose features span six decades of scale."""
    rng = np.random.default_rng(seed)
    d, n_s, n_d = (int(rng.integers(2, 12)), int(rng.integers(2, 40)),
                   int(rng.integers(1, 40)))
    diffs = rng.normal(size=(n_s + n_d, d)) * 10.0 ** rng.uniform(-3, 3, d)
    if seed % 3 == 0:
        diffs[n_s:] *= rng.uniform(1, 5)
    return diffs, n_s


@pytest.mark.parametrize("seed", [*range(12), 87, 377, "one_feature_tiny",
                                  "few_dissimilar"])
def test_diagonal_reaches_the_minimum_with_features_of_any_scale(seed):
    # Weights and Hessian entries of features in different units lie decades
    # apart: an active set, a jitter and a pivot taken on the raw numbers
    # stalled (KKT violation 0.75 whatever max_iter) or crawled (a weight at
    # 0.11 after 1000 iterations against 0.35 at the minimum); with fewer
    # dissimilar pairs than free features the Hessian block is singular.
    from scipy.optimize import minimize

    if seed == "one_feature_tiny":
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 200)
        X = np.c_[rng.normal(size=200) * 50 + 100 * y, rng.normal(size=200) * 1e-3]
        idx = rng.integers(0, 200, (300, 2))
        labels = np.where(y[idx[:, 0]] == y[idx[:, 1]], 1, -1)
        pairs = X[idx]
    else:
        diffs, n_s = _mixed_scale_problem(95 if seed == "few_dissimilar" else seed)
        pairs = np.stack([np.zeros_like(diffs), diffs], axis=1)
        labels = np.r_[np.ones(n_s), -np.ones(len(diffs) - n_s)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MMC(diagonal=True, max_iter=100, n_jobs=1).fit(pairs, labels)
    assert model.converged_ and model.n_iter_ <= 30
    w = np.diag(model.A_)
    s_sum, dis2 = _diag_terms(pairs, labels)
    g = _diag_objective(w, s_sum, dis2)

    def unit_free(u):  # u = s w: every feature on the same scale
        return _diag_objective(u / s_sum, s_sum, dis2)

    best = np.inf
    with np.errstate(divide="ignore"):
        for start in (s_sum * w + 1e-12, np.full(w.size, 0.5)):
            ref = minimize(unit_free, start, method="L-BFGS-B",
                           bounds=[(0, None)] * w.size,
                           options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
            best = min(best, ref.fun)
    assert g <= best + 1e-9 * max(abs(best), 1.0)


def _three_feature_problem():
    rng = np.random.default_rng(17)
    X = rng.normal(size=(100, 3))
    lab = rng.integers(0, 3, 100)
    X[:, 0] += 2 * lab
    X[:, 2] += lab
    ii = rng.integers(0, 100, size=(3000, 2))
    same = lab[ii[:, 0]] == lab[ii[:, 1]]
    pairs = np.concatenate([ii[same][:60], ii[~same][:60]])
    return X, pairs, np.r_[np.ones(60), -np.ones(60)]


@pytest.mark.parametrize("unit", [1e-6, 1e-9, 1e6])
def test_diagonal_one_feature_in_other_units_is_the_same_fit(unit):
    # g is covariant under rescaling one feature (its weight scales by
    # 1 / unit^2); a floor at 1e-12 of the largest s_k took a feature a
    # million times smaller for constant, warned and changed the minimiser.
    X, pairs, labels = _three_feature_problem()
    ref = MMC(preprocessor=X, diagonal=True, n_jobs=1).fit(pairs, labels)
    units = np.array([1.0, unit, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = MMC(preprocessor=X * units, diagonal=True, n_jobs=1).fit(pairs, labels)
    assert got.converged_
    np.testing.assert_allclose(np.diag(got.A_) * units**2, np.diag(ref.A_),
                               rtol=1e-7, atol=1e-12 * np.abs(ref.A_).max())


@pytest.mark.parametrize("c", [1e-12, 1e-16, 1e6])
def test_diagonal_c_only_scales_the_minimiser(c):
    # g_c(c w) = c g_1(w) - (c / 2) log c: the minimiser is c times the one
    # for c = 1.  An absolute rounding slack of 64 eps in the line search
    # let steps raise g when g itself is ~1e-11, so small c never converged.
    X, pairs, labels = _three_feature_problem()
    ref = MMC(preprocessor=X, diagonal=True, n_jobs=1).fit(pairs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = MMC(preprocessor=X, diagonal=True, diagonal_c=c, n_jobs=1).fit(
            pairs, labels)
    assert got.converged_
    np.testing.assert_allclose(got.A_, c * ref.A_, rtol=1e-7,
                               atol=1e-12 * c * np.abs(ref.A_).max())


@pytest.mark.parametrize("scale", [2.0**-250, 1e-100, 1e-60, 1e60, 1e100, 2.0**250])
def test_diagonal_far_from_unit_scale_is_the_rescaled_fit(scale):
    # g is covariant under X -> a X (the optimum becomes w / a^2); far from
    # unit scale the Hessian's squared squares over- or underflow unless the
    # problem is solved rescaled.
    X_p, idx, pairs, labels = iris_pairs()
    ref = MMC(diagonal=True, n_jobs=1).fit(pairs, labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = MMC(diagonal=True, n_jobs=1).fit(pairs * scale, labels)
    assert got.converged_
    np.testing.assert_allclose(got.A_ * scale**2, ref.A_, rtol=1e-9,
                               atol=1e-12 * np.abs(ref.A_).max())
    np.testing.assert_allclose(got.pair_distance(pairs * scale),
                               ref.pair_distance(pairs), rtol=1e-9)
    seen = []
    MMC(diagonal=True, n_jobs=1, callback=lambda A, k: seen.append(A)).fit(
        pairs * scale, labels)
    np.testing.assert_allclose(seen[-1] * scale**2, ref.A_, rtol=1e-9,
                               atol=1e-12 * np.abs(ref.A_).max())


def test_distance_overflow_is_an_error_not_inf():
    X_p, idx, pairs, labels = iris_pairs()
    model = MMC(n_jobs=1).fit(pairs, labels)
    assert type(model.converged_) is bool
    with pytest.raises(ValueError, match="overflows"):
        model.pair_distance(pairs * 1e200)
    with pytest.raises(ValueError, match="overflows"):
        model.predict(pairs * 1e200)


def test_gaip_with_a_tiny_init_runs_as_metric_learn_does():
    # A PSD init of 1e-200 I: its norm underflows to 0 and metric-learn's step
    # test divides by it (inf: no convergence yet); a Python float division
    # raised ZeroDivisionError.  (The same A as metric-learn's: the parity suite.)
    X_p, idx, pairs, labels = iris_pairs()
    model = MMC(solver="ga-ip", init=1e-200 * np.eye(4), max_iter=20,
                n_jobs=1).fit(pairs, labels)
    assert np.all(np.isfinite(model.A_)) and model.n_iter_ == 19


def test_gaip_with_parallel_gradients_does_not_run_on_nan():
    # Collinear features and init='covariance': the dissimilar gradient is
    # parallel to the similar one, the projected direction is rounding noise
    # and came out exactly 0, and 0 / 0 put NaN in every step.  A zero
    # direction is a stationary point: no step, converged.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 2))
    X[:, 1] = 2 * X[:, 0]
    idx = np.concatenate([rng.integers(0, 30, (20, 2)), rng.integers(0, 30, (20, 2))])
    labels = np.r_[np.ones(20), -np.ones(20)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model = MMC(solver="ga-ip", init="covariance", n_jobs=1).fit(X[idx], labels)
    assert model.converged_ and np.all(np.isfinite(model.A_))


@pytest.mark.parametrize("scale", [1e-100, 1e80])
def test_gaip_out_of_its_range_is_an_error(scale):
    # metric-learn's algorithm is not scale-invariant (its S-matrix norm and
    # bound over- or underflow); it must say so rather than return init.
    X_p, idx, pairs, labels = iris_pairs()
    with pytest.raises(ValueError, match="scale"):
        MMC(solver="ga-ip").fit(pairs * scale, labels)


# ----------------------------------------------------------------------------
# Edge cases and options
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_identical_point_pairs_are_harmless(solver):
    X, idx, pairs, labels = iris_pairs()
    same = np.stack([X[:6], X[:6]], axis=1)  # zero-distance pairs
    pairs2 = np.concatenate([pairs, same])
    labels2 = np.r_[labels, [1, 1, 1, -1, -1, -1]]
    model = MMC(n_jobs=1, **SOLVERS[solver]).fit(pairs2, labels2)
    assert np.all(np.isfinite(model.A_))
    assert np.isfinite(model.objective_) and np.isfinite(model.threshold_)
    assert_psd(model.A_, rtol=1e-8)
    np.testing.assert_array_equal(model.pair_distance(same), 0.0)
    assert np.all(np.isfinite(model.pair_distance(pairs)))


@pytest.mark.parametrize("solver", SOLVERS)
def test_dissimilar_pairs_all_of_identical_points_are_an_error(solver):
    # ga-ip used to divide by the zero gradient, run on NaN and report
    # converged_=True; every solver must name the problem instead
    rng = np.random.default_rng(0)
    similar = rng.normal(size=(5, 2, 3))
    dissimilar = np.repeat(rng.normal(size=(5, 1, 3)), 2, axis=1)
    pairs = np.concatenate([similar, dissimilar])
    labels = np.r_[np.ones(5), -np.ones(5)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(ValueError, match="dissimilar pairs that differ"):
            MMC(n_jobs=1, **SOLVERS[solver]).fit(pairs, labels)


def test_shrinkage():
    X, y = iris()
    kw = dict(n_constraints=100, random_state=0, n_jobs=1)
    default = MMC_Supervised(**kw).fit(X, y)
    zero = MMC_Supervised(shrinkage=0.0, **kw).fit(X, y)
    np.testing.assert_array_equal(zero.A_, default.A_)
    shrunk = MMC_Supervised(shrinkage=0.2, **kw).fit(X, y)
    assert shrunk.converged_
    assert not np.allclose(shrunk.A_, default.A_, rtol=1e-3)
    assert_psd(shrunk.A_)
    # The plain problem's optimum is the best J under the plain S-matrix.
    assert shrunk.objective_ <= default.objective_ * (1 + 1e-9)


def test_exact_solver_converges_without_warning():
    X, y = wine()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = MMC_Supervised(n_constraints=200, random_state=0, n_jobs=1).fit(X, y)
    assert model.converged_
    # The exact optimum beats metric-learn's gradient ascent on J.
    ga = MMC_Supervised(n_constraints=200, random_state=0, n_jobs=1, solver="ga-ip",
                        max_iter=50).fit(X, y)
    assert model.objective_ >= ga.objective_ * (1 - 1e-9)


@pytest.mark.parametrize("d,r", [(6, 2), (40, 3), (40, 39)])
def test_components_from_a_low_rank_factor(d, r):
    from fastmetric.base import components_from_metric

    rng = np.random.default_rng(d + r)
    K = rng.normal(size=(d, r))
    A = K @ K.T
    A = (A + A.T) / 2
    fast, full = components_from_metric(A, K), components_from_metric(A)
    np.testing.assert_allclose(fast.T @ fast, A, rtol=0, atol=1e-12 * np.abs(A).max())
    assert not fast[:d - r].any()  # A's null space: exactly zero rows
    # the rows of the d x d eigendecomposition, each up to its sign
    signs = np.where(np.sum(fast * full, axis=1) < 0, -1.0, 1.0)
    np.testing.assert_allclose(fast[d - r:] * signs[d - r:, None], full[d - r:],
                               rtol=0, atol=1e-9 * np.abs(full).max())


def test_exact_fit_components_come_from_its_factor():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    X = rng.normal(size=(300, 40)) + 2.0 * rng.normal(size=(3, 40))[y]
    pairs = rng.integers(0, 300, size=(1500, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    labels = np.where(y[pairs[:, 0]] == y[pairs[:, 1]], 1, -1)
    model = fastmetric.MMC(preprocessor=X).fit(pairs, labels)
    L = model.components_
    assert np.linalg.matrix_rank(model.A_) < 40
    assert np.sum(np.any(L != 0, axis=1)) < 40  # the null rows are exact zeros
    np.testing.assert_allclose(L.T @ L, model.A_, rtol=0,
                               atol=1e-10 * np.abs(model.A_).max())
