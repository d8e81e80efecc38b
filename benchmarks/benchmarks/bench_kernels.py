"""asv benchmarks of single passes of the pair kernels at few and many features.

One pass over 5000 index pairs into 2000 points, on one and on two threads:
the gradient pass of a full matrix (``sqrt_dist_sum_grad``), the low-rank
pass of a rank-2 factor (``sqrt_dist_sum_grad_factor``, ga-ip's and the
exact solver's) and the S-matrix (``weighted_outer_sum``).  Up to 8 features
the kernels take their small-d path (feature-major blocks, no BLAS); from 9
on, gathered blocks and BLAS level 3.
"""

import numpy as np

from fastmetric import _pairs

N_FEATURES = [3, 5, 8, 12, 50]
THREADS = [1, 2]


class PairKernels:
    """Time of one kernel pass."""

    params = (N_FEATURES, THREADS)
    param_names = ["n_features", "num_threads"]

    def setup(self, d, num_threads):
        rng = np.random.default_rng(0)
        n_points, n_pairs = 2000, 5000
        self.X = rng.normal(size=(n_points, d))
        self.i = rng.integers(0, n_points, n_pairs).astype(np.intp)
        self.j = rng.integers(0, n_points, n_pairs).astype(np.intp)
        self.K = rng.normal(size=(d, 2))
        self.A = self.K @ self.K.T + np.eye(d)
        self.grad = np.empty((d, d))
        self.none = np.empty(0)

    def time_sqrt_dist_sum_grad(self, d, num_threads):
        _pairs.sqrt_dist_sum_grad(self.X, self.i, self.j, self.A, self.grad, 0.0,
                                  num_threads)

    def time_sqrt_dist_sum_grad_factor(self, d, num_threads):
        _pairs.sqrt_dist_sum_grad_factor(self.X, self.i, self.j, self.K, self.grad,
                                         self.none, num_threads, 1e-6)

    def time_weighted_outer_sum(self, d, num_threads):
        _pairs.weighted_outer_sum(self.X, self.i, self.j, self.none, self.grad,
                                  num_threads)
