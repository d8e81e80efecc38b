"""EmbeddingDML: scikit-learn conventions, learning, determinism, options, errors.

The learning tests use small synthetic problems in which the classes live in
a few informative directions that noisy, higher-variance directions hide (the
whole space is then rotated, so no single feature gives the answer away):
nearest-neighbour retrieval in the input space is poor, while a learned linear
map can discard the noise.  Recall@1 is measured on held-out points.
"""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.kernel_approximation import Nystroem
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_estimator_checks import _run_check

from fastmetric.embedding import EmbeddingDML, _ClassBalancedSampler
from fastmetric.evaluation import recall_at_k
from fastmetric.losses import triplet_margin_loss

# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def _rotate(X, rng):
    Q, _ = np.linalg.qr(rng.standard_normal((X.shape[1], X.shape[1])))
    return X @ Q


def hidden_classes(seed, n=600, n_classes=8, n_info=3, n_noise=20, noise=2.0):
    """Gaussian classes in ``n_info`` dims, hidden by ``n_noise`` noisy dims."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, n_info))
    y = rng.integers(0, n_classes, n)
    X = np.hstack([centres[y] + 0.25 * rng.standard_normal((n, n_info)),
                   noise * rng.standard_normal((n, n_noise))])
    X = _rotate(X, rng)
    half = n // 2
    return X[:half], y[:half], X[half:], y[half:]


def multimodal_classes(seed, n=900, n_noise=20, noise=3.0):
    """3 classes of 3 modes each, interleaved on a grid, hidden by noisy dims.

    The 9 modes sit on a 3 x 3 grid (spacing 4, spread 0.5) in 2 dims, and
    mode (i, j) belongs to class (i + j) mod 3, so every class has three
    distant modes and no direction separates the classes.
    """
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j) for i in range(3) for j in range(3)], dtype=float)
    mode_class = (grid[:, 0] + grid[:, 1]).astype(int) % 3
    mode = rng.integers(0, 9, n)
    X = np.hstack([4.0 * grid[mode] + 0.5 * rng.standard_normal((n, 2)),
                   noise * rng.standard_normal((n, n_noise))])
    X = _rotate(X - X.mean(axis=0), rng)
    y = mode_class[mode]
    half = n // 2
    return X[:half], y[:half], X[half:], y[half:]


# ----------------------------------------------------------------------------
# scikit-learn conventions
# ----------------------------------------------------------------------------

# max_iter is small: the checks test conventions, not optima.
CHECKED_ESTIMATORS = [
    EmbeddingDML(max_iter=5, batch_size=16, n_jobs=1),
    EmbeddingDML(loss="contrastive", optimizer="sgd", init="random", n_components=2,
                 max_iter=5, batch_size=16, n_jobs=2),
    EmbeddingDML(loss="lifted", init="identity", max_iter=5, batch_size=16, n_jobs=1),
    EmbeddingDML(loss="generalized_lifted", samples_per_class=3, max_iter=5,
                 batch_size=12, n_jobs=1),
    EmbeddingDML(loss="magnet", magnet_clusters_per_class=2, magnet_m_clusters=3,
                 magnet_d_per_cluster=4, magnet_refresh_every=2, max_iter=5, n_jobs=1),
]


@parametrize_with_checks(CHECKED_ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    _run_check(estimator, check)


# ----------------------------------------------------------------------------
# Learning
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"loss": "triplet"},
        {"loss": "lifted"},
        {"loss": "generalized_lifted"},
        {"loss": "contrastive", "loss_params": {"pos_margin": 0.2}},
        {"loss": "triplet", "optimizer": "sgd", "learning_rate": 0.1},
    ],
    ids=["triplet", "lifted", "generalized_lifted", "contrastive", "triplet-sgd"],
)
def test_learning_improves_recall(params):
    X, y, Xt, yt = hidden_classes(0)
    before = recall_at_k(Xt, yt, k=1)
    est = EmbeddingDML(n_components=6, batch_size=64, max_iter=300, random_state=0,
                       n_jobs=1, **params).fit(X, y)
    after = recall_at_k(est.transform(Xt), yt, k=1)
    assert before < 0.3
    assert after > before + 0.4, (before, after)
    assert len(est.loss_curve_) == est.n_iter_ == 300


@pytest.mark.parametrize("seed", [0, 1])
def test_magnet_beats_euclidean_on_multimodal_classes(seed):
    X, y, Xt, yt = multimodal_classes(seed)
    before = recall_at_k(Xt, yt, k=1)
    est = EmbeddingDML(loss="magnet", magnet_clusters_per_class=3, max_iter=300,
                       random_state=seed, n_jobs=1).fit(X, y)
    after = recall_at_k(est.transform(Xt), yt, k=1)
    assert before < 0.5
    assert after > 0.9, (before, after)


def test_magnet_feeds_losses_back_and_refreshes(monkeypatch):
    from fastmetric import magnet

    calls = {"update": 0, "refresh": 0, "sizes": set()}
    update, refresh = magnet.MagnetClusterIndex.update_losses, \
        magnet.MagnetClusterIndex.refresh

    def spy_update(self, cluster_ids, losses):
        calls["update"] += 1
        calls["sizes"].add(len(losses))
        return update(self, cluster_ids, losses)

    def spy_refresh(self, embeddings):
        calls["refresh"] += 1
        assert embeddings.shape == (X.shape[0], 5)
        return refresh(self, embeddings)

    monkeypatch.setattr(magnet.MagnetClusterIndex, "update_losses", spy_update)
    monkeypatch.setattr(magnet.MagnetClusterIndex, "refresh", spy_refresh)
    X, y, _, _ = multimodal_classes(3, n=300)
    kw = dict(loss="magnet", n_components=5, max_iter=25, magnet_m_clusters=4,
              magnet_d_per_cluster=6, random_state=0, n_jobs=1)
    est = EmbeddingDML(magnet_refresh_every=10, **kw).fit(X, y)
    assert calls["update"] == 25
    assert calls["sizes"] == {24}
    assert calls["refresh"] == 2
    assert est.n_iter_ == 25
    # By default once an epoch: 150 examples, 24 a batch -> every 7 steps.
    calls["refresh"] = 0
    EmbeddingDML(**kw).fit(X, y)
    assert calls["refresh"] == 3


# ----------------------------------------------------------------------------
# Determinism, callback, verbose
# ----------------------------------------------------------------------------


def test_same_seed_same_result_and_thread_count_irrelevant():
    X, y, _, _ = hidden_classes(1, n=200)
    kw = dict(n_components=4, batch_size=32, max_iter=40)
    a = EmbeddingDML(random_state=7, n_jobs=1, **kw).fit(X, y)
    b = EmbeddingDML(random_state=7, n_jobs=1, **kw).fit(X, y)
    c = EmbeddingDML(random_state=np.random.RandomState(7), n_jobs=2, **kw).fit(X, y)
    d = EmbeddingDML(random_state=8, n_jobs=1, **kw).fit(X, y)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_allclose(c.components_, a.components_, rtol=1e-10, atol=1e-12)
    assert not np.allclose(d.components_, a.components_)
    # Refitting the same estimator gives the same result too.
    np.testing.assert_array_equal(a.fit(X, y).components_, b.components_)


def test_callback_sees_every_step_and_can_stop():
    X, y, _, _ = hidden_classes(2, n=200)
    seen = []

    def callback(est, iteration, loss):
        seen.append((iteration, loss, est.transform(X[:3]).shape))
        return iteration == 7

    est = EmbeddingDML(n_components=3, max_iter=50, batch_size=32, callback=callback,
                       random_state=0, n_jobs=1).fit(X, y)
    assert [s[0] for s in seen] == list(range(1, 8))
    assert [s[1] for s in seen] == est.loss_curve_
    assert all(s[2] == (3, 3) for s in seen)
    assert est.n_iter_ == 7


def test_verbose_prints_progress(capsys):
    X, y, _, _ = hidden_classes(3, n=100)
    EmbeddingDML(max_iter=20, batch_size=16, verbose=True, random_state=0,
                 n_jobs=1).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10
    assert lines[-1].startswith("[EmbeddingDML] step     20/20  loss ")
    EmbeddingDML(max_iter=3, batch_size=16, verbose=2, random_state=0,
                 n_jobs=1).fit(X, y)
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    EmbeddingDML(max_iter=3, batch_size=16, random_state=0, n_jobs=1).fit(X, y)
    assert capsys.readouterr().out == ""


# ----------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------


def _initial(X, y, **kw):
    """components_ after one step too small to change them."""
    return EmbeddingDML(max_iter=1, learning_rate=1e-300, batch_size=16,
                        random_state=0, n_jobs=1, **kw).fit(X, y).components_


def test_initialisations():
    X, y, _, _ = hidden_classes(4, n=120)
    np.testing.assert_allclose(_initial(X, y, init="identity", n_components=3),
                               np.eye(3, X.shape[1]), atol=1e-250)
    R = _initial(X, y, init="random", n_components=5)
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0)
    given = np.arange(2.0 * X.shape[1]).reshape(2, -1)
    np.testing.assert_allclose(_initial(X, y, init=given), given, rtol=1e-15,
                               atol=1e-250)
    # PCA: the leading principal axes (orthonormal rows).
    P = _initial(X, y, n_components=4)
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(P @ Vt[:4].T), np.eye(4), atol=1e-8)
    # Fewer samples than components: completed with orthonormal rows.
    P = _initial(X[:6], y[:6] % 2, n_components=10)
    np.testing.assert_allclose(P @ P.T, np.eye(10), atol=1e-10)


def test_callable_loss_matches_builtin():
    X, y, _, _ = hidden_classes(5, n=150)
    calls = []

    def my_loss(E, labels, margin):
        calls.append((E.dtype, labels.dtype, E.shape))
        return triplet_margin_loss(E, labels, margin=margin)

    kw = dict(n_components=3, max_iter=10, batch_size=24, random_state=0, n_jobs=1)
    ref = EmbeddingDML(loss_params={"margin": 0.2}, **kw).fit(X, y)
    est = EmbeddingDML(loss=my_loss, loss_params={"margin": 0.2}, **kw).fit(X, y)
    np.testing.assert_allclose(est.components_, ref.components_, rtol=1e-12)
    assert calls[0] == (np.float64, np.int64, (24, 3))


def test_loss_params_reach_the_loss():
    X, y, _, _ = hidden_classes(6, n=150)
    kw = dict(n_components=3, max_iter=5, batch_size=24, random_state=0, n_jobs=1)
    a = EmbeddingDML(loss_params={"margin": 0.05}, **kw).fit(X, y)
    b = EmbeddingDML(loss_params={"margin": 0.5}, **kw).fit(X, y)
    assert a.loss_curve_[0] != b.loss_curve_[0]


def test_float32_transform_and_metric():
    X, y, Xt, _ = hidden_classes(7, n=200)
    est = EmbeddingDML(n_components=3, max_iter=10, batch_size=16, random_state=0,
                       n_jobs=1).fit(X.astype(np.float32), y)
    assert est.components_.dtype == np.float64
    assert est.transform(Xt.astype(np.float32)).dtype == np.float32
    np.testing.assert_allclose(est.transform(Xt), Xt @ est.components_.T)
    np.testing.assert_allclose(est.get_mahalanobis_matrix(),
                               est.components_.T @ est.components_)
    pairs = np.stack([Xt[:5], Xt[5:10]], axis=1)
    np.testing.assert_allclose(
        est.pair_distance(pairs),
        np.linalg.norm((Xt[:5] - Xt[5:10]) @ est.components_.T, axis=1), rtol=1e-10)


def test_string_labels_and_pipeline():
    X, y, Xt, yt = hidden_classes(8, n=200)
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu", "hen"])
    pipe = make_pipeline(StandardScaler(), Nystroem(n_components=30, random_state=0),
                         EmbeddingDML(n_components=5, max_iter=10, batch_size=16,
                                      random_state=0, n_jobs=1))
    E = pipe.fit(X, names[y]).transform(Xt)
    assert E.shape == (Xt.shape[0], 5)
    assert list(pipe[-1].classes_) == sorted(set(names[y]))


def test_transform_validates_input():
    X, y, _, _ = hidden_classes(9, n=100)
    est = EmbeddingDML(max_iter=2, batch_size=16, n_jobs=1)
    with pytest.raises(NotFittedError):
        est.transform(X)
    est.fit(X, y)
    with pytest.raises(ValueError, match="features"):
        est.transform(X[:, :5])
    assert clone(est).get_params() == est.get_params()


# ----------------------------------------------------------------------------
# Class-balanced batches
# ----------------------------------------------------------------------------


def test_class_balanced_sampler():
    codes = np.repeat(np.arange(5), [10, 7, 3, 1, 9])
    sampler = _ClassBalancedSampler(codes, 3, 4, np.random.RandomState(0))
    seen = set()
    for _ in range(50):
        idx = sampler.next_batch()
        assert idx.shape == (12,)
        per_class = codes[idx].reshape(3, 4)
        assert np.all(per_class == per_class[:, :1])  # 4 of each class
        assert np.unique(per_class[:, 0]).size == 3  # 3 distinct classes
        for row in idx.reshape(3, 4):
            n_members = np.count_nonzero(codes == codes[row[0]])
            assert np.unique(row).size == min(4, n_members)
        seen.update(idx.tolist())
    assert seen == set(range(codes.size))


# ----------------------------------------------------------------------------
# Bad parameters
# ----------------------------------------------------------------------------

X_BAD, Y_BAD, _, _ = hidden_classes(10, n=120)


@pytest.mark.parametrize(
    ("params", "exc", "match"),
    [
        ({"loss": "hinge"}, ValueError, "loss must be one of"),
        ({"loss": 3}, ValueError, "loss must be one of"),
        ({"loss_params": {"margn": 0.1}}, ValueError, r"loss_params has \['margn'\]"),
        ({"loss_params": {"n_jobs": 2}}, ValueError, "must not set 'n_jobs'"),
        ({"loss_params": [("margin", 0.1)]}, TypeError, "loss_params must be a dict"),
        ({"loss_params": {"margin": "big"}}, TypeError, "margin"),
        ({"optimizer": "lbfgs"}, ValueError, "optimizer must be one of"),
        ({"learning_rate": 0}, ValueError, "learning_rate must be finite and > 0"),
        ({"learning_rate": np.inf}, ValueError, "learning_rate"),
        ({"momentum": 1.0}, ValueError, r"momentum must lie in \[0, 1\)"),
        ({"batch_size": 1}, ValueError, "batch_size must be >= 2"),
        ({"batch_size": 8.0}, TypeError, "batch_size must be an int"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"samples_per_class": 1}, ValueError, "samples_per_class must be >= 2"),
        ({"magnet_clusters_per_class": 0}, ValueError, "magnet_clusters_per_class"),
        ({"magnet_m_clusters": 1}, ValueError, "magnet_m_clusters must be >= 2"),
        ({"magnet_d_per_cluster": 0}, ValueError, "magnet_d_per_cluster"),
        ({"magnet_refresh_every": 0}, ValueError, "magnet_refresh_every"),
        ({"init": "lda"}, ValueError, "init must be one of"),
        ({"init": np.ones((2, 3))}, ValueError, "init has 3 columns"),
        ({"init": np.ones((2, 23)), "n_components": 3}, ValueError,
         "init has 2 rows but n_components is 3"),
        ({"init": np.full((2, 23), np.nan)}, ValueError, "init contains NaN"),
        ({"n_components": 0}, ValueError, "n_components must be >= 1"),
        ({"n_components": 24}, ValueError, "n_components=24 exceeds the 23 features"),
        ({"n_components": 2.5}, TypeError, "n_components must be an int"),
        ({"callback": "print"}, TypeError, "callback must be callable"),
        ({"verbose": "yes"}, TypeError, "verbose must be a bool or an int"),
        ({"n_jobs": 0}, ValueError, "n_jobs == 0"),
    ],
)
def test_bad_parameters(params, exc, match):
    est = EmbeddingDML(**{"max_iter": 2, "batch_size": 16, **params})
    with pytest.raises(exc, match=match):
        est.fit(X_BAD, Y_BAD)


def test_bad_targets():
    with pytest.raises(ValueError, match="at least 2 classes"):
        EmbeddingDML(max_iter=2).fit(X_BAD, np.zeros(60))
    with pytest.raises(ValueError, match="no class in y has two samples"):
        EmbeddingDML(max_iter=2).fit(X_BAD[:5], np.arange(5))
    with pytest.raises(ValueError, match="Unknown label type"):
        EmbeddingDML(max_iter=2).fit(X_BAD, np.linspace(0, 1, 60))
    with pytest.raises(ValueError, match="requires y"):
        EmbeddingDML(max_iter=2).fit(X_BAD, None)


@pytest.mark.parametrize(
    ("returned", "exc", "match"),
    [
        (1.0, TypeError, r"must return a tuple \(loss, grad\)"),
        (("a", None), TypeError, "real number"),
        ((1.0, np.zeros((3, 3))), ValueError, "gradient of shape"),
        ((1.0, "nan"), ValueError, "non-finite gradient"),
        ((np.nan, 0.0), ValueError, "diverged"),
    ],
)
def test_bad_callable_loss(returned, exc, match):
    def bad(E, labels):
        if isinstance(returned, tuple) and np.ndim(returned[1]) == 0 \
                and returned[1] is not None:
            return returned[0], np.full(E.shape, float(returned[1]))
        return returned

    with pytest.raises(exc, match=match):
        EmbeddingDML(loss=bad, max_iter=2, batch_size=16).fit(X_BAD, Y_BAD)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_divergence_is_reported():
    def exploding(E, labels):
        return 1.0, np.full(E.shape, 1e308)

    with pytest.raises(ValueError, match="diverged.*lower learning_rate"):
        EmbeddingDML(loss=exploding, optimizer="sgd", learning_rate=1e10, max_iter=5,
                     batch_size=16).fit(X_BAD, Y_BAD)
