"""SyncBatchNorm for every model, on every backend: BatchNorm statistics of the global batch under torchrun.

:func:`convert_sync_batchnorm` is ``nn.SyncBatchNorm.convert_sync_batchnorm`` for batchaug's models: plain
BatchNorms become synchronized layers, split BatchNorms synchronize each split (their own per-split
sync, :func:`~batchaug.nn.split_bn.convert_sync_split_bn`), and layers whose statistics are something
else (ghost BN's per-virtual-batch statistics, BatchNorm subclasses with their own forward such as timm's
BatchNorm+activation) are refused rather than silently changed.

On CUDA the layers are PyTorch's own ``nn.SyncBatchNorm`` (its fused NCCL kernels). PyTorch's layer does
not run on the CPU (its forward raises for CPU tensors, and DDP refuses CPU modules that hold one), so
elsewhere they are :class:`SyncBatchNorm`: the same parameters, buffers and state-dict keys and the same
statistics (the global batch's; biased to normalize, unbiased for the running variance), taken as
(Σx, Σx², count) per channel in one autograd-aware all-reduce (the one split BN uses), which gloo runs.
Multi-process CPU runs, and the tests, get what a GPU run gets.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from batchaug.errors import ConfigError
from batchaug.nn.bn_utils import fold_batch_norm
from batchaug.nn.split_bn import SplitBatchNorm
from batchaug.nn.split_bn.sync import accumulation_dtype, synced_moments

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm"]


class SyncBatchNorm(_BatchNorm):
    """BatchNorm over (N, C, ...) inputs whose training statistics are those of every process's batch
    (``nn.SyncBatchNorm``'s semantics) on any ``torch.distributed`` backend, gloo included; a plain
    BatchNorm in eval mode or in one process. ``process_group``: the group to synchronize over (None:
    the default group)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None, device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"SyncBatchNorm: expected an input of shape (N, C, ...), got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        if not self._syncing():
            return super().forward(input)
        self._check_input_dim(input)
        acc = accumulation_dtype(input.dtype)
        xf = input.to(acc)
        ((mean, var, total),) = synced_moments([xf], self.process_group)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else float(self.momentum)
            with torch.no_grad():
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), factor)
        w = None if self.weight is None else self.weight.to(acc)
        b = None if self.bias is None else self.bias.to(acc)
        scale, shift = fold_batch_norm(w, b, mean, var, self.eps)
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        return (xf * scale.view(shape) + shift.view(shape)).to(input.dtype)

    def _syncing(self) -> bool:
        """Whether this forward uses batch statistics of several processes (as ``nn.SyncBatchNorm`` decides)."""
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group) > 1


# forwards that compute plain BatchNorm statistics, and may be replaced by a synchronized layer
_PLAIN_FORWARDS = (_BatchNorm.forward, nn.SyncBatchNorm.forward, SyncBatchNorm.forward)


def convert_sync_batchnorm(module: nn.Module, process_group: Any = None, *,
                           device: torch.device | str | None = None) -> nn.Module:
    """Make every BatchNorm of ``module`` compute its statistics over all processes, in place.

    ``nn.BatchNorm1d/2d/3d`` and ``nn.SyncBatchNorm`` become synchronized layers sharing their parameters
    and buffers (as ``nn.SyncBatchNorm.convert_sync_batchnorm`` does): PyTorch's ``nn.SyncBatchNorm``
    when the model trains on CUDA, :class:`SyncBatchNorm` elsewhere. ``device`` is where the model will
    train (None: where its parameters are now). Split BatchNorms keep their class and synchronize each
    split. Raises ConfigError for ghost BatchNorms (statistics per virtual batch of one process: choose
    one of the two) and for BatchNorm subclasses with their own forward, which a conversion would lose.
    It takes effect only while ``torch.distributed`` runs more than one process. Returns ``module`` (a
    new layer when ``module`` itself is a BatchNorm).
    """
    if device is None:
        param = next(module.parameters(), None)
        device = param.device if param is not None else "cpu"
    layer = nn.SyncBatchNorm if torch.device(device).type == "cuda" else SyncBatchNorm
    return _convert(module, "", process_group, layer)


def _convert(module: nn.Module, path: str, process_group: Any, layer: type[_BatchNorm]) -> nn.Module:
    where = path or type(module).__name__
    if isinstance(module, SplitBatchNorm):
        module.sync = True
        module.process_group = process_group
        return module
    if isinstance(module, _BatchNorm):
        if hasattr(module, "virtual_batch_size"):
            raise ConfigError(f"sync BN: {where} is a ghost BatchNorm (statistics per virtual batch of one process); "
                              "synchronizing it is not defined: use train.ghost_bn or train.sync_bn, not both")
        if type(module).forward not in _PLAIN_FORWARDS:
            raise ConfigError(f"sync BN: {where} is a {type(module).__name__}, a BatchNorm with its own forward that a "
                              "conversion would lose; supported: nn.BatchNorm1d/2d/3d, nn.SyncBatchNorm, split BNs")
        return _synced_copy(module, process_group, layer)
    for name, child in list(module.named_children()):
        new = _convert(child, f"{path}.{name}" if path else name, process_group, layer)
        if new is not child:
            setattr(module, name, new)
    return module


def _synced_copy(bn: _BatchNorm, process_group: Any, layer: type[_BatchNorm]) -> _BatchNorm:
    """A ``layer`` sharing ``bn``'s parameters and buffers (built on the meta device, then pointed at them)."""
    new = layer(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group,
                device="meta")
    new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    new.train(bn.training)
    if hasattr(bn, "qconfig"):
        new.qconfig = bn.qconfig
    return new
