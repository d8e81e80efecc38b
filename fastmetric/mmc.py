"""Mahalanobis Metric for Clustering (MMC; Xing, Ng, Jordan and Russell, 2002).

The estimators here are drop-in replacements for metric-learn 0.7.0's ``MMC``
and ``MMC_Supervised``: same constructor arguments (in the same order, with the
deprecated aliases), ``fit`` signatures, fitted attributes and methods.  They
validate, pick a solver (``fastmetric._mmc_exact``, ``_mmc_gaip`` or
``_mmc_diagonal``) and store the result; the work happens in the compiled
kernels.
"""

import warnings

import numpy as np
from sklearn.base import TransformerMixin

from ._mmc_diagonal import solve_diagonal
from ._mmc_exact import solve_exact
from ._mmc_gaip import solve_ga_ip
from ._threads import kernel_threads, resolve_n_jobs
from ._validation import (
    PairData,
    check_init_matrix,
    check_pair_labels,
    check_pairs,
    check_positive_float,
    check_positive_int,
    split_pairs,
)
from .base import MahalanobisMixin, _PairsClassifierMixin, components_from_metric
from .constraints import Constraints

_SOLVERS = ("exact", "ga-ip")


class _BaseMMC(MahalanobisMixin):
    """Shared parameters, validation and solver dispatch of the MMC estimators."""

    def __init__(self, max_iter=100, max_proj=10000, tol=1e-3, init="identity",
                 diagonal=False, diagonal_c=1.0, verbose=False, preprocessor=None,
                 random_state=None, convergence_threshold="deprecated", *,
                 solver="exact", shrinkage=0.0, callback=None, n_jobs=None):
        self.max_iter = max_iter
        self.max_proj = max_proj
        self.tol = tol
        self.init = init
        self.diagonal = diagonal
        self.diagonal_c = diagonal_c
        self.verbose = verbose
        self.preprocessor = preprocessor
        self.random_state = random_state
        self.convergence_threshold = convergence_threshold
        self.solver = solver
        self.shrinkage = shrinkage
        self.callback = callback
        self.n_jobs = n_jobs

    # deprecated alias -> its new name
    _ALIASES = {"convergence_threshold": "tol"}

    def set_params(self, **params):
        """Set parameters; setting a renamed one drops its deprecated alias.

        A deprecated alias (``convergence_threshold``, ``num_constraints``)
        given to the constructor takes effect in ``fit``; a later
        ``set_params`` of the new name (a grid search over ``tol``, say) must
        win over it, as it does in metric-learn, which consumes the alias in
        its constructor.

        Parameters
        ----------
        **params : dict
            Estimator parameters.

        Returns
        -------
        self
        """
        for alias, name in self._ALIASES.items():
            if name in params and alias not in params:
                params[alias] = "deprecated"
        return super().set_params(**params)

    def _check_params(self):
        tol = self.tol
        if not (isinstance(self.convergence_threshold, str)
                and self.convergence_threshold == "deprecated"):
            warnings.warn('"convergence_threshold" has been renamed to "tol"',
                          FutureWarning, stacklevel=3)
            tol = self.convergence_threshold
        check_positive_int(self.max_iter, "max_iter", minimum=1)
        check_positive_int(self.max_proj, "max_proj", minimum=1)
        tol = check_positive_float(tol, "tol")
        check_positive_float(self.diagonal_c, "diagonal_c")
        shrinkage = check_positive_float(self.shrinkage, "shrinkage", allow_zero=True)
        if not shrinkage < 1:
            raise ValueError(f"shrinkage must lie in [0, 1), got {shrinkage}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be callable or None")
        return tol, shrinkage

    def _fit_pairs(self, data, y):
        """Solve MMC on validated pairs (PairData) with labels in {-1, +1}."""
        tol, shrinkage = self._check_params()
        n_threads = resolve_n_jobs(self.n_jobs)
        similar, dissimilar = split_pairs(data, y)
        d = data.n_features
        self.n_features_in_ = d
        points = None
        if isinstance(self.init, str) and self.init == "covariance":
            used = np.unique(np.concatenate([data.i, data.j]))
            points = data.X[used].astype(np.float64)
        A0 = check_init_matrix(self.init, d, self.random_state, X=points)
        common = dict(max_iter=self.max_iter, tol=tol, n_threads=n_threads,
                      callback=self.callback, verbose=self.verbose)
        with kernel_threads(n_threads):
            if self.diagonal:
                result = solve_diagonal(similar, dissimilar, np.diag(A0).copy(),
                                        c=self.diagonal_c, **common)
            elif self.solver == "exact":
                result = solve_exact(similar, dissimilar, A0, shrinkage=shrinkage,
                                     **common)
            else:
                result = solve_ga_ip(similar, dissimilar, A0,
                                     max_proj=self.max_proj, **common)
            # (inside the limit: a multi-threaded BLAS call here would leave
            # its worker threads spinning beside the next fit's kernels)
            self.components_ = components_from_metric(result.A, result.factor)
        self.A_ = result.A
        self.n_iter_ = result.n_iter
        self.converged_ = bool(result.converged)
        self.objective_ = result.objective
        return self

    def _fit(self, pairs, y):
        self._check_preprocessor()
        data = check_pairs(pairs, self.preprocessor_)
        y = check_pair_labels(y, data.n_pairs)
        return self._fit_pairs(data, y)


_PARAMS_DOC = """
    Parameters
    ----------
    max_iter : int, default=100
        Maximum number of outer iterations.
    max_proj : int, default=10000
        Maximum number of C1/C2 projection rounds per iteration (``solver='ga-ip'``).
    tol : float, default={tol}
        Convergence tolerance.  ``'ga-ip'``: metric-learn's rule, relative size
        of the last step.  ``'exact'``: stop when the certified relative duality
        gap (an upper bound on how far J is from its optimum) is below
        ``1e-5 * tol``, clipped to [1e-8, 1e-3] (float32 data too: the
        kernels compute in float64).  Diagonal: stop when the KKT conditions
        hold to the same relative tolerance.
    init : {{'identity', 'covariance', 'random'}} or ndarray of shape (d, d), \
default='identity'
        Initial Mahalanobis matrix (must be symmetric PSD).  It also fixes the
        scale of the result, as in metric-learn: the similarity bound is
        ``t = sum_S ||x - y||_init^2 / 100``.
    diagonal : bool, default=False
        Learn a diagonal matrix (feature weights) by Newton's method.
    diagonal_c : float, default=1.0
        Weight of the dissimilarity term of the diagonal objective.
    verbose : bool, default=False
        Print the objective after each iteration.
    preprocessor : array-like of shape (n_samples, n_features) or callable, \
default=None
        Turns index inputs into points: with an array, 2D index pairs are looked
        up in it without forming the pairs.
    random_state : int, RandomState or None, default=None
        Seeds ``init='random'`` {random_extra}.
    convergence_threshold : deprecated alias of ``tol``.
    solver : {{'exact', 'ga-ip'}}, default='exact'
        Full-matrix solver.  ``'exact'`` solves the convex problem to its
        optimum (whitening by the S-matrix, spectral projected gradient on
        ``{{B PSD, trace(B) <= 1}}`` and Newton steps on the optimal face;
        above 32 features in rounds over subspaces of at most 32 directions,
        each certified or extended by one full gradient), with a certified
        duality gap.
        ``'ga-ip'`` is Xing et al.'s gradient ascent with iterative projections,
        step for step as metric-learn 0.7.0 (use it to reproduce old results);
        it usually stops well short of the optimum.
    shrinkage : float in [0, 1), default=0.0
        ``'exact'`` only: use ``(1 - s) M_S + s trace(M_S) / d I`` in place of
        the S-matrix ``M_S = sum_S (x - y)(x - y)^T``.  With little side
        information (similar pairs about a tenth of the points, as in Xing's
        experiments) the exact optimum overfits the few similar pairs, so that
        K-means under it clusters worse than under metric-learn's early-stopped
        result; shrinkage of 0.01 to 0.1 fixes that.  ``0`` is exactly the plain
        MMC objective.  The identity is in the features' units, so the blend
        favours the features on the largest scales: standardise the features
        first (on raw wine data, say, shrinkage 0.05 undoes what MMC learns;
        standardised, it helps).
    callback : callable or None, default=None
        ``callback(A, n_iter)`` is called with the current Mahalanobis matrix
        after each outer iteration (for example to draw the metric's heatmap);
        returning True stops the solver.
    n_jobs : int or None, default=None
        Threads for the pair kernels (None or -1: all cores).
"""

_ATTRS_DOC = """
    Attributes
    ----------
    A_ : ndarray of shape (n_features, n_features)
        The learned Mahalanobis matrix.
    components_ : ndarray of shape (n_features, n_features)
        ``L`` with ``L.T @ L == A_`` (rows by decreasing eigenvalue).
    n_iter_ : int
        Iterations run.
    converged_ : bool
        Whether the stopping rule was met.
    objective_ : float
        Full matrix: J(A) = sum_D ||x-y||_A / sqrt(sum_S ||x-y||_A^2).  Diagonal:
        the value of ``sum_S ||x-y||_A^2 - diagonal_c log(sum_D ||x-y||_A)``.
    n_features_in_ : int
"""

_DIAG_NOTE = """
    Notes
    -----
    MMC (Xing et al., 2002) maximises ``sum_D ||x - y||_A`` subject to
    ``sum_S ||x - y||_A^2 <= t`` and A PSD, a convex problem.  With
    ``diagonal=True`` it minimises ``g(w) = sum_S ||x-y||^2_w - c log(sum_D
    ||x-y||_w)`` over ``w >= 0`` by projected Newton and returns the true
    minimiser (checked by its KKT conditions).  metric-learn 0.7.0's diagonal
    solver evaluates its line search with the sign of the log term flipped, so it
    does not minimise g and can fail with NaN when the weights collapse; results
    therefore differ from metric-learn's for ``diagonal=True``.
"""


class MMC(_PairsClassifierMixin, _BaseMMC):
    __doc__ = (
        """Mahalanobis Metric for Clustering, learned from labelled pairs.

    Learns a PSD matrix A that keeps similar pairs close while spreading
    dissimilar pairs apart, then calibrates a distance threshold so pairs can
    be classified.  A drop-in for ``metric_learn.MMC``.
"""
        + _PARAMS_DOC.format(tol="1e-3", random_extra="")
        + _ATTRS_DOC
        + """    threshold_ : float
        Pairs at a distance up to ``threshold_`` are predicted similar (+1).
"""
        + _DIAG_NOTE
        + """
    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric import MMC
    >>> pairs = np.array([[[1.2, 7.5], [1.3, 1.5]], [[6.4, 2.6], [6.2, 9.7]],
    ...                   [[1.3, 4.5], [3.2, 4.6]], [[6.2, 5.5], [5.4, 5.4]]])
    >>> y = np.array([1, 1, -1, -1])
    >>> mmc = MMC().fit(pairs, y)
    >>> mmc.predict(pairs).tolist()
    [1, 1, -1, -1]
"""
    )

    def fit(self, pairs, y, calibration_params=None):
        """Learn the metric from pairs, then calibrate the threshold on them.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)
            Formed pairs, or index pairs into the preprocessor's data.
        y : array-like of shape (n_pairs,)
            +1 for similar pairs, -1 for dissimilar ones.
        calibration_params : dict or None
            Keyword arguments for :meth:`calibrate_threshold`.

        Returns
        -------
        self
        """
        calibration_params = calibration_params if calibration_params is not None \
            else {}
        self._validate_calibration_params(**calibration_params)
        self._check_preprocessor()
        data = check_pairs(pairs, self.preprocessor_)
        labels = check_pair_labels(y, data.n_pairs)
        # One BLAS limit around the solve and the calibration: BLAS calls
        # outside it wake OpenBLAS's worker threads, which then spin for a
        # while beside the pair kernels' OpenMP threads and (measured on two
        # cores) can halve the speed of the next fit's solver.
        with kernel_threads():
            self._fit_pairs(data, labels)
            # calibrate_threshold(pairs, y) on the pairs validated above
            self._calibrate_scores(-self._distances(data), labels,
                                   **calibration_params)
        return self


def _class_codes(y):
    """Integer class codes for ``Constraints``, keeping unlabelled points out.

    Numeric labels below zero mark unlabelled points (as in metric-learn's
    ``Constraints``): they get code -1 and never enter a pair.  Other labels
    (strings, say) are all classes.  Returns the codes, the number of distinct
    values of ``y`` and the number of classes.
    """
    y = np.asarray(y)
    values, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1).astype(np.intp)
    if y.dtype.kind in "iuf":
        unlabelled = values < 0
        if unlabelled.any():
            remap = np.cumsum(~unlabelled) - 1
            remap[unlabelled] = -1
            codes = remap[codes]
        return codes, values.size, int(np.count_nonzero(~unlabelled))
    return codes, values.size, values.size


class MMC_Supervised(TransformerMixin, _BaseMMC):
    __doc__ = (
        """MMC learned from class labels: pairs are drawn from the labels, then MMC.

    Similar pairs join points of the same class, dissimilar pairs points of
    different classes (see :class:`fastmetric.Constraints`).  A drop-in for
    ``metric_learn.MMC_Supervised``.
"""
        + _PARAMS_DOC.format(
            tol="1e-6",
            random_extra="and the sampling of the pairs from the labels",
        ).replace(
            "    init :",
            """    n_constraints : int or None, default=None
        Number of similar and of dissimilar pairs; None means
        ``20 * n_classes**2``.
    init :""",
        ).replace(
            "    convergence_threshold :",
            """    num_constraints : deprecated alias of ``n_constraints``.
    convergence_threshold :""",
        )
        + _ATTRS_DOC
        + _DIAG_NOTE
        + """
    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastmetric import MMC_Supervised
    >>> X, y = load_iris(return_X_y=True)
    >>> mmc = MMC_Supervised(n_constraints=200, random_state=0).fit(X, y)
    >>> mmc.transform(X).shape
    (150, 4)
"""
    )

    def __init__(self, max_iter=100, max_proj=10000, tol=1e-6, n_constraints=None,
                 init="identity", diagonal=False, diagonal_c=1.0, verbose=False,
                 preprocessor=None, random_state=None, num_constraints="deprecated",
                 convergence_threshold="deprecated", *, solver="exact",
                 shrinkage=0.0, callback=None, n_jobs=None):
        super().__init__(max_iter=max_iter, max_proj=max_proj, tol=tol, init=init,
                         diagonal=diagonal, diagonal_c=diagonal_c, verbose=verbose,
                         preprocessor=preprocessor, random_state=random_state,
                         convergence_threshold=convergence_threshold, solver=solver,
                         shrinkage=shrinkage, callback=callback, n_jobs=n_jobs)
        self.n_constraints = n_constraints
        self.num_constraints = num_constraints

    _ALIASES = {"convergence_threshold": "tol", "num_constraints": "n_constraints"}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # TransformerMixin resets the transformer tags set by MahalanobisMixin.
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y):
        """Draw pairs from the labels and learn the metric.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or (n_samples,) indices
            when a preprocessor is set.
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self
        """
        self._check_preprocessor()
        X, y = self._validate_points(X, reset=True, y=y, min_samples=2)
        n_constraints = self.n_constraints
        if not (isinstance(self.num_constraints, str)
                and self.num_constraints == "deprecated"):
            warnings.warn('"num_constraints" has been renamed to "n_constraints"',
                          FutureWarning, stacklevel=2)
            n_constraints = self.num_constraints
        y_codes, n_labels, n_classes = _class_codes(y)
        if n_classes < 2:
            raise ValueError(
                f"y has {n_classes} class (negative labels mark unlabelled points); "
                "MMC_Supervised needs at least 2 classes to form dissimilar pairs"
            )
        if n_constraints is None:
            # metric-learn's default, which counts "unlabelled" as a value of y
            n_constraints = 20 * n_labels**2
        n_constraints = check_positive_int(n_constraints, "n_constraints")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            a, b, c, d = Constraints(y_codes).positive_negative_pairs(
                n_constraints, random_state=self.random_state)
        if a.size == 0:
            raise ValueError("no two samples share a class, so no similar pair can "
                             "be formed")
        i = np.ascontiguousarray(np.concatenate([a, c]), dtype=np.intp)
        j = np.ascontiguousarray(np.concatenate([b, d]), dtype=np.intp)
        labels = np.concatenate([np.ones(a.size, np.int8), -np.ones(c.size, np.int8)])
        return self._fit_pairs(PairData(X, i, j), labels)
