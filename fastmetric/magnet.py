"""Magnet loss (Rippel et al., ICLR 2016), its cluster index and its batch sampler.

The magnet loss models each class as several clusters in embedding space and
penalises the overlap of a cluster's examples with the nearby clusters of
other classes.  Three pieces work together:

- :func:`magnet_loss` -- the loss of one batch of ``M`` clusters (``D``
  examples each) and its gradient, computed by the Numba kernels of
  :mod:`fastmetric._numba.magnet` in ``O(B M m)`` time;
- :class:`MagnetClusterIndex` -- per-class k-means over the embeddings of the
  whole training set, plus a running mean of each cluster's loss;
- :class:`MagnetBatchSampler` -- draws a batch: a seed cluster with
  probability proportional to its mean loss, its ``M - 1`` nearest impostor
  clusters, and ``D`` examples of each.

A training loop (e.g. :class:`fastmetric.EmbeddingDML` with ``loss='magnet'``)
fits the index on the embeddings of all training data, then repeats: sample a
batch, compute ``magnet_loss(..., return_per_example=True)``, feed the
per-example losses back with :meth:`MagnetClusterIndex.update_losses`, and
every ``N`` steps calls :meth:`MagnetClusterIndex.refresh` with the current
embeddings.

This module validates, allocates and dispatches; it holds no per-example loops
(the per-class k-means and the per-cluster draws of a batch loop over classes
and clusters only).
"""

import numbers

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state

from ._loss_common import (
    check_choice,
    check_embeddings,
    check_labels,
    check_margin,
    l2_normalize,
    l2_normalize_backward,
    resolve_threads,
)
from ._numba import magnet as _mk
from ._threads import numba_threads, threads_for
from ._validation import check_positive_int

__all__ = ["magnet_loss", "MagnetClusterIndex", "MagnetBatchSampler"]

_REDUCTIONS = ("mean", "sum", "avg_nonzero")

# The shared variance is floored at this fraction of the batch's total
# variance (mean squared distance to the batch mean, same 1/(B-1) scaling).
# Both scale as s^2 under x -> s x, so the floor keeps the loss exactly
# scale-invariant; it is only reached when every example sits (almost) on its
# cluster mean, where the unfloored loss would divide 0 by 0.
VAR_FLOOR = 1e-12

# Below this (in units where the largest |entry| of the batch is in [0.5, 1))
# the variance is held constant: only rows that agree to about 100 digits get
# here, and it keeps 1 / (2 sigma^2) finite.
_VAR_TINY = 1e-200


def _check_bool(value, name):
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def _batch_clusters(labels, clusters):
    """Map cluster ids to ``0 .. M-1`` and check that each cluster has one class.

    Returns
    -------
    cid : ndarray of int64, shape (B,)
    ref : ndarray of int64, shape (M,)
        First row of each cluster.
    counts : ndarray of int64, shape (M,)
    cclass : ndarray of int64, shape (M,)
        The class (label) of each cluster.
    """
    ids, ref, cid, counts = np.unique(clusters, return_index=True, return_inverse=True,
                                      return_counts=True)
    cid = np.ascontiguousarray(cid.reshape(-1), dtype=np.int64)
    cclass = labels[ref]
    bad = np.flatnonzero(labels != cclass[cid])
    if bad.size:
        i = bad[0]
        raise ValueError(f"clusters: cluster {ids[cid[i]]} holds examples of labels "
                         f"{cclass[cid[i]]} and {labels[i]}; every cluster must lie "
                         "within one class")
    return (cid, np.ascontiguousarray(ref, dtype=np.int64),
            np.ascontiguousarray(counts, dtype=np.int64),
            np.ascontiguousarray(cclass, dtype=np.int64))


def _reduction_weights(losses, reduction):
    """The reduced loss and ``dL/dl_i`` for each example."""
    B = losses.shape[0]
    active = losses > 0.0
    total = float(np.sum(losses))
    if reduction == "sum":
        return total, active.astype(np.float64)
    if reduction == "mean":
        return total / B, active / float(B)
    n_active = int(np.count_nonzero(active))
    if n_active == 0:
        return 0.0, np.zeros(B)
    return total / n_active, active / float(n_active)


def _magnet_core(X, labels, clusters, alpha, reduction, n_threads):
    """Loss, ``dL/dX`` and per-example losses of a validated float64 batch."""
    B, m = X.shape
    cid, ref, counts, cclass = _batch_clusters(labels, clusters)
    # The loss is scale-invariant: bring the largest entry into [0.5, 1) by a
    # power of two (exact), so squared distances can neither overflow nor
    # underflow, and scale the gradient back the same way.
    peak = float(np.max(np.abs(X)))
    exponent = int(np.frexp(peak)[1]) if peak > 0.0 else 0
    X = np.ldexp(X, -exponent)
    M = counts.shape[0]
    denom = float(max(B - 1, 1))
    threads = threads_for(n_threads, 4.0 * B * M * m)
    mu = np.empty((M, m))
    rbar = np.empty((1, m))
    dist = np.empty((B, M))
    to_mean = np.empty(B)
    prob = np.empty((B, M))
    losses = np.empty(B)
    with numba_threads(threads):
        _mk.shifted_means(X, cid, ref, counts, mu)
        _mk.shifted_means(X, np.zeros(B, dtype=np.int64), np.zeros(1, dtype=np.int64),
                          np.array([B], dtype=np.int64), rbar)
        rbar = rbar[0]
        _mk.squared_distances(X, mu, rbar, dist, to_mean)
        var = float(np.sum(dist[np.arange(B), cid])) / denom
        total_var = float(np.sum(to_mean)) / denom
        floor = VAR_FLOOR * total_var
        if var >= floor and var >= _VAR_TINY:
            var_eff, regime = var, "var"
        elif floor >= _VAR_TINY:
            var_eff, regime = floor, "floor"
        else:
            # The rows agree (bit for bit when the total variance is 0, and
            # then every distance is exactly 0, so any variance gives the same
            # loss): hold the variance constant.
            var_eff, regime = _VAR_TINY, "none"
        _mk.example_losses(dist, cid, cclass, alpha, var_eff, prob, losses)
        loss, g = _reduction_weights(losses, reduction)
        grad = np.zeros((B, m))
        if np.any(g):
            row_dvar = np.empty(B)
            _mk.distance_weights(dist, cid, var_eff, g, prob, row_dvar)
            dvar = float(np.sum(row_dvar))
            c_var = dvar / denom if regime == "var" else 0.0
            c_total = VAR_FLOOR * dvar / denom if regime == "floor" else 0.0
            g_mu = np.empty((M, m))
            _mk.mean_gradients(X, mu, prob, g_mu)
            _mk.row_gradients(X, cid, counts, mu, rbar, prob, g_mu, c_var, c_total,
                              grad)
    return loss, np.ldexp(grad, -exponent), losses


def magnet_loss(embeddings, labels, clusters, *, alpha=1.0, normalize=False,
                reduction="mean", n_jobs=None, return_per_example=False):
    """Magnet loss of a batch of clusters and its gradient.

    The loss of Rippel et al. (2016), "Metric learning with adaptive density
    discrimination".  The cluster means ``mu_c`` and the shared variance

    ``sigma^2 = 1 / (B - 1) * sum_i ||r_i - mu_C(i)||^2``

    are estimated from the batch (the gradient flows through them), and each
    example ``r_i`` of cluster ``C(i)`` has the loss

    ``l_i = relu(||r_i - mu_C(i)||^2 / (2 sigma^2) + alpha
    + log sum_{c of another class} exp(-||r_i - mu_c||^2 / (2 sigma^2)))``

    computed with a max-shifted log-sum-exp.  An example whose batch holds no
    cluster of another class has loss 0.  Scaling every embedding by ``s > 0``
    leaves the loss unchanged and scales the gradient by ``1 / s``.

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
        The batch, float32 or float64 (other numeric types become float64).
    labels : array-like of int, shape (batch_size,)
        Class of each example.
    clusters : array-like of int, shape (batch_size,)
        Cluster of each example (any integer ids, e.g. the global ids that
        :meth:`MagnetBatchSampler.sample` returns).  All examples of a cluster
        must share one label; the cluster's class is that label.
    alpha : float, default=1.0
        The gap between an example's own cluster and the impostors, in units
        of the variance.
    normalize : bool, default=False
        L2-normalise the embeddings first (the paper does not).
    reduction : {'mean', 'sum', 'avg_nonzero'}, default='mean'
        ``'mean'``: average over all examples (the paper's); ``'sum'``;
        ``'avg_nonzero'``: average over the examples with ``l_i > 0`` (0 if
        none).
    n_jobs : int, default=None
        Threads for the kernels; ``None`` or ``-1`` means all cores.  The
        result does not depend on it.
    return_per_example : bool, default=False
        Also return the per-example losses ``l_i`` (what
        :meth:`MagnetClusterIndex.update_losses` takes).

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch_size, n_dims)
        Gradient of ``loss`` with respect to ``embeddings``, in their dtype.
    per_example : ndarray of float64, shape (batch_size,)
        Only with ``return_per_example=True``: the losses ``l_i`` before the
        reduction.

    Notes
    -----
    If every example lies on its cluster mean (``sigma^2 = 0``), the
    variance is floored at ``1e-12`` times the batch's total variance (which
    scales like ``sigma^2``, so scale invariance is kept) and the gradient
    flows through that floor; if all examples are identical the loss is
    ``relu(alpha + log(number of impostor clusters))`` with zero gradient.
    Time is ``O(B M m)`` for ``M`` clusters in the batch; memory ``O(B M)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.magnet import magnet_loss
    >>> rng = np.random.default_rng(0)
    >>> E = rng.normal(size=(8, 3))
    >>> labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    >>> clusters = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> loss, grad = magnet_loss(E, labels, clusters, alpha=1.0)
    >>> grad.shape
    (8, 3)
    >>> loss2, _ = magnet_loss(10.0 * E, labels, clusters)
    >>> bool(np.isclose(loss, loss2))
    True
    """
    E, dtype = check_embeddings(embeddings)
    B = E.shape[0]
    labels = check_labels(labels, B)
    clusters = check_labels(clusters, B, name="clusters")
    alpha = check_margin(alpha, "alpha")
    normalize = _check_bool(normalize, "normalize")
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    return_per_example = _check_bool(return_per_example, "return_per_example")
    n_threads = resolve_threads(n_jobs)
    if normalize:
        X, norms = l2_normalize(E)
        X = np.ascontiguousarray(X)
    else:
        X = E
    loss, grad, losses = _magnet_core(X, labels, clusters, alpha, reduction, n_threads)
    if normalize:
        grad = l2_normalize_backward(grad, X, norms)
    grad = np.ascontiguousarray(grad, dtype=dtype)
    if return_per_example:
        return loss, grad, losses
    return loss, grad


# -- cluster index -------------------------------------------------------------


def _check_fitted(index):
    if not hasattr(index, "assignments_"):
        raise NotFittedError("this MagnetClusterIndex is not fitted yet; call "
                             "fit(embeddings, labels) first")


class MagnetClusterIndex:
    """Per-class k-means clusters of a training set, with running cluster losses.

    Each class is split by k-means (scikit-learn's :class:`~sklearn.cluster.KMeans`)
    into ``n_clusters_per_class`` clusters, or fewer when the class has fewer
    distinct points.  Cluster ids run from 0 to ``n_clusters_ - 1``, class by
    class in sorted label order.  The index also keeps, for each cluster, the
    running mean of the per-example losses reported for it since the last
    clustering; :class:`MagnetBatchSampler` draws seed clusters in proportion
    to these.

    Parameters
    ----------
    n_clusters_per_class : int, default=8
        K, the clusters per class.
    n_init : int, default=1
        k-means restarts per class at :meth:`fit` (k-means++ initialisation).
        :meth:`refresh` warm-starts from the current clusters and runs once.
    max_iter : int, default=100
        Lloyd iterations per k-means run.
    random_state : int, RandomState instance or None, default=None
        Seeds the k-means initialisation.

    Attributes
    ----------
    classes_ : ndarray of int64, shape (n_classes,)
        Sorted class labels.
    labels_ : ndarray of int64, shape (n_samples,)
        The training labels given to :meth:`fit`.
    assignments_ : ndarray of int64, shape (n_samples,)
        Cluster id of every training example.
    cluster_labels_ : ndarray of int64, shape (n_clusters_,)
        Class of every cluster.
    centers_ : ndarray of float64, shape (n_clusters_, n_dims)
        Mean embedding of every cluster.
    cluster_sizes_ : ndarray of int64, shape (n_clusters_,)
        Members per cluster (all > 0).
    n_clusters_ : int
        Number of clusters.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.magnet import MagnetClusterIndex
    >>> rng = np.random.default_rng(0)
    >>> E = rng.normal(size=(60, 2))
    >>> y = np.repeat([0, 1, 2], 20)
    >>> index = MagnetClusterIndex(4, random_state=0).fit(E, y)
    >>> index.n_clusters_
    12
    >>> bool(np.all(index.cluster_labels_[index.assignments_] == y))
    True
    """

    def __init__(self, n_clusters_per_class=8, *, n_init=1, max_iter=100,
                 random_state=None):
        self.n_clusters_per_class = n_clusters_per_class
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    # -- clustering ------------------------------------------------------------

    def fit(self, embeddings, labels):
        """Cluster every class of the training set and reset the cluster losses.

        Parameters
        ----------
        embeddings : array-like of shape (n_samples, n_dims)
            Embeddings of the whole training set.
        labels : array-like of int, shape (n_samples,)
            Their classes.

        Returns
        -------
        self
        """
        K = check_positive_int(self.n_clusters_per_class, "n_clusters_per_class")
        n_init = check_positive_int(self.n_init, "n_init")
        check_positive_int(self.max_iter, "max_iter")
        E, _ = check_embeddings(embeddings)
        labels = check_labels(labels, E.shape[0])
        rng = check_random_state(self.random_state)
        classes, codes = np.unique(labels, return_inverse=True)
        codes = codes.reshape(-1)
        local = np.zeros(E.shape[0], dtype=np.int64)
        n_local = np.zeros(classes.size, dtype=np.int64)
        for k in range(classes.size):
            rows = np.flatnonzero(codes == k)
            local[rows], n_local[k] = self._cluster_class(E[rows], K, None, n_init, rng)
        self.classes_ = classes
        self.labels_ = labels
        self._codes = codes
        self._set_clusters(E, codes, local, n_local)
        return self

    def refresh(self, embeddings):
        """Re-cluster every class on new embeddings of the same training set.

        k-means is warm-started from the current clusters' means in the new
        embedding space (one run per class), so cluster ids stay comparable
        across a refresh; a class whose new embeddings have fewer distinct
        points than clusters is re-clustered from scratch with fewer clusters.
        The cluster losses are reset, since they describe the old clusters.

        Parameters
        ----------
        embeddings : array-like of shape (n_samples, n_dims)
            New embeddings of the training set passed to :meth:`fit` (same
            rows, in the same order; the dimension may differ).

        Returns
        -------
        self
        """
        _check_fitted(self)
        E, _ = check_embeddings(embeddings)
        if E.shape[0] != self.assignments_.shape[0]:
            raise ValueError(f"embeddings has {E.shape[0]} rows but the index was "
                             f"fitted on {self.assignments_.shape[0]}")
        rng = check_random_state(self.random_state)
        codes = self._codes
        first = self._class_first_cluster
        local = np.zeros(E.shape[0], dtype=np.int64)
        n_local = np.zeros(self.classes_.size, dtype=np.int64)
        for k in range(self.classes_.size):
            rows = np.flatnonzero(codes == k)
            old = self.assignments_[rows] - first[k]
            n_old = int(first[k + 1] - first[k])
            init = np.zeros((n_old, E.shape[1]))
            np.add.at(init, old, E[rows])
            init /= np.bincount(old, minlength=n_old)[:, None]
            local[rows], n_local[k] = self._cluster_class(E[rows], n_old, init, 1, rng)
        self._set_clusters(E, codes, local, n_local)
        return self

    def _cluster_class(self, Ec, K, init, n_init, rng):
        """k-means labels (``0 .. k-1``, none empty) of one class, and ``k``."""
        n_distinct = np.unique(Ec, axis=0).shape[0]
        k = min(K, n_distinct)
        if init is not None and k < init.shape[0]:
            init = None  # collapsed embeddings: start afresh with fewer clusters
            n_init = 1
        if k <= 1:
            return np.zeros(Ec.shape[0], dtype=np.int64), 1
        from sklearn.cluster import KMeans  # ~0.1 s to import: only when used

        km = KMeans(n_clusters=k, init="k-means++" if init is None else init,
                    n_init=n_init, max_iter=self.max_iter,
                    random_state=rng.randint(np.iinfo(np.int32).max))
        raw = km.fit_predict(Ec)
        # Drop clusters k-means left empty and renumber the rest.
        used, lab = np.unique(raw, return_inverse=True)
        return lab.reshape(-1).astype(np.int64), int(used.size)

    def _set_clusters(self, E, codes, local, n_local):
        first = np.concatenate([[0], np.cumsum(n_local)]).astype(np.int64)
        assignments = first[codes] + local
        n_clusters = int(first[-1])
        sizes = np.bincount(assignments, minlength=n_clusters).astype(np.int64)
        centers = np.zeros((n_clusters, E.shape[1]))
        np.add.at(centers, assignments, E)
        centers /= sizes[:, None]
        self._class_first_cluster = first
        self.assignments_ = assignments
        self.cluster_labels_ = np.repeat(self.classes_, n_local).astype(np.int64)
        self.centers_ = centers
        self.cluster_sizes_ = sizes
        self.n_clusters_ = n_clusters
        order = np.argsort(assignments, kind="stable")
        self._members = order
        self._member_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.reset_losses()

    def members(self, cluster):
        """Training-example indices of one cluster.

        Parameters
        ----------
        cluster : int
            Cluster id, ``0 <= cluster < n_clusters_``.

        Returns
        -------
        ndarray of int64
            Sorted indices into the training set.
        """
        _check_fitted(self)
        if isinstance(cluster, bool) or not isinstance(cluster, numbers.Integral):
            raise TypeError(f"cluster must be an int, got {type(cluster).__name__}")
        if not 0 <= cluster < self.n_clusters_:
            raise ValueError(f"cluster must be in [0, {self.n_clusters_}), got "
                             f"{cluster}")
        lo, hi = self._member_offsets[cluster], self._member_offsets[cluster + 1]
        return self._members[lo:hi]

    # -- cluster losses --------------------------------------------------------

    def reset_losses(self):
        """Forget every cluster's loss estimate.

        Returns
        -------
        self
        """
        _check_fitted(self)
        self._loss_sum = np.zeros(self.n_clusters_)
        self._loss_count = np.zeros(self.n_clusters_, dtype=np.int64)
        return self

    def update_losses(self, cluster_ids, example_losses):
        """Add per-example losses to their clusters' running means.

        Each cluster's estimate is the mean of all losses reported for it since
        the last :meth:`fit`, :meth:`refresh` or :meth:`reset_losses` (an
        example drawn twice counts twice).

        Parameters
        ----------
        cluster_ids : array-like of int, shape (n,)
            Cluster of each example (ids of this index, as
            :meth:`MagnetBatchSampler.sample` returns them).
        example_losses : array-like of float, shape (n,)
            Their losses, finite and >= 0 (e.g. the ``per_example`` output of
            :func:`magnet_loss`).

        Returns
        -------
        self
        """
        _check_fitted(self)
        losses = np.asarray(example_losses, dtype=np.float64)
        if losses.ndim != 1:
            raise ValueError(f"example_losses must be a 1D array, got shape "
                             f"{losses.shape}")
        ids = check_labels(cluster_ids, losses.shape[0], name="cluster_ids")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_clusters_):
            raise ValueError(f"cluster_ids must be in [0, {self.n_clusters_}), got "
                             f"values in [{ids.min()}, {ids.max()}]")
        if not np.all(np.isfinite(losses)) or np.any(losses < 0):
            raise ValueError("example_losses must be finite and >= 0")
        self._loss_sum += np.bincount(ids, weights=losses, minlength=self.n_clusters_)
        self._loss_count += np.bincount(ids, minlength=self.n_clusters_)
        return self

    @property
    def cluster_losses_(self):
        """Running mean loss of every cluster; NaN where none was reported.

        Returns
        -------
        ndarray of float64, shape (n_clusters_,)
        """
        _check_fitted(self)
        out = np.full(self.n_clusters_, np.nan)
        seen = self._loss_count > 0
        out[seen] = self._loss_sum[seen] / self._loss_count[seen]
        return out

    @property
    def cluster_loss_counts_(self):
        """Number of losses behind every cluster's running mean.

        Returns
        -------
        ndarray of int64, shape (n_clusters_,)
        """
        _check_fitted(self)
        return self._loss_count.copy()


# -- batch sampler -------------------------------------------------------------


class MagnetBatchSampler:
    """Draw magnet-loss batches: a seed cluster, its nearest impostors, D examples each.

    One batch (Rippel et al., 2016, section 3.3):

    1. a seed cluster, drawn with probability proportional to its running mean
       loss in the index (clusters with no loss reported yet count as the mean
       of the known ones; uniform while no loss is known or all are 0);
    2. the ``m_clusters - 1`` clusters of other classes whose centers are
       nearest the seed's center (fewer if fewer exist; ties go to the lower
       id);
    3. ``d_per_cluster`` examples of every chosen cluster, uniformly without
       replacement -- with replacement only for a cluster smaller than
       ``d_per_cluster``.

    Parameters
    ----------
    index : MagnetClusterIndex
        A fitted index; the sampler reads its current state at every draw, so
        :meth:`MagnetClusterIndex.refresh` and
        :meth:`MagnetClusterIndex.update_losses` take effect at once.
    m_clusters : int, default=12
        M, the clusters per batch (>= 1).
    d_per_cluster : int, default=4
        D, the examples per cluster (>= 1).
    random_state : int, RandomState instance or None, default=None
        The same seed gives the same sequence of batches.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.magnet import (MagnetBatchSampler, MagnetClusterIndex,
    ...                                magnet_loss)
    >>> rng = np.random.default_rng(0)
    >>> E = rng.normal(size=(90, 2))
    >>> y = np.repeat([0, 1, 2], 30)
    >>> index = MagnetClusterIndex(3, random_state=0).fit(E, y)
    >>> sampler = MagnetBatchSampler(index, m_clusters=4, d_per_cluster=5,
    ...                              random_state=0)
    >>> idx, clusters = sampler.sample()
    >>> idx.shape
    (20,)
    >>> loss, grad, per_example = magnet_loss(E[idx], y[idx], clusters,
    ...                                       return_per_example=True)
    >>> _ = index.update_losses(clusters, per_example)
    """

    def __init__(self, index, *, m_clusters=12, d_per_cluster=4, random_state=None):
        if not isinstance(index, MagnetClusterIndex):
            raise TypeError(f"index must be a MagnetClusterIndex, got "
                            f"{type(index).__name__}")
        self.index = index
        self.m_clusters = check_positive_int(m_clusters, "m_clusters")
        self.d_per_cluster = check_positive_int(d_per_cluster, "d_per_cluster")
        self.random_state = random_state
        self._rng = check_random_state(random_state)

    def seed_probabilities(self):
        """Probability of each cluster to be drawn as the seed.

        Returns
        -------
        ndarray of float64, shape (n_clusters_,)
        """
        index = self.index
        _check_fitted(index)
        losses = index.cluster_losses_
        seen = ~np.isnan(losses)
        if not seen.any():
            return np.full(index.n_clusters_, 1.0 / index.n_clusters_)
        losses[~seen] = losses[seen].mean()
        total = losses.sum()
        if not total > 0.0:
            return np.full(index.n_clusters_, 1.0 / index.n_clusters_)
        return losses / total

    def nearest_impostors(self, seed):
        """The ``m_clusters - 1`` clusters of other classes nearest to ``seed``.

        Parameters
        ----------
        seed : int
            A cluster id of the index.

        Returns
        -------
        ndarray of int64
            Cluster ids, nearest first (at most ``m_clusters - 1``).
        """
        index = self.index
        _check_fitted(index)
        seed = int(seed)
        others = np.flatnonzero(index.cluster_labels_ != index.cluster_labels_[seed])
        diff = index.centers_[others] - index.centers_[seed]
        d2 = np.einsum("ij,ij->i", diff, diff)
        order = np.lexsort((others, d2))[: self.m_clusters - 1]
        return others[order].astype(np.int64)

    def sample(self):
        """Draw one batch.

        Returns
        -------
        indices : ndarray of int64, shape (n_batch_clusters * d_per_cluster,)
            Training-example indices, cluster by cluster (seed first).
        clusters : ndarray of int64, same shape
            The index's cluster id of every drawn example: pass it as
            ``clusters`` to :func:`magnet_loss` and, with the per-example
            losses, to :meth:`MagnetClusterIndex.update_losses`.
        """
        index = self.index
        _check_fitted(index)
        rng = self._rng
        D = self.d_per_cluster
        seed = int(rng.choice(index.n_clusters_, p=self.seed_probabilities()))
        chosen = np.concatenate([[seed], self.nearest_impostors(seed)]).astype(np.int64)
        parts = []
        for c in chosen:
            members = index.members(int(c))
            pick = rng.choice(members.shape[0], size=D, replace=members.shape[0] < D)
            parts.append(members[pick])
        indices = np.concatenate(parts).astype(np.int64)
        return indices, np.repeat(chosen, D)
