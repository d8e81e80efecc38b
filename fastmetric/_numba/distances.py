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


@njit(parallel=True, nogil=True, cache=True)
def distances_from_gram(X, sq, G, D, near):
    """Turn the Gram matrix ``G = X X^T`` into Euclidean distances.

    Parameters
    ----------
    X : ndarray of shape (B, m)
    sq : ndarray of shape (B,)
        Squared row norms (float64).
    G : ndarray of shape (B, B)
        The Gram matrix, float64 or float32; may be ``D`` itself.
    D : ndarray of shape (B, B)
        Out: the distance matrix (zero diagonal).
    near : float
        Pairs with ``d^2 < near (|x|^2 + |y|^2)`` are recomputed from their
        difference (``NEAR`` for a float64 Gram matrix, ``NEAR32`` for float32).

    Returns
    -------
    int
        Number of ordered pairs recomputed from their difference.
    """
    B = X.shape[0]
    n_near = np.zeros(B, dtype=np.int64)
    for i in prange(B):
        for j in range(B):
            if i == j:
                D[i, j] = 0.0
                continue
            d2 = sq[i] + sq[j] - 2.0 * np.float64(G[i, j])
            if _is_near(d2, sq[i], sq[j], near):
                d2 = _direct_sq(X, i, j)
                n_near[i] += 1
            D[i, j] = np.sqrt(d2) if d2 > 0.0 else 0.0
    return n_near.sum()


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
def normalize_rows(E, eps, X, norms):
    """``X[i] = E[i] / max(||E[i]||, eps)``; ``norms[i]`` gets the divisor.

    One pass for ``fastmetric._loss_common.l2_normalize`` (same arithmetic).
    """
    B, m = E.shape
    for i in prange(B):
        s = 0.0
        for k in range(m):
            s += E[i, k] * E[i, k]
        n = max(np.sqrt(s), eps)
        norms[i] = n
        for k in range(m):
            X[i, k] = E[i, k] / n


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
