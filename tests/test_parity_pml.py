"""Parity with pytorch-metric-learning 2.9.0: loss values and gradients.

The same float64 batch goes through PML's loss (gradient by torch autograd
on a leaf tensor) and through fastmetric's kernel; both must agree to
``rtol=1e-5``.  Covered: the default arguments, other margins, every reducer,
normalisation off, label layouts with one class, singletons and all-distinct
labels, and mined tuples from PML's miners.

PML's ``LpDistance`` uses ``torch.cdist``, which for more than 25 rows takes
the Gram-matrix route: identical rows then sit a rounding error apart instead
of at 0, and a zero term can turn into a tiny non-zero one, which changes the
"average over non-zero terms" count.  Batches with duplicate rows are
therefore compared against PML with an exact ``cdist`` (fastmetric's
distances are exact for duplicates).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pml = pytest.importorskip("pytorch_metric_learning")

from pytorch_metric_learning import distances as pml_distances  # noqa: E402
from pytorch_metric_learning import losses as pml_losses  # noqa: E402
from pytorch_metric_learning import miners as pml_miners  # noqa: E402
from pytorch_metric_learning import reducers as pml_reducers  # noqa: E402

from fastmetric import losses  # noqa: E402

RTOL = 1e-5
ATOL = 1e-9

# (PML class, fastmetric function, non-default margins)
LOSSES = {
    "contrastive": (pml_losses.ContrastiveLoss, losses.contrastive_loss,
                    {"pos_margin": 0.25, "neg_margin": 1.3}),
    "triplet": (pml_losses.TripletMarginLoss, losses.triplet_margin_loss,
                {"margin": 0.2}),
    "lifted": (pml_losses.LiftedStructureLoss, losses.lifted_structure_loss,
               {"pos_margin": 0.1, "neg_margin": 0.7}),
    "generalized_lifted": (pml_losses.GeneralizedLiftedStructureLoss,
                           losses.generalized_lifted_structure_loss,
                           {"pos_margin": 0.3, "neg_margin": 0.6}),
}
NAMES = list(LOSSES)
REDUCERS = {
    "avg_nonzero": pml_reducers.AvgNonZeroReducer,
    "mean": pml_reducers.MeanReducer,
    "sum": pml_reducers.SumReducer,
}


class ExactLpDistance(pml_distances.LpDistance):
    """PML's distance with ``cdist`` computed from the differences."""

    def compute_mat(self, query_emb, ref_emb):
        if ref_emb is None:
            ref_emb = query_emb
        return torch.cdist(query_emb, ref_emb, p=2,
                           compute_mode="donot_use_mm_for_euclid_dist")


def _labels(layout, B, rng):
    if layout == "random":
        return rng.integers(0, 4, B)
    if layout == "pairs":
        return np.arange(B) // 2
    if layout == "single_class":
        return np.zeros(B, dtype=np.int64)
    if layout == "all_distinct":
        return np.arange(B)
    if layout == "singletons_mixed":  # some classes of one, some larger
        y = rng.integers(0, B // 2, B)
        y[: B // 4] = B + np.arange(B // 4)
        return y
    raise AssertionError(layout)


def _compare(name, E, y, *, options=None, reduction=None, normalize=True,
             indices_tuple=None, exact_distance=False):
    pml_cls, fn, _ = LOSSES[name]
    options = dict(options or {})
    pml_kwargs = dict(options)
    if reduction is not None:
        pml_kwargs["reducer"] = REDUCERS[reduction]()
        options["reduction"] = reduction
    dist_cls = ExactLpDistance if exact_distance else pml_distances.LpDistance
    pml_kwargs["distance"] = dist_cls(normalize_embeddings=normalize)
    emb = torch.tensor(E, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(y)
    torch_tuple = (None if indices_tuple is None
                   else tuple(torch.as_tensor(t) for t in indices_tuple))
    expected = pml_cls(**pml_kwargs)(emb, labels, indices_tuple=torch_tuple)
    expected.backward()
    np_tuple = (None if indices_tuple is None
                else tuple(np.asarray(t) for t in indices_tuple))
    loss, grad = fn(E, y, normalize=normalize, indices_tuple=np_tuple, **options)
    np.testing.assert_allclose(loss, expected.item(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, emb.grad.numpy(), rtol=RTOL, atol=ATOL)
    return loss


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("B", [8, 33, 64])
@pytest.mark.parametrize("layout", ["random", "pairs", "single_class",
                                    "all_distinct", "singletons_mixed"])
@pytest.mark.parametrize("margins", ["default", "custom"])
def test_all_pairs_parity(name, B, layout, margins):
    rng = np.random.default_rng(B)
    E = rng.standard_normal((B, 16))
    y = _labels(layout, B, rng)
    options = LOSSES[name][2] if margins == "custom" else None
    _compare(name, E, y, options=options)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", list(REDUCERS))
@pytest.mark.parametrize("normalize", [True, False])
def test_reducers_and_normalisation_parity(name, reduction, normalize):
    rng = np.random.default_rng(7)
    E = rng.standard_normal((33, 8))
    if not normalize:
        E *= 0.3  # distances on the margins' scale
    y = rng.integers(0, 5, 33)
    loss = _compare(name, E, y, options=LOSSES[name][2], reduction=reduction,
                    normalize=normalize)
    assert loss > 0


@pytest.mark.parametrize("name", NAMES)
def test_duplicate_rows_parity_with_exact_distances(name):
    rng = np.random.default_rng(3)
    E = rng.standard_normal((33, 8))
    E[20:] = E[:13]  # duplicates within and across classes
    y = rng.integers(0, 4, 33)
    for options in (None, LOSSES[name][2]):
        _compare(name, E, y, options=options, exact_distance=True)


def _mined_tuples(miner, E, y, max_tuples=300):
    """A miner's output, thinned to keep PML's lifted loss (which forms a
    positive-pairs x negative-pairs matrix) fast."""
    emb = torch.tensor(E, dtype=torch.float64)
    tuples = [t.numpy().copy() for t in miner(emb, torch.tensor(y))]
    groups = [tuples] if len(tuples) == 3 else [tuples[:2], tuples[2:]]
    out = []
    for group in groups:
        step = -(-len(group[0]) // max_tuples)
        out.extend(t[::step] for t in group)
    return tuple(out)


MINERS = {
    "multi_similarity": lambda: pml_miners.MultiSimilarityMiner(epsilon=0.3),
    "pair_margin": lambda: pml_miners.PairMarginMiner(pos_margin=0.9,
                                                      neg_margin=1.3),
    "triplet_margin": lambda: pml_miners.TripletMarginMiner(margin=0.3,
                                                           type_of_triplets="all"),
    "batch_hard": lambda: pml_miners.BatchHardMiner(),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("miner", list(MINERS))
@pytest.mark.parametrize("margins", ["default", "custom"])
def test_mined_tuples_parity(name, miner, margins):
    rng = np.random.default_rng(11)
    E = rng.standard_normal((40, 8))
    y = rng.integers(0, 5, 40)
    tuples = _mined_tuples(MINERS[miner](), E, y)
    # PML returns 0 when every list has at most one entry (fastmetric does
    # not); the miners here always find more
    assert all(len(t) > 1 for t in tuples)
    options = LOSSES[name][2] if margins == "custom" else None
    _compare(name, E, y, options=options, indices_tuple=tuples)


@pytest.mark.parametrize("name", NAMES)
def test_hand_made_tuples_parity(name):
    rng = np.random.default_rng(5)
    E = rng.standard_normal((12, 6))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 3])
    # repeated pairs, a positive pair whose rows have no listed negative
    a1 = np.array([0, 0, 1, 3, 9, 9, 0])
    p = np.array([1, 2, 2, 4, 10, 11, 1])
    a2 = np.array([0, 0, 1, 3, 3, 4, 0])
    n = np.array([3, 7, 8, 0, 8, 9, 3])
    _compare(name, E, y, indices_tuple=(a1, p, a2, n), options=LOSSES[name][2])
    triplets = (np.array([0, 1, 3, 5, 0]), np.array([2, 0, 4, 3, 2]),
                np.array([6, 9, 0, 11, 6]))
    _compare(name, E, y, indices_tuple=triplets)
