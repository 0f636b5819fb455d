"""Split BatchNorm: one normalization layer with separate statistics (and γ/β) for each part of a batch.

A batch ``cat([x_0, x_1, ..., x_{S-1}])`` of ``S`` equal parts goes through the network in one forward
pass; every split BatchNorm normalizes part ``k`` with its own batch statistics, running statistics and
(unless ``shared_affine``) its own γ/β. Split 0 is the *main* BatchNorm (Merchant et al. 2020: weakly
augmented images; AdvProp: clean images), split 1 the *auxiliary* one (strongly augmented or
adversarial images).

What goes through which BatchNorm is chosen by a *route*, set per model with :func:`route` (a context
manager) or :func:`set_route`:

``"split"``
    the batch is cut into ``S`` equal parts, part ``k`` uses split ``k``. Default in training mode.
``"main"``, ``"aux"`` or an int ``k``
    the whole batch uses split 0, 1 or ``k`` (two-pass use; an attack through the auxiliary BN).
    ``"main"`` is the default in eval mode.
``("blend", α)``
    one pass with γ, β, running mean and running variance interpolated, ``(1-α)·main + α·aux``.
``("blend_affine", α)``
    one pass with the *folded* per-channel transform ``x·γ/√(σ²+ε) + (β - μγ/√(σ²+ε))`` interpolated:
    at every layer, given the same input, the output is exactly the blend of the two BNs' outputs.

In training mode the blend routes use batch statistics (the two splits then differ only by γ/β) and
update no running statistics.

Compared with ``timm.layers.SplitBatchNorm2d`` this layer evaluates with any branch or blend, keeps the
activation of timm's BN+activation layers, and synchronizes each split separately across processes
(:func:`convert_sync_split_bn`), on NCCL and gloo alike.

Parameter names: split 0 keeps the names of ``nn.BatchNorm`` (``weight``, ``bias``, ``running_mean``,
``running_var``, ``num_batches_tracked``), split ``k >= 1`` prefixes them with ``aux{k}_``. A plain
model's checkpoint therefore loads into the main branch of its split version (``strict=False``), and
:func:`export_main` / :func:`export_aux` give back a plain model with the original state-dict keys.

Modules, one job each: :mod:`.layer` (the layers), :mod:`.sync` (per-split statistics summed across
processes), :mod:`.route_spec` (route values and their parser), :mod:`.routing` (routing a model),
:mod:`.convert` (BatchNorm to split BatchNorm) and :mod:`.export` (split BatchNorm back to plain BatchNorm).
"""

from __future__ import annotations

from batchaug.nn.split_bn.convert import convert_split_bn, convert_sync_split_bn
from batchaug.nn.split_bn.export import export_aux, export_blend, export_branch, export_main
from batchaug.nn.split_bn.layer import SplitBatchNorm, SplitBatchNorm1d, SplitBatchNorm2d, SplitBatchNorm3d
from batchaug.nn.split_bn.route_spec import Route
from batchaug.nn.split_bn.routing import route, set_route, split_batchnorms

__all__ = [
    "Route",
    "SplitBatchNorm",
    "SplitBatchNorm1d",
    "SplitBatchNorm2d",
    "SplitBatchNorm3d",
    "convert_split_bn",
    "convert_sync_split_bn",
    "export_aux",
    "export_blend",
    "export_branch",
    "export_main",
    "route",
    "set_route",
    "split_batchnorms",
]
