"""The spatter corruption: water drops (severities 1-3 of every table) or mud (4-5).

The reference (``make_cifar_c.py`` and siblings, see params.py) builds a liquid layer
``L = gaussian(N(loc, scale), sigma)`` per image, zeroed below a threshold, then

- water: edges of the 8-bit layer by ``cv2.Canny(L, 50, 150)``; ``cv2.distanceTransform`` of the
  non-edges (L2, 5x5 mask), truncated at 20; a 3x3 box blur stored as 8 bits; ``cv2.equalizeHist``;
  ``cv2.filter2D`` with the emboss kernel ``[[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]`` (8-bit result);
  another 3x3 box blur; ``m = L * dist``, scaled to a maximum of ``intensity``; the image gets
  ``m`` times pale turquoise (175, 238, 238) / 255 added;
- mud: ``m = gaussian(L > threshold, intensity)`` zeroed below 0.8; the image becomes
  ``x (1 - m) + m (63, 42, 20) / 255`` (mud brown).

Every OpenCV step is rebuilt for a batch in integer arithmetic where OpenCV uses it: Canny's
3x3 Sobel gradients (replicated border), L1 magnitude, non-maximum suppression with its fixed-point
22.5-degree sectors and hysteresis (8-connected, grown until it stops); the 5x5 chamfer distance
with OpenCV's weights 1, 1.4, 2.1969 in 16-bit fixed point, by relaxation (20 rounds give every
distance up to the truncation at 20 exactly); the histogram equalization per image. Only RGB images.
A layer that exceeds 1 is clipped before it is stored in 8 bits (the reference's ``astype(uint8)``
wraps it around).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import floor_uint8, to_unit
from .filters import box3, filter2d, gaussian_blur, pad_index
from .rng import ImageRandom

_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # OpenCV canny.cpp, CANNY_SHIFT = 15
_EMBOSS = torch.tensor([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])
_WATER = (175 / 255.0, 238 / 255.0, 238 / 255.0)
_MUD = (63 / 255.0, 42 / 255.0, 20 / 255.0)
# 5x5 chamfer mask of cv2.distanceTransform(DIST_L2, 5): a = 1, b = 1.4, c = 2.1969, in 1/65536
_CHAMFER = {1: round(1.0 * 65536), 2: round(1.4 * 65536), 5: round(2.1969 * 65536)}  # by dy^2 + dx^2


def canny(image: Tensor, low: int = 50, high: int = 150) -> Tensor:
    """``cv2.Canny(image, low, high)`` of uint8 (N, H, W) images (3x3 Sobel, L1 norm): bool edges."""
    n, h, w = image.shape
    rows = torch.tensor(pad_index(h, 1, 1, "replicate"), device=image.device)
    cols = torch.tensor(pad_index(w, 1, 1, "replicate"), device=image.device)
    p = image.to(torch.int32).index_select(1, rows).index_select(2, cols)

    def at(dy: int, dx: int) -> Tensor:
        return p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    mag = gx.abs() + gy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # neighbours beyond the border count as 0

    def nb(dy: int, dx: int) -> Tensor:
        return mp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * _TG22
    tg67x = tg22x + (ax << 16)
    horizontal = ay < tg22x
    vertical = ay > tg67x
    same_sign = (gx ^ gy) >= 0
    keep = torch.where(
        horizontal, (mag > nb(0, -1)) & (mag >= nb(0, 1)),
        torch.where(vertical, (mag > nb(-1, 0)) & (mag >= nb(1, 0)),
                    torch.where(same_sign, (mag > nb(-1, -1)) & (mag > nb(1, 1)),
                                (mag > nb(-1, 1)) & (mag > nb(1, -1)))))
    candidate = keep & (mag > low)
    edges = candidate & (mag > high)
    while True:  # hysteresis: grow the strong edges through 8-connected candidates
        grown = F.max_pool2d(edges.unsqueeze(1).to(torch.float32), 3, 1, 1).squeeze(1).bool() & candidate
        if torch.equal(grown, edges):
            return edges
        edges = grown


def chamfer_distance(zero: Tensor, limit: float = 20.0) -> Tensor:
    """``cv2.distanceTransform(src, DIST_L2, 5)`` (float32) of images whose zero pixels are
    ``zero`` (bool (N, H, W)), exact up to ``limit`` and ``min(distance, limit)`` beyond it.

    Distances are kept in OpenCV's 1/65536 units as float32 integers: every sum stays below 2^24
    until it exceeds the limit, so the arithmetic is exact."""
    n, h, w = zero.shape
    cap = float((int(limit) + 3) * 65536 * 3)  # above any distance that matters, exactly representable
    d = torch.where(zero, 0.0, cap).to(torch.float32)
    steps = [(dy, dx, float(_CHAMFER[dy * dy + dx * dx])) for dy in range(-2, 3) for dx in range(-2, 3)
             if dy * dy + dx * dx in _CHAMFER]
    for _ in range(int(limit) + 1):  # every step costs at least 1: paths up to `limit` are all found
        p = F.pad(d, (2, 2, 2, 2), value=cap)
        best = d.clone()
        for dy, dx, cost in steps:
            torch.minimum(best, p[:, 2 + dy:2 + dy + h, 2 + dx:2 + dx + w] + cost, out=best)
        best.clamp_(max=cap)
        if torch.equal(best, d):
            break
        d = best
    return d.mul_(1.0 / 65536).clamp_(max=limit)


def equalize_hist(image: Tensor) -> Tensor:
    """``cv2.equalizeHist`` of uint8 (N, H, W) images, one histogram per image."""
    n = image.shape[0]
    flat = image.reshape(n, -1).to(torch.int64)
    hist = torch.zeros(n, 256, dtype=torch.int64, device=image.device).scatter_add_(1, flat, torch.ones_like(flat))
    cdf = hist.cumsum(1)
    first = (hist > 0).to(torch.int64).argmax(1, keepdim=True)  # the lowest level present
    base = hist.gather(1, first)
    total = flat.shape[1]
    scale = torch.tensor(255.0, dtype=torch.float32) / (total - base).clamp(min=1).to(torch.float32)
    lut = ((cdf - base).to(torch.float32) * scale).round_().clamp_(0, 255).to(torch.int64)
    lut = torch.where(torch.arange(256, device=image.device)[None] <= first, 0, lut)
    constant = base == total  # OpenCV sets a one-level image to that level
    lut = torch.where(constant, first.expand_as(lut), lut)
    return lut.gather(1, flat).view(image.shape).to(torch.uint8)


def spatter(images: Tensor, param: tuple, rng: ImageRandom, table: str) -> Tensor:
    loc, scale, sigma, threshold, intensity, mud = param
    n, c, h, w = images.shape
    x = to_unit(images)
    liquid = gaussian_blur(rng.normal("liquid", (h, w), mean=loc, std=scale).to(torch.float64), sigma)
    liquid = liquid.masked_fill_(liquid < threshold, 0.0)
    if not mud:
        layer = (liquid * 255.0).clamp_(0.0, 255.0).floor_()  # (liquid_layer * 255).astype(np.uint8)
        edges = canny(layer.to(torch.uint8))
        dist = chamfer_distance(edges)
        dist = box3(dist).floor_().to(torch.uint8)
        dist = equalize_hist(dist).to(torch.float32)
        dist = filter2d(dist, _EMBOSS.to(x.device)).round_().clamp_(0.0, 255.0)
        dist = box3(dist).round_()
        m = layer.to(torch.float32) * dist
        top = m.amax((1, 2), keepdim=True)
        m = torch.where(top > 0, m / top.clamp(min=1e-30), torch.zeros_like(m)).mul_(intensity)
        colour = torch.tensor(_WATER, device=x.device).view(1, 3, 1, 1)
        return floor_uint8(x + m.unsqueeze(1) * colour)
    m = gaussian_blur((liquid > threshold).to(torch.float32), intensity)
    m = m.masked_fill_(m < 0.8, 0.0).unsqueeze(1)
    colour = torch.tensor(_MUD, device=x.device).view(1, 3, 1, 1)
    return floor_uint8(x * (1.0 - m) + colour * m)
