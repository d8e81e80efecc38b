"""Exact full-matrix MMC: the convex problem solved to a certified optimum.

See :func:`solve_exact`.  Per-pair work runs in the compiled kernels through
:mod:`fastmetric._mmc_common`; this module holds the O(d^3) algebra and the
control flow only.
"""

import warnings

import numpy as np

from ._mmc_common import (
    MMCResult,
    _eigh,
    _project_spectraplex,
    _sym,
    _warn_not_converged,
    dist_sum_and_grad,
    mmc_objective,
    s_matrix,
)


class _Whitened:
    """The MMC problem after whitening by the (shrunk) S-matrix.

    With ``M = P^{-T} P^{-1}`` the S-constraint ``<A, M> <= 1`` becomes
    ``trace(B) <= 1`` for ``A = P B P^T``, and the problem is
    ``max f(B) = sum_D sqrt(z^T B z)`` over ``{B PSD, trace(B) <= 1}``, where
    f is concave and positively homogeneous of degree 1/2.
    """

    def __init__(self, dissimilar, M, n_threads):
        mu, V = _eigh(M)
        top = max(mu.max(), 0.0)
        floor = top * 1e-12
        if top <= 0:
            raise ValueError(
                "every similar pair has zero difference: the S-matrix is zero, so "
                "MMC's similarity constraint does not bound the metric"
            )
        if mu.min() <= floor * 1e3:
            warnings.warn(
                "the similar pairs do not span the feature space (S-matrix rank "
                f"{int(np.sum(mu > floor * 1e3))} of {mu.size}): the MMC problem is "
                "unbounded along the missing directions, which will dominate the "
                "metric. Use shrinkage > 0, more similar pairs, or fewer features.",
                RuntimeWarning,
                stacklevel=4,
            )
            mu = np.maximum(mu, floor * 1e3)
        self.P = V / np.sqrt(mu)  # A = P B P^T
        self.P_inv = (V * np.sqrt(mu)).T  # B = P_inv A P_inv^T
        self.dissimilar = dissimilar
        self.n_threads = n_threads

    def to_A(self, B):
        return _sym(self.P @ B @ self.P.T)

    def to_B(self, A):
        return _sym(self.P_inv @ A @ self.P_inv.T)

    def value_grad(self, B):
        f, GA = dist_sum_and_grad(self.dissimilar, self.to_A(B), 0.0, self.n_threads)
        return f, _sym(self.P.T @ GA @ self.P)


def _gap(f, G, B):
    """Relative duality gap: ``(lambda_max(G) - <G, B>) / f`` bounds ``(f* - f) / f``.

    For concave f on ``{B PSD, trace(B) <= 1}``,
    ``f* - f(B) <= max_{B'} <G, B' - B> = lambda_max(G) - <G, B>``.
    """
    lam_max = _eigh(G)[0][-1]
    return max(lam_max - float(np.sum(G * B)), 0.0) / max(f, np.finfo(float).tiny)


def _newton_face(prob, B, f, G, lam, U, max_steps=20):
    """Newton's method on the face ``{U C U^T : C PSD, trace(C) = 1}`` of the optimum.

    Projected gradient identifies the optimal face (the range ``U`` of the
    iterate) quickly but converges slowly inside it when the problem is badly
    conditioned.  On the face, ``C`` has r(r+1)/2 free entries and the concave
    objective ``sum sqrt(y^T C y)`` (``y = U^T z``) has an explicit Hessian, so a
    few equality-constrained Newton steps with a backtracking line search reach
    the optimum to machine precision.  Returns the improved ``(B, f, G)`` or the
    inputs if Newton makes no progress (the caller then keeps iterating).
    """
    r = U.shape[1]
    if r == 0:
        return B, f, G
    n_vars = r * (r + 1) // 2
    rows, cols = np.triu_indices(r)
    # vech with sqrt(2) on off-diagonals makes <C1, C2>_F = vech(C1) . vech(C2).
    scale = np.where(rows == cols, 1.0, np.sqrt(2.0))
    trace_vec = np.where(rows == cols, 1.0, 0.0)
    PU = prob.P @ U  # z-space to face coordinates: y = U^T P^T delta
    dis = prob.dissimilar
    C = (U.T @ B @ U)
    C = _sym(C)
    for _ in range(max_steps):
        # Per-pair y = (P U)^T delta, gathered blockwise: O(block x r) memory.
        H = np.zeros((n_vars, n_vars))
        g = np.zeros(n_vars)
        for start in range(0, dis.n_pairs, 4096):
            sl = slice(start, start + 4096)
            delta = dis.X[dis.i[sl]] - dis.X[dis.j[sl]]
            Y = delta.astype(np.float64) @ PU
            q = np.einsum("pk,kl,pl->p", Y, C, Y)
            q = np.maximum(q, 0.0)
            s = np.sqrt(q)
            ok = s > 0
            Y, s = Y[ok], s[ok]
            Phi = (Y[:, rows] * Y[:, cols]) * scale
            g += Phi.T @ (0.5 / s)
            Wt = Phi * np.sqrt(0.25 / s**3)[:, None]
            H += Wt.T @ Wt  # minus the Hessian
        # Maximise g.x - x^T H x / 2 subject to trace_vec . x = 0.
        K = np.zeros((n_vars + 1, n_vars + 1))
        K[:n_vars, :n_vars] = H + 1e-14 * np.trace(H) / n_vars * np.eye(n_vars)
        K[:n_vars, n_vars] = trace_vec
        K[n_vars, :n_vars] = trace_vec
        rhs = np.concatenate([g, [0.0]])
        try:
            sol = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:
            break
        step_vec = sol[:n_vars]
        decrement = float(g @ step_vec)
        if not np.isfinite(decrement) or decrement <= 0:
            break
        dC = np.zeros((r, r))
        dC[rows, cols] = step_vec / scale
        dC = dC + dC.T - np.diag(np.diag(dC))
        t = 1.0
        accepted = False
        while t > 1e-10:
            C_new = C + t * dC
            if np.linalg.eigvalsh(C_new)[0] >= 0:
                B_new = _sym(U @ C_new @ U.T)
                f_new, G_new = prob.value_grad(B_new)
                if f_new >= f + 1e-4 * t * decrement or (
                        f_new >= f and decrement <= 1e-12 * f):
                    accepted = True
                    break
            t *= 0.5
        if not accepted:
            break
        improvement = f_new - f
        C, B, f, G = C_new, B_new, f_new, G_new
        if improvement <= 1e-15 * f or decrement <= 1e-15 * f:
            break
    return B, f, G


def solve_exact(similar, dissimilar, A0, *, shrinkage=0.0, max_iter=100,
                tol=1e-3, n_threads=1, callback=None, verbose=False):
    """Solve MMC with a full matrix to its optimum.

    Maximises ``sum_D ||x-y||_A`` subject to ``sum_S ||x-y||_A^2 <= t`` and
    A PSD, where ``t = <A0, M_S> / 100`` as in metric-learn (so the result has
    metric-learn's scale).  Whitening by the (shrunk) S-matrix turns both
    constraints into the spectraplex ``{B PSD, trace(B) <= 1}``; spectral
    projected gradient with Barzilai-Borwein steps and a non-monotone line search
    identifies the optimal face, and Newton steps on that face finish the job.
    Optimality is certified by the duality gap ``lambda_max(grad) - <grad, B>``.

    Parameters
    ----------
    similar, dissimilar : PairData
    A0 : ndarray of shape (d, d)
        PSD initial matrix; fixes the scale ``t`` and the starting point.
    shrinkage : float in [0, 1)
        Replace the S-matrix by ``(1 - s) M_S + s trace(M_S) / d I``.
    max_iter : int
    tol : float
        The solver stops when the relative duality gap is below ``1e-6 * tol``.
    n_threads : int
    callback : callable or None
        ``callback(A, n_iter)`` after each iteration; returning True stops.
    verbose : bool

    Returns
    -------
    MMCResult
        ``objective`` is J(A) (see :func:`mmc_objective`) under the plain S-matrix.
    """
    d = similar.n_features
    M_S = s_matrix(similar, n_threads)
    t_bound = float(np.sum(A0 * M_S)) / 100.0
    if not t_bound > 0:
        raise ValueError(
            "the similar pairs all have zero distance under init, so the "
            "similarity bound t = sum_S ||x-y||_init^2 / 100 is 0; use another init"
        )
    M = M_S if shrinkage == 0 else (
        (1.0 - shrinkage) * M_S + shrinkage * np.trace(M_S) / d * np.eye(d))
    prob = _Whitened(dissimilar, M, n_threads)
    target = 1e-6 * tol

    def scaled(B):
        A = prob.to_A(B)
        return A * (t_bound / max(float(np.sum(A * M_S)), np.finfo(float).tiny))

    B = prob.to_B(A0)
    B, lam, U = _project_spectraplex(B / max(np.trace(B), np.finfo(float).tiny))
    f, G = prob.value_grad(B)
    if not f > 0:
        raise ValueError(
            "every dissimilar pair has zero distance under init; MMC needs "
            "dissimilar pairs that differ"
        )
    alpha = 1.0 / max(np.linalg.norm(G), np.finfo(float).tiny)
    recent = [f]
    history = []
    gap = _gap(f, G, B)
    converged = gap <= target
    n_iter = 0
    stable_rank = 0
    last_rank = -1
    while not converged and n_iter < max_iter:
        n_iter += 1
        trial, lam_t, U_t = _project_spectraplex(B + alpha * G)
        direction = trial - B
        slope = float(np.sum(G * direction))
        ref = max(recent[-10:])
        step = 1.0
        while True:
            B_new = trial if step == 1.0 else B + step * direction
            f_new, G_new = prob.value_grad(B_new)
            if f_new >= ref + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s_vec = B_new - B
        y_vec = G_new - G
        sy = -float(np.sum(s_vec * y_vec))
        ss = float(np.sum(s_vec * s_vec))
        alpha = ss / sy if sy > 0 else 1e3 * alpha
        alpha = min(max(alpha, 1e-12 / max(np.linalg.norm(G_new), 1e-300)), 1e12)
        B, f, G = B_new, f_new, G_new
        recent.append(f)
        rank = int(np.sum(lam_t > 1e-12 * lam_t.max())) if step == 1.0 else -1
        stable_rank = stable_rank + 1 if rank == last_rank and rank > 0 else 0
        last_rank = rank
        gap = _gap(f, G, B)
        if gap > target and stable_rank >= 3 and step == 1.0:
            # The face looks settled: polish inside it with Newton steps.
            keep = lam_t > 1e-12 * lam_t.max()
            B2, f2, G2 = _newton_face(prob, B, f, G, lam_t[keep], U_t[:, keep])
            if f2 > f:
                B, f, G = B2, f2, G2
                gap = _gap(f, G, B)
                recent.append(f)
            stable_rank = 0
        history.append(f)
        converged = gap <= target
        if verbose:
            print(f"mmc exact iter {n_iter}: sum_D dist = {f:.10g}, "
                  f"relative gap = {gap:.3e}")
        if callback is not None and callback(scaled(B), n_iter):
            break
    if not converged:
        _warn_not_converged("MMC (exact)", n_iter, f"relative gap {gap:.2e}")
    A = scaled(B)
    return MMCResult(A=A, n_iter=n_iter, converged=converged,
                     objective=mmc_objective(similar, dissimilar, A, n_threads),
                     history=history, gap=gap)


