"""Diagonal MMC: the convex objective minimised by projected Newton.

See :func:`solve_diagonal`.  Sums over pairs run in the compiled kernels.
"""

import warnings

import numpy as np
from scipy.optimize import minimize_scalar

from . import _pairs
from ._mmc_common import (
    TOLERANCE_FLOOR,
    MMCResult,
    _warn_not_converged,
    diag_dist_sum,
    diag_sq_distances,
)
from ._numba.mmc import (
    diag_derivs_cached,
    diag_dist_sum_cached,
    diag_hess_block,
    gather_sq_diff_t,
)
from ._threads import kernel_threads, threads_for
from ._validation import PairData

# The dissimilar pairs' squared differences are cached (float64, one row per
# feature) up to this many values (32 MB): each pass then reads only the
# features with non-zero weight, and minus the Hessian is formed only on the
# free features (the optimum usually keeps a few of them).
_CACHE_ELEMENTS = 4_000_000


def squared_differences(pairs):
    """``((X[i] - X[j])**2).T`` for all pairs: float64 of shape (d, n_pairs)."""
    Qt = np.empty((pairs.n_features, pairs.n_pairs))
    gather_sq_diff_t(pairs.X, pairs.i, pairs.j, Qt)
    return Qt


def diagonal_objective(s_sum, dissimilar, w, c=1.0, n_threads=1):
    """``g(w) = s . w - c log(sum_D ||x-y||_diag(w))`` with gradient and Hessian.

    Parameters
    ----------
    s_sum : ndarray of shape (d,)
        ``sum_S (x - y)**2`` per feature.
    dissimilar : PairData
    w : ndarray of shape (d,), non-negative
    c : float
    n_threads : int

    Returns
    -------
    g, grad, hess : float, ndarray (d,), ndarray (d, d)
    """
    d = w.shape[0]
    gF = np.empty(d)
    hF = np.empty((d, d))
    w = np.ascontiguousarray(w, dtype=np.float64)
    # the blocked syrk pays for a second thread from ~1e5 pairs x d^2 / 2
    # (measured: d=20, 5000 pairs 0.23 -> 0.13 ms per call)
    nt = threads_for(n_threads, 2.0 * dissimilar.n_pairs * d * d, 2e5)
    with kernel_threads(nt):
        f = _pairs.diag_sqrt_dist_derivs(dissimilar.X, dissimilar.i, dissimilar.j,
                                         w, gF, hF, nt)
    if not f > 0:
        return np.inf, np.full(d, np.nan), np.full((d, d), np.nan)
    value = float(s_sum @ w) - c * np.log(f)
    grad = s_sum - c * gF / f
    hess = c * (hF / f + np.outer(gF, gF) / f**2)
    return value, grad, hess


class _Objective:
    """The diagonal objective for one solve: value, derivatives, Hessian blocks.

    With the squared differences cached (:func:`squared_differences`) the
    passes run in :mod:`fastmetric._numba.mmc` and Hessian blocks cost
    O(n m^2) for m free features; otherwise the pair kernel's full Hessian
    is sliced.
    """

    def __init__(self, s_sum, dissimilar, c, n_threads):
        self.s_sum, self.dissimilar, self.c = s_sum, dissimilar, c
        self.n_threads = n_threads
        d = s_sum.shape[0]
        self.Qt = (squared_differences(dissimilar)
                   if dissimilar.n_pairs * d <= _CACHE_ELEMENTS else None)
        self.c2 = None if self.Qt is None else np.empty(dissimilar.n_pairs)
        self._hess = None

    def value(self, w):
        if self.Qt is not None:
            f = diag_dist_sum_cached(self.Qt, w)
        else:
            f = diag_dist_sum(self.dissimilar, w, self.n_threads)
        return float(self.s_sum @ w) - self.c * np.log(f) if f > 0 else np.inf

    def derivs(self, w):
        """``(g, grad, hdiag)`` at w; :meth:`hess_block` then refers to w."""
        c = self.c
        if self.Qt is None:
            g, grad, hess = diagonal_objective(self.s_sum, self.dissimilar, w, c,
                                               self.n_threads)
            self._hess = hess
            return g, grad, np.diag(hess).copy()
        d = w.shape[0]
        gF, hdF = np.empty(d), np.empty(d)
        f = diag_derivs_cached(self.Qt, w, gF, hdF, self.c2)
        if not f > 0:
            return np.inf, np.full(d, np.nan), np.full(d, np.nan)
        self._f, self._gF = f, gF
        return (float(self.s_sum @ w) - c * np.log(f), self.s_sum - c * gF / f,
                c * (hdF / f + gF**2 / f**2))

    def hess_block(self, cols):
        """The objective's Hessian on the features ``cols`` (at the last derivs)."""
        if self.Qt is None:
            return self._hess[np.ix_(cols, cols)]
        f, gF = self._f, self._gF[cols]
        H = diag_hess_block(self.Qt, self.c2, cols)
        return self.c * (H / f + np.outer(gF, gF) / f**2)


def _collapsed_features(dissimilar, w, n_threads):
    """Zero-weight features that some dissimilar pair at distance 0 differs in.

    Such a pair adds ``|x_k - y_k| sqrt(t)`` to the sum of distances when
    ``w_k`` grows to t: the objective's slope along ``w_k`` is minus infinity
    there, which the pair kernels (a zero distance has no gradient) cannot
    see, so w is not optimal however small its KKT residual.  Returned by
    decreasing pull (the sum of those differences).
    """
    q = diag_sq_distances(dissimilar, w, n_threads)
    idx = np.flatnonzero(q <= 0)
    if idx.size == 0:
        return np.empty(0, dtype=np.intp)
    X = dissimilar.X
    diff = np.abs(X[dissimilar.i[idx]].astype(np.float64) - X[dissimilar.j[idx]])
    pull = np.where(w > 0, 0.0, diff.sum(axis=0))
    ks = np.flatnonzero(pull > 0)
    return ks[np.argsort(pull[ks])[::-1]]


def _open_features(obj, w, g, features, s_sum, c):
    """Minimise g along each of ``features`` in turn, from weight 0.

    g restricted to one weight is convex with an infinite downward slope at 0
    (see :func:`_collapsed_features`): bracket its minimiser on a geometric
    grid from far below the natural scale ``c / (2 s_k)``, then refine it.
    ``g`` is the objective at ``w``.
    """
    w = w.copy()
    for k in features:
        trial = w.copy()

        def h(t, k=k, trial=trial):
            trial[k] = t
            return obj.value(trial)

        scale = c / (2.0 * s_sum[k])
        ts = [0.0]
        hs = [g]
        t = scale * 4.0 ** -25
        for _ in range(60):
            ts.append(t)
            hs.append(h(t))
            if hs[-1] > hs[-2]:
                break
            t *= 4.0
        best = int(np.argmin(hs))
        if best == 0:
            continue
        lo, hi = ts[best - 1], ts[min(best + 1, len(ts) - 1)]
        res = minimize_scalar(h, bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-12 * hi})
        if res.fun < hs[best]:
            w[k], g = float(res.x), float(res.fun)
        else:
            w[k], g = ts[best], hs[best]
    return w


# Data whose typical difference lies beyond 2^+-this are solved rescaled.
_RESCALE_EXPONENT = 20


def _solve_rescaled(similar, dissimilar, w0, k, *, callback, **kw):
    """:func:`solve_diagonal` on ``X / 2^k`` (exact), weights mapped back."""
    scaled = {}

    def rescale(pairs):
        key = id(pairs.X)
        if key not in scaled:
            scaled[key] = np.ascontiguousarray(pairs.X, dtype=np.float64) * 2.0**-k
        return PairData(scaled[key], pairs.i, pairs.j)

    factor = 4.0**-k  # w for X is 4^-k times w for X / 2^k
    inner = None
    if callback is not None:
        def inner(A, n_iter):
            return callback(A * factor, n_iter)
    res = solve_diagonal(rescale(similar), rescale(dissimilar), w0,
                         callback=inner, **kw)
    return MMCResult(A=res.A * factor, n_iter=res.n_iter, converged=res.converged,
                     objective=res.objective, history=res.history)


def _newton_step(obj, w, g, grad, hdiag, s_sum):
    """One projected-Newton step from w, or None when backtracking fails.

    The features split into an active set (at the bound, gradient pushing
    outward: a scaled gradient step) and a free set (a Newton step on the
    Hessian block); the step backtracks along the projection arc.  Features
    in different units give weights and Hessian entries decades apart, so
    the active set is chosen on the unit-free weights ``s_k w_k`` and the
    Newton system is solved equilibrated (unit diagonal): a bound, a jitter
    or a pivot on the raw numbers would serve the largest scales only (a
    feature 1e5 times smaller than another crawled: w 0.03 after 100
    iterations, 0.11 after 1000, against 0.35 at the minimum).
    """
    d = w.shape[0]
    with np.errstate(over="ignore"):  # (a zero curvature: inf, then clipped)
        pg = w - np.maximum(w - grad / np.maximum(hdiag, 1e-300), 0.0)
    u, pg_u = s_sum * w, s_sum * pg  # unit-free: g's linear term is sum(u)
    eps_k = min(1e-3 * max(u.max(), 1e-300), float(np.abs(pg_u).max()))
    active = (u <= eps_k) & (grad > 0)
    free = np.flatnonzero(~active)
    if free.size:
        Hff = obj.hess_block(free)
        h = np.sqrt(np.maximum(np.diag(Hff), 1e-300))
        H_eq = Hff / np.outer(h, h)
    # Backtracking on the value alone (one cheap pass per trial).  Near the
    # optimum the predicted decrease falls below g's rounding; a step that
    # does not raise g beyond rounding is then accepted, so Newton can
    # finish instead of stalling.
    # g's terms are s.w and c log f; their size, not 1, sets g's rounding
    # (an absolute 1 let steps raise g at diagonal_c=1e-12, where g ~ 1e-11)
    sw = float(s_sum @ w)
    rounding = 64 * np.finfo(float).eps * (abs(sw) + abs(sw - g) + abs(g))
    # With fewer dissimilar pairs than free features the Hessian block is
    # singular (each pair adds rank one), and a Newton step along its null
    # space can fail every backtracking trial: then the same step again with
    # the equilibrated block shifted by ever more of the identity, which
    # tends to the diagonally scaled gradient step (always a descent step).
    for shift in _NEWTON_SHIFTS:
        direction = np.zeros(d)
        if free.size:
            try:
                direction[free] = -np.linalg.solve(
                    H_eq + shift * np.eye(free.size), grad[free] / h) / h
            except np.linalg.LinAlgError:
                continue
        with np.errstate(over="ignore"):
            direction[active] = -grad[active] / np.maximum(hdiag[active], 1e-300)
        step = 1.0
        while step >= 1e-14:
            w_new = np.maximum(w + step * direction, 0.0)
            g_new = obj.value(w_new)
            decrease = float(grad @ (w - w_new))
            if np.isfinite(g_new) and g_new <= g - 1e-4 * max(decrease, 0.0) + rounding:
                return w_new
            step *= 0.5
        if not free.size:
            break  # (no block to shift: every shift gives this direction)
    return None


# Shifts of the equilibrated Newton block (unit diagonal) tried in turn.
_NEWTON_SHIFTS = (1e-12, 1e-6, 1e-3, 1e-1, 1.0, 1e2)


def solve_diagonal(similar, dissimilar, w0, *, c=1.0, max_iter=100, tol=1e-3,
                   n_threads=1, callback=None, verbose=False):
    """Minimise the diagonal MMC objective over ``w >= 0`` by projected Newton.

    ``g(w) = sum_S ||x-y||^2_diag(w) - c log(sum_D ||x-y||_diag(w))`` is convex.
    Each iteration splits the features into an active set (at the bound, with a
    gradient pushing outward) and a free set, takes a Newton step on the free
    set and a scaled gradient step on the active set, and backtracks along the
    projection arc (Bertsekas, 1982) until the objective decreases.  It stops
    when the KKT conditions hold to ``eps = 1e-5 * tol`` (clipped to [1e-8,
    1e-3]) relative: ``|grad_k| <= eps s_k``
    where ``w_k > 0`` and ``grad_k >= -eps s_k`` where ``w_k = 0`` -- and no
    dissimilar pair of distinct points sits at distance 0: there the slope
    along the zero weights it differs in is minus infinity, so those weights
    are first opened by a line search each (:func:`_open_features`).  The
    starting weights are first rescaled by the best positive factor (g is
    minimised along the ray in closed form), which fixes the scale of the
    result independently of init.

    Parameters
    ----------
    similar, dissimilar : PairData
    w0 : ndarray of shape (d,)
        Non-negative starting weights, not all zero.
    c : float
    max_iter : int
    tol : float
    n_threads : int
    callback : callable or None
        ``callback(diag(w), n_iter)`` after each iteration; returning True stops.
    verbose : bool

    Returns
    -------
    MMCResult
        ``objective`` is g at the solution.
    """
    d = similar.n_features
    s_sum = np.empty(d)
    with kernel_threads(1):
        _pairs.sq_diff_sum(similar.X, similar.i, similar.j, s_sum)
    if not s_sum.max() > 0:
        raise ValueError("every similar pair has zero difference; the diagonal MMC "
                         "objective is unbounded")
    # The Hessian squares squared differences: far from unit scale it over-
    # or underflows.  g is exactly covariant under X -> X / 2^k (the optimum
    # becomes 4^k w, the objective is unchanged), so such data are solved at
    # unit scale, bit for bit the same iterates.
    k = int(np.round(0.5 * np.log2(s_sum.max() / similar.n_pairs)))
    if abs(k) > _RESCALE_EXPONENT:
        return _solve_rescaled(similar, dissimilar, w0, k, c=c, max_iter=max_iter,
                               tol=tol, n_threads=n_threads, callback=callback,
                               verbose=verbose)
    # Only features that no similar pair varies in are unbounded: a feature
    # that varies on a scale a million times smaller than another's is the
    # same problem in other units (a floor relative to the largest s_k
    # changed the minimiser of such data and warned wrongly).
    floor = s_sum.max() * 1e-12
    if s_sum.min() <= 0:
        warnings.warn(
            "some features are constant within every similar pair: the diagonal "
            "MMC objective is unbounded along them, so their weights will be very "
            "large. Remove those features or add similar pairs that vary in them.",
            RuntimeWarning,
            stacklevel=3,
        )
        s_sum = np.where(s_sum > 0, s_sum, floor)
    w = np.maximum(np.asarray(w0, dtype=np.float64), 0.0)
    if not s_sum @ w > 0:
        raise ValueError("the initial weights give every similar pair zero distance; "
                         "use another init")
    # g(a w) = a s.w - c log(sqrt(a) f(w)) is minimised over a > 0 at
    # a = c / (2 s.w): start from the best multiple of the initial weights.
    w *= c / (2.0 * float(s_sum @ w))
    obj = _Objective(s_sum, dissimilar, c, n_threads)
    g, grad, hdiag = obj.derivs(w)
    if not np.isfinite(g):
        raise ValueError("every dissimilar pair has zero distance under the initial "
                         "weights; MMC needs dissimilar pairs that differ")
    eps = min(max(1e-5 * tol, TOLERANCE_FLOOR), 1e-3)
    history = []
    converged = False
    n_iter = 0

    def kkt(w_, grad_):
        rel = grad_ / s_sum
        free = w_ > 0
        viol = np.where(free, np.abs(rel), np.maximum(-rel, 0.0))
        return float(viol.max())

    def settled(w_, viol_):
        # KKT holds on the smooth part; a collapsed pair still pulls (see
        # _collapsed_features): those features are opened in the next step.
        if viol_ > eps:
            return False, np.empty(0, dtype=np.intp)
        opening = _collapsed_features(dissimilar, w_, n_threads)
        return opening.size == 0, opening

    viol = kkt(w, grad)
    converged, opening = settled(w, viol)
    stalled = 0
    stopped = False
    while not converged and n_iter < max_iter:
        n_iter += 1
        if opening.size:
            # a collapsed pair pulls along zero weights: open them first
            w = _open_features(obj, w, g, opening, s_sum, c)
            g, grad, hdiag = obj.derivs(w)
        else:
            w_new = _newton_step(obj, w, g, grad, hdiag, s_sum)
            if w_new is None:
                stalled += 1
            else:
                stalled = 0
                g, grad, hdiag = obj.derivs(w_new)
                w = w_new
        history.append(g)
        viol = kkt(w, grad)
        converged, opening = settled(w, viol)
        if verbose:
            print(f"mmc diagonal iter {n_iter}: objective = {g:.12g}, "
                  f"KKT violation = {viol:.3e}")
        if callback is not None and callback(np.diag(w), n_iter):
            stopped = True
            break
        if stalled >= 2:
            break
    if not converged and not stopped:
        _warn_not_converged("MMC (diagonal)", n_iter, f"KKT violation {viol:.2e}")
    return MMCResult(A=np.diag(w), n_iter=n_iter, converged=converged, objective=g,
                     history=history)
