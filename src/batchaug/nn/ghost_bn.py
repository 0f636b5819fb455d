"""Ghost BatchNorm (Hoffer et al., "Train longer, generalize better", 2017).

Normalizes each virtual batch of ``virtual_batch_size`` rows with its own statistics. With Batch
Augmentation, B·M views normally share one set of BN statistics; micro-batching a step changes that to
per-chunk statistics as a side effect. Ghost BN makes the choice explicit and independent of memory:
the statistics are per virtual batch whether or not the step is micro-batched.

Running statistics are updated once per forward with the mean of the virtual batches' statistics and
the layer's own momentum, so a step over G virtual batches moves the running averages exactly as much
as a step over one ordinary batch (the "momentum corrected for the number of chunks" of Composer's
ghost BN, done here in closed form rather than by G small updates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class _GhostBatchNorm(_BatchNorm):
    def __init__(self, num_features: int, virtual_batch_size: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        if virtual_batch_size < 1:
            raise ValueError(f"virtual_batch_size must be >= 1, got {virtual_batch_size}")
        self.virtual_batch_size = int(virtual_batch_size)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", virtual_batch_size={self.virtual_batch_size}"

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        n = x.shape[0]
        vbs = self.virtual_batch_size
        if not self.training or n <= vbs:
            return super().forward(x)
        groups = -(-n // vbs)
        if n % groups:
            return self._forward_chunks(x, groups)
        # Vectorized: (G, n/G, C, *spatial), statistics over every dim but G and C.
        xg = x.reshape(groups, n // groups, *x.shape[1:])
        dims = [1] + list(range(3, xg.dim()))
        var, mean = torch.var_mean(xg.float(), dim=dims, unbiased=False, keepdim=True)
        y = ((xg.float() - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        shape = [1, 1, -1] + [1] * (xg.dim() - 3)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            count = xg[0].numel() // xg.shape[2]
            c = xg.shape[2]
            self._update_running(mean.reshape(groups, c).mean(0),
                                 var.reshape(groups, c).mean(0) * count / max(count - 1, 1))
        return y.reshape_as(x)

    def _forward_chunks(self, x: Tensor, groups: int) -> Tensor:
        """Uneven split: one F.batch_norm per chunk (a loop over G chunks, not samples)."""
        chunks = torch.tensor_split(x, groups)
        means, vars_ = [], []
        outs = []
        for c in chunks:
            dims = [0] + list(range(2, c.dim()))
            var, mean = torch.var_mean(c.float(), dim=dims, unbiased=True)
            means.append(mean)
            vars_.append(var)
            outs.append(F.batch_norm(c, None, None, self.weight, self.bias, True, 0.0, self.eps))
        if self.track_running_stats:
            self._update_running(torch.stack(means).mean(0), torch.stack(vars_).mean(0))
        return torch.cat(outs)

    @torch.no_grad()
    def _update_running(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum: float | Tensor = self.momentum if self.momentum is not None else \
            (1.0 / self.num_batches_tracked).to(self.running_mean.dtype)  # cumulative average, kept on the device
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), momentum)


class GhostBatchNorm1d(_GhostBatchNorm):
    """Ghost BN over (N, C) or (N, C, L) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {x.dim()}D input)")


class GhostBatchNorm2d(_GhostBatchNorm):
    """Ghost BN over (N, C, H, W) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")


class GhostBatchNorm3d(_GhostBatchNorm):
    """Ghost BN over (N, C, D, H, W) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"expected 5D input (got {x.dim()}D input)")


_GHOST = {nn.BatchNorm1d: GhostBatchNorm1d, nn.BatchNorm2d: GhostBatchNorm2d, nn.BatchNorm3d: GhostBatchNorm3d}


def convert_ghost_bn(model: nn.Module, virtual_batch_size: int) -> nn.Module:
    """Replace every plain ``BatchNorm1d/2d/3d`` in ``model`` (in place) by its ghost version.

    Weights, biases and running statistics are kept. Subclasses of BatchNorm (SyncBatchNorm, split BNs,
    timm's BN+activation) are left alone because their forward does more than normalize.
    Returns ``model`` (or the new layer if ``model`` itself is a BatchNorm).
    """
    cls = _GHOST.get(type(model))
    if cls is not None:
        ghost = cls(model.num_features, virtual_batch_size, model.eps, model.momentum, model.affine,
                    model.track_running_stats, device=_device_of(model), dtype=_dtype_of(model))
        ghost.load_state_dict(model.state_dict())
        ghost.train(model.training)
        return ghost
    for name, child in model.named_children():
        new = convert_ghost_bn(child, virtual_batch_size)
        if new is not child:
            setattr(model, name, new)
    return model


def _device_of(module: nn.Module) -> torch.device | None:
    t = next(iter(module.parameters()), None)
    if t is None:
        t = next(iter(module.buffers()), None)
    return t.device if t is not None else None


def _dtype_of(module: nn.Module) -> torch.dtype | None:
    t = next(iter(module.parameters()), None)
    return t.dtype if t is not None else None


__all__ = ["GhostBatchNorm1d", "GhostBatchNorm2d", "GhostBatchNorm3d", "convert_ghost_bn"]
