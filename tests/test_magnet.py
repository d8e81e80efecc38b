"""Magnet loss, its cluster index and its batch sampler.

The loss is checked against a plain NumPy float64 reference written from the
formula of Rippel et al. (2016), against central finite differences (through
the means, the shared variance, its floor and the L2 normalisation), and for
its invariance to scaling the embeddings.
"""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import fastmetric.magnet as fm
from fastmetric.magnet import MagnetBatchSampler, MagnetClusterIndex, magnet_loss

# -- reference ------------------------------------------------------------------


def reference_magnet(E, labels, clusters, alpha=1.0, reduction="mean"):
    """Magnet loss from the paper's formula, one example at a time, float64."""
    E = np.asarray(E, dtype=np.float64)
    labels = np.asarray(labels)
    clusters = np.asarray(clusters)
    B = E.shape[0]
    ids = np.unique(clusters)
    mu = np.array([E[clusters == c].mean(axis=0) for c in ids])
    cls = np.array([labels[clusters == c][0] for c in ids])
    own = np.searchsorted(ids, clusters)
    d = ((E[:, None, :] - mu[None, :, :]) ** 2).sum(axis=-1)
    var = d[np.arange(B), own].sum() / (B - 1)
    per = np.zeros(B)
    for i in range(B):
        impostor = cls != labels[i]
        if not impostor.any():
            continue
        z = -d[i, impostor] / (2.0 * var)
        top = z.max()
        lse = top + np.log(np.exp(z - top).sum())
        per[i] = max(d[i, own[i]] / (2.0 * var) + alpha + lse, 0.0)
    if reduction == "mean":
        return per.mean(), per
    if reduction == "sum":
        return per.sum(), per
    n = np.count_nonzero(per > 0)
    return (per.sum() / n if n else 0.0), per


def numeric_gradient(f, E, h=1e-6):
    grad = np.zeros_like(E)
    for idx in np.ndindex(E.shape):
        Ep = E.copy()
        Em = E.copy()
        Ep[idx] += h
        Em[idx] -= h
        grad[idx] = (f(Ep) - f(Em)) / (2.0 * h)
    return grad


def clustered_batch(rng, n_clusters=6, per_cluster=4, n_classes=3, dim=5, spread=0.5):
    """Overlapping clusters: some examples are inside the margin, some not."""
    centers = rng.normal(size=(n_clusters, dim))
    clusters = np.repeat(np.arange(n_clusters), per_cluster)
    labels = clusters % n_classes
    E = centers[clusters] + spread * rng.normal(size=(clusters.size, dim))
    return E, labels, clusters


# -- loss value -------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "avg_nonzero"])
@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_loss_matches_reference(reduction, alpha):
    rng = np.random.default_rng(0)
    E, labels, clusters = clustered_batch(rng)
    loss, grad, per = magnet_loss(E, labels, clusters, alpha=alpha,
                                  reduction=reduction, return_per_example=True)
    ref, ref_per = reference_magnet(E, labels, clusters, alpha, reduction)
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(per, ref_per, rtol=1e-12, atol=1e-14)
    assert grad.shape == E.shape and grad.dtype == np.float64


def test_loss_arbitrary_cluster_ids_sizes_and_duplicates():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(13, 4))
    E[5] = E[4]  # a duplicate row
    clusters = np.array([7, 7, -3, -3, -3, 100, 100, 100, 100, 7, 2, 2, 55])
    labels = np.array([1, 1, 4, 4, 4, 1, 1, 1, 1, 1, 9, 9, 4])
    for alpha in (0.5, 3.0):
        loss, _, per = magnet_loss(E, labels, clusters, alpha=alpha,
                                   return_per_example=True)
        ref, ref_per = reference_magnet(E, labels, clusters, alpha)
        np.testing.assert_allclose(loss, ref, rtol=1e-12)
        np.testing.assert_allclose(per, ref_per, rtol=1e-12, atol=1e-14)


def test_loss_normalize_is_reference_on_unit_rows():
    rng = np.random.default_rng(2)
    E, labels, clusters = clustered_batch(rng)
    X = E / np.linalg.norm(E, axis=1, keepdims=True)
    loss, _ = magnet_loss(E, labels, clusters, normalize=True, alpha=2.0)
    np.testing.assert_allclose(loss, reference_magnet(X, labels, clusters, 2.0)[0],
                               rtol=1e-12)


# -- gradient ---------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "avg_nonzero"])
def test_gradient_finite_differences(normalize, reduction):
    rng = np.random.default_rng(3)
    E, labels, clusters = clustered_batch(rng, n_clusters=5, per_cluster=3, dim=3)
    kw = dict(alpha=1.0, normalize=normalize, reduction=reduction)
    loss, grad, per = magnet_loss(E, labels, clusters, return_per_example=True, **kw)
    # The batch exercises both sides of the hinge.
    assert 0 < np.count_nonzero(per) < per.size
    num = numeric_gradient(lambda X: magnet_loss(X, labels, clusters, **kw)[0], E)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_gradient_through_variance_floor(monkeypatch):
    # Raise the floor above the batch's variance so the floored branch (the
    # gradient flowing through the total variance) is the one differentiated.
    rng = np.random.default_rng(4)
    E, labels, clusters = clustered_batch(rng, n_clusters=4, per_cluster=3, dim=3)
    monkeypatch.setattr(fm, "VAR_FLOOR", 3.0)
    f = lambda X: magnet_loss(X, labels, clusters, alpha=1.0)[0]  # noqa: E731
    loss, grad = magnet_loss(E, labels, clusters, alpha=1.0)
    assert loss > 0
    np.testing.assert_allclose(grad, numeric_gradient(f, E), rtol=1e-6, atol=1e-9)


def test_gradient_sums_to_zero_translation_invariance():
    # The loss only sees differences, so it is invariant to translations and
    # its gradient sums to zero over the batch.
    rng = np.random.default_rng(5)
    E, labels, clusters = clustered_batch(rng)
    loss, grad = magnet_loss(E, labels, clusters, alpha=2.0)
    np.testing.assert_allclose(grad.sum(axis=0), 0.0, atol=1e-12)
    loss2, _ = magnet_loss(E + 3.0, labels, clusters, alpha=2.0)
    np.testing.assert_allclose(loss2, loss, rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-200, 1e-4, 0.37, 12.5, 1e5, 1e200])
def test_scale_invariance(scale):
    rng = np.random.default_rng(6)
    E, labels, clusters = clustered_batch(rng)
    loss, grad = magnet_loss(E, labels, clusters, alpha=1.0)
    loss_s, grad_s = magnet_loss(scale * E, labels, clusters, alpha=1.0)
    assert loss > 0.1
    np.testing.assert_allclose(loss_s, loss, rtol=1e-10)
    np.testing.assert_allclose(grad_s * scale, grad, rtol=1e-9, atol=1e-12)



def test_power_of_two_scaling_is_exact():
    # The batch is rescaled by a power of two internally, so these are exact.
    rng = np.random.default_rng(12)
    E, labels, clusters = clustered_batch(rng)
    loss, grad = magnet_loss(E, labels, clusters)
    for k in (-700, -30, 3, 500):
        loss_s, grad_s = magnet_loss(np.ldexp(E, k), labels, clusters)
        assert loss_s == loss
        np.testing.assert_array_equal(np.ldexp(grad_s, k), grad)

# -- edge cases -------------------------------------------------------------------


def test_no_impostor_gives_zero():
    rng = np.random.default_rng(7)
    E = rng.normal(size=(9, 3))
    for labels, clusters in [(np.zeros(9, int), np.repeat([0, 1, 2], 3)),
                             (np.zeros(9, int), np.zeros(9, int))]:
        for reduction in ("mean", "sum", "avg_nonzero"):
            loss, grad, per = magnet_loss(E, labels, clusters, alpha=5.0,
                                          reduction=reduction,
                                          return_per_example=True)
            assert loss == 0.0
            assert np.all(grad == 0) and np.all(per == 0)
    loss, grad = magnet_loss(E[:1], [3], [0])
    assert loss == 0.0 and np.all(grad == 0)


def test_identical_embeddings_are_finite():
    labels = np.repeat([0, 1, 2], 4)
    clusters = np.repeat(np.arange(6), 2)
    E = np.full((12, 4), 0.3)
    loss, grad, per = magnet_loss(E, labels, clusters, alpha=1.0,
                                  return_per_example=True)
    # All distances are 0: each row has 4 impostor clusters at equal distance.
    np.testing.assert_allclose(per, 1.0 + np.log(4.0), rtol=1e-14)
    np.testing.assert_allclose(loss, 1.0 + np.log(4.0), rtol=1e-14)
    assert np.all(grad == 0)
    loss, grad = magnet_loss(E, labels, clusters, normalize=True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    loss, grad = magnet_loss(np.zeros((12, 4)), labels, clusters, normalize=True)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_examples_on_their_means_are_finite():
    # sigma^2 = 0 exactly: every example equals its cluster mean.
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(6, 3))
    clusters = np.repeat(np.arange(6), 3)
    labels = clusters % 3
    E = centers[clusters]
    loss, grad = magnet_loss(E, labels, clusters, alpha=1.0)
    assert loss == 0.0 and np.all(grad == 0)
    # Tiny noise: sigma^2 positive but minute; still finite, still 0 loss.
    E2 = E + 1e-9 * rng.normal(size=E.shape)
    loss, grad = magnet_loss(E2, labels, clusters, alpha=1.0)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    # A huge alpha keeps the hinge active at the floor: finite too.
    loss, grad = magnet_loss(E, labels, clusters, alpha=1e13)
    assert np.isfinite(loss) and loss > 0 and np.all(np.isfinite(grad))


def test_float32_close_to_float64():
    rng = np.random.default_rng(9)
    E, labels, clusters = clustered_batch(rng)
    loss64, grad64 = magnet_loss(E, labels, clusters, alpha=1.0)
    loss32, grad32 = magnet_loss(E.astype(np.float32), labels, clusters, alpha=1.0)
    assert grad32.dtype == np.float32
    np.testing.assert_allclose(loss32, loss64, rtol=1e-5)
    np.testing.assert_allclose(grad32, grad64, rtol=1e-4, atol=1e-6)


def test_threads_give_identical_results(monkeypatch):
    # Force the requested thread count even on a small batch.
    monkeypatch.setattr(fm, "threads_for", lambda n, flops: n)
    rng = np.random.default_rng(10)
    E, labels, clusters = clustered_batch(rng, n_clusters=16, per_cluster=8,
                                          n_classes=5, dim=16)
    out1 = magnet_loss(E, labels, clusters, n_jobs=1, return_per_example=True)
    out2 = magnet_loss(E, labels, clusters, n_jobs=2, return_per_example=True)
    assert out1[0] == out2[0]
    np.testing.assert_array_equal(out1[1], out2[1])
    np.testing.assert_array_equal(out1[2], out2[2])


def test_bad_input():
    rng = np.random.default_rng(11)
    E, labels, clusters = clustered_batch(rng)
    bad = E.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="embeddings"):
        magnet_loss(bad, labels, clusters)
    two = clusters.copy()
    two[0] = clusters[-1]  # cluster 5 now holds labels 2 and 0
    with pytest.raises(ValueError, match="clusters"):
        magnet_loss(E, labels, two)
    with pytest.raises(ValueError, match="labels"):
        magnet_loss(E, labels[:-1], clusters)
    with pytest.raises(ValueError, match="clusters"):
        magnet_loss(E, labels, clusters[:-1])
    with pytest.raises(TypeError, match="alpha"):
        magnet_loss(E, labels, clusters, alpha="1")
    with pytest.raises(TypeError, match="alpha"):
        magnet_loss(E, labels, clusters, alpha=True)
    with pytest.raises(ValueError, match="alpha"):
        magnet_loss(E, labels, clusters, alpha=np.inf)
    with pytest.raises(ValueError, match="reduction"):
        magnet_loss(E, labels, clusters, reduction="max")
    with pytest.raises(TypeError, match="normalize"):
        magnet_loss(E, labels, clusters, normalize="yes")
    with pytest.raises(TypeError, match="clusters"):
        magnet_loss(E, labels, clusters + 0.5)
    with pytest.raises(ValueError, match="embeddings"):
        magnet_loss(E[0], labels, clusters)
    with pytest.raises(ValueError, match="n_jobs"):
        magnet_loss(E, labels, clusters, n_jobs=0)


# -- cluster index ----------------------------------------------------------------


def multimodal_data(rng, n_classes=4, modes=3, per_mode=15, dim=3):
    """Classes made of ``modes`` well-separated blobs each."""
    centers = 10.0 * rng.normal(size=(n_classes * modes, dim))
    blob = np.repeat(np.arange(n_classes * modes), per_mode)
    labels = blob // modes
    E = centers[blob] + 0.3 * rng.normal(size=(blob.size, dim))
    return E, labels, blob


def test_index_clusters_follow_classes():
    rng = np.random.default_rng(20)
    E, labels, blob = multimodal_data(rng)
    index = MagnetClusterIndex(3, random_state=0).fit(E, labels)
    assert index.n_clusters_ == 12
    np.testing.assert_array_equal(index.cluster_labels_[index.assignments_], labels)
    np.testing.assert_array_equal(np.bincount(index.cluster_labels_), [3, 3, 3, 3])
    np.testing.assert_array_equal(index.classes_, [0, 1, 2, 3])
    # Well-separated blobs are recovered exactly (up to renumbering).
    pairs = np.unique(np.stack([index.assignments_, blob]), axis=1)
    assert pairs.shape[1] == 12
    np.testing.assert_array_equal(np.bincount(index.assignments_),
                                  index.cluster_sizes_)
    for c in range(index.n_clusters_):
        members = index.members(c)
        np.testing.assert_array_equal(members, np.flatnonzero(index.assignments_ == c))
        np.testing.assert_allclose(index.centers_[c], E[members].mean(axis=0))


def test_index_fewer_clusters_for_small_classes():
    rng = np.random.default_rng(21)
    labels = np.array([0] * 30 + [5] * 3 + [8] * 6 + [9])
    E = rng.normal(size=(labels.size, 2))
    E[33:36] = E[33]  # class 8: two distinct points
    E[36:39] = E[36]
    index = MagnetClusterIndex(4, random_state=0).fit(E, labels)
    counts = {k: int(np.sum(index.cluster_labels_ == k)) for k in (0, 5, 8, 9)}
    assert counts == {0: 4, 5: 3, 8: 2, 9: 1}
    assert np.all(index.cluster_sizes_ > 0)
    np.testing.assert_array_equal(index.cluster_labels_[index.assignments_], labels)


def test_index_deterministic_and_refresh():
    rng = np.random.default_rng(22)
    E, labels, _ = multimodal_data(rng, per_mode=10)
    E = E + rng.normal(size=E.shape)  # overlapping blobs: k-means has choices
    a = MagnetClusterIndex(3, random_state=7).fit(E, labels)
    b = MagnetClusterIndex(3, random_state=7).fit(E, labels)
    np.testing.assert_array_equal(a.assignments_, b.assignments_)
    np.testing.assert_array_equal(a.centers_, b.centers_)
    a.update_losses([0, 1], [1.0, 2.0])
    old_centers = a.centers_.copy()
    W = rng.normal(size=(3, 2))
    a.refresh(E @ W)
    assert a.centers_.shape == (a.n_clusters_, 2)
    np.testing.assert_array_equal(a.cluster_labels_[a.assignments_], labels)
    np.testing.assert_allclose(a.centers_[a.assignments_[0]],
                               (E @ W)[a.assignments_ == a.assignments_[0]].mean(0))
    assert not np.allclose(a.centers_, old_centers[:, :2])
    assert np.all(np.isnan(a.cluster_losses_))  # losses reset
    with pytest.raises(ValueError, match="rows"):
        a.refresh(E[:-1])


def test_index_refresh_on_collapsed_embeddings():
    rng = np.random.default_rng(23)
    E, labels, _ = multimodal_data(rng, per_mode=5)
    index = MagnetClusterIndex(3, random_state=0).fit(E, labels)
    index.refresh(np.zeros((E.shape[0], 2)))  # every class one distinct point
    assert index.n_clusters_ == 4
    np.testing.assert_array_equal(index.cluster_labels_, [0, 1, 2, 3])
    index.refresh(E)
    np.testing.assert_array_equal(index.cluster_labels_[index.assignments_], labels)


def test_index_running_mean_losses():
    rng = np.random.default_rng(24)
    E, labels, _ = multimodal_data(rng, per_mode=5)
    index = MagnetClusterIndex(2, random_state=0).fit(E, labels)
    assert np.all(np.isnan(index.cluster_losses_))
    index.update_losses([0, 0, 3], [1.0, 2.0, 0.5])
    index.update_losses(np.array([0, 3, 3]), np.array([6.0, 0.0, 1.0]))
    losses = index.cluster_losses_
    np.testing.assert_allclose(losses[[0, 3]], [3.0, 0.5])
    assert np.all(np.isnan(np.delete(losses, [0, 3])))
    np.testing.assert_array_equal(index.cluster_loss_counts_[[0, 3]], [3, 3])
    index.fit(E, labels)  # refitting resets them
    assert np.all(np.isnan(index.cluster_losses_))


def test_index_bad_input():
    rng = np.random.default_rng(25)
    E, labels, _ = multimodal_data(rng, per_mode=5)
    with pytest.raises(NotFittedError):
        MagnetClusterIndex().update_losses([0], [1.0])
    with pytest.raises(NotFittedError):
        MagnetClusterIndex().refresh(E)
    with pytest.raises(ValueError, match="n_clusters_per_class"):
        MagnetClusterIndex(0).fit(E, labels)
    with pytest.raises(TypeError, match="n_clusters_per_class"):
        MagnetClusterIndex(2.5).fit(E, labels)
    with pytest.raises(ValueError, match="labels"):
        MagnetClusterIndex().fit(E, labels[:-1])
    bad = E.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="embeddings"):
        MagnetClusterIndex().fit(bad, labels)
    index = MagnetClusterIndex(2, random_state=0).fit(E, labels)
    with pytest.raises(ValueError, match="cluster_ids"):
        index.update_losses([index.n_clusters_], [1.0])
    with pytest.raises(ValueError, match="cluster_ids"):
        index.update_losses([0, 1], [1.0])
    with pytest.raises(ValueError, match="example_losses"):
        index.update_losses([0], [-1.0])
    with pytest.raises(ValueError, match="example_losses"):
        index.update_losses([0], [np.nan])
    with pytest.raises(ValueError, match="cluster"):
        index.members(-1)


# -- batch sampler ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_index():
    rng = np.random.default_rng(30)
    E, labels, _ = multimodal_data(rng, n_classes=5, modes=3, per_mode=12)
    return E, labels, MagnetClusterIndex(3, random_state=0).fit(E, labels)


def test_sampler_batch_structure(fitted_index):
    E, labels, index = fitted_index
    M, D = 6, 4
    sampler = MagnetBatchSampler(index, m_clusters=M, d_per_cluster=D, random_state=0)
    for _ in range(30):
        idx, clusters = sampler.sample()
        assert idx.shape == (M * D,) and clusters.shape == (M * D,)
        assert idx.dtype == np.int64 and clusters.dtype == np.int64
        np.testing.assert_array_equal(index.assignments_[idx], clusters)
        chosen = clusters[::D]
        assert np.unique(chosen).size == M
        np.testing.assert_array_equal(clusters, np.repeat(chosen, D))
        seed, impostors = chosen[0], chosen[1:]
        seed_class = index.cluster_labels_[seed]
        assert np.all(index.cluster_labels_[impostors] != seed_class)
        # Impostors are the nearest clusters of other classes, nearest first.
        others = np.flatnonzero(index.cluster_labels_ != seed_class)
        d2 = ((index.centers_[others] - index.centers_[seed]) ** 2).sum(axis=1)
        np.testing.assert_array_equal(impostors, others[np.argsort(d2)[: M - 1]])
        # Every cluster here has >= D members: no example drawn twice.
        for c in range(M):
            assert np.unique(idx[c * D:(c + 1) * D]).size == D
        loss, grad = magnet_loss(E[idx], labels[idx], clusters)
        assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_sampler_with_replacement_only_for_small_clusters():
    rng = np.random.default_rng(31)
    labels = np.array([0] * 2 + [1] * 20)
    E = np.concatenate([rng.normal(size=(2, 2)), rng.normal(size=(20, 2)) + 5.0])
    index = MagnetClusterIndex(1, random_state=0).fit(E, labels)
    sampler = MagnetBatchSampler(index, m_clusters=2, d_per_cluster=5, random_state=1)
    for _ in range(20):
        idx, clusters = sampler.sample()
        small = idx[index.cluster_labels_[clusters] == 0]
        large = idx[index.cluster_labels_[clusters] == 1]
        assert small.size == 5 and set(small) <= {0, 1}
        assert large.size == 5 and np.unique(large).size == 5


def test_sampler_fewer_impostors_than_requested():
    rng = np.random.default_rng(32)
    labels = np.repeat([0, 1], 20)
    E = rng.normal(size=(40, 2))
    index = MagnetClusterIndex(2, random_state=0).fit(E, labels)
    sampler = MagnetBatchSampler(index, m_clusters=10, d_per_cluster=3, random_state=0)
    idx, clusters = sampler.sample()
    assert idx.shape == (9,)  # the seed and the 2 clusters of the other class
    single = MagnetClusterIndex(2, random_state=0).fit(E, np.zeros(40, int))
    idx, clusters = MagnetBatchSampler(single, d_per_cluster=3, random_state=0).sample()
    assert idx.shape == (3,)
    assert magnet_loss(E[idx], np.zeros(3, int), clusters)[0] == 0.0


def test_sampler_seed_follows_losses(fitted_index):
    _, _, index = fitted_index
    n = index.n_clusters_
    sampler = MagnetBatchSampler(index, m_clusters=3, d_per_cluster=2, random_state=0)
    index.reset_losses()
    np.testing.assert_allclose(sampler.seed_probabilities(), np.full(n, 1.0 / n))
    index.update_losses(np.arange(n), np.zeros(n))  # all zero: uniform
    np.testing.assert_allclose(sampler.seed_probabilities(), np.full(n, 1.0 / n))
    index.reset_losses()
    index.update_losses([2, 2, 5], [3.0, 3.0, 1.0])
    # Unknown clusters count as the mean of the known ones (2.0).
    p = sampler.seed_probabilities()
    np.testing.assert_allclose(p[[2, 5]] * (2.0 * (n - 2) + 4.0), [3.0, 1.0])
    index.update_losses(np.arange(n), np.zeros(n))
    index.update_losses([2, 5], [6.0, 2.0])  # means: 12/4 and 3/3, others 0
    seeds = np.array([sampler.sample()[1][0] for _ in range(2000)])
    assert set(np.unique(seeds)) == {2, 5}
    assert abs(np.mean(seeds == 2) - 0.75) < 0.04  # 4 sigma
    index.reset_losses()


def test_sampler_deterministic(fitted_index):
    _, _, index = fitted_index
    index.reset_losses()
    draws = []
    for seed in (5, 5, 6):
        sampler = MagnetBatchSampler(index, m_clusters=4, d_per_cluster=3,
                                     random_state=seed)
        draws.append(np.concatenate([sampler.sample()[0] for _ in range(5)]))
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_sampler_bad_input(fitted_index):
    _, _, index = fitted_index
    with pytest.raises(TypeError, match="index"):
        MagnetBatchSampler("index")
    with pytest.raises(ValueError, match="m_clusters"):
        MagnetBatchSampler(index, m_clusters=0)
    with pytest.raises(TypeError, match="d_per_cluster"):
        MagnetBatchSampler(index, d_per_cluster=2.0)
    with pytest.raises(NotFittedError):
        MagnetBatchSampler(MagnetClusterIndex()).sample()


def test_training_loop_round_trip(fitted_index):
    # The loop an estimator runs: sample, loss, feed back, refresh.
    E, labels, _ = fitted_index
    index = MagnetClusterIndex(3, random_state=1).fit(E, labels)
    sampler = MagnetBatchSampler(index, m_clusters=5, d_per_cluster=4, random_state=1)
    L = np.eye(E.shape[1])
    for step in range(1, 21):
        idx, clusters = sampler.sample()
        Xb = E[idx]
        loss, grad, per = magnet_loss(Xb @ L.T, labels[idx], clusters,
                                      return_per_example=True)
        index.update_losses(clusters, per)
        L -= 0.01 * grad.T @ Xb
        if step % 10 == 0:
            index.refresh(E @ L.T)
    assert np.all(np.isfinite(L))
    np.testing.assert_array_equal(index.cluster_labels_[index.assignments_], labels)
