"""MMC by gradient ascent and iterative projections, as metric-learn 0.7.0 runs it.

See :func:`solve_ga_ip`.  The per-pair sums run in the compiled kernels; each
projection loop is one compiled call (the Numba C1 kernel through its C
address; the PSD projections in the S-matrix's eigenbasis on A's low-rank
factor, LAPACK where that does not apply); no ``n_pairs x d x d`` temporary
is ever built.
"""

import math

import numpy as np

from . import _linalg
from ._mmc_common import (
    MMCResult,
    _eigh,
    _sym,
    _warn_not_converged,
    dist_sum_and_grad,
    factor_dist_sum_and_grad,
    mmc_objective,
    s_matrix,
)
from ._numba.projections import c1_project_cfunc


def _norm(x):
    """Frobenius norm of a small array: ``np.linalg.norm`` without its dispatch
    (a tenth of the loop's time at d=5), as a NumPy float (so that dividing
    by a norm that underflowed to 0 gives inf, as in metric-learn, rather
    than raising)."""
    v = x.ravel()
    return np.float64(math.sqrt(float(v @ v)))


def _grad_projection(grad1, grad2):
    """grad1 minus its component along grad2, normalised (metric-learn's rule).

    When the two are parallel the remainder is rounding noise, which
    metric-learn normalises into an arbitrary unit direction (or 0 / 0 when
    it comes out exactly 0, and the loop runs on NaN); here it is then 0:
    no step, the iterate is stationary.
    """
    grad2 = grad2 / _norm(grad2)
    gtemp = grad1 - float(grad1.ravel() @ grad2.ravel()) * grad2
    norm = _norm(gtemp)
    if not norm > 1e-12 * _norm(grad1):
        return np.zeros_like(gtemp)
    gtemp /= norm
    return gtemp


def solve_ga_ip(similar, dissimilar, A0, *, max_iter=100, max_proj=10000, tol=1e-3,
                n_threads=1, callback=None, verbose=False):
    """Gradient ascent with iterative projections, exactly as metric-learn 0.7.0.

    Same initialisation, step-size rule (start 0.1, x1.05 on success, /2 on
    failure), C1 bound ``t = <A0, M_S> / 100``, projection loop (alternate C1
    and C2 until ``(<M_S, A> - t) / t < 0.01`` or ``max_proj`` rounds) and
    convergence test (``||alpha M|| / ||A_old|| < tol``) -- including its
    quirks, so that it returns metric-learn's matrix.  The per-pair sums run in
    the compiled kernels instead of ``n_pairs x d x d`` temporaries; after a
    projection A has low rank r, so the gradient's distances go through its
    factor, and the projection rounds run in the S-matrix's eigenbasis at
    O(d r^2) each instead of a d x d eigendecomposition (the same iterates to
    rounding; see :func:`fastmetric._linalg.gaip_projections`).

    Parameters
    ----------
    similar, dissimilar : PairData
    A0 : ndarray of shape (d, d)
    max_iter, max_proj : int
    tol : float
    n_threads : int
    callback : callable or None
        ``callback(A, n_iter)`` after each outer iteration; returning True stops.
    verbose : bool

    Returns
    -------
    MMCResult
        ``objective`` is J(A) (see :func:`mmc_objective`).
    """
    eps_proj = 0.01
    # (a C int: 2^31 - 1 rounds are as good as unbounded)
    proj_budget = int(min(max_proj, 2**31 - 1))
    A = np.array(A0, dtype=np.float64, order="C")
    w = s_matrix(similar, n_threads)
    with np.errstate(over="ignore", under="ignore"):
        t = float(np.sum(w * A)) / 100.0
        w_norm = _norm(w)
        scale = float(np.abs(w).max())
        # the same bound at unit scale: nonzero there but not here means the
        # data's scale, not init, is the problem
        t_unit = float(np.sum((w / scale) * A)) / 100.0 if scale > 0 else 0.0
    if not (np.isfinite(t) and np.isfinite(w_norm)) or (
            t_unit > 0 and not (t > 0 and w_norm > 0)):
        raise ValueError(
            f"solver='ga-ip' cannot work at this data's scale: the S-matrix (sums "
            f"of squared similar differences) has entries up to {scale:.1e}, and "
            f"its bound or norm over- or underflows in float64; rescale the data "
            f"(standardise it, say) or use solver='exact', which is scale-invariant"
        )
    if not (t > 0 and w_norm > 0):
        raise ValueError(
            "the similar pairs all have zero distance under init, so the "
            "similarity bound t = sum_S ||x-y||_init^2 / 100 is 0; use another init"
        )
    w1 = w / w_norm
    t1 = t / w_norm
    # W's eigenbasis, where most projection rounds run on A's low-rank factor
    # at O(d r^2) instead of a d x d eigendecomposition (same iterates to
    # rounding; see fastmetric._linalg.gaip_projections)
    omega, Q = _eigh(w)
    omega = np.maximum(omega, 0.0)
    factor = np.zeros_like(A)
    counts = np.zeros(3, dtype=np.int64)

    def fd_and_grad(A_, rank=-1):
        # After a projection A_ = U U^T has low rank: distances through the
        # factor cost 2 n d r instead of 2 n d^2 flops.
        if 0 <= rank < A_.shape[0]:
            f, G = factor_dist_sum_and_grad(dissimilar, factor[:, :rank], None,
                                            n_threads, eps=1e-6)
        else:
            f, G = dist_sum_and_grad(dissimilar, A_, 1e-6, n_threads)
        return np.log(f + 1e-6), G / (f + 1e-6)

    alpha = 0.1
    # metric-learn's first direction takes the S-gradient orthogonal to the
    # D-gradient (its arguments are swapped on entry); it is only used if the
    # first projection fails, but we keep it for step-for-step equality.
    obj_A0, grad_d0 = fd_and_grad(A)
    if not np.any(grad_d0):
        # (metric-learn divides by this gradient's norm and runs on NaN)
        raise ValueError(
            "every dissimilar pair joins identical points (zero difference); "
            "MMC needs dissimilar pairs that differ"
        )
    M = _grad_projection(w, grad_d0)
    A_old = A.copy()
    obj_old = obj_A0
    history = []
    delta = np.inf
    cycle = 0
    stopped = False
    for cycle in range(max_iter):
        satisfy, _ = _linalg.gaip_projections(A, w, w1, t, t1, proj_budget, eps_proj,
                                              c1_project_cfunc.address, Q, omega,
                                              factor=factor, counts=counts)
        obj, grad_d = fd_and_grad(A, int(counts[2]))
        if satisfy and (obj > obj_old or cycle == 0):
            alpha *= 1.05
            A_old[:] = A
            obj_old = obj
            M = _grad_projection(grad_d, w)
            A += alpha * M
        else:
            alpha /= 2
            A[:] = A_old + alpha * M
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = alpha * _norm(M) / _norm(A_old)
        history.append(obj_old)
        if callback is not None and callback(A_old.copy(), cycle + 1):
            stopped = True
            break
        if delta < tol:
            break
        if verbose:
            print(f"mmc iter: {cycle}, conv = {delta:f}, "
                  f"log sum_D dist = {obj_old:.8g}")
    converged = bool(delta <= tol)
    if not converged and not stopped:
        _warn_not_converged("MMC (ga-ip)", cycle + 1, f"conv {delta:.2e} > tol {tol}")
    A_final = _sym(A_old)
    return MMCResult(A=A_final, n_iter=cycle, converged=converged,
                     objective=mmc_objective(similar, dissimilar, A_final, n_threads),
                     history=history)


