"""Numba kernels for Euclidean distance matrices of a batch and their backward pass.

Also the two row passes around them: the L2 normalisation of the batch and
the gradient's way back through it (fused with the loss's final scaling).

Only ``@njit`` functions live here; ``fastmetric._loss_common`` calls them after
validation.  All arrays are C-contiguous float64; no checks are made.

Distances come from the Gram matrix (one BLAS call by the caller), which loses
relative accuracy when two points are close: ``|x|^2 + |y|^2 - 2 x.y`` cancels.
Pairs whose squared distance falls below ``NEAR * (|x|^2 + |y|^2)`` are
therefore recomputed from the difference, and their gradient is assembled from
the difference too, so near-duplicates get accurate distances and finite,
accurate gradients.
"""

import numpy as np
from numba import njit, prange

# Below this ratio of d^2 to |x|^2 + |y|^2 the Gram formula has lost more than
# about 1e-12 relative accuracy in float64; recompute from the difference.
NEAR = 1e-4
# The same bound for a float32 Gram matrix (sgemm: ~1e-7 relative error in
# x.y, so d^2 keeps ~1e-5 relative accuracy above this ratio).
NEAR32 = 1e-2


@njit(nogil=True, cache=True)
def _is_near(d2, sq_i, sq_j, near):
    return d2 < near * (sq_i + sq_j)


@njit(nogil=True, cache=True)
def _direct_sq(X, i, j):
    s = 0.0
    for k in range(X.shape[1]):
        t = X[i, k] - X[j, k]
        s += t * t
    return s


@njit(nogil=True, cache=True)
def row_from_gram(X, sq, Gi, i, near, single, out):
    """Row ``i`` of the distance matrix from row ``i`` of the Gram matrix.

    ``d_ij^2 = |x_i|^2 + |x_j|^2 - 2 G_ij``, with near pairs (see the module
    docstring) recomputed from their difference; branch-free loops (the
    compiler vectorises them) and a scalar pass only for rows that hold a
    near pair besides the diagonal.

    Parameters
    ----------
    X : ndarray of shape (B, m)
    sq : ndarray of shape (B,)
    Gi : ndarray of shape (B,)
        ``X_i . X_j`` for every ``j`` (float32 or float64).
    i : int
    near : float
    single : bool
        ``Gi`` comes from a float32 product: take the square roots in float32
        (those of the pairs recomputed from their difference in float64).
    out : ndarray of shape (B,)
        Out: the distances ``d_ij`` (``out[i] = 0``).

    Returns
    -------
    int
        Number of entries recomputed from the difference.
    """
    B = out.shape[0]
    sqi = sq[i]
    n_near = 0
    for j in range(B):
        d2 = (sqi + sq[j]) - 2.0 * np.float64(Gi[j])
        n_near += d2 < near * (sqi + sq[j])
        out[j] = d2
    # the diagonal is near unless rounding says otherwise: test it alone
    n_near -= out[i] < near * (sqi + sqi)
    if single:
        # a float32 product's d^2 is accurate to ~1e-5 relative (outside the
        # near pairs, redone below): a float32 square root loses nothing and
        # is about three times faster than float64's
        for j in range(B):
            v = out[j]
            v = v if v > 0.0 else 0.0
            # (float32 overflows above 3.4e38, which a finite float32 product
            # can reach: such entries keep a float64 root)
            out[j] = np.sqrt(np.float32(v)) if v < 1e38 else np.sqrt(v)
    else:
        for j in range(B):
            v = out[j]
            out[j] = np.sqrt(v if v > 0.0 else 0.0)
    out[i] = 0.0
    recomputed = 0
    if n_near > 0:
        for j in range(B):
            if j != i:
                dj = out[j]
                if dj * dj < near * (sqi + sq[j]):
                    out[j] = np.sqrt(_direct_sq(X, i, j))
                    recomputed += 1
    return recomputed


@njit(nogil=True, cache=True)
def n_blocks(B, rows_per_block):
    """Number of row blocks of ``rows_per_block`` rows covering ``B`` rows."""
    return (B + rows_per_block - 1) // rows_per_block


@njit(parallel=True, nogil=True, cache=True)
def gram_distances(X, Xp, sq, near, scratch, D):
    """Distance matrix from a Gram product computed block by block, in parallel.

    Each task takes row blocks ``t, t + n_tasks, ...`` of ``scratch.shape[1]``
    rows, multiplies them into its own scratch block (one BLAS call from
    this thread, so the product runs on every core without BLAS's own thread
    pool) and turns them into distances while they are in cache.

    Parameters
    ----------
    X : ndarray of shape (B, m), float64
    Xp : ndarray of shape (B, m)
        ``X`` in the product's precision (float32 or float64).
    sq : ndarray of shape (B,)
    near : float
    scratch : ndarray of shape (n_tasks, rows_per_block, B), Xp's dtype
    D : ndarray of shape (B, B)
        Out.

    Returns
    -------
    int
        Number of ordered pairs recomputed from their difference.
    """
    B = X.shape[0]
    n_tasks, rb, _ = scratch.shape
    nb = n_blocks(B, rb)
    single = Xp.itemsize == 4
    counts = np.zeros(n_tasks, dtype=np.int64)
    for t in prange(n_tasks):
        for b in range(t, nb, n_tasks):
            i0 = b * rb
            i1 = min(B, i0 + rb)
            G = scratch[t, :i1 - i0]
            np.dot(Xp[i0:i1], Xp.T, G)
            for i in range(i0, i1):
                counts[t] += row_from_gram(X, sq, G[i - i0], i, near, single, D[i])
    return counts.sum()


@njit(parallel=True, nogil=True, cache=True)
def weights_times_x(W, rs, X, Xp, scratch, grad):
    """``grad += rs * X - W Xp`` by row blocks, one BLAS call per block.

    Parameters
    ----------
    W : ndarray of shape (B, B)
        Symmetric weights in the product's precision.
    rs : ndarray of shape (B,)
        Row sums of ``W`` (float64).
    X : ndarray of shape (B, m), float64
    Xp : ndarray of shape (B, m)
        ``X`` in ``W``'s precision.
    scratch : ndarray of shape (n_tasks, rows_per_block, m), Xp's dtype
    grad : ndarray of shape (B, m)
        Accumulated into.
    """
    B, m = X.shape
    n_tasks, rb, _ = scratch.shape
    nb = n_blocks(B, rb)
    for t in prange(n_tasks):
        for b in range(t, nb, n_tasks):
            i0 = b * rb
            i1 = min(B, i0 + rb)
            P = scratch[t, :i1 - i0]
            np.dot(W[i0:i1], Xp, P)
            for i in range(i0, i1):
                for k in range(m):
                    grad[i, k] += rs[i] * X[i, k] - np.float64(P[i - i0, k])


@njit(parallel=True, nogil=True, cache=True)
def row_sums(W, out):
    """``out[i] = sum_j W[i, j]``."""
    for i in prange(W.shape[0]):
        s = 0.0
        for j in range(W.shape[1]):
            s += W[i, j]
        out[i] = s


@njit(parallel=True, nogil=True, cache=True)
def row_sums_to_f32(W, out, W32):
    """``out[i] = sum_j W[i, j]`` (float64) and ``W32 = W`` rounded to float32."""
    for i in prange(W.shape[0]):
        s = 0.0
        for j in range(W.shape[1]):
            w = W[i, j]
            s += w
            W32[i, j] = w
        out[i] = s


@njit(nogil=True, cache=True)
def move_near_pairs(W, D, X, sq, grad, near):
    """Take near pairs out of ``W`` and add their gradient from the difference.

    ``rowsum(W) x_i - (W X)_i`` cancels badly when ``W[i, j]`` is large (tiny
    distance); for those pairs ``W[i, j] (x_i - x_j)`` is added to ``grad``
    directly and their weight is zeroed.  Serial: near pairs are rare.
    """
    B, m = X.shape
    for i in range(B):
        for j in range(i + 1, B):
            d = D[i, j]
            if _is_near(d * d, sq[i], sq[j], near):
                w = W[i, j]
                if w != 0.0:
                    for k in range(m):
                        t = w * (X[i, k] - X[j, k])
                        grad[i, k] += t
                        grad[j, k] -= t
                W[i, j] = 0.0
                W[j, i] = 0.0


# Square tiles of this side keep both the (i, j) and the transposed (j, i)
# block of the weights pass in L1 and in the TLB.
TILE = 16


@njit(nogil=True, cache=True)
def _weights_tile_row(C, D, sq, ti, n_tiles, near):
    B = C.shape[0]
    i0 = ti * TILE
    i1 = min(B, i0 + TILE)
    n_near = 0
    for tj in range(ti, n_tiles):
        j0 = tj * TILE
        j1 = min(B, j0 + TILE)
        for i in range(i0, i1):
            for j in range(max(j0, i + 1), j1):
                d = D[i, j]
                w = 0.0
                if d > 0.0:
                    w = (C[i, j] + C[j, i]) / d
                n_near += _is_near(d * d, sq[i], sq[j], near)
                C[i, j] = w
                C[j, i] = w
    return n_near


@njit(parallel=True, nogil=True, cache=True)
def symmetric_weights(C, D, sq, near):
    """Fold ``dL/dD`` into symmetric weights ``W = (C + C^T) / D``, in place.

    ``W[i, j]`` multiplies ``x_i - x_j`` in the gradient of row ``i``.  Pairs at
    zero distance get weight 0 (the subgradient PyTorch's ``cdist`` takes).
    Works by square tiles (the transposed block stays in cache) and counts the
    near pairs on the way.

    Parameters
    ----------
    C : ndarray of shape (B, B)
        ``dL/dD[i, j]`` for each ordered pair; overwritten with ``W``.
    D : ndarray of shape (B, B)
        The distance matrix.
    sq : ndarray of shape (B,)
        Squared row norms.
    near : float
        The near-pair ratio the distances were built with.

    Returns
    -------
    int
        Number of pairs ``i < j`` that :func:`move_near_pairs` would move; when
        0 that serial pass can be skipped.
    """
    B = C.shape[0]
    n_tiles = (B + TILE - 1) // TILE
    half = (n_tiles + 1) // 2
    counts = np.zeros(half, dtype=np.int64)
    # tile row t holds n_tiles - t tiles: pair row t with row n_tiles - 1 - t
    for t in prange(half):
        c = _weights_tile_row(C, D, sq, t, n_tiles, near)
        u = n_tiles - 1 - t
        if u != t:
            c += _weights_tile_row(C, D, sq, u, n_tiles, near)
        counts[t] = c
    for i in range(B):
        C[i, i] = 0.0
    return counts.sum()


@njit(parallel=True, nogil=True, cache=True)
def prepare_rows(E, normalize, eps, X, norms, sq, Xp):
    """Everything the distance kernels take from a batch, in one pass.

    ``E`` may be float32 (read as float64).  ``X`` = ``E`` with each row
    divided by ``max(||row||, eps)`` if ``normalize`` (the arithmetic of
    ``fastmetric._loss_common.l2_normalize``; else a copy), ``norms`` the
    divisors (1 without normalisation), ``sq`` the squared norms of ``X``'s
    rows and ``Xp`` = ``X`` in the product's precision.  ``Xp`` may be
    ``X``; ``X`` must not be ``E`` (the caller's array).
    """
    B, m = E.shape
    for i in prange(B):
        n = 1.0
        if normalize:
            s = 0.0
            for k in range(m):
                e = np.float64(E[i, k])
                s += e * e
            n = max(np.sqrt(s), eps)
        norms[i] = n
        s = 0.0
        for k in range(m):
            x = np.float64(E[i, k]) / n if normalize else np.float64(E[i, k])
            X[i, k] = x
            s += x * x
            Xp[i, k] = x
        sq[i] = s


@njit(parallel=True, nogil=True, cache=True)
def finish_gradient(G1, w1, G2, w2, X, norms, eps, normalize, out):
    """``out = w1 G1 + w2 G2``, taken back through the L2 normalisation.

    With ``normalize`` each row ``g`` becomes ``(g - x (x.g)) / norm`` (the
    projection is skipped for rows whose norm was clipped to ``eps``), as
    ``fastmetric._loss_common.l2_normalize_backward``; ``out`` may be float32
    (the caller's dtype), the arithmetic is float64.
    """
    B, m = X.shape
    for i in prange(B):
        proj = 0.0
        if normalize and norms[i] > eps:
            for k in range(m):
                proj += X[i, k] * (w1 * G1[i, k] + w2 * G2[i, k])
        for k in range(m):
            g = w1 * G1[i, k] + w2 * G2[i, k]
            if normalize:
                g = (g - X[i, k] * proj) / norms[i]
            out[i, k] = g
