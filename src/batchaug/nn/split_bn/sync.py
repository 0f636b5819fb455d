"""Per-split SyncBN: batch statistics summed over processes with one autograd-aware all-reduce.

A leaf module (torch only): :meth:`SplitBatchNorm._forward_synced <.layer.SplitBatchNorm>` gets the
global statistics of every split from :func:`synced_moments` and normalizes with them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the incoming gradients over processes (sync-BN gradient)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the synchronized sums are taken in: float64 for float64 inputs, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def synced_moments(xfs: list[Tensor], process_group: Any) -> list[tuple[Tensor, Tensor, Tensor]]:
    """(mean, biased variance, count) per channel of every part, over the parts of all processes.

    ``xfs`` are the parts (N, C, ...) of this process, already in :func:`accumulation_dtype`; part ``i``
    is summed with part ``i`` of every other process. Each process contributes (Σx, Σx², count) per part
    and channel in one all_reduce; the gradient flows back through it (its backward all-reduces the
    incoming gradients), so every process gets the gradient of the global objective, as with
    ``nn.SyncBatchNorm``.
    """
    rows = []
    for xf in xfs:
        dims = [0, *range(2, xf.dim())]
        count = torch.full((1,), xf.numel() // xf.shape[1], dtype=xf.dtype, device=xf.device)
        rows.append(torch.cat([xf.sum(dims), xf.square().sum(dims), count]))
    packed = _AllReduceSum.apply(torch.stack(rows), process_group)
    c = xfs[0].shape[1]
    moments = []
    for i in range(len(xfs)):
        total = packed[i, 2 * c]
        mean = packed[i, :c] / total
        var = (packed[i, c:2 * c] / total - mean.square()).clamp_min(0)
        moments.append((mean, var, total))
    return moments
