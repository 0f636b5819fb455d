"""Colour and histogram operations on image batches, vectorized with one parameter per image (row).

Every function takes uint8 images ``(N, C, H, W)`` (C = 1 or 3; the grey-level ones any C) and
per-row parameters, and returns uint8 images. For the same parameters each reproduces
torchvision's functional operation on a uint8 tensor (``torchvision.transforms.v2.functional``),
including its rounding: blends are computed in float32 and truncated, the grey image used by
saturation and contrast is floored, sharpness rounds its blurred image and keeps the border.
Results agree exactly or within one grey level where float32 summation order differs.
``gaussian_noise`` also takes float images in [0, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor

from batchaug.augment import _random
from batchaug.augment._validate import check_images, check_rows
from batchaug.runtime.constants import device_constant

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "adjust_sharpness",
    "autocontrast",
    "equalize",
    "gaussian_noise",
    "invert",
    "posterize",
    "rgb_to_grayscale",
    "solarize",
]

_RGB_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's (and PIL's ITU-R 601-2) luma weights


def _factor(value: Tensor, n: int, op: str, name: str) -> tuple[Tensor, Tensor]:
    """Per-row blend ratio ``r`` and ``1 - r`` as ``(N, 1, 1, 1)`` float32, with ``1 - r`` formed in
    float64 first, as torchvision does with its Python-float factor. Negative factors act as 0
    (clamped rather than checked: a check would cost a device sync per call on CUDA)."""
    r = check_rows(value, n, op, name).to(torch.float64).clamp(min=0.0)
    return r.to(torch.float32).view(n, 1, 1, 1), (1.0 - r).to(torch.float32).view(n, 1, 1, 1)


def _blend(images: Tensor, other: Tensor, ratio: Tensor, one_minus: Tensor) -> Tensor:
    """``ratio * images + (1 - ratio) * other``, clamped to [0, 255] and truncated to uint8."""
    out = images.to(torch.float32).mul_(ratio)
    out.addcmul_(other, one_minus)
    return out.clamp_(0, 255).to(torch.uint8)


def _gray(images: Tensor) -> Tensor:
    """Floored float32 luma ``(N, 1, H, W)`` of RGB uint8 images."""
    r, g, b = images.unbind(dim=1)
    luma = r.mul(_RGB_WEIGHTS[0]).add_(g, alpha=_RGB_WEIGHTS[1]).add_(b, alpha=_RGB_WEIGHTS[2])
    return luma.floor_().unsqueeze(1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """Luma of RGB uint8 images as uint8 ``(N, 1, H, W)`` (one-channel input is returned as is)."""
    check_images(images, "rgb_to_grayscale", channels=(1, 3))
    if images.shape[1] == 1:
        return images
    return _gray(images).to(torch.uint8)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Multiply by ``factor[i]`` (blend with black)."""
    check_images(images, "adjust_brightness")
    ratio, _ = _factor(factor, images.shape[0], "adjust_brightness", "factor")
    return images.to(torch.float32).mul_(ratio).clamp_(0, 255).to(torch.uint8)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's grey version: 0 gives grey, 1 the image, 2 doubles the saturation.
    One-channel images are returned unchanged, like PIL."""
    check_images(images, "adjust_saturation", channels=(1, 3))
    ratio, one_minus = _factor(factor, images.shape[0], "adjust_saturation", "factor")
    if images.shape[1] == 1:
        return images
    return _blend(images, _gray(images), ratio, one_minus)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean grey level: 0 gives a flat grey image, 1 the image."""
    check_images(images, "adjust_contrast", channels=(1, 3))
    ratio, one_minus = _factor(factor, images.shape[0], "adjust_contrast", "factor")
    gray = _gray(images) if images.shape[1] == 3 else images.to(torch.float32)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, ratio, one_minus)


def adjust_sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with a 3x3 smoothed image (PIL's SMOOTH kernel, 5 in the centre); border pixels are
    kept. 0 gives the smoothed image, 1 the image, 2 sharpens."""
    check_images(images, "adjust_sharpness", channels=(1, 3))
    n, _, h, w = images.shape
    _, one_minus = _factor(factor, n, "adjust_sharpness", "factor")
    if h <= 2 or w <= 2 or n == 0:
        return images
    out = images.to(torch.float32)
    # PIL's SMOOTH kernel (1s around a 5) as a separable 3x3 box sum plus 4x the centre: exact
    # integers in float32, and k / 13 is never within rounding error of a half, so the rounded
    # result equals torchvision's conv2d result
    rows = out[..., :, :-2] + out[..., :, 1:-1] + out[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    blurred = box.add_(out[..., 1:-1, 1:-1], alpha=4.0).div_(13.0).round_()
    inner = out[..., 1:-1, 1:-1]
    # inner + (1 - r) * (blurred - inner), the same expression torchvision evaluates
    inner.addcmul_(blurred.sub_(inner), one_minus)
    return out.clamp_(0, 255).to(torch.uint8)


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    """float RGB in [0, 1] -> HSV (hue in [0, 1)), PIL's formulas."""
    r, g, _ = rgb.unbind(dim=1)
    maxc, _ = rgb.max(dim=1)
    minc, _ = rgb.min(dim=1)
    span = maxc - minc
    grey = span == 0
    s = span / torch.where(grey, torch.ones_like(maxc), maxc)
    span_safe = torch.where(grey, torch.ones_like(span), span)
    rc, gc, bc = ((maxc.unsqueeze(1) - rgb) / span_safe.unsqueeze(1)).unbind(dim=1)
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, torch.zeros_like(h), h)
    h = (h / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV -> float RGB in [0, 1]."""
    h, s, v = hsv.unbind(dim=1)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.to(torch.long).remainder(6)
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    # which of (v, p, q, t) is R, G and B in each of the six hue sectors
    table = device_constant([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]], hsv.device, torch.long)
    choice = table[:, sector].movedim(0, 1)  # (N, 3, H, W)
    return torch.stack((v, p, q, t), dim=1).gather(1, choice)


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift[i]`` turns (torchvision allows [-0.5, 0.5]; any value works, modulo
    1). One-channel images are unchanged."""
    check_images(images, "adjust_hue", channels=(1, 3))
    n = images.shape[0]
    shift = check_rows(shift, n, "adjust_hue", "shift").to(images.device, torch.float32)
    if images.shape[1] == 1 or n == 0:
        return images
    hsv = _rgb_to_hsv(images.to(torch.float32).mul_(1.0 / 255.0))
    h = (hsv[:, 0] + shift.view(n, 1, 1)).remainder(1.0)
    hsv = torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1)
    # torchvision's float -> uint8 conversion: scale by 256 - 1e-3 and truncate
    return _hsv_to_rgb(hsv).mul_(255.0 + 1.0 - 1e-3).to(torch.uint8)


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """Invert the pixels ``>= threshold[i]`` (a float grey level; 256 or more changes nothing)."""
    check_images(images, "solarize")
    n = images.shape[0]
    t = check_rows(threshold, n, "solarize", "threshold").to(images.device, torch.float32).view(n, 1, 1, 1)
    return torch.where(images >= t, images.bitwise_not(), images)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the ``bits[i]`` most significant bits of every pixel (clamped to 0..8)."""
    check_images(images, "posterize")
    n = images.shape[0]
    bits = check_rows(bits, n, "posterize", "bits").to(images.device, torch.long).clamp(0, 8)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8).view(n, 1, 1, 1)
    return images & mask


def invert(images: Tensor) -> Tensor:
    """``255 - images``."""
    check_images(images, "invert")
    return images.bitwise_not()


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel linearly so that its minimum becomes 0 and its maximum 255 (flat
    channels are left unchanged)."""
    check_images(images, "autocontrast", channels=(1, 3))
    x = images.to(torch.float32)
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    inv_scale = torch.where(flat, torch.ones_like(high), (high - low) * (1.0 / 255.0))
    low = torch.where(flat, torch.zeros_like(low), low)
    return x.sub_(low).div_(inv_scale).clamp_(0, 255).to(torch.uint8)


def equalize(images: Tensor) -> Tensor:
    """Histogram equalization per channel with PIL's lookup table (``ImageOps.equalize``): the
    histogram without its last non-empty bin is spread evenly over 0..255; channels with a
    single level (or nearly) are left unchanged."""
    check_images(images, "equalize")
    n, c, h, w = images.shape
    if images.numel() == 0:
        return images
    rows = n * c
    flat = images.reshape(rows, h * w).to(torch.long)
    # one histogram over all channels: channel k's values live at 256 * k + value (scatter_add_, not
    # bincount, which on CUDA reads its input's maximum back to the host)
    offset = torch.arange(0, rows * 256, 256, device=images.device).unsqueeze(1)
    index = (flat + offset).view(-1)
    hist = torch.zeros(rows * 256, dtype=torch.long, device=images.device)
    hist = hist.scatter_add_(0, index, torch.ones_like(index)).view(rows, 256)
    # PIL's step: the pixels outside the last non-empty bin (the channel's maximum), over 255
    step = (h * w - hist.gather(1, flat.amax(dim=1, keepdim=True))).div_(255, rounding_mode="floor")
    # lut[k] = (pixels below k + step // 2) // step, clipped to 0..255; lut[0] = 0
    below = hist.cumsum(dim=1).sub_(hist)
    lut = below.add_(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    # (nearly) flat channels are left unchanged: the identity table
    lut = torch.where(step > 0, lut, torch.arange(256, device=images.device)).to(torch.uint8)
    return lut.gather(1, flat).view(n, c, h, w)


def gaussian_noise(images: Tensor, sigma: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``sigma[i]`` (in units of the full range,
    as for images in [0, 1]) and clip. uint8 images come back as uint8, rounded to the nearest
    level (an error of at most 1/510, far below any useful sigma); float images in [0, 1] come
    back as float, as torchvision's ``gaussian_noise(clip=True)``."""
    check_images(images, "gaussian_noise", allow_float=True)
    n = images.shape[0]
    sigma = check_rows(sigma, n, "gaussian_noise", "sigma").to(images.device, torch.float32)
    noise = _random.normal(tuple(images.shape), generator, images.device)
    if images.is_floating_point():
        return (images + noise.to(images.dtype) * sigma.view(n, 1, 1, 1).to(images.dtype)).clamp_(0.0, 1.0)
    out = noise.mul_(sigma.view(n, 1, 1, 1) * 255.0).add_(images)
    return out.round_().clamp_(0, 255).to(torch.uint8)
