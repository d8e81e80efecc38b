"""Retrieval and clustering scores against brute-force NumPy and hand counts.

The references below build the whole distance matrix from the differences,
rank every row with a stable sort (ties by index, the documented rule) and
score each query in a Python loop, straight from the definitions.  The
blocked front-ends must agree with them exactly.
"""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from fastmetric.evaluation import mean_average_precision_at_r, nmi_kmeans, recall_at_k

# ----------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------


def _ranked_labels(X, y, Q=None, qy=None):
    """Per query: reference labels sorted by distance (ties by index)."""
    loo = Q is None
    if loo:
        Q, qy = X, y
    D = np.sqrt(((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    out = []
    for i in range(Q.shape[0]):
        d = D[i].copy()
        cand = np.arange(X.shape[0])
        if loo:
            cand = cand[cand != i]
        order = cand[np.argsort(d[cand], kind="stable")]
        out.append((qy[i], y[order]))
    return out


def recall_reference(X, y, ks, Q=None, qy=None):
    hits = np.zeros(len(ks))
    n = 0
    for label, ranked in _ranked_labels(X, y, Q, qy):
        if not np.any(ranked == label):
            continue  # lone query
        n += 1
        for t, k in enumerate(ks):
            hits[t] += np.any(ranked[:k] == label)
    return {k: hits[t] / n for t, k in enumerate(ks)}


def map_at_r_reference(X, y, Q=None, qy=None):
    aps = []
    for label, ranked in _ranked_labels(X, y, Q, qy):
        R = int(np.sum(ranked == label))
        if R == 0:
            continue
        rel = ranked[:R] == label
        ap = sum(rel[:i + 1].sum() / (i + 1) for i in range(R) if rel[i]) / R
        aps.append(ap)
    return float(np.mean(aps))


def _random_problem(seed, n=60, m=5, n_classes=4, dup=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, m))
    y = rng.integers(0, n_classes, n)
    if dup:  # exact duplicates and a coarse grid: many tied distances
        X = np.round(X)
        X[n // 2:] = X[: n - n // 2]
    return X, y


# ----------------------------------------------------------------------------
# Recall@K
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dup", [False, True])
def test_recall_matches_reference(seed, dup):
    X, y = _random_problem(seed, dup=dup)
    ks = (1, 2, 4, 8, 59)
    expected = recall_reference(X, y, ks)
    for block_size in (None, 1, 7):
        got = recall_at_k(X, y, ks, block_size=block_size)
        assert list(got) == list(ks)
        for k in ks:
            assert got[k] == pytest.approx(expected[k], abs=1e-15)


@pytest.mark.parametrize("dup", [False, True])
def test_recall_query_mode_matches_reference(dup):
    X, y = _random_problem(10, n=50, dup=dup)
    Q, qy = _random_problem(11, n=23, dup=dup)
    qy = qy.copy()
    qy[0] = 99  # a class absent from the reference set: left out
    expected = recall_reference(X, y, (1, 3, 50), Q, qy)
    got = recall_at_k(X, y, (1, 3, 50), query_embeddings=Q, query_labels=qy,
                      block_size=4)
    assert got == pytest.approx(expected, abs=1e-15)


def test_recall_hand_made():
    # Classes 0 and 1 in 1D; the last point's nearest class mate is 3rd.
    E = np.array([[0.0], [0.1], [1.0], [1.1], [3.0]])
    y = np.array([0, 0, 1, 1, 0])
    assert recall_at_k(E, y, k=(1, 2, 3, 4)) == {1: 0.8, 2: 0.8, 3: 1.0, 4: 1.0}
    assert recall_at_k(E, y, k=1) == 0.8
    # An int k gives a float, a sequence a dict keyed by the given Ks.
    assert isinstance(recall_at_k(E, y, k=np.int64(2)), float)
    # A lone query (class 2) is left out of the average, not counted as a miss.
    y_lone = np.array([0, 0, 1, 1, 2])
    assert recall_at_k(E, y_lone, k=1) == 1.0


def test_recall_ties_broken_by_index():
    # Query 0 has two neighbours at distance 1: index 1 (class 1) before
    # index 2 (class 0), so Recall@1 misses for it; with the order swapped it
    # hits.  Whatever argpartition does, the lower index wins.
    E = np.array([[0.0], [1.0], [-1.0], [10.0], [10.0]])
    miss = recall_at_k(E, [0, 1, 0, 1, 1], k=1)
    hit = recall_at_k(E, [0, 0, 1, 1, 1], k=1)
    assert miss == pytest.approx(recall_reference(E, np.array([0, 1, 0, 1, 1]), [1])[1])
    assert hit == pytest.approx(recall_reference(E, np.array([0, 0, 1, 1, 1]), [1])[1])
    # Nearest: 0 -> idx 1 (tie with idx 2), 1 -> idx 0, 2 -> idx 0, 3 <-> 4.
    assert miss == 3 / 5  # 0 and 1 miss
    assert hit == 4 / 5  # 2 misses


def test_recall_string_labels_and_lists():
    E = [[0.0, 0.0], [0.0, 0.1], [3.0, 3.0], [3.0, 3.1]]
    assert recall_at_k(E, ["cat", "cat", "dog", "dog"], k=1) == 1.0
    assert recall_at_k(np.float32(E), np.array([1.0, 1.0, 2.0, 2.0]), k=1) == 1.0


def test_recall_perfect_and_translation_invariant():
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 4)) * 100
    y = np.repeat(np.arange(5), 6)
    X = centres[y] + rng.standard_normal((30, 4)) * 0.01
    assert recall_at_k(X, y, k=(1, 5)) == {1: 1.0, 5: 1.0}
    shifted = X + 1e4
    assert recall_at_k(shifted, y, k=(1, 5)) == {1: 1.0, 5: 1.0}


# ----------------------------------------------------------------------------
# MAP@R
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dup", [False, True])
def test_map_at_r_matches_reference(seed, dup):
    X, y = _random_problem(seed + 20, n=70, n_classes=3, dup=dup)
    expected = map_at_r_reference(X, y)
    for block_size in (None, 1, 9):
        got = mean_average_precision_at_r(X, y, block_size=block_size)
        assert got == pytest.approx(expected, rel=1e-14)


def test_map_at_r_query_mode_matches_reference():
    X, y = _random_problem(30, n=40)
    Q, qy = _random_problem(31, n=17)
    expected = map_at_r_reference(X, y, Q, qy)
    got = mean_average_precision_at_r(X, y, query_embeddings=Q, query_labels=qy,
                                      block_size=5)
    assert got == pytest.approx(expected, rel=1e-14)


def test_map_at_r_hand_made():
    # Musgrave et al.'s worked case: R = 3 class mates, ranked hit, miss, hit:
    # AP@R = (1/1 + 2/3) / 3 = 5/9.  Items beyond R do not count.
    ref = np.array([[1.0], [2.0], [3.0], [4.0], [10.0]])
    ref_y = ["a", "b", "a", "a", "b"]
    got = mean_average_precision_at_r(ref, ref_y, query_embeddings=[[0.0]],
                                      query_labels=["a"])
    assert got == pytest.approx(5 / 9, rel=1e-15)
    # Separated classes: every query's R nearest are its class mates.
    E = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    assert mean_average_precision_at_r(E, [0, 0, 0, 1, 1, 1]) == 1.0
    # Alternating classes on a line.  Query 0 (class 0, R = 1): nearest is
    # idx 1 (class 1) -> 0.  Query 1 (class 1, R = 1): nearest idx 0 (class 0,
    # tie with idx 2 broken by index) -> 0.  Queries 2 and 3 likewise score 0.
    assert mean_average_precision_at_r([[0.0], [1.0], [2.0], [3.0]],
                                       [0, 1, 0, 1]) == 0.0


def test_map_at_r_differs_from_recall():
    # Recall@1 is perfect but the second class mate is ranked behind an
    # impostor: MAP@R sees it.
    E = np.array([[0.0], [0.1], [0.5], [0.6], [2.0], [2.1]])
    y = np.array([0, 0, 1, 1, 0, 1])
    assert mean_average_precision_at_r(E, y) == pytest.approx(
        map_at_r_reference(E, y), rel=1e-15)
    assert mean_average_precision_at_r(E, y) < recall_at_k(E, y, k=1)


# ----------------------------------------------------------------------------
# NMI of k-means
# ----------------------------------------------------------------------------


def test_nmi_separated_classes_is_one():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 3)) * 50
    y = np.repeat(np.arange(4), 10)
    X = centres[y] + rng.standard_normal((40, 3))
    assert nmi_kmeans(X, y, random_state=0) == pytest.approx(1.0)
    assert nmi_kmeans(X, np.array(list("abcd"))[y], random_state=0) == pytest.approx(
        1.0)


def test_nmi_equals_sklearn_and_is_seeded():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 4))
    y = rng.integers(0, 5, 80)
    got = nmi_kmeans(X, y, random_state=3)
    km = KMeans(n_clusters=5, n_init="auto", random_state=3).fit(X)
    assert got == normalized_mutual_info_score(y, km.labels_)
    assert got == nmi_kmeans(X, y, random_state=3)
    assert 0.0 <= got < 0.3  # labels independent of the points
    geo = nmi_kmeans(X, y, random_state=3, average_method="geometric")
    assert geo == normalized_mutual_info_score(y, km.labels_,
                                               average_method="geometric")


def test_nmi_single_class():
    assert nmi_kmeans(np.zeros((3, 2)), [7, 7, 7]) == 1.0


# ----------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------

E_OK = np.arange(12.0).reshape(6, 2)
Y_OK = [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("fn", [recall_at_k, mean_average_precision_at_r])
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"embeddings": np.arange(6.0)}, ValueError, "embeddings must be a 2D"),
        ({"embeddings": E_OK[:1], "labels": [0]}, ValueError, "at least 2"),
        ({"embeddings": np.where(E_OK == 3, np.nan, E_OK)}, ValueError, "NaN"),
        ({"embeddings": np.full((6, 2), 1e200)}, ValueError, "rescale"),
        ({"embeddings": E_OK.astype(complex)}, TypeError, "real numbers"),
        ({"labels": [0, 0, 1]}, ValueError, "labels has 3 entries"),
        ({"labels": [[0, 1]] * 6}, ValueError, "labels must be a 1D"),
        ({"labels": [0, 0, 1, 1, 2, np.nan]}, ValueError, "NaN"),
        ({"labels": [0, 0.5, 1, 1, 2, 2]}, ValueError, "non-integer"),
        ({"labels": [0, 1, 2, 3, 4, 5]}, ValueError, "no class has two items"),
        ({"query_embeddings": E_OK}, ValueError, "given together"),
        ({"query_labels": Y_OK}, ValueError, "given together"),
        ({"query_embeddings": np.ones((2, 3)), "query_labels": [0, 1]}, ValueError,
         "same space"),
        ({"query_embeddings": np.ones((2, 2)), "query_labels": [8, 9]}, ValueError,
         "no query's class"),
        ({"query_embeddings": np.ones((2, 2)), "query_labels": [0]}, ValueError,
         "query_labels has 1 entries"),
        ({"block_size": 0}, ValueError, "block_size must be >= 1"),
        ({"block_size": 2.0}, TypeError, "block_size must be an int"),
    ],
)
def test_retrieval_bad_input(fn, kwargs, exc, match):
    args = {"embeddings": E_OK, "labels": Y_OK, **kwargs}
    if fn is recall_at_k:
        args["k"] = 1
    with pytest.raises(exc, match=match):
        fn(**args)


@pytest.mark.parametrize(
    ("k", "exc", "match"),
    [
        (0, ValueError, "k must be >= 1"),
        ((1, -2), ValueError, "k must be >= 1"),
        (6, ValueError, "exceeds the 5 reference items"),
        (True, TypeError, "k must"),
        ((1, 2.0), TypeError, "k must hold ints"),
        ((), ValueError, "k is empty"),
        (None, TypeError, "k must be an int or a sequence"),
    ],
)
def test_recall_bad_k(k, exc, match):
    with pytest.raises(exc, match=match):
        recall_at_k(E_OK, Y_OK, k=k)


def test_nmi_bad_input():
    with pytest.raises(ValueError, match="labels has 2 entries"):
        nmi_kmeans(E_OK, [0, 1])
    with pytest.raises(ValueError, match="average_method"):
        nmi_kmeans(E_OK, Y_OK, average_method="mean")
    with pytest.raises(ValueError, match="infinity"):
        nmi_kmeans(np.where(E_OK == 3, np.inf, E_OK), Y_OK)
