"""The PyTorch front-end: autograd correctness, agreement with the NumPy API, errors."""

import subprocess
import sys

import numpy as np
import pytest


def test_import_fastmetric_does_not_import_torch(tmp_path):
    code = ("import sys, fastmetric, fastmetric.losses; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    # Run outside the source tree so the child imports the installed package.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


torch = pytest.importorskip("torch")
fmt = pytest.importorskip("fastmetric.torch")
from fastmetric import losses, magnet  # noqa: E402

PAIR_MODULES = [
    (fmt.ContrastiveLoss, losses.contrastive_loss, {}),
    (fmt.ContrastiveLoss, losses.contrastive_loss,
     {"pos_margin": 0.2, "neg_margin": 0.9}),
    (fmt.TripletMarginLoss, losses.triplet_margin_loss, {}),
    (fmt.TripletMarginLoss, losses.triplet_margin_loss, {"margin": 0.3}),
    (fmt.LiftedStructureLoss, losses.lifted_structure_loss, {}),
    (fmt.GeneralizedLiftedStructureLoss, losses.generalized_lifted_structure_loss,
     {"neg_margin": 0.7}),
]


def _batch(n=12, m=5, n_classes=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, m, generator=gen, dtype=dtype)
    labels = torch.arange(n) % n_classes
    return emb, labels


@pytest.mark.parametrize("module, function, options", PAIR_MODULES)
def test_pair_losses_pass_gradcheck(module, function, options):
    emb, labels = _batch()
    emb.requires_grad_(True)
    loss_fn = module(**options)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels), (emb,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("module, function, options", PAIR_MODULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_losses_match_numpy_api(module, function, options, dtype):
    emb, labels = _batch(n=20, seed=3, dtype=dtype)
    emb.requires_grad_(True)
    loss = module(**options)(emb, labels)
    loss.backward()
    ref_loss, ref_grad = function(emb.detach().numpy(), labels.numpy(), **options)
    assert loss.dtype == dtype
    assert emb.grad.dtype == dtype
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(loss.item(), ref_loss, rtol=rtol)
    np.testing.assert_allclose(emb.grad.numpy(), ref_grad, rtol=rtol, atol=1e-7)


def test_backward_scales_by_upstream_gradient():
    emb, labels = _batch()
    emb.requires_grad_(True)
    (3.0 * fmt.TripletMarginLoss(margin=0.5)(emb, labels)).backward()
    _, grad = losses.triplet_margin_loss(emb.detach().numpy(), labels.numpy(),
                                         margin=0.5)
    np.testing.assert_allclose(emb.grad.numpy(), 3.0 * grad, rtol=1e-12)


def test_mined_triplets_are_passed_through():
    emb, labels = _batch(n=9)
    a = torch.tensor([0, 1, 2])
    p = torch.tensor([3, 4, 5])
    n = torch.tensor([1, 2, 0])
    loss = fmt.TripletMarginLoss(margin=0.5)(emb, labels, (a, p, n))
    ref, _ = losses.triplet_margin_loss(emb.numpy(), labels.numpy(), margin=0.5,
                                        indices_tuple=(a.numpy(), p.numpy(),
                                                       n.numpy()))
    assert loss.item() == pytest.approx(ref, rel=1e-12)


def test_magnet_loss_gradcheck_and_match():
    emb, labels = _batch(n=12, m=4, n_classes=2, seed=5)
    clusters = torch.arange(12) % 4  # clusters 0, 2 hold class 0; 1, 3 class 1
    emb.requires_grad_(True)
    loss_fn = fmt.MagnetLoss(alpha=0.5)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, labels, clusters), (emb,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)
    ref, _ = magnet.magnet_loss(emb.detach().numpy(), labels.numpy(),
                                clusters.numpy(), alpha=0.5)
    assert loss_fn(emb, labels, clusters).item() == pytest.approx(ref, rel=1e-12)


def test_training_step_reduces_loss():
    torch.manual_seed(0)
    x = torch.randn(64, 10, dtype=torch.float64)
    labels = torch.arange(64) % 4
    x[:, 0] += 3.0 * labels  # class signal in one direction among noise
    model = torch.nn.Linear(10, 4, dtype=torch.float64)
    loss_fn = fmt.ContrastiveLoss()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.8 * first


def test_rejects_non_cpu_and_non_float_tensors():
    labels = torch.arange(4)
    with pytest.raises(TypeError, match="CPU"):
        fmt.ContrastiveLoss()(torch.empty(4, 3, device="meta"), labels)
    with pytest.raises(TypeError, match="float32 or float64"):
        fmt.ContrastiveLoss()(torch.ones(4, 3, dtype=torch.int64), labels)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fmt.ContrastiveLoss()(np.ones((4, 3)), labels)


def test_bad_labels_raise_from_the_kernel_front_end():
    emb, _ = _batch(n=6)
    with pytest.raises(ValueError, match="labels"):
        fmt.TripletMarginLoss()(emb, torch.arange(5))


def test_repr_shows_options():
    assert "margin=0.3" in repr(fmt.TripletMarginLoss(margin=0.3))
