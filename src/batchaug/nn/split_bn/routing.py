"""Routing a model: which split each of its split BatchNorms uses (:func:`route`, :func:`set_route`).

The route values themselves and their parser live in :mod:`.route_spec`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from batchaug.nn.split_bn.layer import SplitBatchNorm
from batchaug.nn.split_bn.route_spec import Route, _parse_route


def split_batchnorms(model: nn.Module) -> list[SplitBatchNorm]:
    """Every :class:`SplitBatchNorm` in ``model`` (in ``model.modules()`` order)."""
    return [m for m in model.modules() if isinstance(m, SplitBatchNorm)]


def _require_split(model: nn.Module, what: str) -> list[SplitBatchNorm]:
    layers = split_batchnorms(model)
    if not layers:
        raise ValueError(f"{what}: the model has no split BatchNorm layers; convert it first with "
                         f"batchaug.nn.convert_split_bn(model)")
    return layers


def set_route(model: nn.Module, value: Route) -> None:
    """Route every split BatchNorm of ``model`` (see the package docstring); None restores the default."""
    _set_route(_require_split(model, "set_route"), value)


def _set_route(layers: list[SplitBatchNorm], value: Route) -> None:
    for layer in layers:
        _parse_route(value, layer.num_splits, layer.training)  # validate before changing anything
    for layer in layers:
        layer.route = value


@contextlib.contextmanager
def route(model: nn.Module, value: Route) -> Iterator[nn.Module]:
    """Context manager: route every split BatchNorm of ``model`` as ``value``, restore on exit.

    >>> with route(model, "aux"):          # the whole batch through the auxiliary BNs
    ...     logits = model(x)
    """
    layers = _require_split(model, "route")
    saved = [layer.route for layer in layers]
    _set_route(layers, value)
    try:
        yield model
    finally:
        for layer, old in zip(layers, saved, strict=True):
            layer.route = old