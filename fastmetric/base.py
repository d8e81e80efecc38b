"""Base classes: the Mahalanobis mixin and the pairs-classifier mixin.

A fitted Mahalanobis learner holds ``components_`` (L, with ``A = L^T L``) and
offers ``transform``, ``pair_distance``, ``pair_score``, ``get_metric`` and
``get_mahalanobis_matrix`` on top of it, with metric-learn's names and
semantics.  Pairwise work goes to the compiled pair kernel; this module only
validates and dispatches.
"""

import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve
from sklearn.utils import TransformerTags
from sklearn.utils.validation import check_is_fitted, validate_data

from ._mmc_common import (
    diag_sq_distances,
    factor_dist_sum_and_grad,
    pair_sq_distances,
)
from ._numba.mmc import best_accuracy_cut
from ._threads import threads_for_small
from ._validation import (
    check_finite,
    check_indices,
    check_pair_labels,
    check_pairs,
    make_preprocessor,
)


def components_from_metric(A, factor=None):
    """A matrix ``L`` with ``L.T @ L == A`` for a symmetric PSD ``A``.

    The same ``L`` metric-learn 0.7.0 returns for the same ``A``, so that
    ``transform`` gives the same coordinates: the elementwise square root of
    a diagonal ``A``; else the transposed Cholesky factor when ``A`` is
    positive definite (no pivot below ``d eps max(diag(A))``); else (singular
    ``A``, as MMC's optimum often is)
    ``sqrt(max(w, 0)) V^T`` from the eigendecomposition, eigenvalues
    ascending, rounding-level negative ones clipped.

    Parameters
    ----------
    A : ndarray of shape (d, d)
    factor : ndarray of shape (d, r) or None
        K with ``K @ K.T == A`` to rounding, r < d (a solver's low-rank
        result): the eigenpairs of A then come from a QR of K and an r x r
        eigenproblem instead of a d x d one, and the rows of A's null space
        are exactly zero (the d x d route leaves rounding there).  The other
        rows agree with the d x d route's to rounding, each up to its sign
        (an eigenvector's sign is the eigensolver's choice).

    Returns
    -------
    ndarray of shape (d, d)
    """
    A = np.asarray(A, dtype=np.float64)
    d = A.shape[0]
    if np.array_equal(A, np.diag(np.diag(A))):
        return np.diag(np.sqrt(np.maximum(np.diag(A), 0.0)))
    if factor is not None and factor.shape[1] < d:
        Q, R = np.linalg.qr(factor)
        w, U = np.linalg.eigh(R @ R.T)
        L = np.zeros((d, d))
        L[d - w.size:] = np.sqrt(np.maximum(w, 0.0))[:, None] * (Q @ U).T
        return L
    try:
        C = np.linalg.cholesky(A)
        # a numerically singular A can still pass Cholesky on rounding-level
        # pivots, with a factor far from any other: take the eigenvectors then
        if np.min(np.diag(C)) ** 2 > A.shape[0] * np.finfo(float).eps * np.max(
                np.diag(A)):
            return C.T
    except np.linalg.LinAlgError:
        pass
    w, V = np.linalg.eigh((A + A.T) / 2)
    return np.sqrt(np.maximum(w, 0.0))[:, None] * V.T


class MahalanobisMixin(BaseEstimator):
    """Methods shared by learners of a Mahalanobis distance ``d(x, y) = ||L(x - y)||``.

    Subclasses set ``components_`` (n_components, n_features) in ``fit``.
    """

    _tuple_size = 2

    def _check_preprocessor(self):
        self.preprocessor_ = make_preprocessor(self.preprocessor)
        return self.preprocessor_

    def _fitted_pairs(self, pairs, name="pairs"):
        check_is_fitted(self, ["preprocessor_", "components_"])
        return check_pairs(pairs, self.preprocessor_, n_features=self.n_features_in_,
                           name=name)

    def _n_threads(self):
        from ._threads import resolve_n_jobs

        return resolve_n_jobs(getattr(self, "n_jobs", 1))

    def pair_distance(self, pairs):
        """Learned Mahalanobis distance between the points of each pair.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)
            Formed pairs, or index pairs when a preprocessor is set.

        Returns
        -------
        ndarray of shape (n_pairs,)
            ``sqrt((x - y)^T A (x - y))`` for each pair.
        """
        dists = self._distances(self._fitted_pairs(pairs))
        if not np.all(np.isfinite(dists)):
            raise ValueError(
                "the learned distance of some pair overflows float64 (its points "
                "lie too far apart at this metric's scale); rescale the pairs")
        return dists

    def _distances(self, data):
        """:meth:`pair_distance` of validated pairs (PairData)."""
        A = self.get_mahalanobis_matrix()
        n_threads = threads_for_small(self._n_threads(), data.n_pairs, data.n_features)
        # Learned metrics are often diagonal or of low rank: n d or 2 n d r
        # flops per call instead of 2 n d^2.
        if not np.any(A - np.diag(np.diagonal(A))):
            q = diag_sq_distances(data, np.diagonal(A), n_threads)
            return np.sqrt(np.maximum(q, 0.0))
        # For a singular A, rows of L are sqrt(eigenvalue) eigenvectors: those
        # below the eigendecomposition's own rounding (d eps lambda_max) carry
        # nothing.  (A Cholesky factor, for a definite A, keeps every row.)
        L = np.asarray(self.components_)
        lam = np.einsum("ij,ij->i", L, L)
        rows = np.flatnonzero(lam > L.shape[1] * np.finfo(float).eps * lam.max())
        # (up to 8 features the plain quadratic form runs along the pairs at
        # about 15 ns a pair, well below the factor pass's per-pair cost)
        if L.shape[1] == A.shape[0] and 2 * rows.size <= A.shape[0] and A.shape[0] > 8:
            dists = np.empty(data.n_pairs)
            factor_dist_sum_and_grad(data, L[rows].T, dists, n_threads, grad=False)
            return dists
        q = pair_sq_distances(data, A, n_threads)
        return np.sqrt(q)

    def pair_score(self, pairs):
        """Similarity score of each pair: the opposite of :meth:`pair_distance`.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)

        Returns
        -------
        ndarray of shape (n_pairs,)
        """
        return -self.pair_distance(pairs)

    def score_pairs(self, pairs):
        """Deprecated alias of :meth:`pair_distance` (as in metric-learn 0.7.0).

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)

        Returns
        -------
        ndarray of shape (n_pairs,)
        """
        warnings.warn(
            "score_pairs is deprecated; use pair_score for similarity scores or "
            "pair_distance for distances",
            FutureWarning,
            stacklevel=2,
        )
        return self.pair_distance(pairs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # transform keeps float32 input in float32 (components_ are cast to it).
        tags.transformer_tags = TransformerTags(preserves_dtype=["float64", "float32"])
        return tags

    def _validate_points(self, X, *, reset, y="no_validation", min_samples=1):
        """Points for ``fit`` / ``transform``, validated the scikit-learn way.

        With a preprocessor, a 1D ``X`` holds indices (array preprocessor) or
        keys (callable preprocessor) and is turned into points first.  The points
        then go through :func:`sklearn.utils.validation.validate_data`, which sets
        (``reset=True``) or checks ``n_features_in_`` and ``feature_names_in_``
        and gives scikit-learn's error messages for 1D, empty, sparse, complex
        or non-finite input.  Returns a C-contiguous float32/float64 array (and
        ``y`` when given).
        """
        pre = self.preprocessor_
        arr = X if hasattr(X, "toarray") or hasattr(X, "iloc") else np.asarray(X)
        if pre is not None and getattr(arr, "ndim", 2) == 1:
            if hasattr(pre, "X"):
                X = pre.X[check_indices(arr, pre.X.shape[0], "X")]
            else:
                X = pre(arr)
        return validate_data(self, X, y, reset=reset, dtype=[np.float64, np.float32],
                             order="C", ensure_min_samples=min_samples)

    def transform(self, X):
        """Embed points in the learned space: ``X @ components_.T``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or (n_samples,) indices
            when a preprocessor is set.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
            In X's dtype (float32 is kept).
        """
        check_is_fitted(self, ["preprocessor_", "components_"])
        X = self._validate_points(X, reset=False)
        return X @ self.components_.T.astype(X.dtype, copy=False)

    def get_mahalanobis_matrix(self):
        """A copy of the learned Mahalanobis matrix ``A = L^T L``.

        Returns
        -------
        ndarray of shape (n_features, n_features)
        """
        check_is_fitted(self, "components_")
        return self.components_.T @ self.components_

    def get_metric(self):
        """A function ``metric(u, v, squared=False)`` computing the learned distance.

        The function is independent of the estimator (later refits do not change
        it) and can be passed as ``metric`` to scikit-learn's neighbours
        estimators.

        Returns
        -------
        callable
        """
        check_is_fitted(self, "components_")
        components_T = self.components_.T.copy()

        def metric_fun(u, v, squared=False):
            """Learned distance between two 1-D points (squared if ``squared``)."""
            u = np.atleast_1d(np.asarray(u, dtype=np.float64).squeeze())
            v = np.atleast_1d(np.asarray(v, dtype=np.float64).squeeze())
            if u.ndim > 1 or v.ndim > 1:
                raise ValueError("metric inputs must be 1-D vectors")
            diff = (u - v) @ components_T
            dist = float(diff @ diff)
            return dist if squared else np.sqrt(dist)

        return metric_fun


class _PairsClassifierMixin(ClassifierMixin):
    """Threshold-based classification of pairs into similar (+1) and dissimilar (-1)."""

    # The labels predict returns (metric-learn 0.7.0 has [0, 1] here, which does
    # not match its own predict output).
    classes_ = np.array([-1, 1])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is formed pairs (3D), or 2D index pairs with a preprocessor.
        tags.input_tags.three_d_array = True
        tags.classifier_tags.multi_class = False
        return tags

    def decision_function(self, pairs):
        """Opposite of the learned distance: high for similar pairs.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)

        Returns
        -------
        ndarray of shape (n_pairs,)
        """
        return self.pair_score(pairs)

    def predict(self, pairs):
        """Classify pairs: +1 if the distance is at most ``threshold_``, else -1.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)

        Returns
        -------
        ndarray of shape (n_pairs,)
        """
        check_is_fitted(self, "preprocessor_")
        if "threshold_" not in vars(self):
            raise AttributeError(
                "A threshold for this estimator has not been set, call its "
                "set_threshold or calibrate_threshold method."
            )
        return 2 * (-self.decision_function(pairs) <= self.threshold_) - 1

    def score(self, pairs, y):
        """ROC AUC of the decision function against the pair labels.

        Parameters
        ----------
        pairs : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)
        y : array-like of shape (n_pairs,)
            +1 for similar, -1 for dissimilar pairs.

        Returns
        -------
        float
        """
        scores = self.decision_function(pairs)
        y = check_pair_labels(y, scores.shape[0])
        return roc_auc_score(y, scores)

    def set_threshold(self, threshold):
        """Set the distance threshold used by :meth:`predict`.

        Parameters
        ----------
        threshold : float

        Returns
        -------
        self
        """
        check_is_fitted(self, "preprocessor_")
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(
                f"Parameter threshold must be a real number. Got {type(threshold)} "
                "instead."
            ) from None
        check_finite(np.asarray(value), "threshold")
        self.threshold_ = value
        return self

    @staticmethod
    def _validate_calibration_params(strategy="accuracy", min_rate=None, beta=1.0):
        if strategy not in ("accuracy", "f_beta", "max_tpr", "max_tnr"):
            raise ValueError(
                'Strategy can either be "accuracy", "f_beta" or "max_tpr" or '
                f'"max_tnr". Got "{strategy}" instead.'
            )
        if strategy in ("max_tpr", "max_tnr"):
            if (min_rate is None or isinstance(min_rate, bool)
                    or not isinstance(min_rate, int | float)
                    or not 0 <= min_rate <= 1):
                raise ValueError(
                    f"Parameter min_rate must be a number in[0, 1]. Got {min_rate} "
                    "instead."
                )
        if strategy == "f_beta":
            if beta is None or not isinstance(beta, int | float):
                raise ValueError(
                    f"Parameter beta must be a real number. Got {type(beta)} instead."
                )

    def calibrate_threshold(self, pairs_valid, y_valid, strategy="accuracy",
                            min_rate=None, beta=1.0):
        """Choose ``threshold_`` to maximise a score on validation pairs.

        Parameters
        ----------
        pairs_valid : array-like of shape (n_pairs, 2, n_features) or (n_pairs, 2)
        y_valid : array-like of shape (n_pairs,)
            +1 for similar, -1 for dissimilar pairs.
        strategy : {'accuracy', 'f_beta', 'max_tpr', 'max_tnr'}
            'accuracy' maximises accuracy; 'f_beta' the F-beta score; 'max_tpr'
            the true positive rate with true negative rate >= ``min_rate``;
            'max_tnr' the reverse.
        min_rate : float in [0, 1] or None
        beta : float

        Returns
        -------
        self
        """
        check_is_fitted(self, "preprocessor_")
        self._validate_calibration_params(strategy, min_rate, beta)
        scores = self.decision_function(pairs_valid)
        y_valid = check_pair_labels(y_valid, scores.shape[0], "y_valid")
        return self._calibrate_scores(scores, y_valid, strategy, min_rate, beta)

    def _calibrate_scores(self, scores, y_valid, strategy="accuracy", min_rate=None,
                          beta=1.0):
        """:meth:`calibrate_threshold` from validated scores and labels."""
        if strategy == "accuracy":
            # Pairs count as similar when score >= c; c ranges over every
            # score and max + 1 (no pair similar), the largest best c wins,
            # and tied scores are classified alike.
            c, _ = best_accuracy_cut(np.sort(scores[y_valid == 1]),
                                     np.sort(scores[y_valid == -1]))
            self.threshold_ = -float(c)
            return self
        if strategy == "f_beta":
            precision, recall, thresholds = precision_recall_curve(
                y_valid, scores, pos_label=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                f_beta = ((1 + beta**2) * (precision * recall)
                          / (beta**2 * precision + recall))
            f_beta[np.isnan(f_beta)] = 0.0
            imax = int(np.argmax(f_beta))
            self.threshold_ = -float(thresholds[min(imax, thresholds.size - 1)])
            return self
        if np.all(y_valid == y_valid[0]):
            raise ValueError(
                f"strategy={strategy!r} needs both similar (+1) and dissimilar "
                f"(-1) validation pairs: y_valid holds only {int(y_valid[0]):+d}")
        fpr, tpr, thresholds = roc_curve(y_valid, scores, pos_label=1)
        if strategy == "max_tpr":
            indices = np.where(1 - fpr >= min_rate)[0]
            imax = indices[int(np.argmax(tpr[indices]))]
        else:
            indices = np.where(tpr >= min_rate)[0]
            imax = indices[int(np.argmax(1 - fpr[indices]))]
        thr = thresholds[imax]
        if not np.isfinite(thr):  # roc_curve's "reject everything" point
            thr = scores.max() + 1
        self.threshold_ = -float(thr)
        return self
