"""Bad input through the public estimators: clear errors, never crashes or NaN.

The first half feeds one specific mistake at a time and checks that the error
names it.  The second half is property-based: random shapes, values (with NaN
and infinity injected), labels and index arrays must give either a finite,
symmetric PSD metric or a ``ValueError`` / ``TypeError``.
"""

import traceback
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastmetric import MMC, MMC_Supervised

N_POINTS, D = 30, 3


@pytest.fixture(scope="module")
def data():
    """Points, index pairs (6 similar spanning R^3, 6 dissimilar), labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N_POINTS, D))
    idx = rng.permutation(N_POINTS)[:24].reshape(12, 2)
    y = np.array([1] * 6 + [-1] * 6)
    return X, idx, y


@pytest.fixture(scope="module")
def fitted(data):
    X, idx, y = data
    return MMC(max_iter=5).fit(X[idx], y)


@pytest.fixture(scope="module")
def fitted_supervised(data):
    X, _, _ = data
    return MMC_Supervised(max_iter=5, n_constraints=20, random_state=0).fit(
        X, np.arange(N_POINTS) % 3)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


# ---------------------------------------------------------------------------
# Non-finite values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf"),
                                       (-np.inf, "inf")])
def test_non_finite_formed_pairs(data, bad, word):
    X, idx, y = data
    pairs = X[idx].copy()
    pairs[3, 1, 2] = bad
    with pytest.raises(ValueError, match=f"(?i)pairs.*{word}"):
        MMC().fit(pairs, y)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_preprocessor_array(data, bad, word):
    X, idx, y = data
    Xb = X.copy()
    Xb[idx[0, 0], 0] = bad
    with pytest.raises(ValueError, match=f"(?i)preprocessor.*{word}"):
        MMC(preprocessor=Xb).fit(idx, y)


def test_non_finite_callable_preprocessor_output(data):
    X, idx, y = data

    def lookup(indices):
        out = X[indices].copy()
        out[0, 0] = np.nan
        return out

    with pytest.raises(ValueError, match="NaN"):
        MMC(preprocessor=lookup).fit(idx, y)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf")])
def test_non_finite_supervised_X(data, bad, word):
    X, _, _ = data
    Xb = X.copy()
    Xb[5, 1] = bad
    with pytest.raises(ValueError, match=f"(?i){word}"):
        MMC_Supervised().fit(Xb, np.arange(N_POINTS) % 2)


def test_non_finite_supervised_y(data):
    X, _, _ = data
    y = (np.arange(N_POINTS) % 2).astype(float)
    y[4] = np.nan
    with pytest.raises(ValueError, match="(?i)y.*NaN|NaN.*y"):
        MMC_Supervised().fit(X, y)


# ---------------------------------------------------------------------------
# Shapes.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(12,), (12, 2, 3, 1), (1, 12, 2, 3)])
def test_wrong_ndim_pairs(data, shape):
    _, _, y = data
    pairs = np.zeros(shape)
    with pytest.raises(ValueError, match=f"{len(shape)}D"):
        MMC().fit(pairs, y)


def test_2d_pairs_without_preprocessor(data):
    _, idx, y = data
    with pytest.raises(ValueError, match="preprocessor"):
        MMC().fit(idx, y)


def test_wrong_tuple_size_formed(data):
    X, _, y = data
    triples = X[np.arange(36).reshape(12, 3) % N_POINTS]
    with pytest.raises(ValueError, match=r"pairs.*\(12, 3, 3\)"):
        MMC().fit(triples, y)


def test_wrong_tuple_size_indices(data):
    X, _, y = data
    triples = np.arange(36).reshape(12, 3) % N_POINTS
    with pytest.raises(ValueError, match=r"pairs.*\(12, 3\)"):
        MMC(preprocessor=X).fit(triples, y)


def test_empty_pairs():
    with pytest.raises(ValueError, match="empty"):
        MMC().fit(np.empty((0, 2, 3)), [])


def test_zero_features(data):
    _, _, y = data
    with pytest.raises(ValueError, match="0 features"):
        MMC().fit(np.empty((12, 2, 0)), y)


def test_non_numeric_pairs(data):
    _, _, y = data
    with pytest.raises(TypeError, match="dtype"):
        MMC().fit(np.full((12, 2, 3), "a"), y)


# ---------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, 2, 0.5, np.nan])
def test_pair_labels_outside_plus_minus_one(data, bad):
    X, idx, y = data
    y = y.astype(float)
    y[2] = bad
    with pytest.raises(ValueError, match=r"\+1.*-1"):
        MMC().fit(X[idx], y)


def test_pair_labels_strings(data):
    X, idx, _ = data
    with pytest.raises(ValueError, match=r"y.*\+1.*-1"):
        MMC().fit(X[idx], ["a", "b"] * 6)


@pytest.mark.parametrize("n_labels", [11, 13])
def test_pair_labels_length_mismatch(data, n_labels):
    X, idx, _ = data
    with pytest.raises(ValueError, match=f"{n_labels}.*12|12.*{n_labels}"):
        MMC().fit(X[idx], np.ones(n_labels))


def test_pair_labels_missing(data):
    X, idx, _ = data
    with pytest.raises(ValueError, match="y"):
        MMC().fit(X[idx], None)


def test_no_similar_pair(data):
    X, idx, _ = data
    with pytest.raises(ValueError, match="no similar pair"):
        MMC().fit(X[idx], -np.ones(12))


def test_no_dissimilar_pair(data):
    X, idx, _ = data
    with pytest.raises(ValueError, match="no dissimilar pair"):
        MMC().fit(X[idx], np.ones(12))


def test_supervised_y_length_mismatch(data):
    X, _, _ = data
    y = np.arange(N_POINTS - 1) % 2
    with pytest.raises(ValueError, match=f"{N_POINTS}.*{N_POINTS - 1}"):
        MMC_Supervised().fit(X, y)


@pytest.mark.parametrize("labels", [np.zeros(N_POINTS), np.full(N_POINTS, 7)])
def test_supervised_single_class(data, labels):
    X, _, _ = data
    with pytest.raises(ValueError, match="1 class"):
        MMC_Supervised().fit(X, labels)


def test_supervised_no_two_points_share_a_class(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="no similar pair|share a class"):
        MMC_Supervised().fit(X, np.arange(N_POINTS))


# ---------------------------------------------------------------------------
# Indices with an array preprocessor.
# ---------------------------------------------------------------------------


def test_negative_index(data):
    X, idx, y = data
    bad = idx.copy()
    bad[4, 1] = -1
    with pytest.raises(ValueError, match=r"negative index \(-1\)"):
        MMC(preprocessor=X).fit(bad, y)


@pytest.mark.parametrize("index", [N_POINTS, N_POINTS + 100])
def test_out_of_range_index(data, index):
    X, idx, y = data
    bad = idx.copy()
    bad[7, 0] = index
    with pytest.raises(ValueError, match=f"index {index}.*out of range"):
        MMC(preprocessor=X).fit(bad, y)


def test_float_non_integer_index(data):
    X, idx, y = data
    bad = idx.astype(float)
    bad[0, 0] = 1.5
    with pytest.raises(TypeError, match="integer indices"):
        MMC(preprocessor=X).fit(bad, y)


def test_nan_index(data):
    X, idx, y = data
    bad = idx.astype(float)
    bad[0, 0] = np.nan
    with pytest.raises(TypeError, match="integer indices"):
        MMC(preprocessor=X).fit(bad, y)


def test_integral_float_indices_are_accepted(data):
    X, idx, y = data
    a = _quiet(lambda: MMC(preprocessor=X, max_iter=5).fit(idx.astype(float), y).A_)
    b = _quiet(lambda: MMC(preprocessor=X, max_iter=5).fit(idx, y).A_)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_supervised_out_of_range_index(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="out of range"):
        MMC_Supervised(preprocessor=X).fit(np.arange(N_POINTS) + 1,
                                           np.arange(N_POINTS) % 2)


# ---------------------------------------------------------------------------
# init.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
def test_init_not_psd(data, Est):
    X, idx, y = data
    est = Est(init=np.diag([1.0, -0.5, 1.0]))
    with pytest.raises(ValueError, match="init is not positive semi-definite"):
        _fit(est, X, idx, y)


@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
def test_init_not_symmetric(data, Est):
    X, idx, y = data
    M = np.eye(3)
    M[0, 2] = 0.3
    with pytest.raises(ValueError, match="init is not symmetric"):
        _fit(Est(init=M), X, idx, y)


@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
@pytest.mark.parametrize("init", [np.eye(2), np.eye(4), np.ones((3, 4)), np.ones(3)])
def test_init_wrong_shape(data, Est, init):
    X, idx, y = data
    with pytest.raises(ValueError, match="init"):
        _fit(Est(init=init), X, idx, y)


@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
def test_init_unknown_string(data, Est):
    X, idx, y = data
    with pytest.raises(ValueError, match="init.*'foo'"):
        _fit(Est(init="foo"), X, idx, y)


def test_init_non_finite(data):
    X, idx, y = data
    M = np.eye(3)
    M[1, 1] = np.nan
    with pytest.raises(ValueError, match="init contains NaN"):
        MMC(init=M).fit(X[idx], y)


def _fit(est, X, idx, y):
    if isinstance(est, MMC_Supervised):
        return est.fit(X, np.arange(N_POINTS) % 3)
    return est.fit(X[idx], y)


# ---------------------------------------------------------------------------
# After fitting: wrong number of features.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_features", [2, 4])
def test_feature_mismatch_after_fit(fitted, fitted_supervised, n_features):
    rng = np.random.default_rng(1)
    pairs = rng.normal(size=(5, 2, n_features))
    pattern = f"{n_features} features.*{D}|{D}.*{n_features} features"
    with pytest.raises(ValueError, match=pattern):
        fitted.pair_distance(pairs)
    with pytest.raises(ValueError, match=pattern):
        fitted.predict(pairs)
    with pytest.raises(ValueError, match=pattern):
        fitted.decision_function(pairs)
    for est in (fitted, fitted_supervised):
        with pytest.raises(ValueError, match=pattern):
            est.transform(rng.normal(size=(5, n_features)))


def test_non_finite_after_fit(fitted):
    with pytest.raises(ValueError, match="NaN"):
        fitted.predict(np.full((2, 2, D), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        fitted.transform(np.full((2, D), np.nan))


# ---------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------

BAD_PARAMS = [
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=-3), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(max_proj=0), ValueError, "max_proj"),
    (dict(tol=0), ValueError, "tol"),
    (dict(tol=-1e-3), ValueError, "tol"),
    (dict(tol=np.nan), ValueError, "tol"),
    (dict(shrinkage=1), ValueError, "shrinkage"),
    (dict(shrinkage=1.5), ValueError, "shrinkage"),
    (dict(shrinkage=-0.1), ValueError, "shrinkage"),
    (dict(solver="newton"), ValueError, "solver"),
    (dict(n_jobs=0), ValueError, "n_jobs"),
    (dict(n_jobs=1.5), TypeError, "n_jobs"),
    (dict(diagonal_c=0), ValueError, "diagonal_c"),
    (dict(callback=3), TypeError, "callback"),
]


@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
@pytest.mark.parametrize("params, exc, name", BAD_PARAMS)
def test_bad_parameters(data, Est, params, exc, name):
    X, idx, y = data
    with pytest.raises(exc, match=name):
        _fit(Est(**params), X, idx, y)


def test_supervised_bad_n_constraints(data):
    X, _, _ = data
    with pytest.raises(ValueError, match="n_constraints"):
        MMC_Supervised(n_constraints=0).fit(X, np.arange(N_POINTS) % 2)


# ---------------------------------------------------------------------------
# Finite data whose squared distances do not fit the dtype.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e160, 1e-160])
@pytest.mark.parametrize("Est", [MMC, MMC_Supervised])
def test_squared_distances_out_of_float64_range(data, scale, Est):
    X, idx, y = data
    Xs = X * scale
    assert np.isfinite(Xs).all()
    with pytest.raises(ValueError, match="rescale"):
        _fit(Est(), Xs, idx, y)


@pytest.mark.parametrize("where", ["all", "last pair"])
def test_pair_scale_of_many_formed_pairs(where):
    # More pairs than one chunk of the scan, formed: the check may settle on
    # X's largest entry instead of scanning (X has two rows per pair), and
    # must still find a single pair out of range at the very end.
    from fastmetric._validation import check_pair_scale, check_pairs

    rng = np.random.default_rng(3)
    pairs = rng.normal(size=(10_000, 2, 3))
    check_pair_scale(check_pairs(pairs))  # in range: no error
    if where == "all":
        pairs *= 1e160
    else:
        pairs[-1, 0] = 1e152
    with pytest.raises(ValueError, match="rescale"):
        check_pair_scale(check_pairs(pairs))


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_float32_data_at_the_ends_of_its_range(data, scale):
    # The kernels compute in float64, where the squares of any float32
    # differences fit: such data is legal and gives the unscaled data's
    # metric (the bound t = sum_S ||x-y||^2 / 100 scales with the data).
    X, idx, y = data
    Xs = (X * scale).astype(np.float32)
    assert np.isfinite(Xs).all()
    A = _fit(MMC(), Xs, idx, y).A_
    A_ref = _fit(MMC(), Xs.astype(np.float64) / scale, idx, y).A_
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A, A_ref, rtol=1e-4,
                               atol=1e-6 * np.abs(A_ref).max())


# ---------------------------------------------------------------------------
# Property tests.  Valid input (random shapes, scales, repeated points, pairs
# of a point with itself) must give a finite symmetric PSD metric or, when the
# data is degenerate, a ValueError; input with a defect (NaN / inf, a bad
# label, a bad index, one class) must give a ValueError or TypeError.
# ---------------------------------------------------------------------------

SOLVERS = st.sampled_from([
    dict(solver="exact", max_iter=20),
    dict(solver="ga-ip", max_iter=5, max_proj=20),
    dict(diagonal=True, max_iter=20),
])
INITS = st.sampled_from(["identity", "covariance", "random"])
DTYPES = st.sampled_from([np.float64, np.float32])
SPECIALS = st.sampled_from([np.nan, np.inf, -np.inf])
# Scales whose squared distances fit both dtypes, and extremes that do not.
SCALES = st.sampled_from([1.0, 1e-3, 1e3, 1e-20, 1e20, 1e-170, 1e170])
SEEDS = st.integers(0, 2**32 - 1)
# Derandomised so that a run is reproducible (the same examples every time);
# no example database is written into the working tree.
PROPERTY = settings(max_examples=40, deadline=None, database=None,
                    derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _assert_deliberate(exc):
    """The error was raised on purpose by fastmetric or scikit-learn's validation.

    An incidental ValueError from deep inside NumPy (an empty reduction, or a
    ``LinAlgError``, which subclasses ValueError) is a crash, not a message.
    """
    assert not isinstance(exc, np.linalg.LinAlgError), f"LinAlgError: {exc}"
    origin = traceback.extract_tb(exc.__traceback__)[-1].filename
    origin = origin.replace("\\", "/")
    assert "/fastmetric/" in origin or origin.endswith("sklearn/utils/validation.py"), (
        f"{type(exc).__name__} raised in {origin}: {exc}")
    assert str(exc)


def _well_posed(X, idx, y, init):
    """Whether a fit on these pairs has no reason to fail.

    Some similar and some dissimilar pair must differ, by squared distances
    far from float64's limits, and init must be of full rank (identity or
    random): then a fit must succeed.  The rest (every similar pair of
    identical points, data at 1e+-170, a singular covariance init) may be
    rejected, with a deliberate message.
    """
    X = np.asarray(X, dtype=np.float64)
    if init not in ("identity", "random") or not np.all(np.isfinite(X)):
        return False
    with np.errstate(over="ignore", under="ignore"):
        sq = ((X[idx[:, 0]] - X[idx[:, 1]]) ** 2).sum(axis=1)
    ok = (sq > 1e-100) & (sq < 1e100)
    return bool(ok[y == 1].any() and ok[y == -1].any()
                and np.all(sq[sq > 0] > 1e-200) and np.all(sq < 1e200))


def _check_outcome(fit, must_fit=False):
    """Run ``fit``; it must give a finite symmetric PSD metric or a clear error
    (no error when ``must_fit``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est = fit()
        except (ValueError, TypeError) as exc:
            _assert_deliberate(exc)
            assert not must_fit, f"a well-posed fit was rejected: {exc}"
            return None
    A = est.get_mahalanobis_matrix()
    A_ = est.A_
    assert np.all(np.isfinite(A_)) and np.all(np.isfinite(A))
    scale = max(np.abs(A_).max(), np.finfo(float).tiny)
    np.testing.assert_allclose(A_, A_.T, rtol=0, atol=1e-12 * scale)
    assert np.linalg.eigvalsh(A_).min() >= -1e-9 * scale
    assert np.all(np.isfinite(est.components_))
    return est


def _check_rejected(fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError)) as info:
            fit()
    _assert_deliberate(info.value)


@st.composite
def points(draw, n_points, d):
    """Seeded Gaussian points at a drawn scale, some rows repeated.

    Half of the time Hypothesis's own floats are used instead: they bring
    zeros, repeated and round values.
    """
    if draw(st.booleans()):
        return draw(hnp.arrays(np.float64, (n_points, d),
                               elements=st.floats(-1e3, 1e3,
                                                  allow_subnormal=False)))
    rng = np.random.default_rng(draw(SEEDS))
    X = rng.normal(size=(n_points, d)) * draw(SCALES)
    n_copies = draw(st.integers(0, n_points // 2))
    X[rng.integers(0, n_points, n_copies)] = X[rng.integers(0, n_points, n_copies)]
    return X


@st.composite
def pair_problem(draw):
    """Points, index pairs (some joining a point to itself) and +-1 labels."""
    d = draw(st.integers(1, 4))
    n_pairs = draw(st.integers(2, 16))
    n_points = draw(st.integers(2, 2 * n_pairs + 2))
    X = draw(points(n_points, d))
    rng = np.random.default_rng(draw(SEEDS))
    idx = rng.integers(0, n_points, size=(n_pairs, 2))
    n_self = draw(st.integers(0, n_pairs // 2))
    idx[:n_self, 1] = idx[:n_self, 0]  # zero-distance pairs are legal
    y = rng.choice([-1, 1], size=n_pairs)
    y[rng.choice(n_pairs, 2, replace=False)] = [1, -1]  # both kinds present
    return X, idx, y


def _as(X, dtype):
    with np.errstate(over="ignore"):  # float32 overflow to inf is a case too
        return X.astype(dtype)


@PROPERTY
@given(problem=pair_problem(), dtype=DTYPES, params=SOLVERS, init=INITS)
def test_property_valid_formed_pairs(problem, dtype, params, init):
    X, idx, y = problem
    X = _as(X, dtype)
    pairs = X[idx]
    est = _check_outcome(
        lambda: MMC(init=init, random_state=0, **params).fit(pairs, y),
        must_fit=_well_posed(X, idx, y, init))
    if est is not None:
        assert np.all(np.isfinite(est.pair_distance(pairs)))
        assert set(np.unique(est.predict(pairs))) <= {-1, 1}


@PROPERTY
@given(problem=pair_problem(), params=SOLVERS)
def test_property_valid_index_pairs(problem, params):
    X, idx, y = problem
    est = _check_outcome(lambda: MMC(preprocessor=X, **params).fit(idx, y),
                         must_fit=_well_posed(X, idx, y, "identity"))
    if est is not None:
        # The same metric as from the formed pairs.
        formed = _check_outcome(lambda: MMC(**params).fit(X[idx], y))
        np.testing.assert_allclose(est.A_, formed.A_, rtol=1e-9,
                                   atol=1e-9 * np.abs(formed.A_).max())


@PROPERTY
@given(problem=pair_problem(), dtype=DTYPES, params=SOLVERS,
       defect=st.sampled_from(["nan_inf", "label", "one_class"]),
       data=st.data())
def test_property_formed_pairs_with_a_defect(problem, dtype, params, defect, data):
    X, idx, y = problem
    pairs = _as(X, dtype)[idx]
    y = y.copy()
    if defect == "nan_inf":
        flat = pairs.reshape(-1)
        flat[data.draw(st.integers(0, flat.size - 1))] = data.draw(SPECIALS)
    elif defect == "label":
        y[data.draw(st.integers(0, y.size - 1))] = data.draw(
            st.sampled_from([0, 2, -2, 5]))
    else:
        y[:] = data.draw(st.sampled_from([-1, 1]))
    _check_rejected(lambda: MMC(**params).fit(pairs, y))


@PROPERTY
@given(problem=pair_problem(), params=SOLVERS,
       defect=st.sampled_from(["nan_inf", "negative", "past_end", "fraction"]),
       data=st.data())
def test_property_index_pairs_with_a_defect(problem, params, defect, data):
    X, idx, y = problem
    X, idx = X.copy(), idx.copy()
    n_points = X.shape[0]
    where = (data.draw(st.integers(0, idx.shape[0] - 1)), data.draw(st.integers(0, 1)))
    if defect == "nan_inf":
        # A non-finite value in the preprocessor: an error in a row a pair
        # uses; in a row none uses, the same fit as without it.
        row = data.draw(st.integers(0, n_points - 1))
        clean = X.copy()
        X[row, data.draw(st.integers(0, X.shape[1] - 1))] = data.draw(SPECIALS)
        if not np.any(idx == row):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ref = MMC(preprocessor=clean, **params).fit(idx, y).A_
                except (ValueError, TypeError) as exc:
                    with pytest.raises(type(exc)):
                        MMC(preprocessor=X, **params).fit(idx, y)
                    return
                got = MMC(preprocessor=X, **params).fit(idx, y).A_
            np.testing.assert_array_equal(got, ref)
            return
    elif defect == "negative":
        idx[where] = data.draw(st.integers(-n_points - 3, -1))
    elif defect == "past_end":
        idx[where] = data.draw(st.integers(n_points, n_points + 3))
    else:
        idx = idx.astype(float)
        idx[where] += data.draw(st.sampled_from([0.5, 0.25, -0.1]))
    _check_rejected(lambda: MMC(preprocessor=X, **params).fit(idx, y))


@st.composite
def class_problem(draw):
    n = draw(st.integers(2, 25))
    d = draw(st.integers(1, 4))
    X = draw(points(n, d))
    rng = np.random.default_rng(draw(SEEDS))
    y = rng.integers(0, draw(st.integers(2, 4)), size=n)
    return X, y


@PROPERTY
@given(problem=class_problem(), dtype=DTYPES, params=SOLVERS, init=INITS)
def test_property_valid_supervised(problem, dtype, params, init):
    X, y = problem
    X = _as(X, dtype)
    if not np.all(np.isfinite(X)):
        _check_rejected(lambda: MMC_Supervised(**params).fit(X, y))
        return
    est = _check_outcome(lambda: MMC_Supervised(
        init=init, n_constraints=15, random_state=0, **params).fit(X, y))
    if est is not None:
        assert np.all(np.isfinite(est.transform(X)))


@PROPERTY
@given(problem=class_problem(), params=SOLVERS,
       defect=st.sampled_from(["nan_inf", "one_class", "length"]), data=st.data())
def test_property_supervised_with_a_defect(problem, params, defect, data):
    X, y = problem
    X = X.copy()
    if defect == "nan_inf":
        X[data.draw(st.integers(0, X.shape[0] - 1)),
          data.draw(st.integers(0, X.shape[1] - 1))] = data.draw(SPECIALS)
    elif defect == "one_class":
        y = np.full_like(y, y[0])
    else:
        y = y[: data.draw(st.integers(0, y.size - 1))]
    _check_rejected(lambda: MMC_Supervised(n_constraints=15, **params).fit(X, y))


@PROPERTY
@given(problem=pair_problem(), params=SOLVERS,
       shape=st.lists(st.integers(0, 5), min_size=0, max_size=5), data=st.data())
def test_property_pairs_of_a_wrong_shape(problem, params, shape, data):
    # Any array that is not (n, 2, d) pairs (d >= 1), or (n, 2) indices with a
    # preprocessor, is refused with a message naming the expected shape.
    X, idx, y = problem
    shape = tuple(shape)
    formed_ok = len(shape) == 3 and shape[1] == 2 and shape[2] >= 1 and shape[0] >= 1
    index_ok = len(shape) == 2 and shape[1] == 2 and shape[0] >= 1
    arr = np.zeros(shape)
    labels = np.resize(y, shape[0] if shape else 0)
    # the message names the argument and what is wrong with its shape
    shape_message = r"^pairs (must|is|has) "
    if not formed_ok:
        with pytest.raises(ValueError, match=shape_message):
            MMC(**params).fit(arr, labels)
    if not (index_ok or formed_ok):  # (formed pairs are legal with one too)
        points = X if data.draw(st.booleans()) else X[:, :1]
        with pytest.raises(ValueError, match=shape_message):
            MMC(preprocessor=points, **params).fit(arr.astype(np.intp), labels)


@st.composite
def bad_init(draw, d):
    """A matrix MMC must refuse as init for d features, and what to match."""
    kind = draw(st.sampled_from(["shape", "asymmetric", "indefinite", "nonfinite"]))
    rng = np.random.default_rng(draw(SEEDS))
    if kind == "shape":
        shape = draw(st.sampled_from([(d + 1, d + 1), (d, d + 1), (d,), (1, d, d)]))
        return rng.normal(size=shape), "init"
    K = rng.normal(size=(d, d))
    M = K @ K.T
    if kind == "asymmetric":
        i, j = (0, 1) if d > 1 else (0, 0)
        if d == 1:
            return np.array([[1.0, 0.5]]), "init"
        M[i, j] += draw(st.floats(1e-3, 1e3))
        return M, "not symmetric"
    if kind == "indefinite":
        w, V = np.linalg.eigh(M)
        w[0] = -draw(st.floats(1e-3, 1e3)) * max(w[-1], 1.0)
        return (V * w) @ V.T, "not positive semi-definite"
    M.flat[draw(st.integers(0, d * d - 1))] = draw(SPECIALS)
    return M, "NaN|inf|finite"


@PROPERTY
@given(d=st.integers(1, 5), seed=SEEDS, params=SOLVERS, data=st.data())
def test_property_bad_init_is_refused(d, seed, params, data):
    # on well-posed data, so that init is the only thing wrong
    X = np.random.default_rng(seed).normal(size=(12, d))
    classes = np.arange(12) % 3
    idx = np.array([[0, 3], [1, 4], [2, 5], [0, 1], [1, 2], [3, 5]])
    y = np.where(classes[idx[:, 0]] == classes[idx[:, 1]], 1, -1)
    init, match = data.draw(bad_init(d))
    with pytest.raises(ValueError, match=match):
        MMC(init=init, **params).fit(X[idx], y)
    with pytest.raises(ValueError, match=match):
        MMC_Supervised(init=init, n_constraints=5, **params).fit(X, classes)


@pytest.mark.parametrize("params", [dict(solver="exact"),
                                    dict(solver="ga-ip", max_iter=5, max_proj=20),
                                    dict(diagonal=True)])
def test_identical_point_pairs_are_legal(params):
    # Similar pairs of identical points (zero distance) next to ordinary ones.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    sim = np.column_stack([np.arange(10), np.arange(10, 20)])
    same = np.column_stack([np.arange(20, 25), np.arange(20, 25)])
    dis = np.column_stack([np.arange(25, 33), np.arange(32, 24, -1)])
    dis_same = np.column_stack([np.arange(33, 36), np.arange(33, 36)])
    idx = np.vstack([sim, same, dis, dis_same])
    y = np.array([1] * 15 + [-1] * 11)
    est = _check_outcome(lambda: MMC(**params).fit(X[idx], y))
    assert est is not None
    assert np.all(np.isfinite(est.pair_distance(X[idx])))
    np.testing.assert_allclose(est.pair_distance(X[same]), 0, atol=1e-12)


@pytest.mark.parametrize("params", [dict(solver="exact"),
                                    dict(solver="exact", shrinkage=0.1),
                                    dict(solver="ga-ip", max_iter=5, max_proj=20),
                                    dict(diagonal=True)])
@pytest.mark.parametrize("d", [2, 4])
def test_similar_pairs_that_do_not_span_the_space(params, d):
    # One similar pair: the S-matrix has rank 1, so MMC is unbounded along the
    # other directions.  A warning is fine; a non-finite metric is not.
    rng = np.random.default_rng(d)
    X = rng.normal(size=(12, d))
    idx = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]])
    y = np.array([1, -1, -1, -1, -1, -1])
    est = _check_outcome(lambda: MMC(**params).fit(X[idx], y))
    if est is not None:
        assert np.all(np.isfinite(est.pair_distance(X[idx])))


@pytest.mark.parametrize("params", [dict(solver="exact"),
                                    dict(solver="ga-ip", max_iter=5, max_proj=20),
                                    dict(diagonal=True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_feature(params, dtype):
    # With one feature the metric is a single positive number.
    rng = np.random.default_rng(0)
    pairs = rng.normal(size=(200, 2, 1)).astype(dtype)
    y = rng.choice([-1, 1], size=200)
    est = _check_outcome(lambda: MMC(**params).fit(pairs, y))
    assert est is not None
    assert est.A_.shape == (1, 1) and est.A_[0, 0] > 0
