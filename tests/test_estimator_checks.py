"""scikit-learn's estimator checks for the MMC estimators.

``MMC_Supervised`` learns from points and class labels, so every generic check
applies to it and none is expected to fail.  ``MMC`` learns from *pairs* (a 3D
array of formed pairs, or 2D index pairs with a preprocessor); the generic
checks feed it 2D point matrices, so most of them cannot apply.  Those are
listed, each with its reason, through ``expected_failed_checks``; the checks of
the API that do not depend on the input format (cloning, ``get_params`` /
``set_params``, ``__init__`` storing its arguments, tags, repr, unfitted
errors, ...) must pass.

scikit-learn >= 1.8 also yields ``check_array_api_input`` for every estimator;
it needs ``SCIPY_ARRAY_API=1`` set before SciPy is imported, and skips itself
otherwise.  Setting that variable for the whole test session would change
SciPy's behaviour for every other test, so that one check runs in a fresh
interpreter with the variable set (the check and the unfitted estimator are
pickled to it).
"""

import os
import pickle
import subprocess
import sys

from sklearn.utils.estimator_checks import parametrize_with_checks

import fastmetric
from fastmetric import MMC, MMC_Supervised

# Small max_iter keeps the suite fast; the checks test conventions, not optima.
SUPERVISED_ESTIMATORS = [
    MMC_Supervised(max_iter=5, n_jobs=1),
    MMC_Supervised(max_iter=5, shrinkage=0.1, init="covariance", n_jobs=2),
    MMC_Supervised(max_iter=5, solver="ga-ip", max_proj=50, n_jobs=1),
    MMC_Supervised(max_iter=5, diagonal=True, n_jobs=1),
]

_POINTS_AS_PAIRS = (
    "MMC learns from pairs: fit takes a 3D array (n_pairs, 2, n_features) of "
    "formed pairs, or (n_pairs, 2) index pairs with a preprocessor; this check "
    "passes a 2D matrix of points, which MMC rejects with a ValueError saying "
    "which input it expects"
)

# Checks that fit MMC on a 2D point matrix X (possibly modified: empty, one
# sample, NaN, F-ordered, memmapped, a list, a DataFrame, ...).  They fail at
# the input format before reaching what they test; the tests in
# test_mmc.py cover the same properties with pairs.
_PAIR_INPUT_CHECKS = [
    "check_classifier_data_not_an_array",
    "check_classifiers_classes",
    "check_classifiers_train",
    "check_complex_data",
    "check_dict_unchanged",
    "check_dont_overwrite_parameters",
    "check_estimators_dtypes",
    "check_estimators_empty_data_messages",
    "check_estimators_fit_returns_self",
    "check_estimators_nan_inf",
    "check_estimators_overwrite_params",
    "check_estimators_pickle",
    "check_f_contiguous_array_estimator",
    "check_fit2d_1feature",
    "check_fit2d_1sample",
    "check_fit2d_predict1d",
    "check_fit_check_is_fitted",
    "check_fit_idempotent",
    "check_fit_score_takes_y",
    "check_methods_sample_order_invariance",
    "check_methods_subset_invariance",
    "check_n_features_in",
    "check_n_features_in_after_fitting",
    "check_non_transformer_estimators_n_iter",
    "check_pipeline_consistency",
    "check_positive_only_tag_during_fit",
    "check_readonly_memmap_input",
    "check_requires_y_none",
    "check_supervised_y_2d",
    "check_transformer_data_not_an_array",
    "check_transformer_general",
    "check_transformer_n_iter",
    "check_array_api_input",
]

MMC_EXPECTED_FAILURES = {name: _POINTS_AS_PAIRS for name in _PAIR_INPUT_CHECKS}
MMC_EXPECTED_FAILURES.update({
    "check_classifiers_one_label": (
        "fits a 2D point matrix with a single class; MMC fails earlier, at the "
        "pairs format.  A single pair label is rejected with 'no dissimilar "
        "pairs' / 'no similar pairs' (tested in test_mmc.py)"
    ),
    "check_classifiers_regression_target": (
        "fits a 2D point matrix with a continuous target; MMC fails earlier, at "
        "the pairs format.  Pair labels other than +1/-1 are rejected (tested in "
        "test_mmc.py)"
    ),
    "check_classifier_not_supporting_multiclass": (
        "fits a 2D point matrix with 3 classes; MMC fails earlier, at the pairs "
        "format.  Pair labels other than +1/-1 are rejected (tested in "
        "test_mmc.py)"
    ),
    "check_dtype_object": (
        "passes a 2D point matrix of dtype object; MMC rejects object arrays of "
        "pairs with a TypeError before looking at the shape"
    ),
    "check_estimator_sparse_array": (
        "passes a sparse 2D point matrix; pairs are 3D, which no scipy sparse "
        "format represents, and MMC rejects the input with a TypeError"
    ),
    "check_estimator_sparse_matrix": (
        "passes a sparse 2D point matrix; pairs are 3D, which no scipy sparse "
        "format represents, and MMC rejects the input with a TypeError"
    ),
    "check_estimator_sparse_tag": (
        "passes a sparse 2D point matrix; pairs are 3D, which no scipy sparse "
        "format represents, and MMC rejects the input with a TypeError"
    ),
    "check_transformer_preserve_dtypes": (
        "calls fit_transform, which a pair learner cannot offer (fit takes pairs, "
        "transform takes points; metric-learn's MMC has none either).  transform "
        "keeps float32 (tested in test_mmc.py)"
    ),
})


def _mmc_expected_failures(estimator):
    return MMC_EXPECTED_FAILURES


def _check_name(check):
    while hasattr(check, "func"):
        check = check.func
    return getattr(check, "__name__", "")


def _run_check(estimator, check):
    if _check_name(check) != "check_array_api_input":
        check(estimator)
        return
    result = subprocess.run(
        [sys.executable, "-c",
         "import pickle, sys; check, est = pickle.load(sys.stdin.buffer); "
         "check(est)"],
        input=pickle.dumps((check, estimator)),
        env={**os.environ, "SCIPY_ARRAY_API": "1"},
        # `python -c` puts the working directory first on sys.path; run next
        # to the imported package so the child imports the same (built) copy,
        # not a source checkout without compiled kernels.
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(fastmetric.__file__))),
        capture_output=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]


@parametrize_with_checks(SUPERVISED_ESTIMATORS)
def test_mmc_supervised_sklearn_compatible(estimator, check):
    _run_check(estimator, check)


@parametrize_with_checks(
    [MMC(max_iter=5, n_jobs=1)], expected_failed_checks=_mmc_expected_failures
)
def test_mmc_sklearn_compatible(estimator, check):
    _run_check(estimator, check)
