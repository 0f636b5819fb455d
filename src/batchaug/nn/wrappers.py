"""The model under its wrappers, and state dicts free of wrapper prefixes.

``DistributedDataParallel`` keeps the model as ``.module`` and ``torch.compile`` as ``._orig_mod``,
in either order, and their ``state_dict`` keys carry ``module.`` / ``_orig_mod.`` prefixes. Every
place that saves or loads weights goes through :func:`unwrap` (and loading through
:func:`clean_state_dict`), so a run trained compiled, under DDP, or both, evaluates, resumes and
exports with a plain model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["clean_state_dict", "swapped_weights", "unwrap"]

_PREFIXES = ("module.", "_orig_mod.")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside any nesting of ``DistributedDataParallel``/``DataParallel`` and
    ``torch.compile`` wrappers (the model itself when unwrapped)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with the ``module.`` / ``_orig_mod.`` prefixes that wrapped models add removed (a
    checkpoint written from a wrapped model by other code loads into the plain model)."""
    out = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


@contextlib.contextmanager
def swapped_weights(model: nn.Module, weights: Mapping[str, Tensor]) -> Iterator[nn.Module]:
    """Copy ``weights`` (a state dict of the plain model) into ``model`` in place for the ``with``
    block, then put the model's own values back; works through DDP and ``torch.compile``."""
    live = unwrap(model).state_dict()
    missing = sorted(set(live) - set(weights))
    if missing:
        raise KeyError(f"the averaged weights lack {missing[:3]}")
    with torch.no_grad():
        backup = {k: v.detach().clone() for k, v in live.items()}
        for k, v in live.items():
            v.copy_(weights[k])
        try:
            yield model
        finally:
            for k, v in live.items():
                v.copy_(backup[k])
