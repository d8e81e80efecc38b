"""Exact full-matrix MMC: the convex problem solved to a certified optimum.

See :func:`solve_exact`.  Per-pair work runs in the compiled kernels through
:mod:`fastmetric._mmc_common`; this module holds the O(d^3) algebra and the
control flow only.
"""

import warnings

import numpy as np
from scipy.linalg.lapack import dpotrf, dpotrs, dtrtri

from . import _pairs
from ._linalg import spg_spectraplex
from ._mmc_common import (
    TOLERANCE_FLOOR,
    MMCResult,
    _certified_below,
    _eigh,
    _eigh_top,
    _lambda_max,
    _project_spectraplex,
    _sym,
    _warn_not_converged,
    diag_sq_distances,
    factor_dist_sum_and_grad,
    pair_projection,
    s_matrix,
)
from ._threads import kernel_threads, threads_for, threads_for_small
from ._validation import PairData


def _equilibrate(M):
    """``(s, M / (s s^T))``: M with unit diagonal, ``s = sqrt(diag(M))``.

    Features in different units scale the S-matrix's rows and columns by
    factors that can span many decades (raw breast-cancer data: a condition
    number of 3e11, of 1e3 once equilibrated), which no threshold on M's own
    spectrum can tell from directions the similar pairs do not vary in.  The
    MMC problem does not see such a scaling, so conditioning is judged on
    the equilibrated matrix.  Features that no similar pair varies in (a zero
    diagonal entry, hence a zero row) take the largest scale, so that their
    floored eigenvalue is relative to the data's scale, not to 1.
    """
    diag = np.diagonal(M)
    top = diag.max()
    if not top > 0:
        raise ValueError(
            "every similar pair has zero difference: the S-matrix is zero, so "
            "MMC's similarity constraint does not bound the metric"
        )
    s = np.sqrt(np.where(diag > 0, diag, top))
    return s, M / np.outer(s, s)


# Equilibrated S-matrix eigenvalues below this fraction of the largest count
# as directions the similar pairs do not vary in (see _whitening).
_RANK_FLOOR = 1e-9


def _floored_eigh(M_eq):
    """Eigenpairs of an equilibrated S-matrix, eigenvalues floored at
    ``_RANK_FLOOR`` of the largest; also whether any was floored and the
    numerical rank."""
    mu, V = _eigh(M_eq)
    floor = max(mu.max(), 0.0) * _RANK_FLOOR
    rank = int(np.sum(mu > floor))
    return np.maximum(mu, floor), V, rank < mu.size, rank


def _unequilibrate(mu, V, s):
    """``S V diag(mu) V^T S``: the matrix whose equilibrated form has
    eigenpairs (mu, V), S = diag(s)."""
    W = V * s[:, None]
    return (W * mu) @ W.T


def _floored_s_matrix(M):
    """M with the equilibrated spectrum floored as in :func:`_whitening`
    (M itself when nothing is floored)."""
    s, M_eq = _equilibrate(M)
    mu, V, floored, _ = _floored_eigh(M_eq)
    return _unequilibrate(mu, V, s) if floored else M


def _whitening(M):
    """``(P, P_inv, M_used)`` for the (shrunk) S-matrix M: ``P^T M_used P = I``.

    ``P`` maps the whitened problem back (``A = P B P^T``) and ``P_inv``
    forward (``B = P_inv A P_inv^T``).  M is equilibrated first
    (:func:`_equilibrate`, ``M = S M_eq S``): conditioning is judged and the
    factorisation taken on ``M_eq``, then ``P = S^{-1} P_eq``.  For a
    well-conditioned ``M_eq`` (the usual case) from its Cholesky factor,
    ``M_eq = C C^T``, ``P_eq = C^{-T}``, for a fraction of an
    eigendecomposition's cost (d=50: about 30 against 440 us), and
    ``M_used`` is M.  Well-conditioned is certified on the way:
    ``lambda_min(M_eq) >= 1 / ||C^{-1}||_F^2``, and that must exceed
    ``_RANK_FLOOR`` of ``trace(M_eq) >= lambda_max(M_eq)``.  Otherwise
    ``M_eq = V diag(mu) V^T``, ``P_eq = V mu^{-1/2}``, eigenvalues below
    ``_RANK_FLOOR`` of the largest (directions the similar pairs do not vary
    in) floored there, with a warning: the problem is unbounded along them;
    ``M_used`` is then the floored matrix.  Any P of the first kind is the
    second times an orthogonal matrix, a rotation of the whitened space that
    the problem does not see.
    """
    M = np.asarray(M, dtype=np.float64)
    s, M_eq = _equilibrate(M)
    C, info = dpotrf(M_eq, lower=1, clean=1)
    if info == 0:
        Cinv, info = dtrtri(C, lower=1)
        if info == 0 and np.all(np.isfinite(Cinv)):
            trace = float(np.trace(M_eq))
            inv_trace = max(float(np.sum(Cinv * Cinv)), _TINY)  # trace(M_eq^-1)
            if 1.0 / inv_trace > _RANK_FLOOR * trace:
                return (np.ascontiguousarray(Cinv.T / s[:, None]),
                        np.ascontiguousarray(C.T * s), M)
    mu, V, floored, rank = _floored_eigh(M_eq)
    if floored:
        warnings.warn(
            f"the similar pairs do not span the feature space (S-matrix rank "
            f"{rank} of {mu.size}): the MMC problem is "
            "unbounded along the missing directions, which will dominate the "
            "metric. Use shrinkage > 0, more similar pairs, or fewer features.",
            RuntimeWarning,
            stacklevel=5,
        )
    P = (V / np.sqrt(mu)) / s[:, None]
    P_inv = (V * np.sqrt(mu)).T * s
    M_used = _unequilibrate(mu, V, s) if floored else M
    return np.ascontiguousarray(P), np.ascontiguousarray(P_inv), M_used


class _Whitened:
    """The MMC problem after whitening by the (shrunk) S-matrix.

    With ``M = P^{-T} P^{-1}`` the S-constraint ``<A, M> <= 1`` becomes
    ``trace(B) <= 1`` for ``A = P B P^T``, and the problem is
    ``max f(B) = sum_D sqrt(z^T B z)`` over ``{B PSD, trace(B) <= 1}``, where
    f is concave and positively homogeneous of degree 1/2 and
    ``z_p = P^T (x_i - x_j)`` are the whitened dissimilar differences.

    The same class holds the problem restricted to a subspace, whose
    differences ``Q^T z_p`` are given as rows (:meth:`from_rows`; ``P`` is
    then None, the identity).  Every evaluation goes through a factor
    ``B = L L^T`` (L of shape (dim, r)): the iterates are projections onto the
    spectraplex, which zero all but a few eigenvalues, so the distances cost
    2 n d r flops instead of 2 n d^2.  The last evaluation's per-pair
    distances are kept in ``dists`` for the certificate.
    """

    def __init__(self, dissimilar, P, n_threads):
        self.dissimilar = dissimilar
        self.P = P
        self.n_pairs = dissimilar.n_pairs
        self.dim = dissimilar.n_features if P is None else P.shape[1]
        self.n_threads = n_threads
        self.dists = np.empty(dissimilar.n_pairs)
        self._Z = None
        self._ritz_v = None
        # Pairs of identical points sit at distance 0 under every metric and
        # take no part in the Frank-Wolfe certificate; any other pair at
        # distance 0 invalidates it (see fw_gap).  The squared Euclidean
        # distances are kept: they give the start of the default init
        # without a pass (value_grad_euclidean).
        self._euclid_sq = diag_sq_distances(
            dissimilar, np.ones(dissimilar.n_features), n_threads)
        self.identical = self._euclid_sq == 0
        self.n_identical = int(np.count_nonzero(self.identical))

    @classmethod
    def from_matrix(cls, dissimilar, M, n_threads):
        """The whitened problem of the dissimilar pairs under S-matrix ``M``."""
        P, P_inv, M_used = _whitening(M)
        prob = cls(dissimilar, P, n_threads)
        prob.M_used = M_used
        prob.P_inv = P_inv
        return prob

    @classmethod
    def from_rows(cls, Z_ext, n_threads):
        """The problem whose differences are the rows of ``Z_ext[:-1]``.

        ``Z_ext`` (n + 1, k), C-contiguous float64, ends with a zero row: pair
        p is ``(Z_ext[p], Z_ext[n])``, so the pair kernels read the rows as
        they are.
        """
        n = Z_ext.shape[0] - 1
        pairs = PairData(Z_ext, np.arange(n, dtype=np.intp),
                         np.full(n, n, dtype=np.intp))
        prob = cls(pairs, None, n_threads)
        prob._Z = Z_ext[:n]
        return prob

    def to_A(self, B):
        return _sym(self.P @ B @ self.P.T)

    def to_B(self, A):
        return _sym(self.P_inv @ A @ self.P_inv.T)

    def whitened_diffs(self):
        """All whitened dissimilar differences as one (n, d) float64 array, or
        None when they do not fit in ``_CACHE_ELEMENTS``; kept once formed."""
        if self._Z is None:
            if self.n_pairs * self.dissimilar.n_features > _CACHE_ELEMENTS:
                return None
            self._Z = self._projected(self.dissimilar, self._whitener(),
                                      self.n_pairs)
        return np.ascontiguousarray(self._Z)

    def rows(self, idx):
        """Whitened differences of the pairs ``idx`` (float64, (len(idx), dim))."""
        if self._Z is not None:
            return self._Z[idx]
        dis = self.dissimilar
        sub = PairData(dis.X, np.ascontiguousarray(dis.i[idx]),
                       np.ascontiguousarray(dis.j[idx]))
        return self._projected(sub, self._whitener(), len(idx))

    def _whitener(self):
        return np.eye(self.dim) if self.P is None else np.ascontiguousarray(self.P)

    def _projected(self, pairs, W, rows):
        """``(X[i] - X[j]) @ W`` of ``pairs`` into a new (rows, k) array."""
        return pair_projection(pairs, W, rows, self.n_threads)

    def project(self, Q):
        """``[Z Q; 0]``: the differences in the basis Q (dim x k), with a zero row.

        The input of :meth:`from_rows` for the problem restricted to
        ``span(Q)``; one compiled pass, n dim k flops.
        """
        if self._Z is not None:
            out = np.zeros((self.n_pairs + 1, Q.shape[1]))
            np.matmul(self._Z, Q, out=out[:self.n_pairs])
            return out
        W = Q if self.P is None else self.P @ Q
        return self._projected(self.dissimilar, np.ascontiguousarray(W),
                               self.n_pairs + 1)

    def _factor(self, L):
        return L if self.P is None else self.P @ L

    def value_grad_factor(self, L):
        """``f(L L^T)`` and its gradient; the distances go to ``self.dists``."""
        f, GA = factor_dist_sum_and_grad(self.dissimilar, self._factor(L),
                                         self.dists, self.n_threads)
        return f, (GA if self.P is None else _sym(self.P.T @ GA @ self.P))

    def value_grad_euclidean(self, scale):
        """:meth:`value_grad_factor` at a factor with ``P L = O / scale``, O orthogonal.

        There every distance is the Euclidean one over ``scale``: the start
        of the default init (``A0 = I``) in either whitening.  The distances
        come from the pass the constructor made, so only the gradient's
        weighted outer sum remains (d^2 flops a pair instead of 3 d^2 for a
        full-rank factor).
        """
        euclid = np.sqrt(self._euclid_sq)
        np.divide(euclid, scale, out=self.dists)
        weights = np.zeros_like(euclid)
        np.divide(0.5 * scale, euclid, out=weights, where=euclid > 0)
        return float(self.dists.sum()), self.weighted_outer(weights)

    def value_factor(self, L):
        """``f(L L^T)`` alone (2 n d r flops; ``self.dists`` is left alone)."""
        return factor_dist_sum_and_grad(self.dissimilar, self._factor(L), None,
                                        self.n_threads, grad=False)[0]

    def weighted_outer(self, weights):
        """``sum_p weights_p z_p z_p^T`` (whitened; weights non-negative, one pass)."""
        d = self.dissimilar.n_features
        out = np.empty((d, d))
        nt = threads_for(self.n_threads, 2.0 * self.n_pairs * d * d)
        with kernel_threads(nt):
            _pairs.weighted_outer_sum(self.dissimilar.X, self.dissimilar.i,
                                      self.dissimilar.j,
                                      np.ascontiguousarray(weights, dtype=np.float64),
                                      out, nt)
        return out if self.P is None else _sym(self.P.T @ out @ self.P)

    def factor_hessian(self, L):
        """``(f, sum_p psi_p psi_p^T / s_p^3)`` at ``B = L L^T`` (see
        :func:`_factor_derivatives`); one compiled pass over the pairs."""
        dis = self.dissimilar
        m = L.shape[0] * L.shape[1]
        H2 = np.empty((m, m))
        P = np.empty((0, 0)) if self.P is None else np.ascontiguousarray(self.P)
        flops = self.n_pairs * (m * m + 2.0 * L.shape[0] * dis.n_features)
        nt = threads_for(self.n_threads, flops)
        with kernel_threads(nt):
            f = _pairs.factor_hessian(dis.X, dis.i, dis.j, P,
                                      np.ascontiguousarray(L, dtype=np.float64), H2,
                                      nt)
        return f, H2

    def pair_distances(self, L):
        """Every pair's distance under ``L L^T`` (``self.dists`` is left alone)."""
        out = np.empty(self.n_pairs)
        factor_dist_sum_and_grad(self.dissimilar, self._factor(L), out,
                                 self.n_threads, grad=False)
        return out

    def collapsed(self):
        """Whether a pair of distinct points sits at distance 0 at the last point."""
        return np.count_nonzero(self.dists == 0) > self.n_identical

    def collapsed_pairs(self, L):
        """Pairs of distinct points whose difference ``B = L L^T`` (nearly) ignores.

        Those with ``z_p^T B z_p <= 1e-12 ||z_p||^2 trace(B)``, at the last
        evaluation's distances (at most 4096 of them).  Candidates are the
        pairs below 1e-6 of the mean distance (one O(n) scan); only their
        differences are gathered.
        """
        s = self.dists
        positive = s[s > 0]
        cut = 1e-6 * positive.mean() if positive.size else np.inf
        idx = np.flatnonzero((s <= cut) & ~self.identical)[:4096]
        if idx.size == 0:
            return idx
        norms2 = np.einsum("pk,pk->p", *(self.rows(idx),) * 2)
        keep = s[idx] ** 2 <= 1e-12 * norms2 * float(np.sum(L * L))
        return idx[keep & (norms2 > 0)]

    def fw_gap(self, f, G):
        """Relative Frank-Wolfe gap ``(lambda_max(G) - f / 2) / f`` at the last point.

        With ``t_p = dist_p`` in the bound of :func:`_dual_gap` this is a
        certified bound on ``(f* - f) / f`` -- provided no pair other than
        identical points sits at distance 0 (such a pair's term would need
        ``t_p = 0``); then it is ``inf``.  ``f / 2 = <G, B>`` by homogeneity.
        """
        if self.collapsed():
            return np.inf
        return max(_lambda_max(G) - 0.5 * f, 0.0) / max(f, np.finfo(float).tiny)

    def gap_at_most(self, f, G, target):
        """Whether :meth:`fw_gap` is certified to be at most ``target``.

        ``lambda_max(G) <= (1/2 + target) f`` shown by one Cholesky
        factorisation (:func:`_certified_below`), several times cheaper than
        the eigenvalue; False also when that is not shown.
        """
        return (f > 0 and not self.collapsed()
                and _certified_below(G, (0.5 + target) * f))

    def fw_gap_bound(self, f, G, L, target):
        """``(gap, certified)``: the Frank-Wolfe gap, or a lower bound when that
        already exceeds ``2 target``.

        The iteration only needs the exact gap when it might stop.  A Ritz
        value of G on ``span[L, G L, v]`` (v the last such Ritz vector) is a
        lower bound on ``lambda_max(G)`` (Cauchy interlacing) and near the
        optimum a close one -- G's top eigenvectors then lie in or near the
        range of ``B = L L^T`` -- for O(d^2 r) flops instead of an
        eigenvalue call on G (O(d^3)).  Only for ``d > _EXACT_EIGVALS_DIM``
        and narrow L, where it is cheaper; otherwise the gap is exact.
        """
        d, r = L.shape
        if d > _EXACT_EIGVALS_DIM and 4 * (2 * r + 1) <= d:
            if self.collapsed():
                return np.inf, True
            if self._ritz_v is None:
                self._ritz_v = _start_vector(d)
            Q = np.linalg.qr(np.column_stack([L, G @ L, self._ritz_v]))[0]
            w, U = np.linalg.eigh(_sym(Q.T @ G @ Q))
            self._ritz_v = Q @ U[:, -1]
            bound = max(w[-1] - 0.5 * f, 0.0) / max(f, np.finfo(float).tiny)
            if bound > 2.0 * target:
                return bound, False
        if self.gap_at_most(f, G, target):
            return target, True  # certified: the gap is at most this
        return self.fw_gap(f, G), True


def _factor_mix(L0, L1, t, B):
    """A factor L (d x r) of ``B = (1 - t) L0 L0^T + t L1 L1^T``, of its numerical rank.

    The mixture's range lies in that of ``[L0, L1]`` (d x (r0 + r1)), so a QR
    of the stacked factors and an eigendecomposition of the small ``R R^T``
    give its eigenpairs in O(d r^2) instead of a d x d eigendecomposition;
    ``L = V sqrt(lam)`` with orthonormal V.  Eigenvalues below
    ``d eps lambda_max`` are dropped, as a d x d eigh of the mixture could not
    resolve them (and keeping them would widen every factor).
    """
    d = L0.shape[0]
    if 4 * (L0.shape[1] + L1.shape[1]) > d:
        # few features: one d x d eigh of the mixture B costs less
        lam, V = _eigh(B)
    else:
        K = np.hstack([np.sqrt(1.0 - t) * L0, np.sqrt(t) * L1])
        Q, R = np.linalg.qr(K)
        lam, U = np.linalg.eigh(_sym(R @ R.T))
        V = Q @ U
    keep = lam > max(lam[-1], 0.0) * d * np.finfo(float).eps
    return V[:, keep] * np.sqrt(lam[keep])


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
    used to choose among floors in :func:`_dual_gap`, never to certify.  Below
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


def _dual_gap(prob, f, G, max_subset=2048, n_floors=10):
    """Certified relative duality gap ``(U - f) / f`` with ``U >= f*``, by floors.

    For any ``t_p > 0``, ``sqrt(a) <= t_p / 2 + a / (2 t_p)``, so
    ``f* <= sum_p t_p / 2 + lambda_max(sum_p z_p z_p^T / (2 t_p))`` (maximising
    the linear term over the spectraplex).  ``t_p = dist_p`` gives the
    Frank-Wolfe bound (:meth:`_Whitened.fw_gap`), valid when no pair sits at
    zero distance and loose when some nearly do; raising the smallest
    distances to a floor ``tau`` removes the near-collapsed pairs' blow-up,
    and minimising over floors (a coarse grid, then a finer one around the
    best) gives a bound that is tight at the optimum.  Pairs of identical
    points (``z_p = 0``) contribute nothing and are ignored.  The distances
    are those of the last evaluation (``prob.dists``, at the point where f and
    G were taken).

    The matrix of each floor is the part of G from the pairs outside the
    ``max_subset`` nearest ones plus running sums over those, sorted by
    distance -- all terms non-negative, built from the largest distance down,
    so no floor subtracts a near-collapsed pair's huge ``1 / dist`` term (that
    cancellation once certified a point 2e-5 short of the optimum).  When
    such a term dominates G the outside part takes one weighted pass instead
    of ``G`` minus the subset.  One eigenvalue per floor.  Returns inf when no
    floor applies.
    """
    s = prob.dists
    total = float(s.sum())
    scale = max(f, np.finfo(float).tiny)
    k = min(max_subset, s.size)
    small = np.argpartition(s, k - 1)[:k] if k < s.size else np.arange(s.size)
    small = small[np.argsort(s[small])]
    Z = prob.rows(small)
    norms2 = np.einsum("pk,pk->p", Z, Z)
    s_sub = s[small]
    inv = np.where(s_sub > 0, 0.5 / np.maximum(s_sub, 1e-300), 0.0)
    if float(np.max(inv * norms2, initial=0.0)) <= 64.0 * scale:
        # every subset term is small next to G: subtracting them is exact
        # to rounding
        G_out = G - (Z * inv[:, None]).T @ Z
    else:
        weights = np.where(s > 0, 0.5 / np.maximum(s, 1e-300), 0.0)
        weights[small] = 0.0
        G_out = prob.weighted_outer(weights)
    nonzero = norms2 > 0
    Z, s_small, inv = Z[nonzero], s_sub[nonzero], inv[nonzero]
    if s_small.size == 0:
        return np.inf
    prefix = np.concatenate([[0.0], np.cumsum(s_small)])
    v = _start_vector(G.shape[0])

    def estimates(taus):
        # The pairs at or above a floor keep their 1 / dist weights, those
        # below weigh 1 / tau: each part a running sum of non-negative terms,
        # the first grown from the largest distance down, the second from the
        # smallest up.  (The part below as the whole sum minus the part above
        # cancelled: at a floor of 1e-12 its rounding, times 1 / tau, made
        # G_tau indefinite and the "bound" fell below f, certifying a point
        # 9e-7 short.)  lambda_max is only estimated here; the chosen floor
        # is evaluated exactly below.
        cuts = np.searchsorted(s_small, taus, side="left")  # ascending
        below, acc, start = [], np.zeros_like(G_out), 0
        for cut in cuts:
            if cut > start:
                seg = Z[start:cut]
                acc = acc + seg.T @ seg
                start = cut
            below.append(acc)
        above, acc, stop = [None] * len(cuts), np.zeros_like(G_out), s_small.size
        for t in range(len(cuts) - 1, -1, -1):
            if cuts[t] < stop:
                seg = Z[cuts[t]:stop]
                acc = acc + (seg * inv[cuts[t]:stop, None]).T @ seg
                stop = cuts[t]
            above[t] = acc
        out = []
        for tau, cut, part_below, part_above in zip(taus, cuts, below, above,
                                                    strict=True):
            lifted = tau * cut - prefix[cut]
            G_tau = _sym(G_out + part_above + part_below / (2.0 * tau))
            out.append(((total + lifted) / 2 + _lambda_max_estimate(G_tau, v, 30),
                        (total + lifted) / 2, G_tau))
        return out

    positive = s_small[s_small > 0]
    hi = max(s_small[-1], np.finfo(float).tiny)
    # With pairs at zero distance the best floor can lie far below every
    # positive distance, so the grid then reaches down 16 decades.
    lo = positive[0] if s_small[0] > 0 else hi * 1e-16
    lo = min(max(lo, np.finfo(float).tiny), hi)  # (hi * 1e-16 can underflow)
    taus = np.geomspace(lo, hi, n_floors)
    coarse = estimates(taus)
    i = int(np.argmin([c[0] for c in coarse]))
    fine = estimates(np.geomspace(taus[max(i - 1, 0)],
                                  taus[min(i + 1, taus.size - 1)], n_floors))
    _, base, G_tau = min(coarse + fine, key=lambda c: c[0])
    best = base + _lambda_max(G_tau)
    if best < f - _rounding_slack(f, s.size):
        # an upper bound on f* below f: rounding broke it, so it certifies
        # nothing
        return np.inf
    return max(best - f, 0.0) / scale


# A Newton step on the factor L (d x r) costs O(n (d r)^2); beyond this many
# variables it costs more than many projected-gradient steps.
_MAX_NEWTON_VARS = 600
_TINY = np.finfo(float).tiny
# Projected-gradient steps between Newton attempts.
_NEWTON_EVERY = 10
# Whitened differences kept for Newton up to this many float64 values (32 MB).
_CACHE_ELEMENTS = 4_000_000
# Up to this many features (and while the whitened differences fit in
# _CACHE_ELEMENTS) projected gradient runs compiled: there Python's overhead
# per iteration, not the pair passes or the eigendecompositions, dominates.
_COMPILED_MAX_D = 32
_COMPILED_MAX_WORK = 5e5  # n_pairs d^2 (one pass; beyond it the pair kernels win)
# ... except for up to this many features, where the pair kernels' gathers
# and tiny BLAS blocks cost more than the compiled loop's single-threaded
# passes over the cached differences (measured: d=5, 1e5 pairs 33 -> 19 ms;
# d=8, 1e6 pairs 261 -> 222 ms)
_COMPILED_ANY_N_D = 8
# The compiled loop hands over to the Python loop (and its Newton rounds) once
# its linear rate predicts more than this many further iterations.
_COMPILED_PATIENCE = 12
_COMPILED_MAX_ITER = 10_000
# The compiled loop's passes take a second thread from this much work per
# thread (4 n d^2 flops a pass; blocks of 512 rows).
_COMPILED_FLOPS_PER_THREAD = 2e5


def _factor_derivatives(prob, L, G):
    """Value, gradient and Hessian of ``f(L) = sum_p ||L^T z_p||`` (one pass).

    ``z_p`` are the whitened dissimilar differences.  With
    ``G = sum_p z z^T / (2 s_p)`` the gradient of f at ``B = L L^T`` (from the
    pair kernel), the gradient is ``2 G L`` and, in column-major ``vec``
    coordinates, the Hessian is ``I_r (x) 2 G - sum_p psi psi^T / s^3`` with
    ``psi_p = vec(z_p y_p^T)``, ``y_p = L^T z_p``, ``s_p = ||y_p||``; only that
    last sum needs the pass (:meth:`_Whitened.factor_hessian`).
    """
    f, H2 = prob.factor_hessian(L)
    H = -H2
    d = L.shape[0]
    for a in range(L.shape[1]):  # + I_r (x) 2 G, block by block
        H[a * d:(a + 1) * d, a * d:(a + 1) * d] += 2.0 * G
    return f, 2.0 * G @ L, H


def _tangent_newton_step(H, g, Q, f_L):
    """Newton step on the tangent space ``{x : Q^T x = 0}`` by Cholesky, or None.

    ``Q`` (m x k, orthonormal columns) spans the normal and gauge directions.
    The tangent Hessian ``Hr = Pi (H - f_L I) Pi`` (``Pi = I - Q Q^T``) is
    formed in O(m^2 k) and shifted by ``c Q Q^T`` on the normal directions, so
    that ``-Hr + c Q Q^T`` is positive definite exactly when ``Hr`` is negative
    definite on the tangent space (the usual case near a maximum); then the
    step ``(-Hr)^{-1} Pi g`` costs one Cholesky factorisation, m^3 / 3 flops,
    instead of an eigendecomposition and two m x m x m products.  Returns
    ``(step, decrement)`` or None when the factorisation fails (some tangent
    direction has non-negative curvature) or leaves a step that is not finite.
    """
    m = H.shape[0]
    Hf = H - f_L * np.eye(m)
    HQ = Hf @ Q
    QHQ = Q.T @ HQ
    # Pi Hf Pi = Hf - HQ Q^T - Q HQ^T + Q (Q^T Hf Q) Q^T
    C = HQ - 0.5 * (Q @ QHQ)
    Mpos = -Hf + C @ Q.T + Q @ C.T
    c = max(float(np.abs(Mpos.diagonal()).max()), _TINY)
    Mpos += c * (Q @ Q.T)
    g_t = g - Q @ (Q.T @ g)
    # LAPACK's Cholesky directly: scipy's cho_factor / cho_solve wrappers
    # cost more than the factorisation at these sizes
    chol, info = dpotrf(_sym(Mpos), lower=1, clean=0)
    if info != 0:
        return None
    diag = np.abs(chol.diagonal())
    # A nearly singular factor means a tangent direction of almost zero
    # curvature: the eigendecomposition route drops such directions.
    if not diag.min() > 1e-6 * diag.max():
        return None
    x, info = dpotrs(chol, g_t, lower=1)
    if info != 0:
        return None
    x -= Q @ (Q.T @ x)
    dec = float(g_t @ x)
    if not np.all(np.isfinite(x)) or not dec >= 0:
        return None
    return x, dec


def _rounding_slack(f, n_terms):
    """How far below ``f`` a sum of ``n_terms`` positive float64 terms may come
    out from rounding alone: ``8 eps sqrt(n) |f|`` (the typical error of a
    blocked sum grows like sqrt(n); with 5e5 pairs, 8 eps |f| was 700 times
    too strict and the line searches rejected every step of a Newton round
    that had a 1e-8 gap left to close)."""
    return 8.0 * np.finfo(float).eps * np.sqrt(max(n_terms, 1)) * abs(f)


def _factor_newton(prob, B, f, r, dec_tol, budget, target=0.0, G=None):
    """Riemannian Newton for ``max f(L L^T)`` over ``||L||_F = 1`` with L of rank r.

    Writing ``B = L L^T`` lets a Newton step rotate the range of B as well as
    reweight it, which projected gradient does only slowly when the problem
    is badly conditioned.  Steps live in the tangent space of the sphere,
    orthogonal to the rotations ``L -> L Q`` that leave B unchanged; the
    Hessian's negative eigen-directions get Newton steps, the rest none, and a
    backtracking line search on f (retraction by normalisation) keeps ascent.
    When the tangent Hessian is negative definite the step is one Cholesky
    solve (:func:`_tangent_newton_step`); otherwise an eigendecomposition.
    The round stops early once the Frank-Wolfe certificate at the current
    point is below ``target``.

    ``G``, when given, is the gradient at B (``f`` its value, ``prob.dists``
    its distances): the first step then needs no pass if B has rank r.

    Returns ``(B, L, f, G)`` with ``B = L L^T``; B is unchanged (and L
    None) if no step increased f.  ``G`` is the gradient at the returned
    point when the round evaluated it there (``f`` is then the value of that
    pass and ``prob.dists`` its distances), else None.
    """
    d = B.shape[0]
    lam, V = _eigh_top(B, r)
    lam_top = np.maximum(lam, 0.0)
    L = V * np.sqrt(lam_top)
    norm2 = float(np.sum(lam_top))
    L /= np.sqrt(norm2)
    # L L^T is B to rounding when B has rank r and unit trace
    trace = float(np.trace(B))
    known = (f, G) if G is not None and abs(trace - norm2) <= 1e-13 * trace \
        and abs(trace - 1.0) <= 1e-13 else None
    steps = 0
    best_B, best_L, best_f = B, None, f
    evaluated = (None, f, None)  # (L, f, G) of the last gradient pass
    while steps < budget:
        if known is not None:
            (f_L, G_L), known = known, None
        else:
            f_L, G_L = prob.value_grad_factor(L)
            evaluated = (L, f_L, G_L)
        if steps > 0 and prob.gap_at_most(f_L, G_L, target):
            break
        f_L, grad, H = _factor_derivatives(prob, L, G_L)
        g = grad.reshape(-1, order="F")
        # Normal direction and gauge directions L @ (e_a e_b^T - e_b e_a^T).
        normals = [L.reshape(-1, order="F")]
        for a in range(r):
            for b in range(a + 1, r):
                Om = np.zeros((r, r))
                Om[a, b], Om[b, a] = 1.0, -1.0
                normals.append((L @ Om).reshape(-1, order="F"))
        k = len(normals)
        if k >= d * r:
            break  # r = d = 1: B is fixed by its trace
        Nm = np.column_stack(normals)
        fast = _tangent_newton_step(H, g, np.linalg.qr(Nm)[0], f_L)
        if fast is not None:
            x, dec = fast
        else:
            Nq, _ = np.linalg.qr(Nm, mode="complete")
            T = Nq[:, k:]
            Hr = T.T @ (H - f_L * np.eye(d * r)) @ T
            g_t = T.T @ g
            w, U = np.linalg.eigh(_sym(Hr))
            coef = U.T @ g_t
            neg = w < -1e-12 * max(np.abs(w).max(), 1e-300)
            step_t = np.zeros_like(coef)
            step_t[neg] = -coef[neg] / w[neg]
            dec = float(coef[neg] @ step_t[neg])
            x = T @ (U @ step_t)
        if not np.isfinite(dec) or dec <= dec_tol * f_L:
            break
        E = x.reshape(d, r, order="F")
        steps += 1
        # Slack of f's rounding: close to the optimum a Newton step gains
        # less than that (the gap is first-order in the distance to the
        # optimum, f's error second-order), and the step is still right.
        slack = _rounding_slack(f_L, prob.n_pairs)
        t = 1.0
        while t > 1e-12:
            L_new = L + t * E
            L_new /= np.linalg.norm(L_new)
            f_new = prob.value_factor(L_new)
            if f_new >= f_L + 1e-4 * t * dec - slack:
                break
            t *= 0.5
        else:
            break
        L = L_new
        if f_new >= best_f - slack:
            best_B, best_L, best_f = _sym(L_new @ L_new.T), L_new, max(f_new, best_f)
    if best_L is not None and evaluated[0] is best_L:
        return best_B, best_L, evaluated[1], evaluated[2]
    return best_B, best_L, best_f, None


def _newton_pays(gaps, gap, target, d, r, n_pairs):
    """Whether a Newton round is expected to beat continuing projected gradient.

    Projected gradient converges linearly; its rate over the last iterations
    predicts how many more it needs.  A Newton round (about three steps, each
    a gradient pass, a Hessian pass -- whitening the block, 2 n d^2, and its
    syrk, n (d r)^2 -- and an O((d r)^3) eigendecomposition) is priced in
    projected-gradient iterations (one low-rank kernel pass, n (d^2 + 2 d r),
    and O(d^3) eigendecompositions), eigendecompositions counted 20 flops
    apart.
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
    iteration = n_pairs * (d**2 + 2.0 * m) + 40.0 * d**3
    newton = 3.0 * (iteration + n_pairs * (2.0 * d**2 + m**2) + 20.0 * m**3)
    return remaining > newton / iteration


# A Newton step counts as cheap (see _newton_pays_now) up to this many
# gradient steps.
_NEWTON_CHEAP_STEPS = 8
_NEWTON_FACE_STEPS = 3
_NEWTON_FACE_GAP = 1e-3


def _steps_left(gaps, gap, target, window=3):
    """Projected-gradient steps to ``target`` at the rate of the last ``window``."""
    if len(gaps) <= window or not (gaps[-1 - window] > 0 and gap > 0):
        return np.inf
    rate = (gap / gaps[-1 - window]) ** (1.0 / window)
    if not rate < 1.0:
        return np.inf
    return np.log(target / gap) / np.log(rate)


def _newton_pays_now(gaps, gap, target, d, r, n_pairs):
    """Whether a Newton round on a rank-r factor beats the projected-gradient
    steps still to go, priced as in :func:`_newton_pays` plus the Python
    overhead of either step (about 0.1 ms for a gradient step, 0.3 ms for a
    Newton step) in flops; a round takes about two Newton steps.  Only for
    Newton steps of at most ``_NEWTON_CHEAP_STEPS`` gradient steps.
    """
    m = d * r
    iteration = n_pairs * (d**2 + 2.0 * m) + 40.0 * d**3 + 3e6
    newton = iteration + n_pairs * (2.0 * d**2 + m**2) + 20.0 * m**3 + 1e7
    ratio = newton / iteration
    return (m <= _MAX_NEWTON_VARS and ratio <= _NEWTON_CHEAP_STEPS
            and _steps_left(gaps, gap, target) > 2.0 * ratio)


def _spg_step(prob, B, L, f, G, alpha, recent):
    """One spectral projected gradient step on the spectraplex.

    Non-monotone Armijo backtracking; returns ``(B, L, f, G, alpha)`` with
    ``B = L L^T``, or ``None`` for B and L when no step of at least 2^-20 of
    the trial passes (the iterate is optimal to rounding in the directions
    projected gradient can see).  The full step, a projection, comes with its
    low-rank factor; shorter steps are factored by an eigendecomposition.
    """
    trial, lam, V = _project_spectraplex(B + alpha * G, rank_hint=L.shape[1])
    L_trial = V * np.sqrt(lam)
    direction = trial - B
    slope = float(np.sum(G * direction))
    ref = max(recent[-10:])
    # Slack of f's rounding: near the optimum the predicted increase is below
    # it, and demanding it would stall the iteration.
    slack = _rounding_slack(ref, prob.n_pairs)
    step = 1.0
    while True:
        if step == 1.0:
            B_new, L_new = trial, L_trial
        else:
            B_new = B + step * direction
            L_new = _factor_mix(L, L_trial, step, B_new)
        f_new, G_new = prob.value_grad_factor(L_new)
        if f_new >= ref + 1e-4 * step * slope - slack:
            break
        step *= 0.5
        if step < 2.0**-20:
            return None, None, f, G, alpha
    s_vec = B_new - B
    sy = -float(np.sum(s_vec * (G_new - G)))
    ss = float(np.sum(s_vec * s_vec))
    alpha = ss / sy if sy > 0 else 1e3 * alpha
    g_norm = max(np.linalg.norm(G_new), 1e-300)
    alpha = min(max(alpha, 1e-12 / g_norm), 1e12 / g_norm)
    return B_new, L_new, f_new, G_new, alpha


def _raise_no_dissimilar_distance():
    raise ValueError(
        "every dissimilar pair has zero distance under init; MMC needs "
        "dissimilar pairs that differ"
    )


def _maximise(prob, B, L, *, max_iter, target, report, compiled, start=None,
              newton_first=False):
    """Maximise ``prob``'s f over its spectraplex from ``B = L L^T``.

    Spectral projected gradient (Barzilai-Borwein steps, non-monotone line
    search) makes fast progress and finds the low-rank face the optimum lies
    on; its iterates are low-rank, so every pass over the pairs goes through
    the factor ``B = L L^T`` (distances at 2 n d r flops) and each projection
    computes only the top eigenpairs.  When its linear rate predicts more work
    than a Newton round (badly conditioned data), a Riemannian Newton method
    on the factor L converges quadratically.  Small problems (``compiled``,
    few features and pairs) run projected gradient in one compiled call and
    hand over here only if it stalls or slows down.  Optimality is certified
    by the Frank-Wolfe duality gap ``lambda_max(grad) - <grad, B>`` (one
    eigenvalue), or, when some pairs are (nearly) collapsed, by the floored
    bound of :func:`_dual_gap`; above 48 features the gap is only bounded
    from below (a Ritz value, O(d^2 r)) while that bound shows the solver
    cannot stop yet, and taken exactly otherwise.

    ``report(phase, get_B, f, gap, n_iter)`` runs after every iteration
    (``get_B()`` gives the iterate, or None for iterations replayed from the
    compiled loop) and returns True to stop.  ``start``, when given, returns
    ``(f, G)`` at ``B`` and sets ``prob.dists`` there, for less than a pass
    (:meth:`_Whitened.value_grad_euclidean`).  ``newton_first``: begin with a
    Newton round on B's factor (B near the optimum, on its face), not with
    projected gradient (it implies ``compiled=False``).

    Returns
    -------
    B, L, f, G, gap, n_iter, stopped
        The last iterate with its factor, value, gradient and certified
        relative gap; iterations run; whether ``report`` stopped the loop.
    """
    d = prob.dim
    n_pairs = prob.n_pairs
    Z = (prob.whitened_diffs() if compiled and not newton_first and max_iter > 0
         and d <= _COMPILED_MAX_D
         and (n_pairs * d**2 <= _COMPILED_MAX_WORK or d <= _COMPILED_ANY_N_D)
         else None)
    if Z is not None:
        f, G = np.inf, None
    elif start is not None:
        f, G = start()
    else:
        f, G = prob.value_grad_factor(L)

    last_floored = -10
    floor_every = 3

    def measure(f_before):
        # The Frank-Wolfe gap is certified and costs one eigenvalue.  Near
        # the end, or while progress is slow, the floored bound can be much
        # tighter -- but only when some pairs are nearly collapsed (their
        # 1 / dist weights inflate the Frank-Wolfe gap on badly conditioned
        # data); with every distance above 1% of the mean no floor
        # can gain much.  It costs a sort of the distances and a few dozen
        # small eigenvalue problems, so it is taken at most every third
        # iteration, and ever more rarely while it does not help.
        # Away from the end the Frank-Wolfe gap is only bounded from below
        # (see fw_gap_bound): that decides "not yet" as well, and every value
        # returned at or below target is certified (exact or floored).
        nonlocal last_floored, floor_every, certified
        fw, certified = prob.fw_gap_bound(f, G, L, target)
        if fw <= target:
            return fw
        slow = f_before is not None and f - f_before <= 1e2 * target * f
        if not ((fw <= 1e3 * target or slow or not np.isfinite(fw))
                and n_iter - last_floored >= floor_every):
            return fw
        if np.isfinite(fw):
            positive = prob.dists[prob.dists > 0]
            n_moving = max(n_pairs - prob.n_identical, 1)
            if positive.size and positive.min() > 0.01 * f / n_moving:
                return fw
        last_floored = n_iter
        floored = _dual_gap(prob, f, G)
        floor_every = 3 if floored < 0.5 * fw else 2 * floor_every
        if floored <= fw:
            certified = True
        return min(fw, floored)

    n_iter = 0
    certified = True
    stop = False
    compiled_gaps = []
    compiled_slow = newton_first  # (the flag that makes Newton go first)
    if Z is not None:
        B = np.array(B, dtype=np.float64, order="C")
        # (the compiled loop hands over long before this many iterations)
        budget = min(max_iter, _COMPILED_MAX_ITER)
        hist = np.empty(budget)
        gaps_c = np.empty(budget)
        nt = threads_for(prob.n_threads, 4.0 * n_pairs * d * d,
                         _COMPILED_FLOPS_PER_THREAD)
        n_iter, f, gap, G, status = spg_spectraplex(
            Z, B, budget, target, prob.n_identical, _COMPILED_PATIENCE,
            hist, gaps_c, nt)
        for k in range(n_iter):
            report("gradient", None, hist[k], gaps_c[k], k + 1)
        if status == 3:
            _raise_no_dissimilar_distance()
        compiled_gaps = [g for g in gaps_c[:n_iter].tolist() if np.isfinite(g)]
        compiled_slow = status == 1 and n_iter < max_iter and np.isfinite(gap)
        if status != 0:
            # Not certified: the Python loop (floored certificate, Newton on
            # the factor) carries on from here, with B's factor.
            lam, V = _eigh(B)
            keep = lam > max(lam[-1], 0.0) * d * np.finfo(float).eps
            L = V[:, keep] * np.sqrt(lam[keep])
            B = _sym(L @ L.T)
            f, G = prob.value_grad_factor(L)
            gap = measure(None)
        else:
            lam, V = _eigh(B)
            keep = lam > max(lam[-1], 0.0) * d * np.finfo(float).eps
            L = V[:, keep] * np.sqrt(lam[keep])
    else:
        if not f > 0:
            _raise_no_dissimilar_distance()
        gap = measure(None)

    def step_done(phase):
        nonlocal stop
        if report(phase, lambda: B, f, gap, n_iter):
            stop = True

    alpha = 1.0 / max(np.linalg.norm(G), np.finfo(float).tiny)
    recent = [f]
    since_newton = len(compiled_gaps)
    gaps = compiled_gaps
    newton_failed = False
    ranks = []
    # collapsed pairs whose directions did not pay: not again (those of nearly
    # equal points, ~1e-160 apart, never do)
    tried = np.empty(0, dtype=np.intp)
    while gap > target and n_iter < max_iter and not stop:
        f_before = f
        lost = prob.collapsed_pairs(L)
        if lost.size and not np.isin(lost, tried).all():
            # a face projected gradient cannot leave (see _uncollapse)
            L_new = _uncollapse(prob, L, f, lost)
            if L_new is None:
                tried = np.union1d(tried, lost)
            else:
                n_iter += 1
                L = L_new
                B = _sym(L @ L.T)
                f, G = prob.value_grad_factor(L)
                recent.append(f)
                gap = measure(f_before)
                step_done("uncollapse")
                # the pair's tiny distance makes the problem badly scaled for
                # projected gradient; Newton on the factor is not
                compiled_slow = True
                continue
        # Projected gradient: fast global progress; it converges in a few
        # dozen steps on well-conditioned data.  The compiled loop hands over
        # when its rate calls for Newton: then Newton goes first.
        force_newton, compiled_slow = compiled_slow, False
        if force_newton:
            B_new, spg_stalled = None, False
        else:
            B_new, L_new, f_new, G_new, alpha = _spg_step(prob, B, L, f, G,
                                                           alpha, recent)
            spg_stalled = B_new is None
        if B_new is not None:
            n_iter += 1
            since_newton += 1
            B, L, f, G = B_new, L_new, f_new, G_new
            recent.append(f)
            gap = measure(f_before)
            step_done("gradient")
            if gap <= target or stop or n_iter >= max_iter:
                break
            if np.isfinite(gap):
                gaps.append(gap)
            ranks.append(L.shape[1])
        # On a small problem a Newton step costs a few gradient steps: once
        # projected gradient has kept one rank for three steps (the face is
        # found) and is close, Newton finishes in a step or two.
        face = (since_newton >= _NEWTON_FACE_STEPS and gap < _NEWTON_FACE_GAP
                and len(set(ranks[-_NEWTON_FACE_STEPS:])) == 1
                and _newton_pays_now(gaps, gap, target, d, ranks[-1], n_pairs))
        if not (spg_stalled or force_newton or face) and \
                since_newton < _NEWTON_EVERY:
            continue
        lam = np.sum(L * L, axis=0)  # B's nonzero eigenvalues
        r = int(np.sum(lam > 1e-9 * lam.max()))
        if d * r > _MAX_NEWTON_VARS:
            if spg_stalled:
                break
            continue
        if not (spg_stalled or force_newton or face) and not _newton_pays(
                gaps, gap, target, d, r, n_pairs):
            continue
        # Projected gradient is slow (badly conditioned data, where the range
        # of B must rotate) or stuck: Newton on the factor L of B = L L^T.
        since_newton = 0
        gaps = []
        f_before = f
        B_new, L_new, f_new, G_new = _factor_newton(prob, B, f, r, 1e-2 * target**2,
                                                     20, target, G=G)
        if L_new is not None:
            # Accepted steps keep f to within rounding; near the optimum they
            # show as a smaller gap rather than a larger f.
            gap_before = gap
            n_iter += 1
            B, L = B_new, L_new
            # (the round's last pass was at L unless it ended on a rejected step)
            f, G = (f_new, G_new) if G_new is not None else prob.value_grad_factor(L)
            recent.append(f)
            gap = measure(f_before)
            step_done("newton")
            progressed = f > f_before or gap < gap_before
            if not progressed and (spg_stalled or newton_failed):
                break
            newton_failed = not progressed
        elif spg_stalled or newton_failed:
            break  # neither method can improve f any further
        else:
            newton_failed = True
    if gap > target or not certified:
        # Stopped by max_iter, a callback or a stall: report the best
        # certified gap at B, the Frank-Wolfe one or the floored bound.
        # measure() takes the latter only now and then, and a stall can come
        # between (a Newton round that fails right after a step whose gain
        # was just above "slow"): without this a point certifiable to 3e-9
        # was reported unconverged at a Frank-Wolfe gap of 0.26.
        f, G = prob.value_grad_factor(L)
        gap = prob.fw_gap(f, G)
        if gap > target:
            gap = min(gap, _dual_gap(prob, f, G))
    return B, L, f, G, gap, n_iter, stop


# Above this many features the exact solver works on subspaces (see
# _maximise_subspace); below, the whole problem is as small as a subspace.
_SUBSPACE_MIN_D = 32
# The first subspace: this many top eigenvectors of the gradient at the start.
_SUBSPACE_START = 8
# Directions added per round, at most (top eigenvectors of the full gradient).
_SUBSPACE_ADD = 12
# Largest subspace (the compiled projected-gradient loop's dimension limit).
_SUBSPACE_MAX = _COMPILED_MAX_D
# An iterate of higher rank than this hands over to the full problem (rounds
# then gain a few directions each while the full problem converges as fast).
_SUBSPACE_MAX_RANK = 8
# Rounds before the subspace driver gives the rest to the full problem.
_SUBSPACE_MAX_ROUNDS = 8
# Relative gap the first round's subspace problem is solved to (at most).
_SUBSPACE_FIRST_TARGET = 1e-6


def _orthonormal_basis(columns, cap):
    """Orthonormal basis of the span of ``columns`` (kept in priority order).

    Gram-Schmidt order: each column contributes its component orthogonal to
    the earlier ones, or nothing when that is below 1e-8 of its norm; at
    most ``cap`` columns.
    """
    columns = columns[:, :columns.shape[0]]  # (no more than d are independent)
    Q, R = np.linalg.qr(columns)
    norms = np.linalg.norm(columns, axis=0)
    keep = np.abs(np.diag(R)) > 1e-8 * np.maximum(norms, np.finfo(float).tiny)
    return np.ascontiguousarray(Q[:, keep][:, :cap])


def _uncollapse(prob, L, f, idx):
    """A factor with weight moved onto the directions of collapsed pairs, or None.

    A dissimilar pair of distinct points at distance 0 adds nothing to the
    gradient (the square root has no derivative there), yet f grows like
    ``sqrt(eps)`` when B moves by eps along its ``z_p z_p^T``: projected
    gradient, whose projections clip eigenvalues to exactly 0, can stall on
    such a face, and the Frank-Wolfe certificate is inf there.  This step
    mixes ``B(eps) = (1 - eps) B + eps C``, C the unit-trace mean of the
    collapsed pairs' principal directions (up to 8); ``f(B(eps)) = sum_p
    sqrt((1 - eps) s_p^2 + eps q_p)`` is concave in eps and costs O(n) per
    value from the current distances s_p and ``q_p = z_p^T C z_p`` (one
    pass), so a golden-section search finds the best eps.  ``prob.dists``
    must hold the distances at ``B = L L^T`` (value f); ``idx`` are the
    collapsed pairs (:meth:`_Whitened.collapsed_pairs`).
    """
    K = _principal_directions(prob, idx, np.empty((prob.dim, 0)), 8)
    if K.shape[1] == 0:
        return None
    K = K / np.sqrt(K.shape[1])
    s2 = prob.dists**2
    q = prob.pair_distances(K) ** 2

    def value(eps):
        return float(np.sqrt((1.0 - eps) * s2 + eps * q).sum())

    lo, hi = 0.0, 1.0
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = value(a), value(b)
    for _ in range(60):
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = value(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = value(a)
    eps = a if fa >= fb else b
    if not max(fa, fb) > f:
        return None
    return np.hstack([np.sqrt(1.0 - eps) * L, np.sqrt(eps) * K])


def _principal_directions(prob, idx, Q, count):
    """Up to ``count`` principal directions (d x m) of pairs ``idx`` off ``span(Q)``.

    For collapsed pairs (:meth:`_Whitened.collapsed_pairs`): such a pair's
    distance grows like the square root of a step along its difference, so f
    has unbounded slope there and the gradient cannot see it (the pair adds
    nothing, or next to nothing, to G): its direction must enter the iterate
    or the subspace explicitly.
    """
    if idx.size == 0:
        return np.empty((prob.dim, 0))
    Zc = prob.rows(idx)
    Zc = Zc - (Zc @ Q) @ Q.T if Q.shape[1] else Zc
    norms = np.linalg.norm(Zc, axis=1)
    Zc = Zc[norms > 1e-8 * max(norms.max(initial=0.0), np.finfo(float).tiny)]
    if Zc.shape[0] == 0:
        return np.empty((prob.dim, 0))
    _, sv, Vt = np.linalg.svd(Zc, full_matrices=False)
    return Vt[:count][sv[:count] > 1e-8 * sv[0]].T


def _maximise_subspace(prob, B, L, *, max_iter, target, report, compiled,
                       start=None, verbose=False):
    """Maximise f by rounds over subspaces of the whitened feature space.

    The optimum of MMC has low rank (a handful of directions even with
    hundreds of features), and the gradient's top eigenvectors point at it.
    Each round restricts the problem to ``B = Q C Q^T`` for an orthonormal
    basis Q of a few dozen directions at most -- the range of the current
    iterate plus the top eigenvectors of the full gradient above its
    optimality level (and the directions of collapsed pairs) -- solves that
    small problem (:func:`_maximise` on the n x k differences ``Z Q``,
    O(n k^2) per iteration instead of O(n d^2) and O(k^3) eigendecompositions
    instead of O(d^3)), and then takes one full pass: the full gradient's
    top eigenvalue certifies the whole problem or its eigenvectors extend
    the next basis.  On the benchmark data two rounds suffice.

    Same arguments and return values as :func:`_maximise` (``gap`` is the
    certified gap of the full problem).
    """
    d = prob.dim
    f, G = prob.value_grad_factor(L) if start is None else start()
    if not f > 0:
        _raise_no_dissimilar_distance()
    n_iter = 0
    stop = False
    Q = np.empty((d, 0))
    for rounds in range(_SUBSPACE_MAX_ROUNDS + 1):
        collapsed = prob.collapsed()
        if rounds and prob.gap_at_most(f, G, target):
            # certified without the eigenpairs (one Cholesky instead)
            if verbose:
                print(f"mmc exact round {rounds} (subspace of {Q.shape[1]}): sum_D "
                      f"dist = {f:.12g}, relative gap <= {target:.3e}")
            return B, L, f, G, target, n_iter, stop
        m = min(d, _SUBSPACE_START if rounds == 0 else _SUBSPACE_ADD)
        lam, U = _eigh_top(G, m)
        gap = np.inf if collapsed else max(lam[-1] - 0.5 * f, 0.0) / max(
            f, np.finfo(float).tiny)
        if verbose and rounds:
            print(f"mmc exact round {rounds} (subspace of {Q.shape[1]}): sum_D "
                  f"dist = {f:.12g}, relative gap = {gap:.3e}")
        if gap <= target or n_iter >= max_iter or stop:
            return B, L, f, G, gap, n_iter, stop
        if rounds == _SUBSPACE_MAX_ROUNDS:
            break
        # New directions: the gradient's eigenvectors above f / 2 (the level
        # the optimum's range sits at), first the largest; in the first round
        # all m of them, which span the start's best directions.
        order = np.argsort(lam)[::-1]
        new = U[:, order] if rounds == 0 else U[:, order[lam[order] > 0.5 * f]]
        lost = _principal_directions(prob, prob.collapsed_pairs(L), Q,
                                     _SUBSPACE_ADD)
        if lost.shape[1]:
            new = np.hstack([lost, new])
        parts = [new, Q] if rounds == 0 else [L, new, Q]
        rank = np.linalg.matrix_rank(L) if rounds else 0
        if rank > _SUBSPACE_MAX_RANK or rank + new.shape[1] > _SUBSPACE_MAX:
            # the optimum is not of low rank: a subspace that holds it and
            # the directions it needs converges no faster than the problem
            break
        Q_next = _orthonormal_basis(np.hstack(parts), _SUBSPACE_MAX)
        if rounds and Q_next.shape[1] <= rank:
            break  # nothing new to add: the subspace cannot help any more
        Q = Q_next
        sub = _Whitened.from_rows(prob.project(Q), prob.n_threads)
        C = _sym(Q.T @ B @ Q)
        if rounds == 0:
            C /= max(np.trace(C), np.finfo(float).tiny)
        lam_c, V_c = _eigh(C)
        keep = lam_c > max(lam_c[-1], 0.0) * C.shape[0] * np.finfo(float).eps
        L_c = V_c[:, keep] * np.sqrt(lam_c[keep])
        done = n_iter
        basis = Q

        def sub_report(phase, get_C, f_, gap_, k, basis=basis, done=done):
            def get_B():
                C_ = get_C()
                return _sym(basis @ C_ @ basis.T)
            return report(phase, get_B if get_C is not None else None, f_, gap_,
                          done + k)

        # The first round by projected gradient alone, to a loose target:
        # its subspace rarely holds the optimum (the next full gradient
        # extends it), so a tight finish there is wasted.  Later rounds start
        # near the optimum, on its face, and go straight to Newton, which
        # makes the tight finish (a tenth of the target) cheap.  Measured
        # (solver alone, best of 15, benchmark data): d=50 with 1e4 pairs
        # 10.9 -> 8.5 ms, 1e3 pairs 4.1 -> 3.3 ms, d=100 with 1e4 pairs
        # 15.5 -> 12.7 ms; a first-round target of 1e-5 was faster still at
        # d=50 but needed another round at d=100.
        inner_target = 0.1 * target if rounds else max(0.1 * target,
                                                       _SUBSPACE_FIRST_TARGET)
        C, L_c, _, _, _, it, stop = _maximise(
            sub, C, L_c, max_iter=max_iter - n_iter, target=inner_target,
            report=sub_report, compiled=compiled, newton_first=rounds > 0)
        n_iter += it
        L = Q @ L_c
        B = _sym(L @ L.T)
        f, G = prob.value_grad_factor(L)
        if it == 0:
            break  # the subspace is solved and adds nothing: see below
    # The rounds stopped helping (or took too long): the full problem from here.
    B, L, f, G, gap, it, stop = _maximise(
        prob, B, L, max_iter=max_iter - n_iter, target=target,
        report=lambda phase, get_B, f_, gap_, k: report(phase, get_B, f_, gap_,
                                                        n_iter + k),
        compiled=compiled)
    return B, L, f, G, gap, n_iter + it, stop


def solve_exact(similar, dissimilar, A0, *, shrinkage=0.0, max_iter=100,
                tol=1e-3, n_threads=1, callback=None, verbose=False):
    """Solve MMC with a full matrix to its optimum.

    Maximises ``sum_D ||x-y||_A`` subject to ``sum_S ||x-y||_A^2 <= t`` and
    A PSD, where ``t = <A0, M_S> / 100`` as in metric-learn (so the result has
    metric-learn's scale).  Whitening by the (shrunk) S-matrix turns both
    constraints into the spectraplex ``{B PSD, trace(B) <= 1}``; the concave
    problem there is solved by :func:`_maximise` (projected gradient and
    Newton on the factor, certified by the duality gap), above
    ``_SUBSPACE_MIN_D`` features in rounds over small subspaces
    (:func:`_maximise_subspace`).

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
    n_threads = threads_for_small(n_threads, similar.n_pairs + dissimilar.n_pairs, d)
    M_S = s_matrix(similar, n_threads)
    t_bound = float(np.sum(A0 * M_S)) / 100.0
    if not t_bound > 0:
        raise ValueError(
            "the similar pairs all have zero distance under init, so the "
            "similarity bound t = sum_S ||x-y||_init^2 / 100 is 0; use another init"
        )
    M = M_S if shrinkage == 0 else (
        (1.0 - shrinkage) * M_S + shrinkage * np.trace(M_S) / d * np.eye(d))
    prob = _Whitened.from_matrix(dissimilar, M, n_threads)
    target = min(max(1e-5 * tol, TOLERANCE_FLOOR), 1e-3)
    # metric-learn's scale puts sum_S ||x-y||_A^2 at t.  When the optimum lies
    # where the similar pairs do not vary that sum is 0, so the scale is taken
    # with the S-matrix's eigenvalues floored as in the whitening (which
    # leaves a well-conditioned plain S-matrix as it is).
    M_scale = prob.M_used if shrinkage == 0 else _floored_s_matrix(M_S)

    def scaled(B):
        A = prob.to_A(B)
        return A * (t_bound / max(float(np.sum(A * M_scale)), np.finfo(float).tiny))

    if np.array_equal(A0, np.eye(d)):
        # The default init: B = P_inv P_inv^T, of factor P_inv, on the
        # spectraplex once scaled to unit trace (no eigendecomposition).
        euclid_scale = np.sqrt(max(float(np.sum(prob.P_inv**2)), _TINY))
        L = prob.P_inv / euclid_scale  # P L = I / euclid_scale
        B = _sym(L @ L.T)
    else:
        euclid_scale = None
        B = prob.to_B(A0)
        B, lam, V = _project_spectraplex(B / max(np.trace(B), np.finfo(float).tiny))
        L = V * np.sqrt(lam)
    history = []

    def report(phase, get_B, f, gap, n_iter):
        history.append(f)
        if verbose:
            print(f"mmc exact iter {n_iter} ({phase}): sum_D dist = {f:.12g}, "
                  f"relative gap = {gap:.3e}")
        return bool(callback is not None and get_B is not None
                    and callback(scaled(get_B()), n_iter))

    common = dict(max_iter=max_iter, target=target, report=report,
                  compiled=callback is None)
    if euclid_scale is not None and max_iter > 0:
        # the default init's distances are Euclidean: no full-rank pass
        common["start"] = lambda: prob.value_grad_euclidean(euclid_scale)
    if d > _SUBSPACE_MIN_D and max_iter > 0:
        B, L, f, G, gap, n_iter, stop = _maximise_subspace(
            prob, B, L, verbose=verbose, **common)
    else:
        B, L, f, G, gap, n_iter, stop = _maximise(prob, B, L, **common)
    converged = gap <= target
    if not converged and not stop:
        _warn_not_converged("MMC (exact)", n_iter, f"relative gap {gap:.2e}")
    A_w = prob.to_A(B)
    scale = t_bound / max(float(np.sum(A_w * M_scale)), np.finfo(float).tiny)
    A = A_w * scale
    factor = np.sqrt(scale) * (prob.P @ L)
    # J without another pass: f is sum_D ||x-y|| under P B P^T (J does not
    # depend on the scale) and sum_S ||x-y||_A^2 = <A, M_S>.
    s_sim = float(np.sum(prob.to_A(B) * M_S))
    objective = f / np.sqrt(s_sim) if s_sim > 0 else (np.inf if f > 0 else 0.0)
    return MMCResult(A=A, n_iter=n_iter, converged=converged, objective=objective,
                     history=history, gap=gap, factor=factor)
