"""Deep-metric-learning losses on NumPy batches: contrastive, triplet, lifted.

Each function takes a batch of embeddings (``B x m``, float32 or float64) and
integer class labels, and returns the loss and its gradient with respect to
the embeddings, ``(loss, grad)``.  The defaults are those of
pytorch-metric-learning 2.9.0 (PML) and the keyword arguments carry its names,
so the same call gives the same numbers: embeddings L2-normalised, Euclidean
distances, every ordered pair / every valid triplet of the batch, the same
margins and the same reductions.

The work happens in the Numba kernels of :mod:`fastmetric._numba.losses` on
the batch's ``B x B`` distance matrix; no loss needs more than ``O(B^2)``
memory (plus the mined tuples when given): the all-triplets loss never forms
a triplet and the lifted losses share one log-sum-exp per row.  This module
only validates, dispatches and applies the reductions.

Threads: ``n_jobs`` caps the Numba kernels' threads (small batches use one);
the two matrix products of a call (``X X^T`` and ``W X``) run on one BLAS
thread, because OpenBLAS's worker threads keep spinning after a product and
slowed the Numba passes that follow by up to 4x on two cores (measured).

Reductions (``reduction=``): ``"avg_nonzero"`` averages over the terms > 0
(0 if none), ``"mean"`` over all terms (0 if there is none), ``"sum"`` adds
them.  The contrastive loss reduces its positive-pair and negative-pair terms
separately and adds the two results, as PML does.
"""

import numpy as np

from . import _loss_common as lc
from ._numba import distances as _dk
from ._numba import losses as _lk
from ._threads import kernel_threads, numba_threads, threads_for

__all__ = [
    "contrastive_loss",
    "triplet_margin_loss",
    "lifted_structure_loss",
    "generalized_lifted_structure_loss",
]

REDUCTIONS = ("avg_nonzero", "mean", "sum")

# The loss kernels and the plumbing's passes are short streaming passes over
# a B x B matrix with no BLAS running beside them: a second thread paid from
# B ~ 256 on (B=384-512, 2 cores: 20-30% faster end to end; measured), 20x below
# the package-wide threshold.
_LOSS_FLOPS_PER_THREAD = 5e5

_PAIR_NAMES = ("a1", "p", "a2", "n")
_TRIPLET_NAMES = ("a", "p", "n")


# ---------------------------------------------------------------------------
# Validation and shared steps
# ---------------------------------------------------------------------------


def _check_index_array(idx, batch_size, name):
    if hasattr(idx, "detach"):  # a torch tensor reaching the NumPy API
        idx = idx.detach().cpu().numpy()
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1D array of indices, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= batch_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains index {bad}, out of range for a batch of "
                         f"{batch_size} rows (valid: 0 to {batch_size - 1})")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _check_indices_tuple(indices_tuple, batch_size):
    """A miner's output as int64 arrays: ``(a, p, n)`` or ``(a1, p, a2, n)``."""
    if not isinstance(indices_tuple, tuple | list) or len(indices_tuple) not in (3, 4):
        raise ValueError(
            "indices_tuple must be None, a tuple (anchors, positives, negatives) "
            "of triplets or a tuple (a1, p, a2, n) of positive and negative "
            f"pairs; got {type(indices_tuple).__name__}"
            + (f" of length {len(indices_tuple)}"
               if isinstance(indices_tuple, tuple | list) else ""))
    names = _TRIPLET_NAMES if len(indices_tuple) == 3 else _PAIR_NAMES
    arrays = tuple(
        _check_index_array(idx, batch_size, f"indices_tuple[{k}] ({names[k]})")
        for k, idx in enumerate(indices_tuple))
    if len(arrays) == 3:
        if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
            raise ValueError(
                "indices_tuple (a, p, n) must hold arrays of one length, got "
                f"{len(arrays[0])}, {len(arrays[1])} and {len(arrays[2])}")
    else:
        for first, second in ((0, 1), (2, 3)):
            if len(arrays[first]) != len(arrays[second]):
                raise ValueError(
                    f"indices_tuple[{first}] ({names[first]}) and "
                    f"indices_tuple[{second}] ({names[second]}) must have the same "
                    f"length, got {len(arrays[first])} and {len(arrays[second])}")
    return arrays


def _as_pairs(indices):
    """PML's ``convert_to_pairs``: triplets ``(a, p, n)`` become ``(a, p, a, n)``."""
    if len(indices) == 3:
        a, p, n = indices
        return a, p, a, n
    return indices


class _Batch:
    """A validated batch: embeddings, labels, mined tuples, distances."""

    def __init__(self, embeddings, labels, indices_tuple, normalize, reduction,
                 n_jobs):
        E, self.dtype = lc.check_embeddings(embeddings, keep_float32=True)
        self.size = E.shape[0]
        if labels is None:
            if indices_tuple is None:
                raise ValueError("labels are required when indices_tuple is None")
            self.labels = None
        else:
            self.labels = lc.check_labels(labels, self.size)
        self.indices = (None if indices_tuple is None
                        else _check_indices_tuple(indices_tuple, self.size))
        if not isinstance(normalize, bool | np.bool_):
            raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
        self.normalize = bool(normalize)
        self.reduction = lc.check_choice(reduction, "reduction", REDUCTIONS)
        self.n_threads = lc.resolve_threads(n_jobs)
        self.E = E
        self.X = None
        # float32 batches get float32 matrix products (sgemm, ~2x dgemm); the
        # loss arithmetic stays float64 and the distances float32-accurate
        self.product_dtype = (np.float32 if self.dtype == np.float32
                              else np.float64)
        self.near = lc.near_ratio(self.product_dtype)

    def normalized(self):
        """Normalise (if asked): the rows ``X`` the distances are taken of."""
        # the plumbing's Numba passes do ~10 flops per entry; small batches
        # run them on one thread (waking threads costs more than it saves)
        self.pass_threads = threads_for(self.n_threads, 10.0 * self.size * self.size,
                                        _LOSS_FLOPS_PER_THREAD)
        self.X, self.norms, self.operands = lc.prepare_rows(
            self.E, self.normalize, self.pass_threads, self.product_dtype)
        return self.X

    def distances(self):
        """Normalise (if asked) and build the distance matrix."""
        self.normalized()
        with kernel_threads():
            self.D, self.sq = lc.distance_matrix(self.X, self.pass_threads,
                                                 self.product_dtype, reuse=True,
                                                 operands=self.operands)
        return self.D

    def kernel_pool(self, flops_per_entry):
        """Numba threads for a kernel doing this much work per matrix entry.

        The per-entry figures passed in are measured single-thread times in
        units of ~0.3 ns (one scalar flop here): contrastive 5 ns, triplet
        12 ns (32 classes), the lifted losses 5-6 ns including their ``exp``.
        """
        return numba_threads(
            threads_for(self.n_threads, flops_per_entry * self.size * self.size,
                        _LOSS_FLOPS_PER_THREAD))

    def weights(self, zeroed=False):
        """The ``B x B`` array for ``dL/dD`` (a reused buffer: see ``work_array``)."""
        C = lc.work_array("weights", (self.size, self.size))
        if zeroed:
            C.fill(0.0)
        return C

    def zero(self):
        return 0.0, np.zeros(self.E.shape, dtype=self.dtype)

    def gradient(self, C, scale=1.0):
        """``dL/dE`` from ``C = dL/dD`` (times ``scale``), in the input dtype."""
        with kernel_threads():
            grad = lc.distance_backward(C, self.D, self.X, self.sq, self.pass_threads,
                                        self.product_dtype, reuse=True,
                                        Xp=self.operands[1])
        return self.finish(grad, scale)

    def finish(self, grad, scale=1.0, grad2=None, scale2=0.0):
        """``dL/dE`` from ``dL/dX = scale grad + scale2 grad2``, in the input dtype."""
        out = np.empty(self.E.shape, dtype=self.dtype)
        with numba_threads(self.pass_threads):
            _dk.finish_gradient(grad, scale, grad if grad2 is None else grad2, scale2,
                                self.X, self.norms, lc.NORMALIZE_EPS, self.normalize,
                                out)
        return out


def _reduce(total, n_active, n_terms, reduction):
    """The reduced loss and the weight every term's gradient gets."""
    if reduction == "sum":
        return float(total), 1.0
    denom = int(n_active if reduction == "avg_nonzero" else n_terms)
    if denom == 0:
        return 0.0, 0.0
    return float(total) / denom, 1.0 / denom


def _class_members(labels):
    """``(members, class_ptr)``: see ``fastmetric._numba.losses.class_members``."""
    members = np.empty(labels.shape[0], dtype=np.int64)
    class_ptr = np.empty((labels.shape[0], 2), dtype=np.int64)
    _lk.class_members(labels, members, class_ptr)
    return members, class_ptr


def _n_classes_at_least_two(labels):
    return labels.shape[0] > 1 and np.any(labels != labels[0])


# ---------------------------------------------------------------------------
# Contrastive loss
# ---------------------------------------------------------------------------


def contrastive_loss(embeddings, labels, *, pos_margin=0.0, neg_margin=1.0,
                     normalize=True, reduction="avg_nonzero", indices_tuple=None,
                     n_jobs=None):
    """Contrastive loss over the pairs of a batch, with its gradient.

    Each positive pair (same label) contributes ``relu(d - pos_margin)``, each
    negative pair (different labels) ``relu(neg_margin - d)``, with ``d`` the
    Euclidean distance of the (L2-normalised) embeddings.  The positive and
    the negative terms are reduced separately and the two results added, as
    in pytorch-metric-learning's ``ContrastiveLoss`` (whose defaults these
    are: ``pos_margin=0``, ``neg_margin=1``, normalised embeddings, averages
    over the non-zero terms).

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
        float32 or float64 (other real dtypes are converted to float64).
    labels : array-like of int, shape (batch_size,), or None
        Class labels.  May be None when ``indices_tuple`` is given.
    pos_margin : float, default=0.0
        Positive pairs closer than this cost nothing.
    neg_margin : float, default=1.0
        Negative pairs farther apart than this cost nothing.
    normalize : bool, default=True
        L2-normalise the embeddings first (rows are divided by
        ``max(||row||, 1e-12)``).
    reduction : {"avg_nonzero", "mean", "sum"}, default="avg_nonzero"
        Applied to the positive-pair terms and the negative-pair terms
        separately; the loss is the sum of the two.
    indices_tuple : tuple of int arrays, optional
        Mined pairs ``(a1, p, a2, n)``: positive pairs ``(a1[k], p[k])`` and
        negative pairs ``(a2[k], n[k])``; triplets ``(a, p, n)`` are read as
        pairs ``(a, p, a, n)``.  Default: every ordered pair ``(i, j)``,
        ``i != j``, of the batch.
    n_jobs : int or None, default=None
        Threads (None or -1: all cores).

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch_size, n_dims)
        Gradient of ``loss`` with respect to ``embeddings``, in their dtype.

    Notes
    -----
    ``O(B^2 + n_active m)`` time and ``O(B^2)`` memory (the distance matrix)
    for ``B`` rows of ``m`` dimensions: the gradient is summed over the
    active pairs directly, without a ``dL/dD`` matrix.  With no positive (no
    negative) pair the positive (negative) part is 0; identical embeddings
    have zero distance and get a zero gradient from that pair.  Mined tuples
    with a single pair are scored (PML returns 0 whenever every list has at
    most one entry).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.losses import contrastive_loss
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.standard_normal((8, 4))
    >>> loss, grad = contrastive_loss(emb, [0, 0, 1, 1, 2, 2, 3, 3])
    >>> grad.shape
    (8, 4)
    """
    pos_margin = lc.check_margin(pos_margin, "pos_margin")
    neg_margin = lc.check_margin(neg_margin, "neg_margin")
    batch = _Batch(embeddings, labels, indices_tuple, normalize, reduction, n_jobs)
    if batch.indices is None and batch.size < 2:
        return batch.zero()
    B = batch.size
    if batch.indices is None:
        # the kernel takes its distances straight from blocks of the Gram
        # product (no B x B matrix is stored)
        X = batch.normalized()
        grad_pos = lc.work_array("grad64", X.shape)
        grad_neg = lc.work_array("grad64b", X.shape)
        sums = np.empty((B, 2))
        counts = np.empty((B, 4), dtype=np.int64)
        n_tasks = threads_for(batch.n_threads, 16.0 * B * B, _LOSS_FLOPS_PER_THREAD)
        sq, Xp = batch.operands
        scratch = lc.block_scratch("gram_blocks", n_tasks, B, B, batch.product_dtype,
                                   reuse=True)
        dists = lc.work_array("block_distances", scratch.shape)
        products = lc.work_array("products", scratch.shape[:2] + (X.shape[1],),
                                 batch.product_dtype)
        with kernel_threads(), numba_threads(n_tasks):
            _lk.contrastive_all_pairs(X, Xp, sq, batch.near,
                                      batch.labels, *_class_members(batch.labels),
                                      pos_margin, neg_margin, scratch, dists,
                                      products, sums, counts, grad_pos, grad_neg)
        pos_sum, neg_sum = sums.sum(axis=0)
        p_active, p_all, n_active, n_all = counts.sum(axis=0)
    else:
        D = batch.distances()
        X = batch.X
        grad_pos = np.zeros_like(X)
        grad_neg = np.zeros_like(X)
        a1, p, a2, n = _as_pairs(batch.indices)
        sums = np.empty(2)
        counts = np.empty(2, dtype=np.int64)
        _lk.contrastive_pairs(X, D, a1, p, a2, n, pos_margin, neg_margin, sums,
                              counts, grad_pos, grad_neg)
        pos_sum, neg_sum = sums
        p_active, n_active = counts
        p_all, n_all = len(a1), len(a2)
    pos_loss, w_pos = _reduce(pos_sum, p_active, p_all, batch.reduction)
    neg_loss, w_neg = _reduce(neg_sum, n_active, n_all, batch.reduction)
    return pos_loss + neg_loss, batch.finish(grad_pos, w_pos, grad_neg, w_neg)


# ---------------------------------------------------------------------------
# Triplet margin loss
# ---------------------------------------------------------------------------


def _group_by_anchor(anchor, other, batch_size):
    """CSR of ``other`` grouped by ``anchor``: ``(ptr, values, per-anchor count)``."""
    per_anchor = np.bincount(anchor, minlength=batch_size)
    ptr = np.zeros(batch_size + 1, dtype=np.int64)
    np.cumsum(per_anchor, out=ptr[1:])
    values = np.ascontiguousarray(other[np.argsort(anchor, kind="stable")])
    return ptr, values, per_anchor


def triplet_margin_loss(embeddings, labels, *, margin=0.05, normalize=True,
                        reduction="avg_nonzero", indices_tuple=None, n_jobs=None):
    """Triplet margin loss over every triplet of a batch, with its gradient.

    A triplet ``(a, p, n)`` has an anchor ``a``, a positive ``p != a`` with the
    anchor's label and a negative ``n`` with another label; it contributes
    ``relu(d(a, p) - d(a, n) + margin)``.  The defaults are those of
    pytorch-metric-learning's ``TripletMarginLoss`` (``margin=0.05``,
    ``triplets_per_anchor="all"``, normalised embeddings, average over the
    non-zero terms).

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
        float32 or float64 (other real dtypes are converted to float64).
    labels : array-like of int, shape (batch_size,), or None
        Class labels.  May be None when ``indices_tuple`` is given.
    margin : float, default=0.05
        The required gap between the anchor-negative and anchor-positive
        distances.
    normalize : bool, default=True
        L2-normalise the embeddings first.
    reduction : {"avg_nonzero", "mean", "sum"}, default="avg_nonzero"
        Over the triplets' terms.
    indices_tuple : tuple of int arrays, optional
        Mined triplets ``(a, p, n)``; or pairs ``(a1, p, a2, n)``, which stand
        for every triplet ``(a1[k], p[k], n[l])`` with ``a1[k] == a2[l]`` (as
        PML's ``convert_to_triplets``; those triplets are never formed in
        memory).  Default: every triplet of the batch.
    n_jobs : int or None, default=None
        Threads (None or -1: all cores).

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch_size, n_dims)
        Gradient of ``loss`` with respect to ``embeddings``, in their dtype.

    Notes
    -----
    The ``O(B^3)`` triplets are summed without visiting them, in ``O(B^2)``
    memory: per anchor the ``P`` positive distances are sorted once, every
    negative gets its rank among them (a vectorised sweep for ``P <= 128``,
    binary search above, so at most ``O(B^2 min(P, 128 + log P))`` simple
    comparisons) and prefix sums over the ranks give each positive's active
    negatives and the sum of their terms; the count of non-zero terms is
    exact (each rank uses the term's own floating-point test).  Explicit
    triplets cost ``O(n_triplets)``; pairs ``(a1, p, a2, n)`` cost
    ``O(B^2 + n_pairs)``.  A batch without any triplet (one class, or only
    singleton classes) has loss 0 and a zero gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.losses import triplet_margin_loss
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.standard_normal((8, 4))
    >>> loss, grad = triplet_margin_loss(emb, [0, 0, 1, 1, 2, 2, 3, 3], margin=0.2)
    >>> loss > 0
    True
    """
    margin = lc.check_margin(margin, "margin")
    batch = _Batch(embeddings, labels, indices_tuple, normalize, reduction, n_jobs)
    B = batch.size
    if batch.indices is None and not _n_classes_at_least_two(batch.labels):
        return batch.zero()
    indices = batch.indices
    if indices is not None and len(indices[0]) == 0:
        return batch.zero()
    D = batch.distances()
    C = batch.weights(zeroed=True)
    if indices is None:
        sums = np.empty(B)
        counts = np.empty((B, 2), dtype=np.int64)
        with batch.kernel_pool(40):
            _lk.triplet_all(D, batch.labels, margin, C, sums, counts)
        total = sums.sum()
        n_active, n_terms = counts.sum(axis=0)
    elif len(indices) == 3:
        a, p, n = indices
        total, n_active = _lk.triplet_list(D, a, p, n, margin, C)
        n_terms = len(a)
    else:
        a1, p, a2, n = indices
        pos_ptr, pos_idx, n_pos = _group_by_anchor(a1, p, B)
        neg_ptr, neg_idx, n_neg = _group_by_anchor(a2, n, B)
        anchors = np.flatnonzero((n_pos > 0) & (n_neg > 0)).astype(np.int64)
        sums = np.empty(len(anchors))
        counts = np.empty((len(anchors), 2), dtype=np.int64)
        with batch.kernel_pool(40):
            _lk.triplet_grouped(D, anchors, pos_ptr, pos_idx, neg_ptr, neg_idx,
                                margin, C, sums, counts)
        total = sums.sum()
        n_active, n_terms = counts.sum(axis=0)
    # the prefix-sum form of a sum of positive terms can round to a hair below 0
    loss, weight = _reduce(max(total, 0.0), n_active, n_terms, batch.reduction)
    if n_active == 0 or weight == 0.0:
        return loss, np.zeros(batch.E.shape, dtype=batch.dtype)
    return loss, batch.gradient(C, weight)


# ---------------------------------------------------------------------------
# Lifted structured loss
# ---------------------------------------------------------------------------


def lifted_structure_loss(embeddings, labels, *, pos_margin=0.0, neg_margin=1.0,
                          normalize=True, reduction="mean", indices_tuple=None,
                          n_jobs=None):
    """Lifted structured loss (Song et al., 2016) over a batch, with its gradient.

    Every ordered positive pair ``(i, j)`` contributes
    ``relu(J_ij + d_ij - pos_margin)^2 / 2`` with
    ``J_ij = log sum exp(neg_margin - d)`` over the negative pairs whose first
    index is ``i`` or ``j``.  This is pytorch-metric-learning's
    ``LiftedStructureLoss`` (defaults ``neg_margin=1``, ``pos_margin=0``,
    normalised embeddings, mean over the positive pairs).

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
        float32 or float64 (other real dtypes are converted to float64).
    labels : array-like of int, shape (batch_size,), or None
        Class labels.  May be None when ``indices_tuple`` is given.
    pos_margin : float, default=0.0
    neg_margin : float, default=1.0
    normalize : bool, default=True
        L2-normalise the embeddings first.
    reduction : {"mean", "sum", "avg_nonzero"}, default="mean"
        Over the positive pairs' terms.
    indices_tuple : tuple of int arrays, optional
        Mined pairs ``(a1, p, a2, n)`` (triplets ``(a, p, n)`` are read as
        ``(a, p, a, n)``).  A positive pair whose rows have no listed negative
        pair gets ``J = 0``.  Default: every ordered pair of the batch.
    n_jobs : int or None, default=None
        Threads (None or -1: all cores).

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch_size, n_dims)
        Gradient of ``loss`` with respect to ``embeddings``, in their dtype.

    Notes
    -----
    ``J_ij`` is ``logaddexp(LSE_i, LSE_j)`` of two per-row, max-shifted
    log-sum-exps over the negatives, so the loss costs ``O(B^2)`` time and
    memory (PML forms a positive-pairs x negative-pairs matrix, ``O(B^4)``).
    With no positive pair or no negative pair at all (e.g. one class) the loss
    is 0 with a zero gradient.  Mined tuples with a single pair each are
    scored (PML returns 0 whenever every list has at most one entry).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.losses import lifted_structure_loss
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.standard_normal((8, 4))
    >>> loss, grad = lifted_structure_loss(emb, [0, 0, 1, 1, 2, 2, 3, 3])
    >>> grad.shape
    (8, 4)
    """
    pos_margin = lc.check_margin(pos_margin, "pos_margin")
    neg_margin = lc.check_margin(neg_margin, "neg_margin")
    batch = _Batch(embeddings, labels, indices_tuple, normalize, reduction, n_jobs)
    B = batch.size
    if batch.indices is None:
        if not _n_classes_at_least_two(batch.labels):
            return batch.zero()
    else:
        a1, p, a2, n = _as_pairs(batch.indices)
        if len(a1) == 0 or len(a2) == 0:
            return batch.zero()
    D = batch.distances()
    row_max = np.empty(B)
    row_work = np.empty(B)
    if batch.indices is None:
        C = batch.weights()
        sums = np.empty(B)
        counts = np.empty((B, 2), dtype=np.int64)
        with batch.kernel_pool(18):
            _lk.lifted_shifted_negatives(D, batch.labels, neg_margin, C, row_max)
            np.exp(C, out=C)
            _lk.lifted_all_pairs(D, batch.labels, pos_margin, C, row_max, row_work,
                                 sums, counts)
        total = sums.sum()
        n_active, n_terms = counts.sum(axis=0)
    else:
        C = batch.weights(zeroed=True)
        total, n_active = _lk.lifted_pairs(D, a1, p, a2, n, pos_margin, neg_margin,
                                           C, row_max, row_work, np.empty(B))
        n_terms = len(a1)
    loss, weight = _reduce(total, n_active, n_terms, batch.reduction)
    if n_active == 0 or weight == 0.0:
        return loss, np.zeros(batch.E.shape, dtype=batch.dtype)
    return loss, batch.gradient(C, weight)


# ---------------------------------------------------------------------------
# Generalized lifted structured loss
# ---------------------------------------------------------------------------


def generalized_lifted_structure_loss(embeddings, labels, *, pos_margin=0.0,
                                      neg_margin=1.0, normalize=True,
                                      reduction="mean", indices_tuple=None,
                                      n_jobs=None):
    """Generalized lifted structured loss over a batch, with its gradient.

    Each row ``i`` of the batch contributes
    ``relu(LSE_j(d_ij - pos_margin) + LSE_k(neg_margin - d_ik))`` over its
    positives ``j`` and negatives ``k`` (an empty log-sum-exp counts 0), the
    form of Hermans et al. (2017, "In defense of the triplet loss") that
    pytorch-metric-learning's ``GeneralizedLiftedStructureLoss`` implements
    (defaults ``neg_margin=1``, ``pos_margin=0``, normalised embeddings, mean
    over all rows).

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
        float32 or float64 (other real dtypes are converted to float64).
    labels : array-like of int, shape (batch_size,), or None
        Class labels.  May be None when ``indices_tuple`` is given.
    pos_margin : float, default=0.0
    neg_margin : float, default=1.0
    normalize : bool, default=True
        L2-normalise the embeddings first.
    reduction : {"mean", "sum", "avg_nonzero"}, default="mean"
        Over the ``batch_size`` row terms.
    indices_tuple : tuple of int arrays, optional
        Mined pairs ``(a1, p, a2, n)`` (triplets ``(a, p, n)`` are read as
        ``(a, p, a, n)``) marking the positive and negative pairs of each row;
        a pair listed twice counts once, and no pair may be both positive and
        negative.  Default: every ordered pair of the batch.
    n_jobs : int or None, default=None
        Threads (None or -1: all cores).

    Returns
    -------
    loss : float
    grad : ndarray of shape (batch_size, n_dims)
        Gradient of ``loss`` with respect to ``embeddings``, in their dtype.

    Notes
    -----
    ``O(B^2)`` time and memory; the log-sum-exps are max-shifted.  A batch
    with one class still has positive terms (the negative part is 0), as in
    PML; a batch of one row has loss 0.  Mined tuples with a single pair each
    are scored (PML returns 0 whenever every list has at most one entry).

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.losses import generalized_lifted_structure_loss
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.standard_normal((8, 4))
    >>> loss, grad = generalized_lifted_structure_loss(emb, [0, 0, 1, 1, 2, 2, 3, 3])
    >>> grad.shape
    (8, 4)
    """
    pos_margin = lc.check_margin(pos_margin, "pos_margin")
    neg_margin = lc.check_margin(neg_margin, "neg_margin")
    batch = _Batch(embeddings, labels, indices_tuple, normalize, reduction, n_jobs)
    B = batch.size
    if batch.indices is None:
        if B < 2:
            return batch.zero()
        labels = batch.labels
        pos_mask = neg_mask = np.zeros((1, 1), dtype=np.bool_)
        use_masks = False
    else:
        a1, p, a2, n = _as_pairs(batch.indices)
        if len(a1) == 0 and len(a2) == 0:
            return batch.zero()
        pos_mask = np.zeros((B, B), dtype=np.bool_)
        neg_mask = np.zeros((B, B), dtype=np.bool_)
        pos_mask[a1, p] = True
        neg_mask[a2, n] = True
        both = pos_mask & neg_mask
        if both.any():
            i, j = np.argwhere(both)[0]
            raise ValueError(
                f"indices_tuple lists the pair ({i}, {j}) as both positive and "
                "negative; each pair must be one or the other")
        labels = np.zeros(B, dtype=np.int64)
        use_masks = True
    D = batch.distances()
    C = batch.weights()
    p_max = np.empty(B)
    n_max = np.empty(B)
    row_loss = np.empty(B)
    with batch.kernel_pool(18):
        _lk.generalized_lifted_shifted(D, labels, pos_mask, neg_mask, use_masks,
                                       pos_margin, neg_margin, C, p_max, n_max)
        np.exp(C, out=C)
        _lk.generalized_lifted(labels, pos_mask, neg_mask, use_masks, C, p_max,
                               n_max, row_loss)
    n_active = int(np.count_nonzero(row_loss > 0.0))
    loss, weight = _reduce(row_loss.sum(), n_active, B, batch.reduction)
    if n_active == 0 or weight == 0.0:
        return loss, np.zeros(batch.E.shape, dtype=batch.dtype)
    return loss, batch.gradient(C, weight)


# The magnet loss (Rippel et al., 2016) lives in its own module with its
# cluster index and batch sampler; it is re-exported here next to the others.
try:
    from .magnet import magnet_loss  # noqa: E402, F401
except ImportError:  # pragma: no cover - a partial installation
    pass
else:
    __all__.append("magnet_loss")
