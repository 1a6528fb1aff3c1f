"""``--sync-bn``: BatchNorm statistics over the global batch rather than each rank's share.

On GPUs :func:`convert` is ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``. torch's layer
refuses CPU tensors, though (and DDP refuses it in a CPU model), so on CPU (gloo) the layers
become a small BatchNorm that sums its statistics over the ranks with
``torch.distributed.nn``'s differentiable ``all_reduce``: the same arithmetic (the biased
variance normalises, the unbiased one enters the running estimate), with the gradient flowing
back through the other ranks' statistics as in torch's kernel.

:func:`revert` undoes the conversion after training, so the model handed back is the plain
one; the weight files hold plain BatchNorm state either way (SyncBatchNorm's state_dict has
the same keys and shapes), and load into the model ``create_model`` builds.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["convert", "has_batchnorm", "revert"]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in model.modules())


class _CpuSyncBatchNorm(_BatchNorm):
    """SyncBatchNorm for CPU tensors (gloo). Not a subclass of torch's: DDP refuses those on
    CPU modules."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        syncing = self.training and dist.is_available() and dist.is_initialized()
        if not syncing or dist.get_world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        # Sums in float64: the ranks' partial sums then add up as one process's would.
        count = torch.tensor([x.numel() // x.shape[1]], dtype=torch.float64)
        sums = dist_nn.all_reduce(torch.cat([count, x.double().sum(dims)]))
        n, mean = sums[0], sums[1:] / sums[0]
        centred = x.double() - mean.view(shape)
        var = dist_nn.all_reduce(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / self.num_batches_tracked.item() if self.momentum is None
                      else self.momentum)
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(x.dtype), factor)
                self.running_var.lerp_((var * n / (n - 1)).to(x.dtype), factor)
        return y.to(x.dtype)


def convert(model: nn.Module, device: torch.device
            ) -> tuple[nn.Module, dict[str, type[nn.Module]]]:
    """``model`` with every BatchNorm layer synchronised (torch's SyncBatchNorm on GPUs),
    holding the same parameters and buffers, so an optimiser built before keeps working;
    and the plain classes, for :func:`revert`."""
    plain = {name: type(m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model), plain
    for name in plain:
        model = _swap(model, name, _CpuSyncBatchNorm)
    return model, plain


def revert(model: nn.Module, plain: dict[str, type[nn.Module]]) -> nn.Module:
    """Put back the plain BatchNorm layers :func:`convert` replaced (same tensors)."""
    for name, cls in plain.items():
        model = _swap(model, name, cls)
    return model


def _swap(model: nn.Module, name: str, cls: type[nn.Module]) -> nn.Module:
    """``model`` with its BatchNorm-like layer ``name`` rebuilt as ``cls`` on the same
    tensors (the model itself when ``name`` is empty)."""
    old = model.get_submodule(name)
    new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats)
    new.weight, new.bias = old.weight, old.bias
    new.running_mean, new.running_var = old.running_mean, old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model
