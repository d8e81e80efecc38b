"""Shared plumbing of the embedding losses: validation, L2 normalisation, distances.

Every loss front-end (``fastmetric.losses``, ``fastmetric.magnet``) validates
its batch here, optionally L2-normalises it, builds the distance matrix, lets
its Numba kernel fill ``dL/dD`` and turns that back into a gradient with
respect to the embeddings.  Only validation and BLAS calls live here; the
loops are in ``fastmetric._numba``.

All loss arithmetic is float64 (batches are small next to their ``B x B``
distance matrix, and the soft maxima need the range); gradients are returned
in the embeddings' dtype.
"""

import numbers
import threading

import numpy as np

from ._numba import distances as _dk
from ._threads import numba_threads, resolve_n_jobs
from ._validation import _float_array, check_finite

# torch.nn.functional.normalize's default: rows with a smaller norm are
# divided by this instead, so a zero row stays zero instead of becoming NaN.
NORMALIZE_EPS = 1e-12


def check_embeddings(embeddings, name="embeddings", keep_float32=False):
    """Validate a batch of embeddings.

    Parameters
    ----------
    embeddings : array-like of shape (batch_size, n_dims)
    name : str
    keep_float32 : bool, default=False
        Return float32 input as it is (C-contiguous) instead of a float64 copy,
        for kernels that read either precision (a copy of a large batch costs
        fresh memory on every call).

    Returns
    -------
    E : ndarray, C-contiguous
        float64, or float32 if the input is float32 and ``keep_float32``.
    dtype : numpy dtype
        The input's float dtype (float32 kept; everything else float64), for the
        gradient returned to the caller.
    """
    E = _float_array(embeddings, name, ndim=2)
    if E.shape[0] < 1:
        raise ValueError(f"{name} is empty; a batch needs at least one row")
    if E.shape[1] < 1:
        raise ValueError(f"{name} has 0 columns; at least 1 is required")
    check_finite(E, name)
    if keep_float32 and E.dtype == np.float32:
        return np.ascontiguousarray(E), E.dtype
    return np.ascontiguousarray(E, dtype=np.float64), E.dtype


def check_labels(labels, batch_size, name="labels"):
    """Validate integer class labels, one per row of the batch.

    Returns
    -------
    ndarray of int64, shape (batch_size,)
        Labels as given (any integers; not re-encoded).
    """
    if hasattr(labels, "detach"):  # a torch tensor reaching the NumPy API
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1D array, got shape {arr.shape}")
    if arr.shape[0] != batch_size:
        raise ValueError(
            f"{name} has {arr.shape[0]} entries but the batch has {batch_size} rows"
        )
    if arr.dtype.kind not in "iu" or arr.dtype.kind == "b":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(
            arr == np.round(arr)
        ):
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer class labels, got dtype "
                            f"{arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def check_margin(value, name):
    """Validate a finite real margin (any sign)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_choice(value, name, choices):
    """Validate a string option against its allowed values."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def l2_normalize(E):
    """Rows divided by ``max(||row||, NORMALIZE_EPS)``.

    Returns
    -------
    X : ndarray
        The normalised rows.
    norms : ndarray of shape (B,)
        ``max(||row||, NORMALIZE_EPS)``, for :func:`l2_normalize_backward`.
    """
    raw = np.sqrt(np.einsum("ij,ij->i", E, E))
    norms = np.maximum(raw, NORMALIZE_EPS)
    return E / norms[:, None], norms


def l2_normalize_backward(grad_X, X, norms):
    """Gradient through :func:`l2_normalize`.

    For ``||e|| > eps``, ``x = e / ||e||`` and ``dL/de = (g - x (x.g)) / ||e||``;
    below ``eps`` the map is ``e / eps`` and the gradient ``g / eps``.
    """
    clipped = norms <= NORMALIZE_EPS
    proj = np.einsum("ij,ij->i", X, grad_X)
    proj[clipped] = 0.0
    return (grad_X - X * proj[:, None]) / norms[:, None]


# Repeated calls (a training loop) reuse their B x B work arrays.  Fresh
# pages cost ~3 us each to fault in on these machines: at B=2048 a call's
# 50-80 MB of new arrays cost 10-40 ms, at B=512 about 1 ms (measured), more
# than most of the passes over them.  Each thread keeps its own arrays, at
# most this many bytes of them (the rest are allocated per call).
WORKSPACE_BYTES = 128 * 2**20
_WORKSPACE = threading.local()


def work_array(slot, shape, dtype=np.float64):
    """An uninitialised C-contiguous array kept for the next call of this thread.

    Parameters
    ----------
    slot : str
        The array's role; one call must not use a slot twice for arrays that
        live at the same time.
    shape : tuple of int
    dtype : numpy dtype, default=np.float64

    Returns
    -------
    ndarray
        Not zeroed; the same memory is handed out again by the next request of
        ``slot`` on this thread with the same shape and dtype, so it must not
        escape the call.
    """
    cache = getattr(_WORKSPACE, "arrays", None)
    if cache is None:
        cache = _WORKSPACE.arrays = {}
    arr = cache.pop(slot, None)
    if arr is not None and arr.shape == shape and arr.dtype == dtype:
        cache[slot] = arr
        return arr
    del arr  # free the stale array before allocating its replacement
    arr = np.empty(shape, dtype=dtype)
    if arr.nbytes + sum(a.nbytes for a in cache.values()) <= WORKSPACE_BYTES:
        cache[slot] = arr
    return arr


def _fresh_array(slot, shape, dtype=np.float64):
    """:func:`work_array`'s signature, without the reuse."""
    return np.empty(shape, dtype=dtype)


def near_ratio(product_dtype):
    """The near-pair ratio for a Gram product of this precision."""
    return _dk.NEAR32 if product_dtype == np.float32 else _dk.NEAR


# Row blocks of the Numba-driven products hold about this many bytes of their
# result (it stays in L2 for the pass that consumes it); more rows per block
# amortise BLAS's packing of the shared operand.
BLOCK_BYTES = 512 * 2**10
BLOCK_ROWS = (16, 256)


def product_operand(X, product_dtype):
    """``X`` in the product's precision."""
    return X if product_dtype == np.float64 else X.astype(np.float32)


def block_scratch(slot, n_tasks, n_rows, n_cols, dtype, reuse=False):
    """Per-task scratch blocks of rows for the blocked products.

    Parameters
    ----------
    slot : str
        :func:`work_array` slot (used when ``reuse``).
    n_tasks : int
        Parallel tasks (the Numba threads of the pass).
    n_rows : int
        Rows of the full product.
    n_cols : int
        Columns of the full product (and of each block).
    dtype : numpy dtype
    reuse : bool, default=False

    Returns
    -------
    ndarray of shape (n_tasks, rows_per_block, n_cols)
    """
    itemsize = np.dtype(dtype).itemsize
    lo, hi = BLOCK_ROWS
    rows = int(min(hi, max(lo, BLOCK_BYTES // max(1, n_cols * itemsize))))
    rows = max(1, min(rows, -(-n_rows // n_tasks)))
    alloc = work_array if reuse else _fresh_array
    return alloc(slot, (n_tasks, rows, n_cols), np.dtype(dtype))


def prepare_rows(E, normalize, n_threads, product_dtype=np.float64):
    """Normalise a batch (if asked) and lay out the operands of its products.

    Parameters
    ----------
    E : ndarray of shape (B, m), float32 or float64, C-contiguous
    normalize : bool
    n_threads : int
    product_dtype : {np.float64, np.float32}, default=np.float64

    Returns
    -------
    X : ndarray of shape (B, m), float64
        The rows distances are taken of (``E`` itself if float64 and not
        normalised; else a :func:`work_array`, valid for this call only).
    norms : ndarray of shape (B,)
        The divisors (ones without normalisation).
    operands : tuple ``(sq, Xp)``
        Squared row norms and ``X`` in the product's precision: pass them on
        to :func:`distance_matrix`.
    """
    B, m = E.shape
    if not normalize and E.dtype == np.float64:
        # the caller's rows as they are (never written: they may be the user's)
        return E, np.ones(B), (np.einsum("ij,ij->i", E, E), E)
    # the rows and their float32 copy live for one call: reused buffers (fresh
    # pages for them cost more than the pass that fills them)
    X = work_array("rows64", (B, m))
    norms = np.empty(B)
    sq = np.empty(B)
    Xp = X if product_dtype == np.float64 else work_array("rows32", (B, m), np.float32)
    with numba_threads(n_threads):
        _dk.prepare_rows(E, normalize, NORMALIZE_EPS, X, norms, sq, Xp)
    return X, norms, (sq, Xp)


def distance_matrix(X, n_threads, product_dtype=np.float64, reuse=False,
                    operands=None):
    """Euclidean distance matrix of the rows of ``X`` (float64, C-contiguous).

    Parameters
    ----------
    X : ndarray of shape (B, m), float64
    n_threads : int
        Threads of the Numba pass (which also runs the product, one BLAS call
        per block of rows from each thread: call it with BLAS held at one
        thread, see ``fastmetric._threads.kernel_threads``).
    product_dtype : {np.float64, np.float32}, default=np.float64
        Precision of the Gram product.  float32 (for float32 embeddings) runs
        sgemm, about twice as fast; the distances stay float64 and the pairs
        whose Gram formula would lose float32's accuracy (``d^2`` below 1% of
        ``|x|^2 + |y|^2``) are recomputed from their difference in float64.
        Pass the same value to :func:`distance_backward`.
    reuse : bool, default=False
        Build ``D`` (and the scratch blocks) in :func:`work_array` buffers:
        ``D`` is then only valid until the next such call.
    operands : tuple, optional
        ``(sq, Xp)`` from :func:`prepare_rows`, if already at hand.

    Returns
    -------
    D : ndarray of shape (B, B)
    sq : ndarray of shape (B,)
        Squared row norms (needed by :func:`distance_backward`).
    """
    B = X.shape[0]
    alloc = work_array if reuse else _fresh_array
    if operands is None:
        Xp = product_operand(X, product_dtype)
        sq = np.einsum("ij,ij->i", X, X)
    else:
        sq, Xp = operands
    D = alloc("distances", (B, B))
    scratch = block_scratch("gram_blocks", n_threads, B, B, product_dtype, reuse)
    with numba_threads(n_threads):
        _dk.gram_distances(X, Xp, sq, near_ratio(product_dtype), scratch, D)
    return D, sq


def distance_backward(C, D, X, sq, n_threads, product_dtype=np.float64, reuse=False,
                      Xp=None):
    """Gradient with respect to ``X`` from ``C = dL/dD`` (ordered pairs).

    ``C`` is overwritten.  Zero-distance pairs contribute nothing.  With
    ``product_dtype=np.float32`` the product ``W X`` runs in float32 (the
    weights and row sums stay float64, near pairs are summed from their
    differences in float64); use the value given to :func:`distance_matrix`.
    With ``reuse`` the float32 weights and the returned gradient are
    :func:`work_array` buffers (valid until the next such call).  ``Xp`` is
    ``X`` in the product's precision if at hand (see :func:`prepare_rows`).
    Like :func:`distance_matrix`, call it with BLAS held at one thread.
    """
    near = near_ratio(product_dtype)
    alloc = work_array if reuse else _fresh_array
    grad = alloc("grad64", X.shape)
    grad.fill(0.0)
    rs = np.empty(X.shape[0])
    with numba_threads(n_threads):
        if _dk.symmetric_weights(C, D, sq, near):
            _dk.move_near_pairs(C, D, X, sq, grad, near)
        if product_dtype == np.float32:
            W = alloc("gram32", C.shape, np.float32)
            _dk.row_sums_to_f32(C, rs, W)
            if Xp is None:
                Xp = X.astype(np.float32)
        else:
            W = C
            _dk.row_sums(C, rs)
            Xp = X if Xp is None else Xp
        scratch = block_scratch("product_blocks", n_threads, X.shape[0], X.shape[1],
                                product_dtype, reuse)
        _dk.weights_times_x(W, rs, X, Xp, scratch, grad)
    return grad


def resolve_threads(n_jobs):
    """``n_jobs`` to a Numba thread count (never above Numba's pool size)."""
    return resolve_n_jobs(n_jobs)
