"""Compiled spectral projected gradient for small exact-MMC problems.

Only ``@njit`` functions live here; :func:`fastmetric._mmc_exact.solve_exact`
calls :func:`spg_spectraplex` on the whitened dissimilar differences when the
problem is small enough that Python's per-iteration overhead, not the pair
passes or the eigendecompositions, would dominate.  No validation: callers
pass C-contiguous float64 arrays of matching shape.
"""

import numpy as np
from numba import njit

# Rows of Z per BLAS call: temporaries stay O(_ROWS x d).
_ROWS = 2048
_EPS = np.finfo(np.float64).eps
_TINY = np.finfo(np.float64).tiny


@njit(nogil=True, cache=True)
def value_grad(Z, B, G, dists):
    """``f(B) = sum_p sqrt(z_p^T B z_p)`` and its gradient, blockwise.

    Parameters
    ----------
    Z : ndarray of shape (n, d)
        Whitened differences, one pair per row.
    B : ndarray of shape (d, d), symmetric PSD
    G : ndarray of shape (d, d)
        Receives ``sum_p z_p z_p^T / (2 dist_p)`` over pairs with ``dist_p > 0``.
    dists : ndarray of shape (n,)
        Receives the distances.

    Returns
    -------
    f : float
    """
    n, d = Z.shape
    G[:, :] = 0.0
    f = 0.0
    for start in range(0, n, _ROWS):
        stop = min(start + _ROWS, n)
        Zb = Z[start:stop]
        Y = Zb @ B
        for p in range(stop - start):
            s = 0.0
            for k in range(d):
                s += Y[p, k] * Zb[p, k]
            dist = np.sqrt(s) if s > 0.0 else 0.0
            dists[start + p] = dist
            f += dist
            w = 0.5 / dist if dist > 0.0 else 0.0
            for k in range(d):
                Y[p, k] = Zb[p, k] * w
        G += Y.T @ Zb
    for a in range(d):
        for b in range(a + 1, d):
            m = 0.5 * (G[a, b] + G[b, a])
            G[a, b] = m
            G[b, a] = m
    return f


@njit(nogil=True, cache=True)
def fw_gap(f, G, dists, n_identical):
    """Relative Frank-Wolfe gap ``(lambda_max(G) - f / 2) / f``, certified.

    ``inf`` when a pair other than the ``n_identical`` pairs of identical
    points sits at distance 0 (its term has no gradient there).
    """
    zeros = 0
    for p in range(dists.size):
        if dists[p] == 0.0:
            zeros += 1
    if zeros > n_identical:
        return np.inf
    top = np.linalg.eigvalsh(G)[-1]
    return max(top - 0.5 * f, 0.0) / max(f, _TINY)


@njit(nogil=True, cache=True)
def project_capped_simplex(lam):
    """Euclidean projection of ``lam`` onto ``{x >= 0, sum(x) <= 1}``."""
    d = lam.size
    out = np.maximum(lam, 0.0)
    if out.sum() <= 1.0:
        return out
    u = np.sort(lam)[::-1]
    css = 0.0
    theta = u[0] - 1.0
    for k in range(d):
        css += u[k]
        cand = (css - 1.0) / (k + 1)
        if u[k] - cand > 0.0:
            theta = cand
    for k in range(d):
        out[k] = max(lam[k] - theta, 0.0)
    return out


@njit(nogil=True, cache=True)
def spg_spectraplex(Z, B, max_iter, target, n_identical, patience, history,
                    gaps):
    """Maximise ``f(B) = sum_p sqrt(z_p^T B z_p)`` over ``{B PSD, trace B <= 1}``.

    Spectral projected gradient, as the Python loop of
    :func:`fastmetric._mmc_exact.solve_exact` runs it: Barzilai-Borwein
    steps, projection by one eigendecomposition and a capped-simplex
    projection of the eigenvalues, non-monotone Armijo backtracking over the
    last 10 values, the Frank-Wolfe gap as the certificate.

    Parameters
    ----------
    Z : ndarray of shape (n, d)
        Whitened dissimilar differences.
    B : ndarray of shape (d, d)
        Start, on the spectraplex; overwritten with the last iterate.
    max_iter : int
    target : float
        Stop once the certified relative gap is at most this.
    n_identical : int
        Pairs with ``z_p = 0`` (see :func:`fw_gap`).
    patience : int
        After this many iterations, stop when the linear rate of the gaps
        predicts more than ``patience`` further iterations (the caller then
        switches to Newton).
    history, gaps : ndarray of shape (max_iter,)
        Receive f and the gap after each iteration.

    Returns
    -------
    n_iter : int
    f : float
    gap : float
    G : ndarray of shape (d, d)
        The gradient at the returned B.
    status : int
        0 certified, 1 out of iterations or patience, 2 stalled (no step of
        at least 2^-20 of the projection passes the line search), 3 every
        distance is 0 at the start (nothing done).
    """
    n, d = Z.shape
    G = np.empty((d, d))
    G_new = np.empty((d, d))
    dists = np.empty(n)
    f = value_grad(Z, B, G, dists)
    if not f > 0.0:
        return 0, f, np.inf, G, 3
    gap = fw_gap(f, G, dists, n_identical)
    recent = np.full(10, f)
    gnorm = np.sqrt(np.sum(G * G))
    alpha = 1.0 / max(gnorm, _TINY)
    n_iter = 0
    B_new = np.empty((d, d))
    while gap > target and n_iter < max_iter:
        M = B + alpha * G
        M = 0.5 * (M + M.T)
        lam, V = np.linalg.eigh(M)
        lam = project_capped_simplex(lam)
        trial = (V * lam) @ V.T
        direction = trial - B
        slope = np.sum(G * direction)
        ref = recent.max()
        slack = 8.0 * _EPS * abs(ref)
        step = 1.0
        while True:
            B_new[:, :] = B + step * direction
            f_new = value_grad(Z, B_new, G_new, dists)
            if f_new >= ref + 1e-4 * step * slope - slack:
                break
            step *= 0.5
            if step < 2.0 ** -20:
                # stalled: restore the distances of B for the caller
                value_grad(Z, B, G, dists)
                return n_iter, f, gap, G, 2
        s_vec = B_new - B
        sy = -np.sum(s_vec * (G_new - G))
        ss = np.sum(s_vec * s_vec)
        alpha = ss / sy if sy > 0 else 1e3 * alpha
        g_norm = max(np.sqrt(np.sum(G_new * G_new)), 1e-300)
        alpha = min(max(alpha, 1e-12 / g_norm), 1e12 / g_norm)
        B[:, :] = B_new
        G[:, :] = G_new
        f = f_new
        recent[n_iter % 10] = f
        gap = fw_gap(f, G, dists, n_identical)
        history[n_iter] = f
        gaps[n_iter] = gap
        n_iter += 1
        if n_iter >= patience and gap > target and np.isfinite(gap):
            earlier = gaps[n_iter - 8:n_iter - 5].min()
            latest = gaps[n_iter - 3:n_iter].min()
            if earlier > 0 and latest > 0:
                rate = (latest / earlier) ** 0.2
                if rate >= 0.95 or np.log(target / gap) / np.log(rate) > patience:
                    return n_iter, f, gap, G, 1
    return n_iter, f, gap, G, 0 if gap <= target else 1


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


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
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
            c2[p] = 0.25 / (s[p] * dist)
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
def gather_diff(X, i, j, out):
    """``out[p] = X[i[p]] - X[j[p]]`` in float64."""
    d = X.shape[1]
    for p in range(i.size):
        a = i[p]
        b = j[p]
        for k in range(d):
            out[p, k] = np.float64(X[a, k]) - np.float64(X[b, k])


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
