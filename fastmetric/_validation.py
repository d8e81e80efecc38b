"""Input validation at the boundary between users and the compiled kernels.

The kernels run with bounds checks off, so everything they index or read is
checked here first: shapes, dtypes, index ranges, finiteness and labels.  Each
error names the argument and what was expected.  Nothing here is a hot loop:
checks are vectorised NumPy over the inputs.
"""

import numbers

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import _is_arraylike

FLOAT_DTYPES = (np.float64, np.float32)


class PairData:
    """Pairs as a data matrix plus two index arrays: the layout the kernels take.

    Parameters
    ----------
    X : ndarray of shape (n_points, n_features), C-contiguous float32/float64
    i, j : ndarray of intp, shape (n_pairs,)
        Pair ``p`` is ``(X[i[p]], X[j[p]])``; every index lies in ``[0, n_points)``.
    """

    __slots__ = ("X", "i", "j")

    def __init__(self, X, i, j):
        self.X = X
        self.i = i
        self.j = j

    @property
    def n_pairs(self):
        """Number of pairs."""
        return self.i.shape[0]

    @property
    def n_features(self):
        """Number of features of the points."""
        return self.X.shape[1]

    def subset(self, mask):
        """The pairs selected by a boolean mask, sharing ``X``."""
        return PairData(self.X, np.ascontiguousarray(self.i[mask]),
                        np.ascontiguousarray(self.j[mask]))


def _float_array(a, name, *, ndim=None, allow_nd=False):
    """Convert to a C-contiguous float32/float64 array; reject non-numeric input."""
    if hasattr(a, "toarray") or type(a).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{name} must be a dense array; sparse input is not supported")
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers, got an array of dtype {arr.dtype}"
        )
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(
            f"{name} must be a {ndim}D array, got {arr.ndim}D with shape {arr.shape}"
        )
    dtype = arr.dtype if arr.dtype in FLOAT_DTYPES else np.float64
    return np.ascontiguousarray(arr, dtype=dtype)


def check_finite(arr, name):
    """Raise ``ValueError`` if ``arr`` holds NaN or infinity."""
    if not np.isfinite(arr).all():
        bad = "NaN" if np.isnan(arr).any() else "infinity"
        raise ValueError(f"{name} contains {bad}; all values must be finite")


def check_data(X, name="X", *, min_samples=1, finite=True):
    """Validate a data matrix for the kernels.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    name : str
        Used in error messages.
    min_samples : int
    finite : bool
        Whether to reject NaN and infinity (the caller may check the rows it
        uses instead).

    Returns
    -------
    ndarray
        C-contiguous float32 (kept if given) or float64 array.
    """
    X = _float_array(X, name, ndim=2)
    if X.shape[0] < min_samples:
        raise ValueError(
            f"{name} has {X.shape[0]} sample(s); at least {min_samples} required"
        )
    if X.shape[1] < 1:
        raise ValueError(f"{name} has 0 features; at least 1 is required")
    if finite:
        check_finite(X, name)
    return X


def check_indices(idx, n_points, name):
    """Validate integer point indices: integer dtype, within ``[0, n_points)``.

    Negative indices are rejected rather than wrapped around, since a negative
    index is almost always a bug in how the constraints were built.

    Returns
    -------
    ndarray of intp
    """
    arr = np.asarray(idx)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(
            arr == np.round(arr)
        ):
            arr = arr.astype(np.intp)
        else:
            raise TypeError(
                f"{name} must hold integer indices into the preprocessor's data, "
                f"got dtype {arr.dtype}"
            )
    if arr.size:
        lo, hi = arr.min(), arr.max()
        if lo < 0:
            raise ValueError(f"{name} contains a negative index ({lo}); indices "
                             f"must lie in [0, {n_points})")
        if hi >= n_points:
            raise ValueError(f"{name} contains index {hi}, out of range for "
                             f"{n_points} points (valid: 0 to {n_points - 1})")
    return np.ascontiguousarray(arr, dtype=np.intp)


class ArrayIndexer:
    """A preprocessor made from an array: ``indices -> X[indices]``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Validated once here (real numbers), then shared by all pairs.  Rows
        that hold NaN or infinity are an error only when a pair or a point
        uses them (see :meth:`check_rows`), as in metric-learn.
    """

    def __init__(self, X):
        self.X = check_data(X, "preprocessor", finite=False)
        self.all_finite = bool(np.isfinite(self.X).all())

    def __call__(self, indices):
        """Rows of the data for the given indices (validated)."""
        idx = check_indices(indices, self.X.shape[0], "indices")
        self.check_rows(idx, "indices")
        return self.X[idx]

    def check_rows(self, idx, name):
        """Raise ``ValueError`` if a row that ``idx`` uses is not finite."""
        if self.all_finite:
            return
        rows = np.unique(idx)
        bad = ~np.isfinite(self.X[rows]).all(axis=1)
        if bad.any():
            row = int(rows[np.argmax(bad)])
            what = "NaN" if np.isnan(self.X[row]).any() else "infinity"
            raise ValueError(f"the preprocessor's row {row}, used by {name}, "
                             f"contains {what}; all values used must be finite")


def make_preprocessor(preprocessor):
    """The ``preprocessor`` parameter as ``None``, an ArrayIndexer or a callable."""
    if preprocessor is None or isinstance(preprocessor, ArrayIndexer):
        return preprocessor
    if _is_arraylike(preprocessor):
        return ArrayIndexer(preprocessor)
    if callable(preprocessor):
        return preprocessor
    raise ValueError(
        f"Invalid type for the preprocessor: {type(preprocessor).__name__}. "
        "Use None, an array-like of shape (n_samples, n_features) or a callable."
    )


def _apply_callable(preprocessor, idx, name):
    try:
        pts = preprocessor(idx)
    except Exception as exc:
        raise ValueError(f"the preprocessor failed on {name}: {exc}") from exc
    return pts


def check_pairs(pairs, preprocessor=None, *, n_features=None, name="pairs",
                min_pairs=1):
    """Validate pairs and return them in the kernels' layout.

    Parameters
    ----------
    pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)
        Formed pairs of points, or index pairs when a preprocessor is set.
    preprocessor : None, ArrayIndexer or callable
        As returned by :func:`make_preprocessor`.
    n_features : int or None
        If given, the expected number of features (checked after fitting).
    name : str
    min_pairs : int

    Returns
    -------
    PairData
    """
    arr = np.asarray(pairs) if not isinstance(pairs, np.ndarray) else pairs
    keys = (arr.ndim == 2 and preprocessor is not None
            and not isinstance(preprocessor, ArrayIndexer))
    if arr.dtype == object and not keys:  # a callable takes any keys
        raise TypeError(f"{name} must be a numeric array, got dtype object")
    if arr.ndim == 2:
        if preprocessor is None:
            raise ValueError(
                f"{name} is a 2D array of shape {arr.shape}: a 3D array of formed "
                "pairs (n_pairs, 2, n_features) is expected, or set a preprocessor "
                "to use 2D index pairs"
            )
        if arr.shape[1] != 2:
            raise ValueError(
                f"{name} must hold pairs: expected shape (n_pairs, 2), got {arr.shape}"
            )
        if isinstance(preprocessor, ArrayIndexer):
            X = preprocessor.X
            i = check_indices(arr[:, 0], X.shape[0], name)
            j = check_indices(arr[:, 1], X.shape[0], name)
            if not preprocessor.all_finite:
                preprocessor.check_rows(np.concatenate([i, j]), name)
            data = PairData(X, i, j)
        else:
            left = _apply_callable(preprocessor, arr[:, 0], name)
            right = _apply_callable(preprocessor, arr[:, 1], name)
            left = _float_array(left, f"the preprocessor's output for {name}", ndim=2)
            right = _float_array(right, f"the preprocessor's output for {name}",
                                 ndim=2)
            if left.shape != right.shape or left.shape[0] != arr.shape[0]:
                raise ValueError(
                    f"the preprocessor returned arrays of shapes {left.shape} and "
                    f"{right.shape} for {arr.shape[0]} index pairs"
                )
            formed = np.stack([left, right], axis=1)
            return check_pairs(formed, None, n_features=n_features, name=name,
                               min_pairs=min_pairs)
    elif arr.ndim == 3:
        if arr.shape[1] != 2:
            raise ValueError(
                f"{name} must hold pairs: expected shape (n_pairs, 2, n_features), "
                f"got {arr.shape}"
            )
        arr = _float_array(arr, name)
        check_finite(arr, name)
        n = arr.shape[0]
        X = arr.reshape(2 * n, arr.shape[2])
        i = np.arange(0, 2 * n, 2, dtype=np.intp)
        data = PairData(X, i, i + 1)
    else:
        raise ValueError(
            f"{name} must be a 3D array of formed pairs (n_pairs, 2, n_features) or "
            f"a 2D array of index pairs with a preprocessor; got {arr.ndim}D with "
            f"shape {arr.shape}"
        )
    if data.n_pairs < min_pairs:
        raise ValueError(f"{name} is empty: at least {min_pairs} pair(s) required")
    if data.n_features < 1:
        raise ValueError(f"{name} has 0 features; at least 1 is required")
    if n_features is not None and data.n_features != n_features:
        raise ValueError(
            f"{name} has {data.n_features} features, but the estimator was fitted "
            f"with {n_features} features"
        )
    return data


def check_pair_labels(y, n_pairs, name="y"):
    """Validate pair labels: one per pair, each -1 (dissimilar) or +1 (similar).

    Returns
    -------
    ndarray of int8
    """
    if y is None:
        raise ValueError(f"{name} is required: one label (+1 or -1) per pair")
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.ravel() if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1D, got shape {np.asarray(y).shape}")
    if arr.shape[0] != n_pairs:
        raise ValueError(
            f"{name} has {arr.shape[0]} labels for {n_pairs} pairs; they must match"
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold the numbers +1 and -1, got dtype "
                         f"{arr.dtype}")
    if not np.all((arr == 1) | (arr == -1)):
        bad = arr[~((arr == 1) | (arr == -1))][0]
        raise ValueError(
            f"{name} must contain only +1 (similar) and -1 (dissimilar); found {bad}"
        )
    return arr.astype(np.int8)


def check_pair_scale(data, name="pairs", *, chunk=8192):
    """Raise ``ValueError`` if squared pair distances would overflow or underflow.

    Finite data can still break the kernels: they sum squared differences in
    float64, so differences above about ``sqrt(max / (n_pairs d))`` overflow
    to infinity, and differences whose squares are subnormal lose all
    precision (and the solvers then see a zero or singular S-matrix).  Both
    are a matter of units, so the message asks the user to rescale.  float32
    data can do neither (its range squared fits float64's many times over).
    The check reads the differences in chunks (O(chunk x d) memory), unless
    the data's largest entry and a probe of a few hundred pairs settle it.

    Parameters
    ----------
    data : PairData
    name : str
        Used in error messages.
    chunk : int
        Pairs per chunk.
    """
    X, i, j = data.X, data.i, data.j
    if X.dtype != np.float64:
        return
    info = np.finfo(np.float64)
    # Headroom of 1e-6 below the largest float leaves room for the scale of A.
    upper = np.sqrt(float(info.max) * 1e-6 / (data.n_pairs * data.n_features))
    # Squares below tiny / eps are subnormal or carry too few digits.
    lower = np.sqrt(float(info.tiny) / float(info.eps))

    def largest_in(start, size=chunk):
        sl = slice(start, start + size)
        with np.errstate(over="ignore", invalid="ignore"):
            diff = X[i[sl]] - X[j[sl]]
        return float(np.max(np.abs(diff), initial=0.0))

    if X.shape[0] <= 2 * data.n_pairs:
        # No difference exceeds twice the largest entry, and the probe's
        # largest is a lower bound: when those two settle both checks the
        # full scan (most of a small fit) is skipped.  (Whole-array
        # reductions: a per-column one costs more than the scan on narrow X.)
        # Formed pairs have two rows of X per pair, so this covers them: the
        # scan's gathers cost them 8 ms of a 40 ms fit at d=50, 1e4 pairs
        # (and 0.2 ms of a 9 ms fit with 1e3).
        bound = 2.0 * max(float(X.max()), -float(X.min()))
        if bound <= upper and largest_in(0, 256) >= lower:
            return
    largest = 0.0
    for start in range(0, data.n_pairs, chunk):
        largest = max(largest, largest_in(start))
    if largest == 0.0:
        return  # all pairs identical: the solvers report that themselves
    if not largest <= upper:
        raise ValueError(
            f"{name} has differences up to {largest:.3g}: their squared distances "
            f"overflow float64 (limit about {upper:.3g} for {data.n_pairs} pairs "
            f"of {data.n_features} features); rescale the data"
        )
    if largest < lower:
        raise ValueError(
            f"{name} has differences of at most {largest:.3g}: their squares "
            f"underflow float64 (need differences above {lower:.3g}); rescale "
            "the data"
        )


def split_pairs(data, y):
    """Split validated pairs into similar (+1) and dissimilar (-1) sets.

    Raises ``ValueError`` when either set is empty (MMC needs both), or when
    the pairs' squared distances do not fit the data's dtype (see
    :func:`check_pair_scale`); this is the last check before the solvers.
    """
    check_pair_scale(data)
    sim = y == 1
    if not sim.any():
        raise ValueError("no similar pairs (label +1): MMC needs at least one")
    if sim.all():
        raise ValueError("no dissimilar pairs (label -1): MMC needs at least one")
    return data.subset(sim), data.subset(~sim)


def check_init_matrix(init, n_features, random_state=None, X=None, name="init"):
    """Build the initial PSD Mahalanobis matrix from the ``init`` parameter.

    Parameters
    ----------
    init : {'identity', 'covariance', 'random'} or array of shape (d, d)
    n_features : int
    random_state : None, int or RandomState
    X : ndarray or None
        Points, needed for ``'covariance'``.
    name : str

    Returns
    -------
    ndarray of shape (d, d), float64
    """
    d = n_features
    if isinstance(init, str):
        if init == "identity":
            return np.eye(d)
        if init == "covariance":
            cov = np.atleast_2d(np.cov(np.unique(X, axis=0), rowvar=False))
            if not np.isfinite(cov).all():
                raise ValueError(f"{name}='covariance' needs at least two distinct "
                                 "points")
            w, V = np.linalg.eigh(cov)
            tol = max(w.max(), 0.0) * d * np.finfo(float).eps
            inv = np.where(w > tol, 1.0 / np.where(w > tol, w, 1.0), 0.0)
            return (V * inv) @ V.T
        if init == "random":
            from sklearn.datasets import make_spd_matrix

            return make_spd_matrix(d, random_state=check_random_state(random_state))
        raise ValueError(
            f"{name} must be 'identity', 'covariance', 'random' or an array of "
            f"shape ({d}, {d}); got {init!r}"
        )
    M = _float_array(init, name, ndim=2).astype(np.float64)
    if M.shape != (d, d):
        raise ValueError(f"{name} has shape {M.shape}; expected ({d}, {d}) to match "
                         f"the {d} features of the input")
    check_finite(M, name)
    scale = max(np.abs(M).max(), np.finfo(float).tiny)
    if not np.allclose(M, M.T, rtol=1e-7, atol=1e-10 * scale):
        raise ValueError(f"{name} is not symmetric")
    w = np.linalg.eigvalsh((M + M.T) / 2)
    if w.min() < -1e-10 * max(abs(w).max(), np.finfo(float).tiny) * d:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {w.min():.3g})"
        )
    if not np.any(w > 0):
        raise ValueError(f"{name} is the zero matrix; a PSD matrix with at least one "
                         "positive eigenvalue is required")
    return (M + M.T) / 2


def check_positive_int(value, name, *, minimum=1):
    """Validate an integer parameter ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_float(value, name, *, allow_zero=False):
    """Validate a finite float parameter ``> 0`` (or ``>= 0``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not np.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")
    return value
