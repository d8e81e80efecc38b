"""PyTorch front-end: the embedding losses as ``torch.nn.Module`` objects.

Each module wraps a NumPy kernel of :mod:`fastmetric.losses` /
:mod:`fastmetric.magnet` in a ``torch.autograd.Function``: the forward pass
hands the (detached, CPU) embeddings to the kernel, which returns the loss and
its gradient at once; the backward pass scales that gradient.  So a training
loop written for pytorch-metric-learning keeps its shape::

    loss_fn = fastmetric.torch.TripletMarginLoss()
    loss = loss_fn(model(x), labels)
    loss.backward()

Only CPU tensors are supported (the kernels are CPU code); the gradient is not
itself differentiable (no double backward).  Importing :mod:`fastmetric`
never imports this module or torch.
"""

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from . import losses as _losses
from . import magnet as _magnet

__all__ = [
    "ContrastiveLoss",
    "TripletMarginLoss",
    "LiftedStructureLoss",
    "GeneralizedLiftedStructureLoss",
    "MagnetLoss",
]


def _as_numpy_embeddings(embeddings):
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(
            f"embeddings must be a torch.Tensor, got {type(embeddings).__name__}"
        )
    if embeddings.device.type != "cpu":
        raise TypeError(
            "fastmetric.torch losses run on the CPU: embeddings are on "
            f"{embeddings.device}; move them with .cpu() first"
        )
    if embeddings.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"embeddings must be float32 or float64, got {embeddings.dtype}"
        )
    return embeddings.detach().numpy()


def _as_numpy_indices(value, name):
    """Labels, cluster ids or mined index tensors as NumPy arrays."""
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return tuple(_as_numpy_indices(v, name) for v in value)
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            value = value.cpu()
        return value.detach().numpy()
    return np.asarray(value)


class _KernelFunction(torch.autograd.Function):
    """Loss and gradient from one kernel call; backward scales the gradient."""

    @staticmethod
    def forward(ctx, embeddings, kernel, args, kwargs):
        loss, grad = kernel(_as_numpy_embeddings(embeddings), *args, **kwargs)
        ctx.save_for_backward(torch.from_numpy(np.ascontiguousarray(grad)))
        return torch.tensor(loss, dtype=embeddings.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None


class _KernelLoss(torch.nn.Module):
    _kernel = None

    def _call(self, embeddings, args, kwargs):
        _as_numpy_embeddings(embeddings)  # fail before autograd sees the call
        return _KernelFunction.apply(embeddings, type(self)._kernel, args, kwargs)


class _PairLoss(_KernelLoss):
    def forward(self, embeddings, labels, indices_tuple=None):
        """Loss of a batch.

        Parameters
        ----------
        embeddings : torch.Tensor of shape (batch_size, n_dims)
            CPU, float32 or float64.
        labels : torch.Tensor or array-like of shape (batch_size,)
            Integer class labels.
        indices_tuple : tuple of tensors, optional
            A miner's output: ``(anchor, positive, negative)`` triplets or
            ``(a1, p, a2, n)`` pairs.  ``None`` uses every pair / triplet.

        Returns
        -------
        torch.Tensor
            A scalar of the embeddings' dtype.
        """
        kwargs = dict(self._options)
        kwargs["indices_tuple"] = _as_numpy_indices(indices_tuple, "indices_tuple")
        return self._call(embeddings, (_as_numpy_indices(labels, "labels"),), kwargs)

    def extra_repr(self):
        """The loss's options, as ``print(module)`` shows them."""
        return ", ".join(f"{k}={v!r}" for k, v in self._options.items())


class ContrastiveLoss(_PairLoss):
    """Contrastive loss over all pairs of a batch.

    See :func:`fastmetric.losses.contrastive_loss` for the definition.

    Parameters
    ----------
    pos_margin : float, default=0.0
    neg_margin : float, default=1.0
    normalize : bool, default=True
    reduction : {"avg_nonzero", "mean", "sum"}, default="avg_nonzero"
    n_jobs : int, default=None

    Examples
    --------
    >>> import torch
    >>> from fastmetric.torch import ContrastiveLoss
    >>> emb = torch.randn(16, 8, dtype=torch.float64, requires_grad=True)
    >>> loss = ContrastiveLoss()(emb, torch.arange(16) % 4)
    >>> loss.backward()
    """

    _kernel = staticmethod(_losses.contrastive_loss)

    def __init__(self, pos_margin=0.0, neg_margin=1.0, *, normalize=True,
                 reduction="avg_nonzero", n_jobs=None):
        super().__init__()
        self._options = dict(pos_margin=pos_margin, neg_margin=neg_margin,
                             normalize=normalize, reduction=reduction, n_jobs=n_jobs)


class TripletMarginLoss(_PairLoss):
    """Triplet margin loss over all triplets of a batch.

    See :func:`fastmetric.losses.triplet_margin_loss` for the definition.

    Parameters
    ----------
    margin : float, default=0.05
    normalize : bool, default=True
    reduction : {"avg_nonzero", "mean", "sum"}, default="avg_nonzero"
    n_jobs : int, default=None
    """

    _kernel = staticmethod(_losses.triplet_margin_loss)

    def __init__(self, margin=0.05, *, normalize=True, reduction="avg_nonzero",
                 n_jobs=None):
        super().__init__()
        self._options = dict(margin=margin, normalize=normalize, reduction=reduction,
                             n_jobs=n_jobs)


class _LiftedLoss(_PairLoss):
    """The lifted losses' options, in pytorch-metric-learning's order."""

    def __init__(self, neg_margin=1.0, pos_margin=0.0, *, normalize=True,
                 reduction="mean", n_jobs=None):
        super().__init__()
        self._options = dict(pos_margin=pos_margin, neg_margin=neg_margin,
                             normalize=normalize, reduction=reduction, n_jobs=n_jobs)


class LiftedStructureLoss(_LiftedLoss):
    """Lifted structured loss.

    See :func:`fastmetric.losses.lifted_structure_loss` for the definition.

    Parameters
    ----------
    neg_margin : float, default=1.0
    pos_margin : float, default=0.0
    normalize : bool, default=True
    reduction : {"mean", "sum", "avg_nonzero"}, default="mean"
    n_jobs : int, default=None
    """

    _kernel = staticmethod(_losses.lifted_structure_loss)


class GeneralizedLiftedStructureLoss(_LiftedLoss):
    """Generalized lifted structured loss.

    See :func:`fastmetric.losses.generalized_lifted_structure_loss`.

    Parameters
    ----------
    neg_margin : float, default=1.0
    pos_margin : float, default=0.0
    normalize : bool, default=True
    reduction : {"mean", "sum", "avg_nonzero"}, default="mean"
    n_jobs : int, default=None
    """

    _kernel = staticmethod(_losses.generalized_lifted_structure_loss)


class MagnetLoss(_KernelLoss):
    """Magnet loss over the clusters of a batch.

    See :func:`fastmetric.magnet.magnet_loss` for the definition.

    Parameters
    ----------
    alpha : float, default=1.0
        The margin between an example's own cluster and the impostor clusters.
    normalize : bool, default=False
    reduction : {"mean", "sum", "avg_nonzero"}, default="mean"
    n_jobs : int, default=None
    """

    _kernel = staticmethod(_magnet.magnet_loss)

    def __init__(self, alpha=1.0, *, normalize=False, reduction="mean", n_jobs=None):
        super().__init__()
        self._options = dict(alpha=alpha, normalize=normalize, reduction=reduction,
                             n_jobs=n_jobs)

    def forward(self, embeddings, labels, clusters):
        """Loss of a batch of ``M`` clusters.

        Parameters
        ----------
        embeddings : torch.Tensor of shape (batch_size, n_dims)
        labels : torch.Tensor or array-like of shape (batch_size,)
        clusters : torch.Tensor or array-like of shape (batch_size,)
            Cluster id of each example, as
            :class:`fastmetric.magnet.MagnetBatchSampler` draws them.

        Returns
        -------
        torch.Tensor
        """
        args = (_as_numpy_indices(labels, "labels"),
                _as_numpy_indices(clusters, "clusters"))
        return self._call(embeddings, args, dict(self._options))

    def extra_repr(self):
        """The loss's options, as ``print(module)`` shows them."""
        return ", ".join(f"{k}={v!r}" for k, v in self._options.items())
