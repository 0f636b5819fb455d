"""Layers: split BatchNorms (main/auxiliary statistics), ghost BatchNorm, SyncBatchNorm on every backend,
BatchNorm bookkeeping helpers."""

from __future__ import annotations

import importlib
from typing import Any

from batchaug.nn.bn_utils import count_batchnorms, frozen_bn_stats, is_batch_norm
from batchaug.nn.split_bn import (
    Route,
    SplitBatchNorm,
    SplitBatchNorm1d,
    SplitBatchNorm2d,
    SplitBatchNorm3d,
    convert_split_bn,
    convert_sync_split_bn,
    export_aux,
    export_blend,
    export_branch,
    export_main,
    route,
    set_route,
    split_batchnorms,
)
from batchaug.nn.sync_bn import SyncBatchNorm, convert_sync_batchnorm

# Ghost BN lives in its own module; it is imported on first use so this package never depends on it.
_LAZY = {name: "batchaug.nn.ghost_bn" for name in
         ("GhostBatchNorm1d", "GhostBatchNorm2d", "GhostBatchNorm3d", "convert_ghost_bn")}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchaug.nn' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "GhostBatchNorm1d",
    "GhostBatchNorm2d",
    "GhostBatchNorm3d",
    "Route",
    "SplitBatchNorm",
    "SplitBatchNorm1d",
    "SplitBatchNorm2d",
    "SplitBatchNorm3d",
    "SyncBatchNorm",
    "convert_ghost_bn",
    "convert_split_bn",
    "convert_sync_batchnorm",
    "convert_sync_split_bn",
    "count_batchnorms",
    "export_aux",
    "export_blend",
    "export_branch",
    "export_main",
    "frozen_bn_stats",
    "is_batch_norm",
    "route",
    "set_route",
    "split_batchnorms",
]
