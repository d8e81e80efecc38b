"""The ``fastmetric demo`` command: it runs, and what it prints is the library's."""

import re

import numpy as np
import pytest
from sklearn import datasets

from fastmetric import MMC_Supervised
from fastmetric.cli import main

HEADER = "learned Mahalanobis matrix A (scaled to max |A| = 1):"


def _printed_matrix(out, d):
    """The matrix printed between the header and the clustering line."""
    block = out.split(HEADER, 1)[1].split("K-means", 1)[0]
    values = [float(v) for v in re.findall(r"-?\d+\.\d*(?:e[-+]?\d+)?", block)]
    assert len(values) == d * d, block
    return np.array(values).reshape(d, d)


def _aris(out):
    match = re.search(r"Euclidean (-?\d\.\d+), learned metric (-?\d\.\d+)", out)
    assert match, out
    return float(match.group(1)), float(match.group(2))


def _expected_matrix(dataset, diagonal, n_constraints=200, shrinkage=0.0, seed=0,
                     standardize=False):
    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    if standardize:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    model = MMC_Supervised(n_constraints=n_constraints, diagonal=diagonal,
                           shrinkage=shrinkage, random_state=seed).fit(X, y)
    A = model.get_mahalanobis_matrix()
    return A / np.abs(A).max()


@pytest.mark.parametrize(("argv", "dataset", "diagonal", "shape"), [
    (["demo"], "wine", False, (178, 13)),
    (["demo", "--diagonal"], "wine", True, (178, 13)),
    (["demo", "--dataset", "iris"], "iris", False, (150, 4)),
    (["demo", "--dataset", "iris", "--diagonal"], "iris", True, (150, 4)),
])
def test_demo_prints_matrix_and_scores(argv, dataset, diagonal, shape, capsys):
    options = np.get_printoptions()
    assert main(argv) == 0
    assert np.get_printoptions() == options  # no global state changed
    out = capsys.readouterr().out
    kind = "diagonal" if diagonal else "full"
    assert (f"MMC ({kind}) on {dataset}: {shape[0]} points, {shape[1]} features "
            "(raw units)") in out
    assert "iterations, converged=" in out
    printed = _printed_matrix(out, shape[1])
    assert np.abs(printed).max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(printed, _expected_matrix(dataset, diagonal),
                               atol=1.1e-3)
    if diagonal:
        np.testing.assert_array_equal(printed, np.diag(np.diag(printed)))
    for ari in _aris(out):
        assert -1.0 <= ari <= 1.0


def test_demo_options(capsys):
    argv = ["demo", "--dataset", "iris", "--n-constraints", "60", "--shrinkage", "0",
            "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "60 similar and 60 dissimilar pairs" in out
    np.testing.assert_allclose(
        _printed_matrix(out, 4),
        _expected_matrix("iris", False, n_constraints=60, shrinkage=0.0, seed=3),
        atol=1.1e-3,
    )


def test_demo_standardize_option(capsys):
    argv = ["demo", "--standardize", "--shrinkage", "0.05"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "13 features (standardised)" in out
    np.testing.assert_allclose(
        _printed_matrix(out, 13),
        _expected_matrix("wine", False, shrinkage=0.05, standardize=True),
        atol=1.1e-3,
    )


def test_default_demo_shows_the_metric_improving_clustering(capsys):
    # Wine's features in their own units: Euclidean K-means is dominated by
    # proline (values ~1e3) and barely beats chance; the metric learned from
    # 200 pairs weighs the features and recovers the classes.
    assert main(["demo"]) == 0
    euclid, learned = _aris(capsys.readouterr().out)
    assert euclid < 0.5
    assert learned > euclid + 0.3


@pytest.mark.parametrize("argv", [[], ["demo", "--dataset", "mnist"],
                                  ["demo", "--n-constraints", "many"], ["train"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: fastmetric" in capsys.readouterr().err
