"""Numba kernels for the MMC solvers and estimators that are not BLAS-shaped.

Only ``@njit`` functions live here: the diagonal solver's passes over cached
squared differences and the accuracy threshold of
:meth:`fastmetric.base.MahalanobisMixin.calibrate_threshold`.
No validation: callers pass C-contiguous arrays of matching shape.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _diag_sq_dists(Qt, w, out):
    """``out_p = sum_k w_k Qt[k, p]`` over the features with ``w_k > 0``."""
    out[:] = 0.0
    for k in range(Qt.shape[0]):
        wk = w[k]
        if wk > 0.0:
            row = Qt[k]
            for p in range(out.size):
                out[p] += wk * row[p]


@njit(nogil=True, cache=True)
def diag_dist_sum_cached(Qt, w):
    """``sum_p sqrt(q_p . w)`` for cached squared differences ``Qt`` (d x n).

    Reads only the rows (features) where ``w > 0``.
    """
    s = np.empty(Qt.shape[1])
    _diag_sq_dists(Qt, w, s)
    f = 0.0
    for p in range(s.size):
        if s[p] > 0.0:
            f += np.sqrt(s[p])
    return f


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"}, error_model="numpy")
def diag_derivs_cached(Qt, w, grad, hdiag, c2):
    """``f = sum_p dist_p``, its gradient and the diagonal of minus its Hessian.

    ``dist_p = sqrt(q_p . w)`` with ``q_p`` the columns of the cached squared
    differences ``Qt`` (d x n); ``grad = sum_p q_p / (2 dist_p)`` and
    ``hdiag_k = sum_p q_pk^2 c2_p`` with ``c2_p = 1 / (4 dist_p^3)``, the
    per-pair weights of minus the Hessian ``sum_p c2_p q_p q_p^T`` (kept in
    ``c2`` for :func:`diag_hess_block`).  Pairs at zero distance contribute
    nothing to the derivatives.

    Parameters
    ----------
    Qt : ndarray of shape (d, n), float64
    w : ndarray of shape (d,), non-negative
    grad, hdiag : ndarray of shape (d,)
    c2 : ndarray of shape (n,)

    Returns
    -------
    f : float
    """
    d, n = Qt.shape
    s = np.empty(n)
    a = np.empty(n)
    _diag_sq_dists(Qt, w, s)
    f = 0.0
    for p in range(n):
        if s[p] > 0.0:
            dist = np.sqrt(s[p])
            f += dist
            a[p] = 0.5 / dist
            c2[p] = 2.0 * a[p] * a[p] * a[p]  # 1 / (4 dist^3), no s^1.5 underflow
        else:
            a[p] = 0.0
            c2[p] = 0.0
    for k in range(d):
        row = Qt[k]
        g = 0.0
        h = 0.0
        for p in range(n):
            g += row[p] * a[p]
            h += row[p] * row[p] * c2[p]
        grad[k] = g
        hdiag[k] = h
    return f


@njit(nogil=True, cache=True)
def diag_hess_block(Qt, c2, cols):
    """``sum_p c2_p q_p[cols] q_p[cols]^T``: minus f's Hessian on some features."""
    m = cols.size
    n = Qt.shape[1]
    root = np.sqrt(c2)
    Y = np.empty((m, n))
    for a in range(m):
        row = Qt[cols[a]]
        for p in range(n):
            Y[a, p] = row[p] * root[p]
    H = Y @ Y.T
    for a in range(m):
        for b in range(a + 1, m):
            v = 0.5 * (H[a, b] + H[b, a])
            H[a, b] = v
            H[b, a] = v
    return H


@njit(nogil=True, cache=True)
def gather_sq_diff_t(X, i, j, out):
    """``out[k, p] = (X[i[p], k] - X[j[p], k])**2`` in float64 (out is d x n)."""
    d = X.shape[1]
    for p in range(i.size):
        a = i[p]
        b = j[p]
        for k in range(d):
            diff = np.float64(X[a, k]) - np.float64(X[b, k])
            out[k, p] = diff * diff


@njit(nogil=True, cache=True)
def best_accuracy_cut(pos, neg):
    """The score cut ``c`` (pairs similar when ``score >= c``) of best accuracy.

    ``pos`` and ``neg`` are the sorted (ascending) scores of the similar and
    dissimilar pairs, not both empty.  Candidates are every score and
    ``max + 1`` (no pair similar); among equally good cuts the largest wins.
    Tied scores fall on the same side of every cut.

    Returns
    -------
    c : float
    correct : int
        Pairs classified correctly at ``c``.
    """
    n_pos, n_neg = pos.size, neg.size
    top = max(pos[n_pos - 1] if n_pos else -np.inf,
              neg[n_neg - 1] if n_neg else -np.inf)
    best_c = top + 1.0
    best = n_neg
    ip, jn = n_pos, n_neg  # pos[ip:] >= v and neg[jn:] >= v for the current v
    while ip > 0 or jn > 0:
        a = pos[ip - 1] if ip > 0 else -np.inf
        b = neg[jn - 1] if jn > 0 else -np.inf
        v = a if a > b else b
        while ip > 0 and pos[ip - 1] == v:
            ip -= 1
        while jn > 0 and neg[jn - 1] == v:
            jn -= 1
        correct = (n_pos - ip) + jn
        if correct > best:
            best = correct
            best_c = v
    return best_c, best
