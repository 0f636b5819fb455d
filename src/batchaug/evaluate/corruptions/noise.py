"""The noise corruptions: gaussian_noise, shot_noise, impulse_noise, speckle_noise.

Formulas of Hendrycks & Dietterich's reference (``make_cifar_c.py`` and siblings, see params.py),
with x the image in [0, 1] and c the severity's parameter:

- gaussian_noise: ``x + N(0, c^2)``;
- shot_noise: ``Poisson(x c) / c``;
- impulse_noise: ``skimage.util.random_noise(x, mode="s&p", amount=c)``: each value (every channel
  of every pixel) is replaced with probability c, by 1 or 0 with equal odds;
- speckle_noise: ``x + x N(0, c^2)``;

each clipped to [0, 1] and truncated to 8 bits.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ._common import floor_uint8, to_unit
from .rng import ImageRandom


def gaussian_noise(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = to_unit(images)
    x += rng.normal("noise", tuple(images.shape[1:]), std=c)
    return floor_uint8(x)


def speckle_noise(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = to_unit(images)
    x.addcmul_(x, rng.normal("noise", tuple(images.shape[1:]), std=c))
    return floor_uint8(x)


def impulse_noise(images: Tensor, amount: float, rng: ImageRandom, table: str) -> Tensor:
    b = rng.bits("noise", images[0].numel()).view(images.shape)
    # one 32-bit number per value: its top 24 bits decide the flip, its lowest bit salt or pepper
    flipped = ((b >> 8) & 0xFFFFFF) < int(round(amount * (1 << 24)))
    salt = (b & 1).bool()
    out = images.clone()
    out[flipped & salt] = 255
    out[flipped & ~salt] = 0
    return out


@functools.lru_cache(maxsize=16)
def _poisson_cdf(rate: float, device: str) -> tuple[Tensor, int]:
    """Inversion table of Poisson(level / 255 * rate) for the 256 grey levels: row ``level`` holds
    ``level + CDF(k)`` for ``k = 0 .. K - 1``, so that one flat, sorted array serves every level."""
    lam = torch.arange(256, dtype=torch.float64) / 255.0 * rate
    k_max = int(rate + 12.0 * math.sqrt(rate) + 30.0)  # P(X >= k_max) < 1e-30 for every level
    k = torch.arange(k_max, dtype=torch.float64)
    log_pmf = k[None, :] * torch.log(lam[1:, None]) - lam[1:, None] - torch.lgamma(k + 1.0)[None, :]
    cdf = torch.ones(256, k_max, dtype=torch.float64)  # level 0: X = 0 surely
    cdf[1:] = log_pmf.exp().cumsum(1).clamp_(max=1.0)
    cdf[:, -1] = 1.0
    flat = (cdf + torch.arange(256, dtype=torch.float64)[:, None]).flatten()
    return flat.to(device), k_max


def shot_noise(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    flat, k_max = _poisson_cdf(float(c), str(images.device))
    level = images.to(torch.float64)
    u = rng.uniform64("noise", tuple(images.shape[1:]))
    # the smallest k with CDF(k) >= u: inversion, one uniform per value, exact up to float64
    pos = torch.searchsorted(flat, (level + u).flatten())
    counts = pos.view(images.shape) - images.to(torch.int64) * k_max
    return floor_uint8(counts.to(torch.float32).div_(float(c)))
