"""Argument checks shared by the augmentation ops and policies; each raises ``ConfigError`` with
the name of the argument, what it got and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from batchaug.errors import ConfigError
from batchaug.runtime.constants import device_constant


def check_images(images: object, where: str, *, allow_float: bool = False,
                 channels: tuple[int, ...] | None = None) -> Tensor:
    """A batch of images ``(N, C, H, W)``: uint8 (or float in [0, 1] where ``allow_float``)."""
    if not isinstance(images, Tensor):
        raise ConfigError(f"{where}: images must be a torch.Tensor (N, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ConfigError(f"{where}: images must have 4 dims (N, C, H, W), got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not (allow_float and images.is_floating_point()):
        allowed = "uint8 or a float dtype" if allow_float else "uint8"
        raise ConfigError(f"{where}: images must be {allowed}, got {images.dtype}")
    if channels is not None and images.shape[1] not in channels:
        raise ConfigError(f"{where}: images must have {' or '.join(map(str, channels))} channels, "
                          f"got {images.shape[1]}")
    return images


def check_rows(value: Tensor, n: int, where: str, name: str) -> Tensor:
    """A per-row parameter: a tensor of ``n`` values (any trailing shape of size-1 dims squeezed)."""
    if not isinstance(value, Tensor) or value.numel() != n:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(f"{where}: {name} must be a tensor with one value per image ({n}), got {got}")
    return value.reshape(n)


def number(value: object, name: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, integer: bool = False) -> float:
    """A finite number within ``[low, high]`` (``(low, high]`` if ``low_open``)."""
    ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer:
        ok_type = isinstance(value, int) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    if low is not None and (v < low or (low_open and v == low)):
        raise ConfigError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and v > high:
        raise ConfigError(f"{name} must be <= {high:g}, got {value!r}")
    return v


def interval(value: object, name: str, *, low: float | None = None, high: float | None = None,
             positive: bool = False) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``lo <= hi`` inside ``[low, high]`` (``> 0`` if ``positive``)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigError(f"{name} must be a pair [low, high], got {value!r}")
    lo = number(value[0], name, low=low, high=high, low_open=positive)
    hi = number(value[1], name, low=low, high=high, low_open=positive)
    if lo > hi:
        raise ConfigError(f"{name} must have low <= high, got {value!r}")
    return lo, hi


def one_of(value: object, allowed: Sequence[str], where: str, name: str) -> str:
    """``value`` if it is one of ``allowed`` (a mode name such as a padding mode or interpolation)."""
    if value not in allowed:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value  # type: ignore[return-value]


def fill_option(fill: tuple[float, ...] | None) -> float | list[float] | None:
    """A ``fill_values`` result as a policy option: ``None``, one number, or a list per channel."""
    if fill is None:
        return None
    return list(fill) if len(fill) > 1 else fill[0]


def fill_values(fill: object, name: str = "fill") -> tuple[float, ...] | None:
    """``None``, a number or a per-channel sequence of numbers in [0, 255] (uint8 pixel values)."""
    if fill is None:
        return None
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        return (number(fill, name, low=0, high=255),)
    if isinstance(fill, Sequence) and not isinstance(fill, str) and len(fill) > 0:
        return tuple(number(f, name, low=0, high=255) for f in fill)
    raise ConfigError(f"{name} must be None, a number in [0, 255] or a per-channel list of them, got {fill!r}")


def fill_tensor(fill: tuple[float, ...], channels: int, device: torch.device, dtype: torch.dtype,
                where: str) -> Tensor:
    """``fill`` as a ``(1, C, 1, 1)`` tensor (made once per device, read-only); a single value is
    broadcast over the channels."""
    if len(fill) not in (1, channels):
        raise ConfigError(f"{where}: fill has {len(fill)} values but the images have {channels} channels")
    return device_constant([float(f) for f in fill], device, dtype, (1, -1, 1, 1))
