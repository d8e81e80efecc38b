"""Linear embeddings learned with the deep-metric-learning losses.

:class:`EmbeddingDML` learns ``L`` (``n_components x n_features``) so that the
embedding ``E = X L^T`` scores well under one of the batch losses of
:mod:`fastmetric.losses` / :mod:`fastmetric.magnet` (or a user's loss), by
minibatch stochastic gradient descent with momentum or Adam.  Each step draws a
batch, embeds it with one BLAS product, lets the loss kernel return the loss
and ``dL/dE``, and turns that into ``dL/dL = (dL/dE)^T X_batch`` with a second
product.  The estimator only validates, samples and updates; the loops are in
the loss kernels.

A nonlinear metric comes from putting basis functions before the estimator in
a scikit-learn pipeline (for example ``Nystroem`` or ``RBFSampler`` from
:mod:`sklearn.kernel_approximation`); see ``examples/embedding_pipeline.py``.
"""

import inspect
import numbers
import time

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets

from ._threads import kernel_threads, resolve_n_jobs
from ._validation import (
    _float_array,
    check_finite,
    check_positive_float,
    check_positive_int,
)
from .base import MahalanobisMixin

__all__ = ["EmbeddingDML"]

_PAIR_LOSSES = {
    "contrastive": "contrastive_loss",
    "triplet": "triplet_margin_loss",
    "lifted": "lifted_structure_loss",
    "generalized_lifted": "generalized_lifted_structure_loss",
}
_LOSS_NAMES = (*_PAIR_LOSSES, "magnet")
_OPTIMIZERS = ("adam", "sgd")
_INITS = ("pca", "identity", "random")
# Supplied by the estimator, not by loss_params.
_RESERVED = ("embeddings", "labels", "clusters", "indices_tuple", "n_jobs",
             "return_per_example")

_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPS = 1e-8


# ----------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------


class _ClassBalancedSampler:
    """Batches of ``samples_per_class`` examples from each of several classes.

    As pytorch-metric-learning's ``MPerClassSampler``: the classes of a batch
    are drawn uniformly without replacement; a class's examples are taken in
    turn from a shuffled list of its members (reshuffled once an epoch), so
    within a batch they are distinct when the class is large enough and repeat
    (cyclically) when it has fewer than ``samples_per_class`` members.  Every
    step is a handful of vectorised NumPy calls.

    Parameters
    ----------
    codes : ndarray of int, shape (n_samples,)
        Class codes in ``[0, n_classes)``.
    classes_per_batch, samples_per_class : int
    rng : numpy.random.RandomState
    """

    def __init__(self, codes, classes_per_batch, samples_per_class, rng):
        self.codes = codes
        self.n_classes = int(codes.max()) + 1
        self.counts = np.bincount(codes, minlength=self.n_classes)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.c = classes_per_batch
        self.m = samples_per_class
        self.rng = rng
        self.steps_per_epoch = max(1, -(-codes.size // (self.c * self.m)))
        self.step = 0
        self._shuffle()

    def _shuffle(self):
        # Members of each class, contiguous and in random order.
        self.members = np.lexsort((self.rng.random_sample(self.codes.size),
                                   self.codes))
        self.pointer = np.zeros(self.n_classes, dtype=np.int64)

    def next_batch(self):
        """Indices (into the training set) of the next batch."""
        if self.step and self.step % self.steps_per_epoch == 0:
            self._shuffle()
        self.step += 1
        chosen = self.rng.choice(self.n_classes, self.c, replace=False)
        offsets = self.pointer[chosen, None] + np.arange(self.m)
        offsets %= self.counts[chosen, None]
        self.pointer[chosen] += self.m
        return self.members[self.starts[chosen, None] + offsets].ravel()


# ----------------------------------------------------------------------------
# Optimisers
# ----------------------------------------------------------------------------


class _Adam:
    def __init__(self, shape, learning_rate):
        self.lr = learning_rate
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, params, grad):
        self.t += 1
        self.m *= _ADAM_BETA1
        self.m += (1 - _ADAM_BETA1) * grad
        self.v *= _ADAM_BETA2
        self.v += (1 - _ADAM_BETA2) * grad * grad
        lr_t = self.lr * np.sqrt(1 - _ADAM_BETA2**self.t) / (1 - _ADAM_BETA1**self.t)
        params -= lr_t * self.m / (np.sqrt(self.v) + _ADAM_EPS)


class _MomentumSGD:
    def __init__(self, shape, learning_rate, momentum):
        self.lr = learning_rate
        self.momentum = momentum
        self.velocity = np.zeros(shape)

    def step(self, params, grad):
        self.velocity *= self.momentum
        self.velocity -= self.lr * grad
        params += self.velocity


# ----------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------


class EmbeddingDML(TransformerMixin, MahalanobisMixin):
    """Linear embedding learned by minibatch descent on a metric-learning loss.

    Learns ``components_`` ``L`` so that, in the embedding ``x -> L x``, items
    of one class are close and items of different classes far apart, as
    judged by a deep-metric-learning loss on minibatches: contrastive pairs,
    triplets, the lifted structured losses (Song et al., 2016) or the magnet
    loss (Rippel et al., 2016).  The learned distance ``||L (x - y)||`` is a
    Mahalanobis distance; put basis functions before the estimator in a
    pipeline for a nonlinear one.

    Parameters
    ----------
    loss : {'triplet', 'contrastive', 'lifted', 'generalized_lifted', 'magnet'} \
or callable, default='triplet'
        The loss: :func:`~fastmetric.losses.triplet_margin_loss`,
        :func:`~fastmetric.losses.contrastive_loss`,
        :func:`~fastmetric.losses.lifted_structure_loss`,
        :func:`~fastmetric.losses.generalized_lifted_structure_loss` (all
        pairs / all triplets of each batch, pytorch-metric-learning's
        defaults) or :func:`~fastmetric.magnet.magnet_loss`.  A callable
        ``loss(E, labels, **loss_params) -> (loss, grad)`` takes a float64
        batch of embeddings ``E`` (batch x n_components) and its int64 class
        codes and returns the loss and ``dloss/dE``; it gets class-balanced
        batches like the pair losses.
    n_components : int or None, default=None
        Dimension of the embedding, at most ``n_features``; None means
        ``n_features`` (or the number of rows of an array ``init``).
    loss_params : dict or None, default=None
        Keyword arguments of the loss, e.g. ``{'margin': 0.1}`` for the
        triplet loss or ``{'alpha': 1.0}`` for the magnet loss.  The estimator
        supplies ``labels``, ``clusters`` and ``n_jobs`` itself.
    optimizer : {'adam', 'sgd'}, default='adam'
        Adam (Kingma and Ba, 2015; beta1 = 0.9, beta2 = 0.999) or stochastic
        gradient descent with heavy-ball ``momentum``.
    learning_rate : float, default=0.01
        Step size.  The built-in initialisations give ``L`` unit-norm rows;
        the L2-normalised losses are invariant to the scale of ``L``, so Adam's
        per-entry steps of about ``learning_rate`` are relative to that.
    momentum : float in [0, 1), default=0.9
        Momentum of ``optimizer='sgd'``.
    batch_size : int, default=128
        Examples per batch for the pair, triplet and callable losses: ``batch_size
        // samples_per_class`` classes (at least 2, at most all) with
        ``samples_per_class`` examples each.  The magnet loss's batch is
        ``magnet_m_clusters x magnet_d_per_cluster`` instead.
    max_iter : int, default=500
        Number of optimisation steps (batches).
    samples_per_class : int, default=4
        Examples drawn from each class of a batch (at least 2, so that every
        class in a batch forms positive pairs).  Classes smaller than this are
        repeated.
    init : {'pca', 'identity', 'random'} or ndarray of shape \
(n_components, n_features), default='pca'
        Initial ``L``: the leading principal axes of X, the first rows of the
        identity, random Gaussian rows scaled to unit norm, or a given matrix.
    magnet_clusters_per_class : int, default=4
        K, the k-means clusters per class of the magnet loss.
    magnet_m_clusters : int, default=8
        M, the clusters in one magnet batch (a seed cluster and its M - 1
        nearest impostor clusters).
    magnet_d_per_cluster : int, default=8
        D, the examples drawn from each cluster of a magnet batch.
    magnet_refresh_every : int or None, default=None
        Steps between two refreshes of the magnet cluster index (k-means of
        each class in the current embedding of the whole training set).  None
        refreshes once an epoch, every ``ceil(n_samples / (magnet_m_clusters *
        magnet_d_per_cluster))`` steps, as in the paper.
    random_state : int, RandomState or None, default=None
        Seeds the initialisation, the batches and the magnet k-means; the same
        seed gives the same result.
    verbose : bool or int, default=False
        Print the mean loss about every ``max_iter / 10`` steps (``verbose >=
        2``: every step).
    callback : callable or None, default=None
        ``callback(estimator, iteration, loss)`` is called after every step,
        with ``iteration`` counting steps from 1 and ``loss`` the batch's loss;
        ``estimator.components_`` then holds the current ``L`` (updated in
        place by later steps: copy it to keep it), so ``estimator.transform``
        works inside the callback.  Returning True stops training.
    n_jobs : int or None, default=None
        Threads of the loss kernels (None or -1: all cores).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        The learned ``L``; ``transform(X) = X @ components_.T``.
    n_iter_ : int
        Steps run.
    loss_curve_ : list of float
        The batch loss at each step (before that step's update).
    classes_ : ndarray of shape (n_classes,)
        The class labels seen in ``fit``.
    n_features_in_ : int
        Number of features of X.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when X has string column names.

    See Also
    --------
    fastmetric.evaluation.recall_at_k : judge the embedding by retrieval.
    fastmetric.MMC_Supervised : a convex Mahalanobis metric from class labels.

    Notes
    -----
    For the pair and triplet losses the batches are class-balanced (as
    pytorch-metric-learning's ``MPerClassSampler``).  For ``loss='magnet'``,
    a :class:`~fastmetric.magnet.MagnetClusterIndex` is fitted on the initial
    embedding ``X L^T``, batches come from a
    :class:`~fastmetric.magnet.MagnetBatchSampler` (seed cluster chosen by its
    recent loss, then its nearest impostor clusters), each example's loss is
    fed back to the index, and the index is refitted on the current embedding
    every ``magnet_refresh_every`` steps.

    The L2-normalised losses (the defaults of all but the magnet loss) compare
    directions of ``L x`` from the origin, and the embedding has no offset:
    centre the data (e.g. with ``StandardScaler`` in a pipeline) so that the
    origin is at its mean.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.embedding import EmbeddingDML
    >>> from fastmetric.evaluation import recall_at_k
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 4, 200)
    >>> centres = np.array([[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]])
    >>> # The class shows in 2 of 12 features; 10 noisy ones hide it.
    >>> X = np.hstack([centres[y] + 0.5 * rng.standard_normal((200, 2)),
    ...                3.0 * rng.standard_normal((200, 10))])
    >>> est = EmbeddingDML(n_components=4, max_iter=200, random_state=0)
    >>> E = est.fit(X, y).transform(X)
    >>> E.shape
    (200, 4)
    >>> recall_at_k(E, y, k=1) > recall_at_k(X, y, k=1)
    True
    """

    def __init__(self, loss="triplet", n_components=None, *, loss_params=None,
                 optimizer="adam", learning_rate=0.01, momentum=0.9, batch_size=128,
                 max_iter=500, samples_per_class=4, init="pca",
                 magnet_clusters_per_class=4, magnet_m_clusters=8,
                 magnet_d_per_cluster=8, magnet_refresh_every=None, random_state=None,
                 verbose=False, callback=None, n_jobs=None):
        self.loss = loss
        self.n_components = n_components
        self.loss_params = loss_params
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.samples_per_class = samples_per_class
        self.init = init
        self.magnet_clusters_per_class = magnet_clusters_per_class
        self.magnet_m_clusters = magnet_m_clusters
        self.magnet_d_per_cluster = magnet_d_per_cluster
        self.magnet_refresh_every = magnet_refresh_every
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback
        self.n_jobs = n_jobs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # TransformerMixin resets the transformer tags set by MahalanobisMixin.
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- validation ----------------------------------------------------------

    def _loss_function(self):
        """The loss callable and the keyword arguments to pass it."""
        loss = self.loss
        if callable(loss):
            fn = loss
        elif isinstance(loss, str) and loss in _LOSS_NAMES:
            if loss == "magnet":
                from . import magnet

                fn = magnet.magnet_loss
            else:
                from . import losses

                fn = getattr(losses, _PAIR_LOSSES[loss])
        else:
            raise ValueError(f"loss must be one of {list(_LOSS_NAMES)} or a callable "
                             f"(E, labels) -> (loss, grad); got {loss!r}")
        params = {} if self.loss_params is None else self.loss_params
        if not isinstance(params, dict):
            raise TypeError(f"loss_params must be a dict or None, got "
                            f"{type(params).__name__}")
        params = dict(params)
        for key in params:
            if not isinstance(key, str):
                raise TypeError(f"loss_params keys must be strings, got {key!r}")
            if key in _RESERVED:
                raise ValueError(f"loss_params must not set {key!r}: EmbeddingDML "
                                 "supplies it")
        if not callable(loss):
            sig = inspect.signature(fn).parameters
            allowed = [name for name, p in sig.items()
                       if p.kind is p.KEYWORD_ONLY and name not in _RESERVED]
            has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.values())
            unknown = sorted(set(params) - set(allowed))
            if unknown and not has_var_kw:
                raise ValueError(f"loss_params has {unknown} which loss={loss!r} does "
                                 f"not take; it takes {allowed}")
            params["n_jobs"] = self.n_jobs
        return fn, params

    def _check_params(self, n_features):
        """Validate the hyper-parameters; return the resolved ones as a dict."""
        p = {}
        if not isinstance(self.optimizer, str) or self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(_OPTIMIZERS)}, got "
                             f"{self.optimizer!r}")
        p["learning_rate"] = check_positive_float(self.learning_rate, "learning_rate")
        momentum = check_positive_float(self.momentum, "momentum", allow_zero=True)
        if not momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        p["momentum"] = momentum
        p["batch_size"] = check_positive_int(self.batch_size, "batch_size", minimum=2)
        p["max_iter"] = check_positive_int(self.max_iter, "max_iter")
        p["samples_per_class"] = check_positive_int(self.samples_per_class,
                                                    "samples_per_class", minimum=2)
        for name in ("magnet_clusters_per_class", "magnet_d_per_cluster"):
            p[name] = check_positive_int(getattr(self, name), name)
        if self.magnet_refresh_every is not None:
            p["magnet_refresh_every"] = check_positive_int(self.magnet_refresh_every,
                                                           "magnet_refresh_every")
        p["magnet_m_clusters"] = check_positive_int(self.magnet_m_clusters,
                                                    "magnet_m_clusters", minimum=2)
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be callable or None, got "
                            f"{type(self.callback).__name__}")
        if not isinstance(self.verbose, bool | numbers.Integral):
            raise TypeError(f"verbose must be a bool or an int, got "
                            f"{type(self.verbose).__name__}")
        p["n_threads"] = resolve_n_jobs(self.n_jobs)
        init_array = None
        if isinstance(self.init, str):
            if self.init not in _INITS:
                raise ValueError(f"init must be one of {list(_INITS)} or an array of "
                                 f"shape (n_components, n_features); got "
                                 f"{self.init!r}")
        else:
            init_array = _float_array(self.init, "init", ndim=2).astype(np.float64)
            check_finite(init_array, "init")
            if init_array.shape[1] != n_features:
                raise ValueError(f"init has {init_array.shape[1]} columns; expected "
                                 f"{n_features} to match the features of X")
        n_components = self.n_components
        if n_components is None:
            n_components = n_features if init_array is None else init_array.shape[0]
        n_components = check_positive_int(n_components, "n_components")
        if n_components > n_features:
            raise ValueError(f"n_components={n_components} exceeds the {n_features} "
                             "features of X; a linear embedding has at most that "
                             "rank")
        if init_array is not None and init_array.shape[0] != n_components:
            raise ValueError(f"init has {init_array.shape[0]} rows but n_components "
                             f"is {n_components}")
        p["n_components"] = n_components
        p["init_array"] = init_array
        return p

    def _initial_components(self, X, n_components, init_array, rng):
        if init_array is not None:
            return init_array.copy()
        n_features = X.shape[1]
        if self.init == "identity":
            return np.eye(n_components, n_features)
        if self.init == "random":
            L = rng.standard_normal((n_components, n_features))
            return L / np.linalg.norm(L, axis=1, keepdims=True)
        # PCA: the leading principal axes; completed with random orthonormal
        # rows when X has fewer samples than n_components.
        k = min(n_components, X.shape[0], n_features)
        pca = PCA(n_components=k, random_state=rng.randint(np.iinfo(np.int32).max))
        axes = pca.fit(X).components_
        if k < n_components or not np.all(np.isfinite(axes)):
            extra = rng.standard_normal((n_components, n_features))
            basis = np.vstack([axes[np.all(np.isfinite(axes), axis=1)], extra])
            q, _ = np.linalg.qr(basis.T)
            axes = q.T[:n_components]
        return np.ascontiguousarray(axes, dtype=np.float64)

    # -- fitting -------------------------------------------------------------

    def fit(self, X, y):
        """Learn the embedding from labelled points.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training points (float32 data are embedded in float64 batches).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self
        """
        self.preprocessor_ = None  # MahalanobisMixin's transform reads it
        X, y = self._validate_points(X, reset=True, y=y, min_samples=2)
        check_classification_targets(y)
        loss_fn, loss_kwargs = self._loss_function()
        p = self._check_params(X.shape[1])
        classes, codes = np.unique(y, return_inverse=True)
        codes = codes.astype(np.int64)
        if classes.size < 2:
            raise ValueError(f"y has {classes.size} class; EmbeddingDML needs at "
                             "least 2 classes to form negative pairs")
        if not np.any(np.bincount(codes) >= 2):
            raise ValueError("no class in y has two samples, so no positive pair "
                             "can be formed")
        self.classes_ = classes
        rng = check_random_state(self.random_state)
        L = self._initial_components(X, p["n_components"], p["init_array"], rng)
        self.components_ = L
        if self.optimizer == "adam":
            opt = _Adam(L.shape, p["learning_rate"])
        else:
            opt = _MomentumSGD(L.shape, p["learning_rate"], p["momentum"])
        if self.loss == "magnet":
            batches = _MagnetBatches(X, codes, L, p, rng)
        else:
            per_batch = min(classes.size,
                            max(2, p["batch_size"] // p["samples_per_class"]))
            batches = _PairBatches(_ClassBalancedSampler(codes, per_batch,
                                                         p["samples_per_class"], rng))
        loss_kwargs.update(batches.loss_kwargs)
        self.loss_curve_ = []
        self.n_iter_ = 0
        report_every = 1 if self.verbose >= 2 else max(1, p["max_iter"] // 10)
        start = time.perf_counter()
        with kernel_threads(p["n_threads"]):
            for it in range(1, p["max_iter"] + 1):
                idx, extra = batches.next_batch()
                Xb = X[idx].astype(np.float64, copy=False)
                E = Xb @ L.T
                out = loss_fn(E, codes[idx], *extra, **loss_kwargs)
                if callable(self.loss):
                    value, grad_E = _check_user_loss(out, E.shape)
                else:
                    value, grad_E = batches.feedback(out)
                if not np.isfinite(value):
                    raise ValueError(f"training diverged at step {it} (loss = "
                                     f"{value}); lower learning_rate")
                opt.step(L, grad_E.T @ Xb)
                if not np.all(np.isfinite(L)):
                    raise ValueError(f"training diverged at step {it} (non-finite "
                                     "components); lower learning_rate")
                self.loss_curve_.append(value)
                self.n_iter_ = it
                batches.after_step(it, X, L)
                if self.verbose and (it % report_every == 0 or it == p["max_iter"]):
                    window = np.mean(self.loss_curve_[-report_every:])
                    elapsed = time.perf_counter() - start
                    print(f"[EmbeddingDML] step {it:>6d}/{p['max_iter']}  loss "
                          f"{window:.6g}  ({elapsed:.2f} s)", flush=True)
                if self.callback is not None and self.callback(self, it, value):
                    break
        return self


def _check_user_loss(out, shape):
    """Check what a user's loss returned: ``(loss, grad)`` of the right shape."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError("loss must return a tuple (loss, grad); got "
                        f"{type(out).__name__}")
    value, grad = out
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"loss must return a real number as its first element, got "
                        f"{type(value).__name__}") from None
    grad = np.asarray(grad, dtype=np.float64)
    if grad.shape != shape:
        raise ValueError(f"loss returned a gradient of shape {grad.shape} for "
                         f"embeddings of shape {shape}")
    if not np.all(np.isfinite(grad)):
        raise ValueError("loss returned a non-finite gradient")
    return value, grad


def _seed(rng):
    return int(rng.randint(np.iinfo(np.int32).max))


class _PairBatches:
    """Class-balanced batches for the pair, triplet and callable losses."""

    loss_kwargs = {}

    def __init__(self, sampler):
        self.sampler = sampler

    def next_batch(self):
        """Training indices of the batch, and extra positional loss arguments."""
        return self.sampler.next_batch(), ()

    def feedback(self, out):
        """``(loss, grad)`` from the loss's output."""
        return out

    def after_step(self, iteration, X, L):
        """Nothing to maintain between steps."""


class _MagnetBatches:
    """Magnet batches: cluster index, loss-driven sampler, periodic refresh.

    The index is fitted on the embedding of the whole training set with the
    initial ``L``; every batch's per-example losses go back to it (they drive
    the choice of seed clusters), and it is re-clustered on the current
    embedding every ``magnet_refresh_every`` steps.
    """

    loss_kwargs = {"return_per_example": True}

    def __init__(self, X, codes, L, p, rng):
        from .magnet import MagnetBatchSampler, MagnetClusterIndex

        self.codes = codes
        self.refresh_every = p.get("magnet_refresh_every") or max(
            1, -(-codes.size // (p["magnet_m_clusters"] * p["magnet_d_per_cluster"])))
        self.index = MagnetClusterIndex(p["magnet_clusters_per_class"],
                                        random_state=_seed(rng))
        self.index.fit(X @ L.T, codes)
        self.sampler = MagnetBatchSampler(self.index,
                                          m_clusters=p["magnet_m_clusters"],
                                          d_per_cluster=p["magnet_d_per_cluster"],
                                          random_state=_seed(rng))
        self._clusters = None

    def next_batch(self):
        """Training indices of the batch, and its cluster ids (the loss's 3rd
        argument)."""
        idx, clusters = self.sampler.sample()
        self._clusters = clusters
        return idx, (clusters,)

    def feedback(self, out):
        """Report the per-example losses to the index; ``(loss, grad)``."""
        value, grad, per_example = out
        self.index.update_losses(self._clusters, per_example)
        return value, grad

    def after_step(self, iteration, X, L):
        """Re-cluster on the current embedding every ``refresh_every`` steps."""
        if iteration % self.refresh_every == 0:
            self.index.refresh(X @ L.T)
