"""Shared pieces of the MMC solvers: the result type and the kernel front-ends.

Each front-end picks the kernel's thread count from the work of the call
(:func:`fastmetric._threads.threads_for`) and runs it with BLAS limited to one
thread (a no-op inside an estimator's fit, which holds that limit throughout).

The front-ends call the compiled pair kernels (``fastmetric._pairs``) and
LAPACK (``fastmetric._linalg``) on validated :class:`PairData`; the kernels
read the data in its dtype (float32 or float64) and compute and return
float64.  No validation happens here.
"""

import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from . import _linalg, _pairs
from ._threads import kernel_threads, threads_for


@dataclass
class MMCResult:
    """Outcome of an MMC solver.

    Attributes
    ----------
    A : ndarray of shape (d, d)
        The learned Mahalanobis matrix (float64, symmetric PSD).
    n_iter : int
        Outer iterations run.
    converged : bool
        Whether the solver's stopping rule was met within ``max_iter``.
    objective : float
        The solver's final objective value (see each solver).
    history : list of float
        The objective after each outer iteration.
    gap : float or None
        For :func:`solve_exact`, the certified relative duality gap.
    factor : ndarray of shape (d, r) or None
        For :func:`solve_exact`, K with ``K @ K.T == A`` to rounding (A's
        rank at most r), which gives ``components_`` without a d x d
        eigendecomposition.
    """

    A: np.ndarray
    n_iter: int
    converged: bool
    objective: float
    history: list = field(default_factory=list)
    gap: float | None = None
    factor: np.ndarray | None = None


# ----------------------------------------------------------------------------
# Kernel front-ends (data read in its dtype; all arithmetic in float64).
# ----------------------------------------------------------------------------


def s_matrix(pairs, n_threads=1):
    """``sum_p (x_i - x_j)(x_i - x_j)^T`` over the pairs, as float64 (d, d)."""
    d = pairs.n_features
    out = np.empty((d, d))
    nt = threads_for(n_threads, 2.0 * pairs.n_pairs * d * d)
    with kernel_threads(nt):
        _pairs.weighted_outer_sum(pairs.X, pairs.i, pairs.j, np.empty(0), out, nt)
    return out


def dist_sum_and_grad(pairs, A, eps=0.0, n_threads=1):
    """``sum_p ||x_i - x_j||_A`` and its gradient with respect to A.

    The gradient is ``sum_p (x_i - x_j)(x_i - x_j)^T / (2 (||x_i - x_j||_A + eps))``;
    pairs at zero distance contribute nothing when ``eps == 0``.
    """
    d = pairs.n_features
    grad = np.empty((d, d))
    A = np.ascontiguousarray(A, dtype=np.float64)
    nt = threads_for(n_threads, 4.0 * pairs.n_pairs * d * d)
    with kernel_threads(nt):
        f = _pairs.sqrt_dist_sum_grad(pairs.X, pairs.i, pairs.j, A, grad,
                                      float(eps), nt)
    return f, grad


_FACTOR_FLOPS_PER_THREAD = 5e5
_FACTOR_PAIR_OVERHEAD = 500.0


def factor_dist_sum_and_grad(pairs, K, dists=None, n_threads=1, grad=True, eps=0.0):
    """``sum_p ||K^T (x_i - x_j)||``, its gradient in ``A = K K^T`` and the distances.

    The low-rank form of :func:`dist_sum_and_grad` (``eps`` as there): 2 n d r
    flops for the distances instead of 2 n d^2.  ``dists`` (shape (n_pairs,),
    float64), when given, receives every pair's distance.  With ``grad=False``
    only the value is computed and None is returned for the gradient.
    """
    d = pairs.n_features
    K = np.ascontiguousarray(K, dtype=np.float64)
    if K.shape[1] == 0:  # A = 0
        K = np.zeros((d, 1))
    out = np.empty((d, d) if grad else (0, 0))
    if dists is None:
        dists = np.empty(0)
    # Work of the pass: its flops plus, per pair, the gather, the square
    # root and the tiny BLAS calls' share, which dominate at a few features
    # (d=5: about 60 ns a pair, the time of some 500 flops here).  Measured
    # on two cores: a second thread pays from about 3e5 flops-worth, so from
    # 1e6 (two threads per 5e5) it is a clear gain (d=50, 1e3 pairs: 69 ->
    # 44 us a pass; d=5, 2000 pairs: 142 -> 103 us).
    r = K.shape[1]
    flops = pairs.n_pairs * (2.0 * d * r + (d * d if grad else 0.0)
                             + _FACTOR_PAIR_OVERHEAD)
    points = _points_flops(pairs, r, grad)
    kernel = _pairs.sqrt_dist_sum_grad_factor
    if points is not None and points < flops:
        kernel, flops = _pairs.sqrt_dist_sum_grad_points, points
    nt = threads_for(n_threads, flops, _FACTOR_FLOPS_PER_THREAD)
    with kernel_threads(nt):
        f = kernel(pairs.X, pairs.i, pairs.j, K, out, dists, nt, float(eps))
    return f, (out if grad else None)


# The points route (``_pairs.sqrt_dist_sum_grad_points``) is taken from this
# many features on, where its cost model below is measured to hold on two
# cores; with fewer, its per-pair steps (a random row read and a scatter) cost
# as much as the pair route's whole work.  Its buffers are n_points x (2 d + r
# + 1) doubles, capped here (16 MB).
_POINTS_MIN_FEATURES = 24
_POINTS_MAX_DOUBLES = 2e6


def _points_flops(pairs, r, grad):
    """The points route's work in the pair route's flop units, or None when it
    does not apply.

    Per point: T = (X - m) K, centring and, for the gradient, the d x d
    product; per pair: the distance from T (r), the scatter (about 12 d with
    its random row access, measured) and the fixed costs of the loop (300).
    Measured at d=50, rank 12, 2000 points and 5000 pairs: 1.8 -> 1.3 ms on
    one thread and 0.97 -> 0.76 ms on two; with 5e4 pairs 9.1 -> 3.1 ms.
    """
    n, d = pairs.X.shape
    if d < _POINTS_MIN_FEATURES or n * (2.0 * d + r + 1) > _POINTS_MAX_DOUBLES:
        return None
    per_point = 2.0 * d * r + 20.0 * d + (2.0 * d * d if grad else 0.0)
    per_pair = r + (12.0 * d if grad else 0.0) + 300.0
    return n * per_point + pairs.n_pairs * per_pair


def pair_projection(pairs, W, rows=None, n_threads=1):
    """``(X[i] - X[j]) @ W`` for every pair, into a new (rows, k) float64 array.

    Rows beyond ``n_pairs`` (``rows`` defaults to ``n_pairs``) are zero.  By
    the pairs (a d-wide gather and 2 d k flops each) or, when that costs
    less, through the points (``T = (X - m) W`` once, then k subtractions a
    pair: :func:`fastmetric._pairs.points_project`).  The cost model below is
    measured on two cores (d=50, k=11, 2000 points and 5000 pairs: 417 ->
    280 us on two threads; with 500 pairs the pairs route stays, 51 against
    226 us).
    """
    n, d = pairs.X.shape
    k = W.shape[1]
    out = np.zeros((pairs.n_pairs if rows is None else rows, k))
    by_pairs = pairs.n_pairs * d * (k + 2.0)
    by_points = n * d * (k + 4.0) + pairs.n_pairs * (4.0 * k + 40.0)
    kernel = _pairs.pair_project
    if by_points < by_pairs and n * (d + k + 1.0) <= _POINTS_MAX_DOUBLES:
        kernel = _pairs.points_project
    nt = threads_for(n_threads, 2.0 * min(by_pairs, by_points))
    with kernel_threads(nt):
        kernel(pairs.X, pairs.i, pairs.j, np.ascontiguousarray(W, dtype=np.float64),
               out, nt)
    return out


def pair_sq_distances(pairs, A, n_threads=1):
    """Squared Mahalanobis distance of every pair (float64)."""
    out = np.empty(pairs.n_pairs)
    A = np.ascontiguousarray(A, dtype=np.float64)
    nt = threads_for(n_threads, 2.0 * pairs.n_pairs * pairs.n_features**2)
    with kernel_threads(nt):
        _pairs.pair_sq_dists(pairs.X, pairs.i, pairs.j, A, out, nt)
    return out


def diag_sq_distances(pairs, w, n_threads=1):
    """``sum_k w_k (x_ik - x_jk)^2`` for every pair (float64)."""
    out = np.empty(pairs.n_pairs)
    w = np.ascontiguousarray(w, dtype=np.float64)
    nt = threads_for(n_threads, 3.0 * pairs.n_pairs * pairs.n_features)
    with kernel_threads(nt):
        _pairs.pair_sq_dists_diag(pairs.X, pairs.i, pairs.j, w, out, nt)
    return out


def diag_dist_sum(pairs, w, n_threads=1):
    """``sum_p sqrt(sum_k w_k (x_ik - x_jk)^2)``: the value-only diagonal pass."""
    out = diag_sq_distances(pairs, w, n_threads)
    return float(np.sqrt(np.maximum(out, 0)).sum())


# Smallest relative optimality target the solvers aim for: sums over many pairs
# carry relative rounding of a few hundred ulp of float64, so targets below
# this cannot be reached.  The kernels compute in float64 whatever the data's
# dtype, so float32 data gets the same floor.
TOLERANCE_FLOOR = 1e-8


def mmc_objective(similar, dissimilar, A, n_threads=1):
    """Scale-free MMC objective ``J(A) = sum_D ||x-y||_A / sqrt(sum_S ||x-y||_A^2)``.

    Maximising J over PSD matrices is the MMC problem (its value does not depend
    on how A is scaled), so J compares solvers and implementations fairly.

    Parameters
    ----------
    similar, dissimilar : PairData
    A : ndarray of shape (d, d)
    n_threads : int

    Returns
    -------
    float
    """
    f_dis = float(np.sum(np.sqrt(pair_sq_distances(dissimilar, A, n_threads),
                                 dtype=np.float64)))
    s_sim = float(np.sum(pair_sq_distances(similar, A, n_threads), dtype=np.float64))
    if s_sim <= 0:
        return np.inf if f_dis > 0 else 0.0
    return f_dis / np.sqrt(s_sim)


def _eigh(M):
    """Symmetric eigendecomposition through LAPACK syevr (ascending eigenvalues)."""
    M = np.ascontiguousarray(M, dtype=np.float64)
    d = M.shape[0]
    w = np.empty(d)
    V = np.empty((d, d))
    _linalg.eigh(M, w, V)
    return w, V


def _eigh_top(M, k, vectors=True):
    """The k largest eigenpairs (ascending) of a symmetric matrix (``eigh_top``).

    Returns ``(w, V)``; V is None with ``vectors=False``.
    """
    M = np.ascontiguousarray(M, dtype=np.float64)
    w = np.empty(k)
    V = np.empty((M.shape[0], k if vectors else 0))
    _linalg.eigh_top(M, w, V)
    return w, (V if vectors else None)


def _certified_below(M, mu):
    """True only if every eigenvalue of the symmetric M is at most ``mu``
    (:func:`fastmetric._linalg.certified_below`)."""
    return _linalg.certified_below(np.ascontiguousarray(M, dtype=np.float64),
                                   float(mu))


def _lambda_max(M):
    """Largest eigenvalue of a symmetric matrix (one eigenvalue, no vectors)."""
    return float(_eigh_top(M, 1, vectors=False)[0][0])


def _project_capped_simplex(lam):
    """Euclidean projection of a vector onto ``{x >= 0, sum(x) <= 1}``."""
    pos = np.maximum(lam, 0.0)
    if pos.sum() <= 1.0:
        return pos
    u = np.sort(lam)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, u.size + 1)
    # k = 1 always qualifies in exact arithmetic; rounding can lose it when the
    # leading eigenvalue is huge, so fall back to it.
    hits = np.nonzero(u - css / k > 0)[0]
    rho = hits[-1] if hits.size else 0
    theta = css[rho] / (rho + 1)
    return np.maximum(lam - theta, 0.0)


def _project_spectraplex(M, rank_hint=None):
    """Frobenius projection of a symmetric matrix onto ``{B PSD, trace(B) <= 1}``.

    Returns ``(B, lam, V)`` with ``B = V diag(lam) V^T`` and ``lam > 0``.  The
    projection keeps only eigenvalues above a threshold, usually a handful:
    with ``rank_hint`` (the rank of a recent projection) only the top
    ``2 rank_hint + 2`` eigenpairs are computed, which suffices -- and is
    checked -- whenever the smallest of them projects to zero (every other
    eigenvalue then lies below the threshold too); otherwise twice as many
    (while that is at most a quarter of the dimension) and then, as for small
    matrices, the full decomposition.
    """
    M = (M + M.T) * 0.5
    d = M.shape[0]
    k = d if rank_hint is None else 2 * rank_hint + 2
    if 4 * k <= d:
        lam, V = _eigh_top(M, k)
        lam = _project_capped_simplex(lam)
        if lam[0] > 0 and 8 * k <= d:
            # the threshold may lie below eigenvalues not computed: twice as
            # many top eigenpairs still cost less than all of them
            lam, V = _eigh_top(M, 2 * k)
            lam = _project_capped_simplex(lam)
        if lam[0] > 0:
            lam, V = _eigh(M)
            lam = _project_capped_simplex(lam)
    else:
        lam, V = _eigh(M)
        lam = _project_capped_simplex(lam)
    keep = lam > 0
    Vk = V[:, keep]
    return (Vk * lam[keep]) @ Vk.T, lam[keep], Vk


def _sym(M):
    return (M + M.T) * 0.5


def _warn_not_converged(name, n_iter, detail):
    warnings.warn(
        f"{name} did not converge in {n_iter} iterations ({detail}); "
        "increase max_iter",
        ConvergenceWarning,
        stacklevel=4,
    )


