"""Exact full-matrix MMC: the convex problem solved to a certified optimum.

See :func:`solve_exact`.  Per-pair work runs in the compiled kernels through
:mod:`fastmetric._mmc_common`; this module holds the O(d^3) algebra and the
control flow only.
"""

import warnings

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from ._mmc_common import (
    MMCResult,
    _eigh,
    _project_spectraplex,
    _sym,
    _warn_not_converged,
    dist_sum_and_grad,
    mmc_objective,
    pair_sq_distances,
    s_matrix,
    tolerance_floor,
)
from ._threads import blas_threads


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


def _lambda_max(M):
    """Largest eigenvalue of a symmetric matrix (LAPACK syevr, one eigenvalue)."""
    d = M.shape[0]
    return float(scipy.linalg.eigh(M, eigvals_only=True, subset_by_index=[d - 1, d - 1],
                                   driver="evr", check_finite=False)[0])


def _start_vector(d):
    """A fixed start for power iteration, not orthogonal to any basis vector."""
    v = 1.0 + np.arange(d) / max(d, 1)
    return v / np.linalg.norm(v)


# Up to this dimension LAPACK's eigenvalues of a symmetric matrix cost less than
# a dozen matrix-vector products from Python.
_EXACT_EIGVALS_DIM = 48


def _lambda_max_estimate(M, v, iters=12):
    """Rayleigh-quotient estimate of ``lambda_max`` of a PSD matrix, warm-started.

    Power iteration from ``v`` (updated in place); the Rayleigh quotient's
    error is second order in the eigenvector's, and it is exact whenever the
    top eigenvalues coincide (as they do near MMC's optimum).  A lower bound:
    used to track progress and to choose floors, never to certify.  Below
    ``_EXACT_EIGVALS_DIM`` a full eigenvalue call is cheaper than the
    iteration (measured), so there the value is exact.
    """
    if M.shape[0] <= _EXACT_EIGVALS_DIM:
        return float(np.linalg.eigvalsh(M)[-1])
    x = v / max(np.linalg.norm(v), np.finfo(float).tiny)
    for _ in range(iters):
        y = M @ x
        norm = np.linalg.norm(y)
        if not norm > 0:
            return 0.0
        x = y / norm
    v[:] = x
    return float(x @ (M @ x))


def _gap(f, G, B, v):
    """Estimated Frank-Wolfe gap ``(lambda_max(G) - <G, B>) / f``.

    Tracks progress only (``lambda_max`` is estimated, see
    :func:`_lambda_max_estimate`); stopping uses :func:`_dual_gap`.
    """
    return max(_lambda_max_estimate(G, v) - float(np.sum(G * B)), 0.0) / max(
        f, np.finfo(float).tiny)


def _dual_gap(prob, B, f, G, target=0.0, max_subset=2048, n_floors=10):
    """Certified relative duality gap ``(U - f) / f`` with ``U >= f*``.

    For any ``t_p > 0``, ``sqrt(a) <= t_p / 2 + a / (2 t_p)``, so
    ``f* <= sum_p t_p / 2 + lambda_max(sum_p z_p z_p^T / (2 t_p))`` (maximising
    the linear term over the spectraplex).  ``t_p = dist_p`` gives the
    Frank-Wolfe bound, valid when no pair sits at zero distance; raising the
    smallest distances to a floor ``tau`` removes the near-collapsed pairs'
    blow-up, and minimising over floors (a coarse grid, then a finer one
    around the best) gives a bound that is tight at the optimum.  Pairs of
    identical points (``z_p = 0``) contribute nothing and are ignored.  The
    corrections are prefix sums over the pairs sorted by distance: one
    O(k d^2) pass plus one eigenvalue per floor.  Returns as soon as a bound
    within ``target`` is found.
    """
    dis = prob.dissimilar
    s = np.sqrt(pair_sq_distances(dis, prob.to_A(B), prob.n_threads)
                .astype(np.float64))
    total = float(s.sum())
    scale = max(f, np.finfo(float).tiny)
    k = min(max_subset, s.size)
    small = np.argpartition(s, k - 1)[:k] if k < s.size else np.arange(s.size)
    small = small[np.argsort(s[small])]
    Z = (dis.X[dis.i[small]] - dis.X[dis.j[small]]).astype(np.float64) @ prob.P
    nonzero = np.einsum("pk,pk->p", Z, Z) > 0
    Z, s_small = Z[nonzero], s[small][nonzero]
    best = np.inf
    if s_small.size == 0 or s_small[0] > 0:
        best = total / 2 + _lambda_max(G)  # the Frank-Wolfe bound
        if (best - f) / scale <= target or s_small.size == 0:
            return max(best - f, 0.0) / scale
    inv = np.where(s_small > 0, 0.5 / np.maximum(s_small, 1e-300), 0.0)
    prefix = np.concatenate([[0.0], np.cumsum(s_small)])
    v = _start_vector(G.shape[0])

    def estimates(taus):
        # Ascending floors: the corrections are running sums over the pairs
        # sorted by distance, extended segment by segment.  lambda_max is
        # only estimated here; the chosen floor is evaluated exactly below.
        sum_inv = np.zeros((Z.shape[1],) * 2)
        sum_one = np.zeros_like(sum_inv)
        start = 0
        out = []
        for tau in taus:
            cut = int(np.searchsorted(s_small, tau, side="left"))
            if cut > start:
                seg = Z[start:cut]
                sum_inv += (seg * inv[start:cut, None]).T @ seg
                sum_one += seg.T @ seg
                start = cut
            lifted = tau * cut - prefix[cut]
            G_tau = _sym(G - sum_inv + sum_one / (2.0 * tau))
            out.append(((total + lifted) / 2 + _lambda_max_estimate(G_tau, v, 30),
                        (total + lifted) / 2, G_tau))
        return out

    positive = s_small[s_small > 0]
    hi = max(s_small[-1], np.finfo(float).tiny)
    # With pairs at zero distance the best floor can lie far below every
    # positive distance, so the grid then reaches down 16 decades.
    lo = positive[0] if s_small[0] > 0 else hi * 1e-16
    lo = min(lo, hi)
    taus = np.geomspace(lo, hi, n_floors)
    coarse = estimates(taus)
    i = int(np.argmin([c[0] for c in coarse]))
    fine = estimates(np.geomspace(taus[max(i - 1, 0)],
                                  taus[min(i + 1, taus.size - 1)], n_floors))
    _, base, G_tau = min(coarse + fine, key=lambda c: c[0])
    best = min(best, base + _lambda_max(G_tau))
    return max(best - f, 0.0) / scale


# A Newton step on the factor L (d x r) costs O(n (d r)^2); beyond this many
# variables it costs more than many projected-gradient steps.
_MAX_NEWTON_VARS = 600
# Projected-gradient steps between Newton attempts.
_NEWTON_EVERY = 10
_BLOCK = 4096


def _factor_derivatives(prob, L, G):
    """Value, gradient and Hessian of ``f(L) = sum_p ||L^T z_p||`` (blockwise).

    ``z_p`` are the whitened dissimilar differences, gathered a block at a
    time (O(block x d r) memory).  With ``G = sum_p z z^T / (2 s_p)`` the
    gradient of f at ``B = L L^T`` (from the pair kernel), the gradient is
    ``2 G L`` and, in column-major ``vec`` coordinates, the Hessian is
    ``I_r (x) 2 G - sum_p psi psi^T / s^3`` with ``psi_p = vec(z_p y_p^T)``,
    ``y_p = L^T z_p``, ``s_p = ||y_p||``; only that last sum needs the pass.
    """
    dis = prob.dissimilar
    d, r = L.shape
    f = 0.0
    H2 = np.zeros((d * r, d * r), order="F")
    X, i, j = dis.X, dis.i, dis.j
    with blas_threads(prob.n_threads):
        for start in range(0, dis.n_pairs, _BLOCK):
            sl = slice(start, start + _BLOCK)
            Z = (X[i[sl]] - X[j[sl]]).astype(np.float64, copy=False) @ prob.P
            Y = Z @ L
            s = np.sqrt(np.einsum("pk,pk->p", Y, Y))
            f += float(s.sum())
            ok = s > 0
            Z, Y, s = Z[ok], Y[ok], s[ok]
            # psi_p = vec(z y^T) in column-major order: block c holds z * y[c].
            Psi = (Y[:, :, None] * Z[:, None, :]).reshape(Z.shape[0], r * d)
            Psi *= (s ** -1.5)[:, None]
            H2 = scipy.linalg.blas.dsyrk(1.0, Psi, beta=1.0, c=H2, trans=1,
                                         lower=0, overwrite_c=1)
    H2 = np.triu(H2) + np.triu(H2, 1).T
    H = np.kron(np.eye(r), 2.0 * G) - H2
    return f, 2.0 * G @ L, H


def _factor_newton(prob, B, f, r, dec_tol, budget):
    """Riemannian Newton for ``max f(L L^T)`` over ``||L||_F = 1`` with L of rank r.

    Writing ``B = L L^T`` lets a Newton step rotate the range of B as well as
    reweight it, which projected gradient does only slowly when the problem
    is badly conditioned.  Steps live in the tangent space of the sphere,
    orthogonal to the rotations ``L -> L Q`` that leave B unchanged; the
    Hessian's negative eigen-directions get Newton steps, the rest none, and a
    backtracking line search on f (retraction by normalisation) keeps ascent.

    Returns ``(B, f, steps)``; B is unchanged if no step increased f.
    """
    d = B.shape[0]
    lam, V = _eigh(B)
    lam_top = np.maximum(lam[-r:], 0.0)
    L = V[:, -r:] * np.sqrt(lam_top)
    L /= np.linalg.norm(L)
    steps = 0
    best_B, best_f = B, f
    while steps < budget:
        G_L = prob.value_grad(_sym(L @ L.T))[1]
        f_L, grad, H = _factor_derivatives(prob, L, G_L)
        g = grad.reshape(-1, order="F")
        # Normal direction and gauge directions L @ (e_a e_b^T - e_b e_a^T).
        normals = [L.reshape(-1, order="F")]
        for a in range(r):
            for b in range(a + 1, r):
                Om = np.zeros((r, r))
                Om[a, b], Om[b, a] = 1.0, -1.0
                normals.append((L @ Om).reshape(-1, order="F"))
        Nq, _ = np.linalg.qr(np.column_stack(normals), mode="complete")
        k = len(normals)
        T = Nq[:, k:]
        if T.shape[1] == 0:
            break  # r = d = 1: B is fixed by its trace
        Hr = T.T @ (H - f_L * np.eye(d * r)) @ T
        g_t = T.T @ g
        w, U = np.linalg.eigh(_sym(Hr))
        coef = U.T @ g_t
        neg = w < -1e-12 * max(np.abs(w).max(), 1e-300)
        step_t = np.zeros_like(coef)
        step_t[neg] = -coef[neg] / w[neg]
        dec = float(coef[neg] @ step_t[neg])
        if not np.isfinite(dec) or dec <= dec_tol * f_L:
            break
        E = (T @ (U @ step_t)).reshape(d, r, order="F")
        steps += 1
        t = 1.0
        while t > 1e-12:
            L_new = L + t * E
            L_new /= np.linalg.norm(L_new)
            B_new = _sym(L_new @ L_new.T)
            f_new = float(np.sqrt(pair_sq_distances(
                prob.dissimilar, prob.to_A(B_new), prob.n_threads)
                .astype(np.float64)).sum())
            if f_new >= f_L + 1e-4 * t * dec:
                break
            t *= 0.5
        else:
            break
        L = L_new
        if f_new > best_f:
            best_B, best_f = B_new, f_new
    return best_B, best_f, steps


def _newton_pays(gaps, gap, target, d, r, n_pairs):
    """Whether a Newton round is expected to beat continuing projected gradient.

    Projected gradient converges linearly; its rate over the last iterations
    predicts how many more it needs.  A Newton round (a few steps, each an
    O(n (d r)^2) Hessian pass and an O((d r)^3) eigendecomposition) is priced
    in projected-gradient iterations (O(n d^2) kernel passes and O(d^3)
    eigendecompositions), with eigendecompositions counted 20 flops apart.
    """
    if len(gaps) < 8:
        return False
    recent, earlier = min(gaps[-3:]), min(gaps[-8:-5])
    if not (earlier > 0 and recent > 0):
        return False
    rate = (recent / earlier) ** (1.0 / 5.0)
    if rate >= 0.95:
        return True
    remaining = np.log(target / gap) / np.log(rate)
    m = d * r
    newton = 3.0 * (20.0 * m**3 + n_pairs * m**2)
    iteration = 6.0 * n_pairs * d**2 + 40.0 * d**3
    return remaining > newton / iteration


def _spg_step(prob, B, f, G, alpha, recent):
    """One spectral projected gradient step on the spectraplex.

    Non-monotone Armijo backtracking; returns ``None`` for the new point when
    no step of at least 2^-20 of the trial passes (the iterate is optimal to
    rounding in the directions projected gradient can see).
    """
    trial, _, _ = _project_spectraplex(B + alpha * G)
    direction = trial - B
    slope = float(np.sum(G * direction))
    ref = max(recent[-10:])
    # A few ulp of slack: near the optimum the predicted increase is below
    # the rounding of f, and demanding it would stall the iteration.
    slack = 8.0 * np.finfo(float).eps * abs(ref)
    step = 1.0
    while True:
        B_new = trial if step == 1.0 else B + step * direction
        f_new, G_new = prob.value_grad(B_new)
        if f_new >= ref + 1e-4 * step * slope - slack:
            break
        step *= 0.5
        if step < 2.0**-20:
            return None, f, G, alpha
    s_vec = B_new - B
    sy = -float(np.sum(s_vec * (G_new - G)))
    ss = float(np.sum(s_vec * s_vec))
    alpha = ss / sy if sy > 0 else 1e3 * alpha
    g_norm = max(np.linalg.norm(G_new), 1e-300)
    alpha = min(max(alpha, 1e-12 / g_norm), 1e12 / g_norm)
    return B_new, f_new, G_new, alpha


def solve_exact(similar, dissimilar, A0, *, shrinkage=0.0, max_iter=100,
                tol=1e-3, n_threads=1, callback=None, verbose=False):
    """Solve MMC with a full matrix to its optimum.

    Maximises ``sum_D ||x-y||_A`` subject to ``sum_S ||x-y||_A^2 <= t`` and
    A PSD, where ``t = <A0, M_S> / 100`` as in metric-learn (so the result has
    metric-learn's scale).  Whitening by the (shrunk) S-matrix turns both
    constraints into the spectraplex ``{B PSD, trace(B) <= 1}``.  Spectral
    projected gradient (Barzilai-Borwein steps, non-monotone line search)
    makes fast progress and finds the low-rank face the optimum lies on; an
    active-set Newton method on that face (dropping directions that reach
    zero, adding the top eigenvector of the gradient outside it) then converges
    quadratically even on ill-conditioned data.  Optimality is certified by
    the duality gap ``lambda_max(grad) - <grad, B>``.

    Parameters
    ----------
    similar, dissimilar : PairData
    A0 : ndarray of shape (d, d)
        PSD initial matrix; fixes the scale ``t`` and the starting point.
    shrinkage : float in [0, 1)
        Replace the S-matrix by ``(1 - s) M_S + s trace(M_S) / d I``.
    max_iter : int
        Budget of iterations (projected-gradient and Newton steps together).
    tol : float
        Stop when the certified relative duality gap is below
        ``1e-5 * tol``, clipped to [1e-8, 1e-4] (the certificate is first-order
        in the distance to the optimum while J is second-order, so a gap of
        1e-8 means J is optimal to far more digits).
    n_threads : int
    callback : callable or None
        ``callback(A, n_iter)`` after each iteration; returning True stops.
    verbose : bool

    Returns
    -------
    MMCResult
        ``objective`` is J(A) (see :func:`mmc_objective`) under the plain
        S-matrix; ``gap`` the certified relative duality gap (under the shrunk
        one when ``shrinkage > 0``).
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
    target = min(max(1e-5 * tol, tolerance_floor(dissimilar.X.dtype)), 1e-3)
    # metric-learn's scale puts sum_S ||x-y||_A^2 at t.  When the optimum lies
    # where the similar pairs do not vary that sum is 0, so the scale is taken
    # with the S-matrix's eigenvalues floored as in the whitening.
    mu_s, V_s = _eigh(M_S)
    M_scale = (V_s * np.maximum(mu_s, mu_s.max() * 1e-9)) @ V_s.T

    def scaled(B):
        A = prob.to_A(B)
        return A * (t_bound / max(float(np.sum(A * M_scale)), np.finfo(float).tiny))

    B = prob.to_B(A0)
    B, _, _ = _project_spectraplex(B / max(np.trace(B), np.finfo(float).tiny))
    f, G = prob.value_grad(B)
    if not f > 0:
        raise ValueError(
            "every dissimilar pair has zero distance under init; MMC needs "
            "dissimilar pairs that differ"
        )
    history = []

    v_top = _start_vector(d)  # warm start of the lambda_max estimates
    last_certified = [-10]

    def measure(f_before):
        # The estimated Frank-Wolfe gap tracks progress; the certified bound
        # costs one more pass over the pairs, so it is taken only near the end
        # (and at most every other iteration, or every third while progress
        # is merely slow: there the Frank-Wolfe gap can sit far above the true
        # gap on badly conditioned data).
        fw = _gap(f, G, B, v_top)
        slow = f_before is not None and f - f_before <= 1e2 * target * f
        wait = n_iter - last_certified[0]
        if (fw <= target and wait >= 2) or (
                (fw <= 1e3 * target or slow) and wait >= 3):
            last_certified[0] = n_iter
            return _dual_gap(prob, B, f, G, target)
        return max(fw, 2.0 * target) if fw <= target else fw

    n_iter = 0
    gap = measure(None)
    stop = False

    def report(phase):
        nonlocal stop
        history.append(f)
        if verbose:
            print(f"mmc exact iter {n_iter} ({phase}): sum_D dist = {f:.12g}, "
                  f"relative gap = {gap:.3e}")
        if callback is not None and callback(scaled(B), n_iter):
            stop = True

    alpha = 1.0 / max(np.linalg.norm(G), np.finfo(float).tiny)
    recent = [f]
    since_newton = 0
    gaps = []
    newton_failed = False
    while gap > target and n_iter < max_iter and not stop:
        # Projected gradient: fast global progress; it converges in a few
        # dozen steps on well-conditioned data.
        f_before = f
        B_new, f_new, G_new, alpha = _spg_step(prob, B, f, G, alpha, recent)
        spg_stalled = B_new is None
        if not spg_stalled:
            n_iter += 1
            since_newton += 1
            B, f, G = B_new, f_new, G_new
            recent.append(f)
            gap = measure(f_before)
            report("gradient")
            if gap <= target or stop or n_iter >= max_iter:
                break
            gaps.append(gap)
        if not spg_stalled and since_newton < _NEWTON_EVERY:
            continue
        lam, _ = _eigh(B)
        r = int(np.sum(lam > 1e-9 * lam.max()))
        if d * r > _MAX_NEWTON_VARS:
            if spg_stalled:
                break
            continue
        if not spg_stalled and not _newton_pays(gaps, gap, target, d, r,
                                                 dissimilar.n_pairs):
            continue
        # Projected gradient is slow (badly conditioned data, where the range
        # of B must rotate) or stuck: Newton on the factor L of B = L L^T.
        since_newton = 0
        gaps = []
        f_before = f
        B_new, f_new, _ = _factor_newton(prob, B, f, r, 1e-3 * target, 20)
        if f_new > f:
            newton_failed = False
            n_iter += 1
            B = B_new
            f, G = prob.value_grad(B)
            recent.append(f)
            gap = measure(f_before)
            report("newton")
        elif spg_stalled or newton_failed:
            break  # neither method can improve f any further
        else:
            newton_failed = True
    converged = gap <= target
    if not converged and not stop:
        _warn_not_converged("MMC (exact)", n_iter, f"relative gap {gap:.2e}")
    A = scaled(B)
    return MMCResult(A=A, n_iter=n_iter, converged=converged,
                     objective=mmc_objective(similar, dissimilar, A, n_threads),
                     history=history, gap=gap)
