"""Retrieval and clustering scores for judging embeddings.

The scores used in the deep-metric-learning literature to compare embeddings
of labelled data:

- :func:`recall_at_k` -- Recall@K: the fraction of queries with at least one
  item of their own class among their K nearest neighbours;
- :func:`mean_average_precision_at_r` -- MAP@R (Musgrave, Belongie and Lim,
  "A Metric Learning Reality Check", 2020);
- :func:`nmi_kmeans` -- normalised mutual information between the classes and
  a k-means clustering with one cluster per class.

By default the retrieval scores are leave-one-out on one set: every item is a
query once, and the other items are its reference set.  Passing
``query_embeddings`` / ``query_labels`` searches ``embeddings`` for separate
queries instead (a query / gallery split).  As in pytorch-metric-learning's
``AccuracyCalculator``, queries whose class has no other item in the reference
set cannot retrieve anything and are left out of the averages.

Neighbours are found exactly, block of queries by block of queries: one BLAS
product gives the squared Euclidean distances from a block to all reference
items, so memory stays ``O(block_size x n_reference)``.  Exact ties in
distance are broken by the reference index (lower first), so the scores are
deterministic.  k-means and NMI are scikit-learn's; this module writes
neither.
"""

import numbers

import numpy as np

from ._validation import check_data

__all__ = ["recall_at_k", "mean_average_precision_at_r", "nmi_kmeans"]

# Distances per block of queries (float64 entries); a few temporaries of this
# size are alive at once, so about 16 MB each.
_BLOCK_ENTRIES = 1 << 21


def _check_labels(labels, n_samples, name, embeddings_name):
    """Class labels, one per row: 1D, any hashable scalars, no NaN."""
    if hasattr(labels, "detach"):  # a torch tensor
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1D array of class labels, got shape "
                         f"{arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {embeddings_name} "
                         f"has {n_samples} rows")
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must hold class labels, got complex numbers")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinity; class labels must "
                             "be finite")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} holds non-integer numbers; class labels "
                             "must be integers or strings")
    return arr


def _check_points(embeddings, name, min_samples):
    X = check_data(embeddings, name, min_samples=min_samples)
    X = np.ascontiguousarray(X, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X)
    # |x - y|^2 <= 2 (|x|^2 + |y|^2): keep it finite.
    if not np.all(sq < np.finfo(np.float64).max / 4):
        raise ValueError(f"{name} has rows too large for their squared distances to "
                         "fit in float64; rescale the embeddings")
    return X, sq


def _check_block_size(block_size, n_reference):
    if block_size is None:
        return max(1, _BLOCK_ENTRIES // max(n_reference, 1))
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral):
        raise TypeError(f"block_size must be an int or None, got "
                        f"{type(block_size).__name__}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


class _Retrieval:
    """Validated queries and reference set, with each query's class count.

    Attributes
    ----------
    Q, q_sq : query points (float64) and their squared norms
    X, x_sq : reference points and their squared norms
    q_codes, x_codes : class codes (shared encoding) of queries and references
    n_relevant : ndarray of shape (n_queries,)
        Number of reference items of the query's class (the query itself not
        counted in leave-one-out mode): R in MAP@R.
    leave_one_out : bool
    """

    def __init__(self, embeddings, labels, query_embeddings, query_labels):
        if (query_embeddings is None) != (query_labels is None):
            raise ValueError("query_embeddings and query_labels must be given "
                             "together (or neither, for leave-one-out retrieval)")
        self.leave_one_out = query_embeddings is None
        min_samples = 2 if self.leave_one_out else 1
        self.X, self.x_sq = _check_points(embeddings, "embeddings", min_samples)
        x_labels = _check_labels(labels, self.X.shape[0], "labels", "embeddings")
        if self.leave_one_out:
            self.Q, self.q_sq = self.X, self.x_sq
            classes, self.x_codes = np.unique(x_labels, return_inverse=True)
            self.q_codes = self.x_codes
        else:
            self.Q, self.q_sq = _check_points(query_embeddings, "query_embeddings", 1)
            if self.Q.shape[1] != self.X.shape[1]:
                raise ValueError(
                    f"query_embeddings has {self.Q.shape[1]} columns but embeddings "
                    f"has {self.X.shape[1]}; they must live in the same space"
                )
            q_labels = _check_labels(query_labels, self.Q.shape[0], "query_labels",
                                     "query_embeddings")
            try:
                classes, codes = np.unique(np.concatenate([x_labels, q_labels]),
                                           return_inverse=True)
            except TypeError as exc:
                raise TypeError("labels and query_labels must hold comparable "
                                f"class labels: {exc}") from exc
            self.x_codes = codes[: self.X.shape[0]]
            self.q_codes = codes[self.X.shape[0]:]
        counts = np.bincount(self.x_codes, minlength=classes.size)
        self.n_relevant = counts[self.q_codes] - (1 if self.leave_one_out else 0)
        self.n_candidates = self.X.shape[0] - (1 if self.leave_one_out else 0)
        if not np.any(self.n_relevant > 0):
            where = ("no class has two items" if self.leave_one_out
                     else "no query's class occurs in embeddings")
            raise ValueError(f"no query can retrieve an item of its class: {where}")

    def blocks(self, block_size, kmax_of):
        """Sorted nearest reference items, block of queries by block of queries.

        Parameters
        ----------
        block_size : int
        kmax_of : callable
            ``kmax_of(rows) -> int``: how many neighbours the block needs.

        Yields
        ------
        rows : slice
            The queries of the block.
        match : ndarray of bool, shape (len(rows), kmax)
            ``match[i, r]``: the (r+1)-th nearest reference item of query i has
            the query's class.
        """
        nq = self.Q.shape[0]
        for start in range(0, nq, block_size):
            rows = slice(start, min(start + block_size, nq))
            kmax = kmax_of(rows)
            d2 = self.Q[rows] @ self.X.T
            d2 *= -2.0
            d2 += self.q_sq[rows, None]
            d2 += self.x_sq[None, :]
            np.maximum(d2, 0.0, out=d2)
            if self.leave_one_out:
                local = np.arange(d2.shape[0])
                d2[local, start + local] = np.inf
            order = _k_smallest_sorted(d2, kmax)
            yield rows, self.x_codes[order] == self.q_codes[rows, None]


def _k_smallest_sorted(d2, k):
    """Column indices of the ``k`` smallest entries of each row, ascending.

    Exact ties are broken by column index, so the result does not depend on
    how ``argpartition`` orders equal values.
    """
    n = d2.shape[1]
    if k >= n:
        return np.argsort(d2, axis=1, kind="stable")[:, :k]
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # by column index, so the stable sort below breaks ties
    vals = np.take_along_axis(d2, part, axis=1)
    order = np.take_along_axis(part, np.argsort(vals, axis=1, kind="stable"), axis=1)
    # Where the k-th value is tied with entries left out, argpartition chose
    # among them arbitrarily: sort those rows fully (rare outside of duplicates).
    kth = vals.max(axis=1)
    straddling = np.count_nonzero(d2 <= kth[:, None], axis=1) > k
    if straddling.any():
        order[straddling] = np.argsort(d2[straddling], axis=1, kind="stable")[:, :k]
    return order


def _check_k(k, n_candidates):
    scalar = isinstance(k, numbers.Integral) and not isinstance(k, bool)
    ks = [k] if scalar else k
    try:
        ks = list(ks)
    except TypeError:
        raise TypeError(f"k must be an int or a sequence of ints, got "
                        f"{type(k).__name__}") from None
    if not ks:
        raise ValueError("k is empty; give at least one K")
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"k must hold ints, got {v!r}")
        if v < 1:
            raise ValueError(f"k must be >= 1, got {v}")
        if v > n_candidates:
            raise ValueError(f"k={v} exceeds the {n_candidates} reference items each "
                             "query can retrieve")
    return scalar, [int(v) for v in ks]


def recall_at_k(embeddings, labels, k=(1, 2, 4, 8), *, query_embeddings=None,
                query_labels=None, block_size=None):
    """Recall@K: fraction of queries with a same-class item among their K nearest.

    The retrieval score of the deep-metric-learning literature (Song et al.,
    2016; also "precision at 1" for K = 1): a query counts as a hit when at
    least one of its K nearest neighbours (Euclidean distance, the query
    itself excluded) has the query's class.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_dims)
        The reference set; also the queries, leave-one-out, when
        ``query_embeddings`` is None.
    labels : array-like of shape (n_samples,)
        Class of each row (integers or strings).
    k : int or sequence of int, default=(1, 2, 4, 8)
        The values of K; each at most the number of items a query can retrieve.
    query_embeddings : array-like of shape (n_queries, n_dims) or None, default=None
        Separate queries, searched in ``embeddings`` (nothing is excluded).
    query_labels : array-like of shape (n_queries,) or None, default=None
        Classes of ``query_embeddings``; given with them.
    block_size : int or None, default=None
        Queries per block (memory ``O(block_size x n_samples)``); None picks
        about 2 million distances per block.

    Returns
    -------
    float or dict of {int: float}
        The recall for an int ``k``; for a sequence, a dict from each K to its
        recall.  Queries with no other item of their class are left out.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.evaluation import recall_at_k
    >>> E = np.array([[0.0], [0.1], [1.0], [1.1], [3.0]])
    >>> y = np.array([0, 0, 1, 1, 0])
    >>> recall_at_k(E, y, k=(1, 2, 4))  # the last point's nearest class mate is 3rd
    {1: 0.8, 2: 0.8, 4: 1.0}
    """
    data = _Retrieval(embeddings, labels, query_embeddings, query_labels)
    scalar, ks = _check_k(k, data.n_candidates)
    kmax = max(ks)
    bs = _check_block_size(block_size, data.X.shape[0])
    valid = data.n_relevant > 0
    hits = np.zeros(len(ks), dtype=np.int64)
    for rows, match in data.blocks(bs, lambda rows: kmax):
        # Rank (1-based) of the first same-class neighbour; kmax + 1 if none.
        first = np.where(match.any(axis=1), match.argmax(axis=1) + 1, kmax + 1)
        first = first[valid[rows]]
        hits += np.array([np.count_nonzero(first <= v) for v in ks])
    recalls = hits / np.count_nonzero(valid)
    if scalar:
        return float(recalls[0])
    return {v: float(r) for v, r in zip(ks, recalls, strict=True)}


def mean_average_precision_at_r(embeddings, labels, *, query_embeddings=None,
                                query_labels=None, block_size=None):
    """MAP@R: mean average precision over each query's R nearest neighbours.

    For a query with R other items of its class in the reference set (Musgrave
    et al., 2020), ``AP@R = (1/R) sum_{i=1..R} P(i) rel(i)``, where ``rel(i)``
    is 1 when the i-th nearest neighbour has the query's class and ``P(i)`` is
    the fraction of the first i neighbours that do.  It rewards ranking all
    same-class items first, unlike Recall@K; it is 1 exactly when every query's
    R nearest neighbours are its R class mates.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_dims)
        The reference set; also the queries, leave-one-out, when
        ``query_embeddings`` is None.
    labels : array-like of shape (n_samples,)
        Class of each row (integers or strings).
    query_embeddings : array-like of shape (n_queries, n_dims) or None, default=None
        Separate queries, searched in ``embeddings`` (nothing is excluded).
    query_labels : array-like of shape (n_queries,) or None, default=None
        Classes of ``query_embeddings``; given with them.
    block_size : int or None, default=None
        Queries per block (memory ``O(block_size x max(n_samples, R))``); None
        picks about 2 million distances per block.

    Returns
    -------
    float
        The mean of AP@R over the queries with R >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.evaluation import mean_average_precision_at_r
    >>> E = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    >>> mean_average_precision_at_r(E, [0, 0, 0, 1, 1, 1])
    1.0
    """
    data = _Retrieval(embeddings, labels, query_embeddings, query_labels)
    R = data.n_relevant
    bs = _check_block_size(block_size, data.X.shape[0])
    total = 0.0
    for rows, match in data.blocks(bs, lambda rows: max(int(R[rows].max()), 1)):
        r = R[rows]
        kmax = match.shape[1]
        rank = np.arange(1, kmax + 1)
        match &= rank[None, :] <= r[:, None]
        precision = np.cumsum(match, axis=1) / rank
        ok = r > 0
        total += float(np.sum((precision * match).sum(axis=1)[ok] / r[ok]))
    return float(total / np.count_nonzero(R > 0))


def nmi_kmeans(embeddings, labels, *, n_init="auto", random_state=None,
               average_method="arithmetic"):
    """NMI between the classes and a k-means clustering of the embeddings.

    Runs scikit-learn's :class:`~sklearn.cluster.KMeans` with as many clusters
    as there are classes and scores the clusters against the classes with
    :func:`~sklearn.metrics.normalized_mutual_info_score`: 1 when the clusters
    are the classes, near 0 when they are independent of them.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_dims)
    labels : array-like of shape (n_samples,)
        Class of each row (integers or strings).
    n_init : 'auto' or int, default='auto'
        k-means restarts (``KMeans``'s ``n_init``).
    random_state : int, RandomState or None, default=None
        Seeds k-means; fix it for a reproducible score.
    average_method : {'arithmetic', 'geometric', 'min', 'max'}, \
default='arithmetic'
        Normaliser of the mutual information (as in scikit-learn).

    Returns
    -------
    float
        The NMI, in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric.evaluation import nmi_kmeans
    >>> E = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> nmi_kmeans(E, ["a", "a", "b", "b"], random_state=0)
    1.0
    """
    X = check_data(embeddings, "embeddings", min_samples=1)
    y = _check_labels(labels, X.shape[0], "labels", "embeddings")
    classes, codes = np.unique(y, return_inverse=True)
    if average_method not in ("arithmetic", "geometric", "min", "max"):
        raise ValueError("average_method must be one of 'arithmetic', 'geometric', "
                         f"'min', 'max'; got {average_method!r}")
    if classes.size == 1:
        # One cluster: identical to the single class (scikit-learn's convention).
        return 1.0
    # Imported here: scikit-learn's clustering stack costs ~0.1 s to import.
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    km = KMeans(n_clusters=classes.size, n_init=n_init, random_state=random_state)
    clusters = km.fit_predict(X)
    return float(normalized_mutual_info_score(codes, clusters,
                                              average_method=average_method))
