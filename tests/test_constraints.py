"""Pairs drawn from class labels: labels, uniqueness, counts, determinism."""

import itertools
import warnings

import numpy as np
import pytest

from fastmetric import Constraints, wrap_pairs


def _labels(seed, n=40, n_classes=4, unlabelled=0.2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=n)
    y[rng.random(n) < unlabelled] = -1
    return y


def _counts(y):
    """Number of distinct ordered (same-label, different-label) pairs."""
    known = y[y >= 0]
    sizes = np.unique(known, return_counts=True)[1]
    return int(np.sum(sizes * (sizes - 1))), int(known.size**2 - np.sum(sizes**2))


def _draw(y, n, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = Constraints(y).positive_negative_pairs(n, **kw)
    return out, [w for w in caught if "constraints" in str(w.message)]


def _check_pairs(y, left, right, same):
    assert left.shape == right.shape and left.ndim == 1
    assert np.all(left != right)  # no self pairs
    assert np.all(y[left] >= 0) and np.all(y[right] >= 0)  # unlabelled never used
    if same:
        assert np.all(y[left] == y[right])
    else:
        assert np.all(y[left] != y[right])
    pairs = np.column_stack([left, right])
    assert np.unique(pairs, axis=0).shape[0] == pairs.shape[0]  # no duplicates


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [1, 10, 60])
def test_positive_negative_pairs_labels_and_count(seed, n):
    y = _labels(seed)
    n_same, n_diff = _counts(y)
    assert n_same >= n and n_diff >= n
    (a, b, c, d), caught = _draw(y, n, random_state=seed)
    _check_pairs(y, a, b, same=True)
    _check_pairs(y, c, d, same=False)
    assert a.size == n and c.size == n
    assert not caught


@pytest.mark.parametrize("fraction", [0.5, 0.8, 1.0])
def test_requested_count_when_nearly_all_pairs_are_needed(fraction):
    # Few candidate pairs: every distinct pair that exists must be reachable.
    y = np.array([0, 0, 0, 1, 1, 2, -1, 2, 2, 2])
    n_same, n_diff = _counts(y)
    for n in {int(fraction * n_same), int(fraction * n_diff)}:
        for seed in range(5):
            (a, b, c, d), caught = _draw(y, n, random_state=seed)
            _check_pairs(y, a, b, same=True)
            _check_pairs(y, c, d, same=False)
            assert a.size == min(n, n_same) and c.size == min(n, n_diff)
            assert bool(caught) == (n > n_same or n > n_diff)


def test_fewer_pairs_than_requested_warns_and_returns_all():
    y = np.array([0, 0, 1, 1, 1, -1])
    n_same, n_diff = _counts(y)  # 2 + 6 = 8 similar, 12 dissimilar
    (a, b, c, d), caught = _draw(y, 100, random_state=0)
    assert a.size == n_same and c.size == n_diff
    _check_pairs(y, a, b, same=True)
    _check_pairs(y, c, d, same=False)
    messages = " ".join(str(w.message) for w in caught)
    assert f"Only generated {n_same} positive" in messages
    assert f"Only generated {n_diff} negative" in messages
    # Every existing pair was returned.
    expected = {(p, q) for p in range(5) for q in range(5)
                if p != q and y[p] == y[q]}
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected


def test_no_similar_pair_possible():
    y = np.array([0, 1, 2, 3, -1, -1])
    (a, b, c, d), caught = _draw(y, 5, random_state=0)
    assert a.size == 0 and b.size == 0
    assert c.size == 5
    assert any("positive" in str(w.message) for w in caught)


def test_single_class_gives_no_dissimilar_pair():
    (a, b, c, d), caught = _draw(np.array([3, 3, 3, 3]), 5, random_state=0)
    assert c.size == 0 and d.size == 0
    assert any("negative" in str(w.message) for w in caught)


def test_unlabelled_points_are_never_used():
    y = np.full(50, -1)
    y[[3, 7, 20, 41]] = [0, 0, 1, 1]
    (a, b, c, d), _ = _draw(y, 3, random_state=1)
    used = np.concatenate([a, b, c, d])
    assert set(used.tolist()) <= {3, 7, 20, 41}


@pytest.mark.parametrize("n", [5, 30])
def test_same_random_state_same_pairs(n):
    y = _labels(7)
    first, _ = _draw(y, n, random_state=42)
    again, _ = _draw(y, n, random_state=42)
    other, _ = _draw(y, n, random_state=43)
    for u, v in zip(first, again, strict=True):
        assert np.array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(first, other, strict=True))
    # A Generator and a RandomState are accepted too, and are reproducible.
    g1, _ = _draw(y, n, random_state=np.random.default_rng(5))
    g2, _ = _draw(y, n, random_state=np.random.default_rng(5))
    r1, _ = _draw(y, n, random_state=np.random.RandomState(5))
    r2, _ = _draw(y, n, random_state=np.random.RandomState(5))
    for u, v in zip(g1 + r1, g2 + r2, strict=True):
        assert np.array_equal(u, v)


def test_same_length():
    y = np.array([0, 0, 1, 1, 2, 2])  # 6 similar, 24 dissimilar ordered pairs
    (a, b, c, d), _ = _draw(y, 10, random_state=0)
    assert a.size == 6 and c.size == 10
    (a, b, c, d), _ = _draw(y, 10, same_length=True, random_state=0)
    assert a.size == b.size == c.size == d.size == 6
    _check_pairs(y, a, b, same=True)
    _check_pairs(y, c, d, same=False)


def test_string_and_float_labels():
    y_str = np.array(["x", "x", "y", "y", "z"])
    (a, b, c, d), _ = _draw(y_str, 2, random_state=0)
    assert np.all(y_str[a] == y_str[b]) and np.all(y_str[c] != y_str[d])
    y_float = np.array([0.0, 0.0, 1.0, 1.0, -1.0])
    (a, b, c, d), _ = _draw(y_float, 2, random_state=0)
    _check_pairs(y_float.astype(int), a, b, same=True)
    assert 4 not in np.concatenate([a, b, c, d])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_n_constraints(bad):
    with pytest.raises(ValueError, match="n_constraints"):
        Constraints([0, 0, 1, 1]).positive_negative_pairs(bad)


def test_bad_labels_shape():
    with pytest.raises(ValueError, match="1D"):
        Constraints(np.zeros((3, 2)))


def test_num_constraints_is_a_deprecated_alias():
    y = _labels(3)
    with pytest.warns(FutureWarning, match="n_constraints"):
        old = Constraints(y).positive_negative_pairs(
            None, num_constraints=8, random_state=0)
    new = Constraints(y).positive_negative_pairs(8, random_state=0)
    for u, v in zip(old, new, strict=True):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("seed", range(3))
def test_all_pairs_matches_brute_force(seed):
    y = _labels(seed, n=25)
    a, b, c, d = Constraints(y).all_pairs()
    same, diff = set(), set()
    for p, q in itertools.combinations(range(y.size), 2):
        if y[p] < 0 or y[q] < 0:
            continue
        (same if y[p] == y[q] else diff).add((p, q))
    got_same = list(zip(a.tolist(), b.tolist(), strict=True))
    got_diff = list(zip(c.tolist(), d.tolist(), strict=True))
    assert len(got_same) == len(set(got_same)) and set(got_same) == same
    assert len(got_diff) == len(set(got_diff)) and set(got_diff) == diff


def test_wrap_pairs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1])
    a, b, c, d = Constraints(y).positive_negative_pairs(7, random_state=0)
    pairs, labels = wrap_pairs(X, (a, b, c, d))
    assert pairs.shape == (a.size + c.size, 2, 3)
    assert labels.shape == (a.size + c.size,)
    assert np.all(labels[: a.size] == 1) and np.all(labels[a.size:] == -1)
    assert np.array_equal(pairs[: a.size, 0], X[a])
    assert np.array_equal(pairs[: a.size, 1], X[b])
    assert np.array_equal(pairs[a.size:, 0], X[c])
    assert np.array_equal(pairs[a.size:, 1], X[d])


def test_wrap_pairs_with_no_similar_pair():
    X = np.arange(8.0).reshape(4, 2)
    empty = np.empty(0, dtype=np.intp)
    pairs, labels = wrap_pairs(X, (empty, empty, np.array([0, 1]), np.array([2, 3])))
    assert pairs.shape == (2, 2, 2)
    assert np.array_equal(labels, [-1, -1])
