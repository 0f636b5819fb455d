"""Export back to plain BatchNorm: one branch (:func:`export_branch`, :func:`export_main`,
:func:`export_aux`) or a blend of the two (:func:`export_blend`), with the original state-dict keys.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from batchaug.nn.split_bn.layer import (
    _POST_CHILDREN,
    SplitBatchNorm,
    SplitBatchNorm1d,
    SplitBatchNorm2d,
    SplitBatchNorm3d,
    _key,
)
from batchaug.nn.split_bn.route_spec import _parse_route
from batchaug.nn.split_bn.routing import _require_split

_DIM_TO_BN = {SplitBatchNorm1d: nn.BatchNorm1d, SplitBatchNorm2d: nn.BatchNorm2d, SplitBatchNorm3d: nn.BatchNorm3d,
              SplitBatchNorm: nn.BatchNorm2d}


def _plain_shell(layer: SplitBatchNorm) -> nn.Module:
    """A fresh layer of the class ``layer`` was converted from (or the matching nn.BatchNorm)."""
    if layer._template is not None:
        shell = copy.deepcopy(layer._template)
        for name in _POST_CHILDREN:
            current = getattr(layer, name)
            if current is not None:
                setattr(shell, name, copy.deepcopy(current))
    else:
        shell = _DIM_TO_BN[type(layer)](layer.num_features, layer.eps, layer.momentum, layer.affine,
                                        layer.track_running_stats)
        if layer.drop is not None or layer.act is not None:
            shell = nn.Sequential(shell, *(copy.deepcopy(m) for m in (layer.drop, layer.act) if m is not None))
    shell.train(layer.training)
    return shell


def _bn_of(shell: nn.Module) -> _BatchNorm:
    return shell[0] if isinstance(shell, nn.Sequential) else shell  # type: ignore[index,return-value]


def _set_tensors(bn: _BatchNorm, weight: Tensor | None, bias: Tensor | None, mean: Tensor | None,
                 var: Tensor | None, nbt: Tensor | None) -> None:
    if weight is not None and bias is not None:
        bn.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        bn.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
    if mean is not None and var is not None:
        bn.running_mean = mean.detach().clone()
        bn.running_var = var.detach().clone()
        bn.num_batches_tracked = nbt.detach().clone() if nbt is not None else None


def _export(model: nn.Module, make: Any, inplace: bool, what: str) -> nn.Module:
    _require_split(model, what)
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, SplitBatchNorm):
        return make(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, SplitBatchNorm):
                setattr(module, name, make(child))
    return model


def export_branch(model: nn.Module, branch: str | int = "main", *, inplace: bool = False) -> nn.Module:
    """Replace every split BatchNorm by a plain layer holding branch ``branch``'s γ/β and statistics.

    Converted layers come back as the class they were converted from (``nn.BatchNorm2d``, timm's
    ``BatchNormAct2d`` with its activation, ``nn.SyncBatchNorm``...), so the state-dict keys are the
    original model's. Works on a deep copy unless ``inplace``.
    """
    def make(layer: SplitBatchNorm) -> nn.Module:
        kind, k, _ = _parse_route(branch, layer.num_splits, False)
        if kind != "branch":
            raise ValueError(f"export_branch: branch must be 'main', 'aux' or a split index, got {branch!r}")
        shell = _plain_shell(layer)
        nbt = getattr(layer, _key("num_batches_tracked", k)) if layer.track_running_stats else None
        mean, var = layer.running_stats_of(k)
        _set_tensors(_bn_of(shell), layer.weight_of(k), layer.bias_of(k), mean, var, nbt)
        return shell

    return _export(model, make, inplace, "export_branch")


def export_main(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Plain-BatchNorm model that computes the main branch (see :func:`export_branch`)."""
    return export_branch(model, "main", inplace=inplace)


def export_aux(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Plain-BatchNorm model that computes the auxiliary branch (see :func:`export_branch`)."""
    return export_branch(model, "aux", inplace=inplace)


def export_blend(model: nn.Module, alpha: float, *, mode: str = "stats", inplace: bool = False) -> nn.Module:
    """Plain-BatchNorm model computing the single-pass blend route in eval mode, at no extra cost.

    ``mode="stats"``: γ, β, μ, σ² interpolated (route ``("blend", α)``). ``mode="affine"``: the folded
    scale/shift interpolated (route ``("blend_affine", α)``), stored as γ=scale·√(1+ε), β=shift, μ=0,
    σ²=1, which is exact in eval mode.
    """
    if mode not in ("stats", "affine"):
        raise ValueError(f"export_blend: mode must be 'stats' or 'affine', got {mode!r}")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"export_blend: alpha must be in [0, 1], got {alpha!r}")

    def make(layer: SplitBatchNorm) -> nn.Module:
        if not (layer.track_running_stats and layer.affine):
            raise ValueError("export_blend: needs layers with affine parameters and running statistics")
        shell = _plain_shell(layer)
        nbt = layer.get_buffer("num_batches_tracked")
        if mode == "stats":
            weight, bias, mean, var = layer._blended(float(alpha))
            _set_tensors(_bn_of(shell), weight, bias, mean, var, nbt)
        else:
            scale, shift = layer._blended_folded(float(alpha))
            _set_tensors(_bn_of(shell), scale * math.sqrt(1.0 + layer.eps), shift, torch.zeros_like(scale),
                         torch.ones_like(scale), nbt)
        return shell

    with torch.no_grad():
        return _export(model, make, inplace, "export_blend")
