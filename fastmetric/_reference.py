"""Plain-NumPy reference implementations of the MMC objectives and exact solver.

Nothing here calls a compiled kernel: every function is a few lines of NumPy
on formed arrays (the data ``X`` and integer index arrays of shape
``(n_pairs, 2)`` naming the similar and dissimilar pairs).  The tests use them
as ground truth for the kernels and solvers, and the benchmarks use
:func:`mmc_exact_numpy` as "the 60-line solver a user could write", the
baseline the compiled solver must beat.  Being a reference, it favours
clarity over memory: it forms the ``n_pairs x d`` differences.  It does no
input validation and must not be used by the estimators.
"""

import numpy as np


def _differences(X, pairs):
    """Rows ``X[a] - X[b]`` for the index pairs ``(a, b)``, as float64."""
    pairs = np.asarray(pairs)
    X = np.asarray(X, dtype=np.float64)
    return X[pairs[:, 0]] - X[pairs[:, 1]]


def sqrt_dist_sum_and_grad_numpy(diffs, A):
    """``sum_p sqrt(z_p^T A z_p)`` over difference rows and its gradient in A.

    Parameters
    ----------
    diffs : ndarray of shape (n_pairs, d)
        One pair difference ``z_p = x - y`` per row.
    A : ndarray of shape (d, d), PSD

    Returns
    -------
    f : float
    grad : ndarray of shape (d, d)
        ``sum_p z_p z_p^T / (2 sqrt(z_p^T A z_p))``; pairs at zero distance
        contribute nothing (the square root has no derivative there).
    """
    sq = np.maximum(np.einsum("pk,pk->p", diffs @ A, diffs), 0.0)
    dist = np.sqrt(sq)
    weight = np.zeros_like(dist)
    np.divide(0.5, dist, out=weight, where=dist > 0)
    return float(dist.sum()), (diffs * weight[:, None]).T @ diffs


def mmc_objective_numpy(X, sim, dis, A):
    """Scale-free MMC objective ``J(A) = sum_D ||x-y||_A / sqrt(sum_S ||x-y||_A^2)``.

    Parameters
    ----------
    X : ndarray of shape (n_points, d)
    sim, dis : ndarray of int, shape (n_similar, 2) and (n_dissimilar, 2)
        Index pairs into ``X``.
    A : ndarray of shape (d, d), PSD

    Returns
    -------
    float
        ``inf`` if every similar pair has zero distance but some dissimilar
        pair does not; 0 if both sums vanish.
    """
    A = np.asarray(A, dtype=np.float64)
    zs, zd = _differences(X, sim), _differences(X, dis)
    s_sim = float(np.einsum("pk,pk->", zs @ A, zs))
    f_dis = float(np.sqrt(np.maximum(np.einsum("pk,pk->p", zd @ A, zd), 0.0)).sum())
    if s_sim <= 0:
        return np.inf if f_dis > 0 else 0.0
    return f_dis / np.sqrt(s_sim)


def mmc_diagonal_objective_numpy(X, sim, dis, w, c=1.0):
    """Diagonal MMC objective ``g(w) = sum_S ||x-y||^2_w - c log(sum_D ||x-y||_w)``.

    Parameters
    ----------
    X : ndarray of shape (n_points, d)
    sim, dis : ndarray of int, shape (n_similar, 2) and (n_dissimilar, 2)
    w : ndarray of shape (d,), non-negative feature weights
    c : float, default=1.0

    Returns
    -------
    float
        ``inf`` when every dissimilar pair has zero distance.
    """
    w = np.asarray(w, dtype=np.float64)
    zs, zd = _differences(X, sim), _differences(X, dis)
    f_dis = float(np.sqrt((zd**2) @ w).sum())
    if not f_dis > 0:
        return np.inf
    return float(((zs**2) @ w).sum()) - c * np.log(f_dis)


def _project_spectraplex(M):
    """Frobenius projection of a symmetric M onto ``{B PSD, trace(B) <= 1}``.

    One ``eigh``; the eigenvalues are projected onto the capped simplex
    ``{x >= 0, sum(x) <= 1}`` by sorting.
    """
    lam, V = np.linalg.eigh((M + M.T) / 2)
    proj = np.maximum(lam, 0.0)
    if proj.sum() > 1.0:
        desc = lam[::-1]
        excess = (np.cumsum(desc) - 1.0) / np.arange(1, lam.size + 1)
        theta = excess[np.nonzero(desc > excess)[0][-1]]
        proj = np.maximum(lam - theta, 0.0)
    return (V * proj) @ V.T


def mmc_exact_numpy(X, sim, dis, *, shrinkage=0.0, max_iter=5000, gap_tol=1e-12):
    """Solve full-matrix MMC to optimality with plain NumPy.

    Whitening by the S-matrix ``M_S = sum_S (x-y)(x-y)^T`` (``P = V mu^{-1/2}``
    from ``eigh(M_S) = (mu, V)``) turns "maximise ``sum_D ||x-y||_A`` subject to
    ``sum_S ||x-y||_A^2 <= t``, A PSD" into maximising the concave
    ``f(B) = sum_D sqrt(z^T B z)`` (``z = P^T (x-y)``) over the spectraplex
    ``{B PSD, trace(B) <= 1}``, with ``A = P B P^T``.  That is solved by
    projected gradient ascent with Barzilai-Borwein steps and a non-monotone
    Armijo line search (one ``eigh`` per projection), until the relative
    Frank-Wolfe duality gap ``(lambda_max(grad) - <grad, B>) / f`` -- an upper
    bound on ``(f* - f) / f`` when no dissimilar pair sits at zero distance --
    is below ``gap_tol``.

    Parameters
    ----------
    X : ndarray of shape (n_points, d)
    sim, dis : ndarray of int, shape (n_similar, 2) and (n_dissimilar, 2)
        Index pairs into ``X``.
    shrinkage : float in [0, 1), default=0.0
        Whiten by ``(1 - s) M_S + s trace(M_S) / d I`` instead of ``M_S``.
    max_iter : int, default=5000
        Maximum number of projected-gradient iterations.
    gap_tol : float, default=1e-12
        Target relative duality gap.

    Returns
    -------
    A : ndarray of shape (d, d)
        The optimal matrix, scaled as metric-learn scales its result with the
        identity as init: ``sum_S ||x-y||_A^2 = sum_S ||x-y||^2 / 100``.
    n_iter : int
        Iterations run.
    gap : float
        Final relative duality gap.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 3))
    >>> sim = rng.integers(0, 40, size=(30, 2))
    >>> dis = rng.integers(0, 40, size=(30, 2))
    >>> A, n_iter, gap = mmc_exact_numpy(X, sim, dis, gap_tol=1e-10)
    >>> bool(gap <= 1e-10)
    True
    """
    zs, zd = _differences(X, sim), _differences(X, dis)
    d = zs.shape[1]
    M_S = zs.T @ zs
    M = (1.0 - shrinkage) * M_S + shrinkage * np.trace(M_S) / d * np.eye(d)
    mu, V = np.linalg.eigh(M)
    # Directions the similar pairs never vary in are unbounded; floor them so
    # the whitening stays finite (the compiled solver warns about this case).
    mu = np.maximum(mu, mu.max() * 1e-12)
    P = V / np.sqrt(mu)
    Z = zd @ P

    # Start from the identity (metric-learn's default init): A = I is
    # B = P^-1 P^-T = diag(mu), scaled onto the spectraplex.
    B = np.diag(mu / mu.sum())
    f, G = sqrt_dist_sum_and_grad_numpy(Z, B)
    step = 1.0 / np.linalg.norm(G)
    recent = [f]

    def rel_gap(f_, G_, B_):
        return max(np.linalg.eigvalsh(G_)[-1] - np.sum(G_ * B_), 0.0) / f_

    gap = rel_gap(f, G, B)
    n_iter = 0
    while gap > gap_tol and n_iter < max_iter:
        n_iter += 1
        direction = _project_spectraplex(B + step * G) - B
        slope = np.sum(G * direction)
        # f is only known to a few ulps; near the optimum the predicted ascent
        # is below that, so the test tolerates a rounding-sized decrease.
        reference = max(recent[-10:]) - 8 * np.finfo(float).eps * f
        t = 1.0
        B_new = B + direction
        f_new, G_new = sqrt_dist_sum_and_grad_numpy(Z, B_new)
        while f_new < reference + 1e-4 * t * slope and t >= 1e-10:
            t /= 2
            B_new = B + t * direction
            f_new, G_new = sqrt_dist_sum_and_grad_numpy(Z, B_new)
        if t < 1e-10:
            break  # no ascent left at working precision
        s, y = B_new - B, G_new - G
        sy = -np.sum(s * y)  # f is concave, so -<s, y> >= 0
        step = np.sum(s * s) / sy if sy > 0 else 1e3 * step
        B, f, G = B_new, f_new, G_new
        recent.append(f)
        gap = rel_gap(f, G, B)

    A = P @ B @ P.T
    A = (A + A.T) / 2
    A *= np.trace(M_S) / 100.0 / np.sum(A * M_S)
    return A, n_iter, gap
