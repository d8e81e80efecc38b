"""asv benchmarks of MMC fitting and of the pair kernel it spends its time in.

Data are seeded Gaussian classes (features on different scales) with half
similar and half dissimilar index pairs, built in ``setup`` together with a
warm-up fit so that Numba compilation and first-call costs stay out of the
timings.  ``track_J`` records the objective reached, so a faster commit that
stops short of the optimum shows up as a lower J.
"""

import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from fastmetric import MMC

N_FEATURES = [5, 20, 50, 100]
N_PAIRS = [1_000, 10_000, 100_000]


def gaussian_pairs(d, n_pairs, seed=0, n_points=2000, n_classes=5):
    """Points in Gaussian classes and balanced random index pairs with labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_points)
    X = rng.normal(size=(n_points, d)) + 2.0 * rng.normal(size=(n_classes, d))[y]
    X *= rng.uniform(0.5, 2.0, size=d)
    half = n_pairs // 2
    sim, dis = np.empty((0, 2), np.intp), np.empty((0, 2), np.intp)
    while len(sim) < half or len(dis) < n_pairs - half:
        cand = rng.integers(0, n_points, size=(2 * n_pairs, 2))
        cand = cand[cand[:, 0] != cand[:, 1]]
        same = y[cand[:, 0]] == y[cand[:, 1]]
        sim = np.concatenate([sim, cand[same]])[:half]
        dis = np.concatenate([dis, cand[~same]])[: n_pairs - half]
    pairs = np.concatenate([sim, dis])
    labels = np.r_[np.ones(len(sim), int), -np.ones(len(dis), int)]
    return np.ascontiguousarray(X), pairs, labels


def objective_J(X, pairs, labels, A):
    """``sum_D ||x-y||_A / sqrt(sum_S ||x-y||_A^2)`` in plain NumPy."""
    diff = X[pairs[:, 0]] - X[pairs[:, 1]]
    sq = np.maximum(np.einsum("pk,pk->p", diff @ A, diff), 0.0)
    return float(np.sqrt(sq[labels == -1]).sum() / np.sqrt(sq[labels == 1].sum()))


class MMCFit:
    """Fitting MMC (exact full matrix and diagonal) from index pairs."""

    params = (N_FEATURES, N_PAIRS)
    param_names = ["n_features", "n_pairs"]
    timeout = 600

    def setup(self, d, n_pairs):
        self.X, self.pairs, self.labels = gaussian_pairs(d, n_pairs)
        warnings.simplefilter("ignore")  # ConvergenceWarning of the warm-ups
        small = np.r_[0:200, n_pairs // 2:n_pairs // 2 + 200]
        for kw in ({}, {"diagonal": True}):
            MMC(preprocessor=self.X, max_iter=3, **kw).fit(
                self.pairs[small], self.labels[small])

    def _fit(self, **kw):
        return MMC(preprocessor=self.X, **kw).fit(self.pairs, self.labels)

    def time_fit_exact(self, d, n_pairs):
        self._fit()

    def time_fit_diagonal(self, d, n_pairs):
        self._fit(diagonal=True)

    def peakmem_fit_exact(self, d, n_pairs):
        self._fit()

    def track_J(self, d, n_pairs):
        est = self._fit()
        return objective_J(self.X, self.pairs, self.labels, est.A_)

    track_J.unit = "J"


class PairKernel:
    """``_pairs.sqrt_dist_sum_grad`` as the estimators call it.

    Two OpenMP threads with BLAS limited to one thread each (the limit is
    entered in ``setup`` so the timing holds the call only).
    """

    params = ([20, 100], [10_000, 100_000])
    param_names = ["n_features", "n_pairs"]

    def setup(self, d, n_pairs):
        from fastmetric import _pairs

        self.kernel = _pairs.sqrt_dist_sum_grad
        rng = np.random.default_rng(0)
        self.X = rng.normal(size=(5000, d))
        self.i = rng.integers(0, 5000, n_pairs).astype(np.intp)
        self.j = rng.integers(0, 5000, n_pairs).astype(np.intp)
        L = rng.normal(size=(d, d))
        self.A = L.T @ L / d
        self.grad = np.empty((d, d))
        self.limits = threadpool_limits(limits=1, user_api="blas")
        self._call()

    def teardown(self, d, n_pairs):
        self.limits.restore_original_limits()

    def _call(self):
        return self.kernel(self.X, self.i, self.j, self.A, self.grad, 0.0, 2)

    def time_sqrt_dist_sum_grad(self, d, n_pairs):
        self._call()

    def track_gflops(self, d, n_pairs):
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            self._call()
            best = min(best, time.perf_counter() - t0)
        return 4.0 * n_pairs * d * d / best / 1e9

    track_gflops.unit = "GFLOP/s"
