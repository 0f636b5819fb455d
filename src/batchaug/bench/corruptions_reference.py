"""A per-image numpy/PIL route of the reference corruptions, for tests and benchmarks.

Written from the formulas of Hendrycks & Dietterich's ``make_cifar_c.py`` (github.com/hendrycks/
robustness) and of the libraries it calls (scikit-image's HSV conversion and Gaussian filter,
scipy.ndimage.zoom, OpenCV's disk blur, ImageMagick's motion blur, PIL's JPEG and BOX resize), one
image at a time, in float64, the way the reference loops over CIFAR-10. It shares no code with
:mod:`batchaug.evaluate.corruptions`; ``tests/test_corruptions.py`` compares the two and ``batchaug
bench corruptions`` times them. Only the corruptions whose randomness can be handed in (or that have
none) are here. Images are uint8 (H, W, C) arrays; every function returns one.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

__all__ = ["REFERENCES"]


def _out(x: np.ndarray, raw: bool = False) -> np.ndarray:
    """The reference's ``np.uint8(np.clip(x, 0, 1) * 255)`` (a truncation); with ``raw``, the
    float64 values before the truncation (tests use them to find values on a grey level's edge)."""
    v = np.clip(x, 0, 1) * 255
    return v if raw else np.uint8(v)


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's ``rgb2hsv``."""
    v = rgb.max(-1)
    delta = rgb.max(-1) - rgb.min(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        h = np.zeros_like(v)
        h = np.where(r == v, (g - b) / delta, h)
        h = np.where(g == v, 2.0 + (b - r) / delta, h)
        h = np.where(b == v, 4.0 + (r - g) / delta, h)
    h = (h / 6.0) % 1.0
    h = np.where(delta == 0, 0.0, h)
    return np.stack([h, s, v], -1)


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image's ``hsv2rgb``."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = hi.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(hsv.shape)
    for k, (r, g, b) in enumerate(choices):
        m = hi == k
        out[m] = np.stack([r[m], g[m], b[m]], -1)
    return out


def brightness(x: np.ndarray, c: float, raw: bool = False) -> np.ndarray:
    if x.shape[-1] == 1:  # a grey image is its own V
        return _out(x / 255.0 + c, raw)
    hsv = _rgb2hsv(x / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _out(_hsv2rgb(hsv), raw)


def saturate(x: np.ndarray, c: tuple[float, float], raw: bool = False) -> np.ndarray:
    hsv = _rgb2hsv(x / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return _out(_hsv2rgb(hsv), raw)


def contrast(x: np.ndarray, c: float, raw: bool = False) -> np.ndarray:
    x = x / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return _out((x - means) * c + means, raw)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)


def _array(im: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(im)
    return a[..., None] if channels == 1 else a


def jpeg_compression(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    _pil(x).save(buf, "JPEG", quality=quality)
    with Image.open(buf) as im:
        return _array(im.convert("L" if x.shape[-1] == 1 else "RGB"), x.shape[-1])


def pixelate(x: np.ndarray, c: float) -> np.ndarray:
    h, w = x.shape[:2]
    im = _pil(x).resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)
    return _array(im, x.shape[-1])


def _gaussian_1d(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / sigma ** 2 * t ** 2)
    return phi / phi.sum()


def _correlate_axis(x: np.ndarray, weights: np.ndarray, axis: int, mode: str) -> np.ndarray:
    r = len(weights) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    padded = np.pad(x, pad, mode=mode)
    n = x.shape[axis]
    return sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(weights))


def gaussian(x: np.ndarray, sigma: float, *, truncate: float = 4.0, mode: str = "edge") -> np.ndarray:
    """``skimage.filters.gaussian(x, sigma, multichannel=True)`` of a float (H, W, C) or (H, W) image
    (numpy's ``"edge"`` padding is scipy's ``"nearest"``, its ``"symmetric"`` scipy's ``"reflect"``)."""
    if sigma <= 1e-15:
        return x.astype(np.float64)
    w = _gaussian_1d(sigma, truncate)
    return _correlate_axis(_correlate_axis(x.astype(np.float64), w, 0, mode), w, 1, mode)


def gaussian_blur(x: np.ndarray, sigma: float, raw: bool = False) -> np.ndarray:
    return _out(gaussian(x / 255.0, sigma), raw)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array((xx ** 2 + yy ** 2) <= radius ** 2, dtype=np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    # cv2.GaussianBlur with OpenCV's default border (reflect-101, numpy's "reflect")
    return _correlate_axis(_correlate_axis(disk, g, 0, "reflect"), g, 1, "reflect")


def defocus_blur(x: np.ndarray, c: tuple[float, float], raw: bool = False) -> np.ndarray:
    kernel = _disk(*c)
    r = kernel.shape[0] // 2
    img = x / 255.0
    h, w = img.shape[:2]
    padded = np.pad(img, ((r, r), (r, r), (0, 0)), mode="reflect")  # cv2.filter2D's reflect-101
    out = np.zeros_like(img)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            if kernel[i, j]:
                out += kernel[i, j] * padded[i:i + h, j:j + w]
    return _out(out, raw)


def _zoom_axis(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """``scipy.ndimage.zoom(order=1)`` along one axis: corners aligned, linear interpolation."""
    n = x.shape[axis]
    coords = np.arange(out_size) * ((n - 1) / (out_size - 1)) if out_size > 1 else np.zeros(1)
    moved = np.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, n)
    res = np.stack([np.interp(coords, np.arange(n), row) for row in flat])
    return np.moveaxis(res.reshape(*moved.shape[:-1], out_size), -1, axis)


def clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    crop = img[top:top + ch, top:top + ch]
    size = int(round(ch * zoom_factor))
    zoomed = _zoom_axis(_zoom_axis(crop, 0, size), 1, size)
    trim = (zoomed.shape[0] - h) // 2
    return zoomed[trim:trim + h, trim:trim + h]


def zoom_blur(x: np.ndarray, zooms: tuple[float, ...], raw: bool = False) -> np.ndarray:
    img = (x / 255.0).astype(np.float32)
    out = np.zeros_like(img, dtype=np.float64)
    for z in zooms:
        out += clipped_zoom(img, z)
    return _out((img + out) / (len(zooms) + 1), raw)


def glass_blur(x: np.ndarray, c: tuple[float, int, int], offsets: np.ndarray, raw: bool = False) -> np.ndarray:
    """``offsets``: (iterations, positions, 2) of (dx, dy), in the visiting order."""
    sigma, delta, iterations = c
    img = np.uint8(gaussian(x / 255.0, sigma) * 255)
    h, w = img.shape[:2]
    for it in range(iterations):
        t = 0
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                dx, dy = offsets[it, t]
                t += 1
                hp, wp = hh + dy, ww + dx
                # as the reference writes it: on an (H, W, C) array both sides are views, so this
                # copies (hp, wp) into (hh, ww) rather than swapping them
                img[hh, ww], img[hp, wp] = img[hp, wp], img[hh, ww]
    return _out(gaussian(img / 255.0, sigma), raw)


def motion_blur(x: np.ndarray, c: tuple[float, float], angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage(radius, sigma, angle), rounded to 8 bits."""
    radius, sigma = c
    width = int(2 * math.ceil(radius) + 1)
    k = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma * sigma))
    k /= k.sum()
    a = math.radians(angle)
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(width):
        ox = math.ceil(i * math.cos(a) - 0.5)
        oy = math.ceil(i * math.sin(a) - 0.5)
        out += k[i] * x[np.clip(yy + oy, 0, h - 1), np.clip(xx + ox, 0, w - 1)]
    return np.uint8(np.clip(np.round(out), 0, 255))


#: name -> per-image function(image, severity parameter[, random draws]).
REFERENCES = {
    "brightness": brightness, "contrast": contrast, "saturate": saturate,
    "jpeg_compression": jpeg_compression, "pixelate": pixelate,
    "gaussian_blur": gaussian_blur, "defocus_blur": defocus_blur, "zoom_blur": zoom_blur,
    "glass_blur": glass_blur, "motion_blur": motion_blur,
}
