"""Helpers for BatchNorm bookkeeping shared by methods (gradient-norm probes, adversarial attacks) and layers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def is_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm: any torch ``_BatchNorm`` subclass (BatchNorm1d/2d/3d, their lazy
    versions, SyncBatchNorm, batchaug's ghost BatchNorms, timm's BatchNormAct2d) or one of batchaug's
    layers that stand in for a BatchNorm without subclassing it (:func:`is_batchaug_norm`)."""
    return isinstance(module, _BatchNorm) or is_batchaug_norm(module)


def is_batchaug_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a batchaug layer that replaces a BatchNorm rather than subclassing torch's
    ``_BatchNorm``: the modules marked ``_batchaug_bn = True``, i.e. the split BatchNorms. Ghost BN
    subclasses ``_BatchNorm`` and is not marked (:func:`is_batch_norm` covers both)."""
    return bool(getattr(module, "_batchaug_bn", False))


def fold_batch_norm(weight: Tensor | None, bias: Tensor | None, mean: Tensor, var: Tensor,
                    eps: float) -> tuple[Tensor, Tensor]:
    """A BatchNorm's per-channel transform folded into ``y = x·scale + shift``.

    ``scale = γ/√(σ²+ε)`` and ``shift = β - μ·scale``, with γ=1 when ``weight`` is None and β=0 when
    ``bias`` is None. Given running statistics this is the eval-mode BatchNorm; given batch statistics
    (as the synchronized split BatchNorm does) it is the train-mode one. The result has the dtype of the
    inputs: cast them first to compute in another.
    """
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[nn.Module]:
    """Run forward passes in train mode (batch statistics) without changing any running statistics.

    Every BatchNorm-like module's running buffers (and ``num_batches_tracked``) are saved on entry and
    restored on exit, so extra passes — a single-copy gradient-norm probe, PGD attack steps — leave the
    model exactly as they found it. Works with any module that subclasses ``_BatchNorm`` (SyncBatchNorm,
    the split and ghost BatchNorms in :mod:`batchaug.nn`).
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    for module in model.modules():
        if is_batch_norm(module):
            for buf in module.buffers(recurse=False):
                saved.append((buf, buf.detach().clone()))
    try:
        yield model
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def count_batchnorms(model: nn.Module) -> int:
    """Number of BatchNorm-like modules in ``model``."""
    return sum(1 for m in model.modules() if is_batch_norm(m))
