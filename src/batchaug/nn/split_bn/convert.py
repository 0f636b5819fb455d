"""Conversion: every BatchNorm of a model replaced by a split BatchNorm (:func:`convert_split_bn`), and
per-split synchronization across processes switched on (:func:`convert_sync_split_bn`).

Knows ``nn.BatchNorm1d/2d/3d``, ``nn.SyncBatchNorm`` and timm's BN+activation layers (found only if
timm is already imported; this module never imports it).
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from batchaug.errors import ConfigError
from batchaug.nn.split_bn.layer import (
    _POST_CHILDREN,
    SplitBatchNorm,
    SplitBatchNorm1d,
    SplitBatchNorm2d,
    SplitBatchNorm3d,
    _key,
)
from batchaug.nn.split_bn.routing import _require_split

_PLAIN_BN: dict[type[_BatchNorm], type[SplitBatchNorm]] = {
    nn.BatchNorm1d: SplitBatchNorm1d,
    nn.BatchNorm2d: SplitBatchNorm2d,
    nn.BatchNorm3d: SplitBatchNorm3d,
    nn.SyncBatchNorm: SplitBatchNorm,  # SyncBatchNorm accepts any (N, C, ...) input
}
_BN_FORWARDS = {cls.forward for cls in _PLAIN_BN}


def _timm_norm_act_classes() -> tuple[type, ...]:
    """timm's BN+activation classes, if timm is already imported (never imports timm itself)."""
    mod = sys.modules.get("timm.layers.norm_act")
    if mod is None:
        return ()
    return tuple(c for c in (getattr(mod, "BatchNormAct2d", None), getattr(mod, "SyncBatchNormAct", None)) if c)


def _split_class_for(module: _BatchNorm, path: str) -> type[SplitBatchNorm]:
    """The split class that replaces ``module``, or ConfigError when its forward is unknown."""
    norm_act = _timm_norm_act_classes()
    if norm_act and isinstance(module, norm_act):
        return SplitBatchNorm2d if isinstance(module, nn.BatchNorm2d) else SplitBatchNorm
    for base, split_cls in _PLAIN_BN.items():
        if isinstance(module, base) and type(module).forward in _BN_FORWARDS:
            return split_cls
    raise ConfigError(
        f"convert_split_bn: cannot split {path or 'the model'} ({type(module).__module__}."
        f"{type(module).__qualname__}): its forward differs from nn.BatchNorm's and is not a known "
        f"BN+activation layer; supported: nn.BatchNorm1d/2d/3d, nn.SyncBatchNorm, their subclasses "
        f"that keep BatchNorm's forward, and timm's BatchNormAct2d/SyncBatchNormAct")


def _make_split(module: _BatchNorm, path: str, num_splits: int, shared_affine: bool,
                sync: bool | None) -> SplitBatchNorm:
    extra = [name for name, _ in module.named_children() if name not in _POST_CHILDREN]
    if extra:
        raise ConfigError(f"convert_split_bn: {path or 'the model'} ({type(module).__qualname__}) has child "
                          f"modules {extra} that a split BatchNorm would not know how to apply")
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        raise ConfigError(f"convert_split_bn: {path or 'the model'} is an uninitialized lazy BatchNorm; "
                          f"run one forward pass before converting")
    cls = _split_class_for(module, path)
    is_sync = isinstance(module, nn.SyncBatchNorm)
    ref = module.weight if module.affine else module.running_mean
    new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
              num_splits=num_splits, shared_affine=shared_affine,
              sync=is_sync if sync is None else sync,
              process_group=getattr(module, "process_group", None),
              device=ref.device if ref is not None else None, dtype=ref.dtype if ref is not None else None)
    with torch.no_grad():
        for k in range(num_splits):
            if module.affine and (k == 0 or not new.shared_affine):
                for name in ("weight", "bias"):
                    target = getattr(new, _key(name, k))
                    target.copy_(getattr(module, name))
                    target.requires_grad_(getattr(module, name).requires_grad)
            if module.track_running_stats and module.running_mean is not None:
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    getattr(new, _key(name, k)).copy_(getattr(module, name))
    for name in _POST_CHILDREN:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            setattr(new, name, child)
    object.__setattr__(new, "_template", module)
    new.train(module.training)
    return new


def convert_split_bn(model: nn.Module, num_splits: int = 2, shared_affine: bool = False, *,
                     sync: bool | None = None) -> nn.Module:
    """Replace every BatchNorm of ``model`` by a split BatchNorm, in place; returns ``model``.

    Every split starts as a copy of the original layer's γ/β and running statistics, so in eval mode
    (and for any branch) the converted model computes what the original did. ``shared_affine=True``
    keeps one γ/β shared by all splits and separate statistics (Merchant et al.'s ablation); the default
    is fully independent BatchNorms. timm's BN+activation layers keep their dropout and activation.
    ``sync``: None keeps ``nn.SyncBatchNorm`` layers synchronized (per split) and the others local;
    True or False sets it for every layer. Layers that are already split are left alone; BatchNorm
    subclasses with an unknown forward raise :class:`~batchaug.errors.ConfigError` rather than lose
    behaviour. When ``model`` itself is a BatchNorm the new layer is returned.
    """
    if int(num_splits) != num_splits or num_splits < 2:
        raise ConfigError(f"convert_split_bn: num_splits must be an integer >= 2, got {num_splits!r}")
    return _convert(model, "", int(num_splits), shared_affine, sync)


def _convert(module: nn.Module, path: str, num_splits: int, shared_affine: bool, sync: bool | None) -> nn.Module:
    if isinstance(module, SplitBatchNorm):
        return module
    if isinstance(module, _BatchNorm):
        return _make_split(module, path, num_splits, shared_affine, sync)
    for name, child in list(module.named_children()):
        new = _convert(child, f"{path}.{name}" if path else name, num_splits, shared_affine, sync)
        if new is not child:
            setattr(module, name, new)
    return module


def convert_sync_split_bn(model: nn.Module, process_group: Any = None) -> nn.Module:
    """Make every split BatchNorm of ``model`` synchronize its per-split statistics across processes.

    The counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm`` (which does not know split layers):
    in training, each split's (Σx, Σx², count) are all-reduced over ``process_group`` (default group when
    None). It takes effect only while ``torch.distributed`` is initialized with more than one process.
    Returns ``model``.
    """
    for layer in _require_split(model, "convert_sync_split_bn"):
        layer.sync = True
        layer.process_group = process_group
    return model
