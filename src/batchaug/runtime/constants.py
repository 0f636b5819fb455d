"""Small constant tensors made once per device, not at every call.

``torch.tensor([...], device="cuda")`` from Python values is a blocking host-to-device copy each time
it runs; on the hot path (a fill colour, a lookup table, a per-channel mean) that is one stall per
call. :func:`device_constant` builds such a tensor once per (values, dtype, device) and hands the same
tensor back afterwards. The result is shared: callers must never modify it in place.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["device_constant"]


def _key(values: object) -> object:
    if isinstance(values, (list, tuple)):
        return tuple(_key(v) for v in values)
    if isinstance(values, bool) or not isinstance(values, (int, float)):
        raise TypeError(f"device_constant: values must be numbers or nested sequences of numbers, got {values!r}")
    return values


def device_constant(values: float | Sequence, device: torch.device | str, dtype: torch.dtype | None = None,
                    shape: Sequence[int] | None = None) -> Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` (viewed as ``shape``), made once and cached.

    Read-only: the same tensor is returned to every caller with equal arguments.
    """
    return _cached(_key(values), str(torch.device(device)), dtype, None if shape is None else tuple(shape))


@functools.lru_cache(maxsize=512)
def _cached(values: object, device: str, dtype: torch.dtype | None, shape: tuple[int, ...] | None) -> Tensor:
    t = torch.tensor(values, dtype=dtype).to(device)
    return t if shape is None else t.view(shape)
