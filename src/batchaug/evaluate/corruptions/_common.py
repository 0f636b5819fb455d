"""Conversions every corruption shares."""

from __future__ import annotations

import torch
from torch import Tensor


def to_unit(images: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1], as the reference's ``np.array(x) / 255.``."""
    return images.to(torch.float32).div_(255.0)


def floor_uint8(x: Tensor) -> Tensor:
    """float in [0, 1] -> uint8 by ``floor(clip(x, 0, 1) * 255)``: the reference returns
    ``np.clip(x, 0, 1) * 255`` and its dataset scripts store ``np.uint8(...)`` of it, which truncates."""
    return x.clamp_(0.0, 1.0).mul_(255.0).floor_().to(torch.uint8)


def round_uint8(x: Tensor) -> Tensor:
    """float in [0, 255] -> uint8, rounded: for the steps the reference hands to a library that
    writes 8-bit images (ImageMagick, OpenCV on uint8)."""
    return x.round_().clamp_(0.0, 255.0).to(torch.uint8)
