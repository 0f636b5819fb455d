"""Filters and resamplers the corruptions share, written to reproduce the libraries the reference
used (scipy.ndimage / scikit-image, OpenCV, ImageMagick, Pillow) on batches of images.

A separable filter or resampler along one axis is a dense matrix (border handling folded in) applied
to the whole batch by one matrix product; a 2-D kernel is a sum of shifted copies in a fixed order.
Border modes are named by what they do, with the libraries' names beside them:

- ``"replicate"``: ``aaa|abcd|ddd`` (scipy/skimage ``"nearest"``, OpenCV ``BORDER_REPLICATE``);
- ``"symmetric"``: ``cba|abcd|dcb`` (scipy/skimage ``"reflect"``), repeated for pads wider than
  the image;
- ``"reflect101"``: ``dcb|abcd|cba`` (scipy ``"mirror"``, OpenCV's default ``BORDER_REFLECT_101``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "apply_axis", "box3", "cv2_linear_taps", "defocus_kernel", "filter2d", "filter_axis", "gaussian_blur",
    "gaussian_weights", "motion_blur", "motion_offsets", "pad_index", "pil_box_resize", "resample_axis",
    "taps_matrix", "zoom_matrix", "zoom_taps",
]


def pad_index(n: int, before: int, after: int, mode: str) -> list[int]:
    """Source index of each position ``-before .. n - 1 + after`` of a padded axis of length ``n``."""
    out = []
    for i in range(-before, n + after):
        if mode == "replicate":
            j = min(max(i, 0), n - 1)
        elif mode == "symmetric":
            j = i % (2 * n)
            j = j if j < n else 2 * n - 1 - j
        elif mode == "reflect101":
            if n == 1:
                j = 0
            else:
                j = i % (2 * n - 2)
                j = j if j < n else 2 * n - 2 - j
        else:
            raise ValueError(f"unknown border mode {mode!r}")
        out.append(j)
    return out


def apply_axis(x: Tensor, dim: int, matrix: Tensor) -> Tensor:
    """``out[..., o, ...] = sum_i matrix[o, i] * x[..., i, ...]`` along ``dim`` (-1 or -2): one
    matrix product for the whole batch."""
    matrix = matrix.to(x.device, x.dtype)
    if dim in (-1, x.ndim - 1):
        return x @ matrix.T
    if dim in (-2, x.ndim - 2):
        return matrix @ x
    raise ValueError(f"apply_axis works along the last two dims, got dim={dim}")


@functools.lru_cache(maxsize=256)
def _kernel_matrix(n: int, weights: tuple[float, ...], mode: str) -> Tensor:
    k = len(weights)
    r = k // 2
    src = torch.tensor(pad_index(n, r, r, mode))
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = src[torch.arange(n)[:, None] + torch.arange(k)[None, :]]
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows.reshape(-1), cols.reshape(-1)), torch.tensor(weights, dtype=torch.float64).repeat(n),
                 accumulate=True)
    return m


def filter_axis(x: Tensor, dim: int, weights: Sequence[float], mode: str) -> Tensor:
    """Correlate ``x`` along ``dim`` (-1 or -2) with an odd-length kernel centred on each pixel, the
    border extended by ``mode``."""
    return apply_axis(x, dim, _kernel_matrix(x.shape[dim], tuple(float(w) for w in weights), mode))


def gaussian_weights(sigma: float, truncate: float) -> list[float]:
    """scipy.ndimage's 1-D Gaussian kernel: radius ``int(truncate * sigma + 0.5)``, normalized.
    ``sigma`` <= 1e-15 is the identity (scipy skips such axes)."""
    if sigma <= 1e-15:
        return [1.0]
    r = int(truncate * sigma + 0.5)
    w = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-r, r + 1)]
    s = sum(w)
    return [v / s for v in w]


def gaussian_blur(x: Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "replicate") -> Tensor:
    """``skimage.filters.gaussian`` of float images ``(..., H, W)`` (each channel separately):
    separable scipy kernels, by default with scikit-image's ``mode="nearest"`` border."""
    w = gaussian_weights(sigma, truncate)
    if len(w) == 1:
        return x.clone()
    return filter_axis(filter_axis(x, -1, w, mode), -2, w, mode)


def box3(x: Tensor) -> Tensor:
    """``cv2.blur(x, (3, 3))`` in float: the 3x3 mean, ``BORDER_REFLECT_101``."""
    third = [1.0, 1.0, 1.0]
    return filter_axis(filter_axis(x, -1, third, "reflect101"), -2, third, "reflect101").div_(9.0)


def filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """Correlate every channel of ``x`` (..., H, W) with a 2-D ``kernel`` (kh, kw), both odd,
    as ``cv2.filter2D`` does (anchor at the centre). Zero weights are skipped."""
    kh, kw = kernel.shape
    rh, rw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    rows = torch.tensor(pad_index(h, rh, rh, mode), device=x.device)
    cols = torch.tensor(pad_index(w, rw, rw, mode), device=x.device)
    padded = x.index_select(-2, rows).index_select(-1, cols)
    out = torch.zeros_like(x)
    for i, j in torch.nonzero(kernel).tolist():
        out.add_(padded[..., i:i + h, j:j + w], alpha=float(kernel[i, j]))
    return out


def defocus_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's ``disk(radius, alias_blur)``: a normalized disk on a 17x17 grid (or
    ``2 radius + 1`` when the radius exceeds 8), smoothed by ``cv2.GaussianBlur`` with a 3x3 (5x5)
    kernel of std ``alias_blur`` and OpenCV's reflect-101 border; cropped to its non-zero support."""
    if radius <= 8:
        coords, ksize = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        coords, ksize = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    half = (coords.numel() - 1) // 2
    disk = ((coords[:, None] ** 2 + coords[None, :] ** 2) <= radius ** 2).to(torch.float64)
    disk /= disk.sum()
    # cv2.getGaussianKernel(ksize, sigma): exp(-x^2 / (2 sigma^2)) at x = i - (ksize - 1) / 2, normalized
    g = [math.exp(-((i - (ksize - 1) / 2) ** 2) / (2 * alias_blur ** 2)) for i in range(ksize)]
    g = [v / sum(g) for v in g]
    k = filter_axis(filter_axis(disk, -1, g, "reflect101"), -2, g, "reflect101")
    nz = torch.nonzero(k)
    (r0, c0), (r1, c1) = nz.min(0).values.tolist(), nz.max(0).values.tolist()
    # keep the kernel centred: crop symmetrically to the larger extent
    rh = max(half - r0, r1 - half)
    rw = max(half - c0, c1 - half)
    return k[half - rh:half + rh + 1, half - rw:half + rw + 1]


def motion_offsets(radius: float, sigma: float, angles: Tensor) -> tuple[list[float], Tensor, Tensor]:
    """ImageMagick's ``MotionBlurImage`` kernel (MagickCore/effect.c): ``width = 2 ceil(radius) + 1``
    one-sided Gaussian weights ``exp(-i^2 / (2 sigma^2))`` for ``i = 0 .. width - 1``, normalized,
    at pixel offsets ``(ceil(i cos a - 0.5), ceil(i sin a - 0.5))`` (x, y) along the angle ``a``
    in degrees. Returns the weights and the (N, width) x and y offsets."""
    width = int(2 * math.ceil(radius) + 1)
    w = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(width)]
    w = [v / sum(w) for v in w]
    a = angles.to(torch.float64).mul(math.pi / 180.0)
    i = torch.arange(width, dtype=torch.float64, device=angles.device)
    ox = torch.ceil(i[None, :] * torch.cos(a)[:, None] - 0.5).to(torch.int64)
    oy = torch.ceil(i[None, :] * torch.sin(a)[:, None] - 0.5).to(torch.int64)
    return w, ox, oy


def motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """Motion blur of float images (N, C, H, W), one angle (degrees) per image: the weighted sum of
    the pixels at ImageMagick's offsets, with edge pixels repeated beyond the border (its default
    virtual-pixel method)."""
    n, c, h, w = x.shape
    weights, ox, oy = motion_offsets(radius, sigma, angles)
    p = len(weights) - 1
    rows = torch.tensor(pad_index(h, p, p, "replicate"), device=x.device)
    cols = torch.tensor(pad_index(w, p, p, "replicate"), device=x.device)
    padded = x.index_select(2, rows).index_select(3, cols).flatten(2)  # (N, C, (H + 2p)(W + 2p))
    pw = w + 2 * p
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    base = ((yy + p) * pw + (xx + p)).flatten()
    offsets = oy.to(x.device) * pw + ox.to(x.device)  # (N, width): each tap a per-image shift
    out = torch.zeros(n, c, h * w, dtype=x.dtype, device=x.device)
    for t, wt in enumerate(weights):
        index = (base[None, :] + offsets[:, t:t + 1]).unsqueeze(1).expand(n, c, h * w)
        out.add_(padded.gather(2, index), alpha=wt)
    return out.view(n, c, h, w)


def taps_matrix(index: Tensor, weight: Tensor, n_in: int) -> Tensor:
    """The dense (out, n_in) float64 matrix of per-output taps ``index``/``weight`` (out, K)."""
    m = torch.zeros(index.shape[0], n_in, dtype=torch.float64)
    m.scatter_add_(1, index.cpu(), weight.cpu().to(torch.float64))
    return m


def resample_axis(x: Tensor, dim: int, index: Tensor, weight: Tensor) -> Tensor:
    """``out[..., o, ...] = sum_k weight[o, k] * x[..., index[o, k], ...]`` along ``dim``."""
    return apply_axis(x, dim, taps_matrix(index, weight, x.shape[dim]))


@functools.lru_cache(maxsize=256)
def zoom_matrix(n: int, zoom: float) -> Tensor:
    """:func:`zoom_taps` as a dense (n, n) matrix."""
    return taps_matrix(*zoom_taps(n, zoom, torch.device("cpu")), n)


def zoom_taps(n: int, zoom: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Linear taps of the reference's ``clipped_zoom`` along one axis of length ``n``: crop the centre
    ``ceil(n / zoom)`` pixels, ``scipy.ndimage.zoom(order=1)`` them to ``round(crop * zoom)`` (corner
    pixels aligned: ``in = out * (crop - 1) / (size - 1)``), keep the centre ``n``."""
    crop = int(math.ceil(n / zoom))
    top = (n - crop) // 2
    size = int(round(crop * zoom))
    trim = (size - n) // 2
    step = (crop - 1) / (size - 1) if size > 1 else 0.0
    index, weight = [], []
    for q in range(n):
        coord = (q + trim) * step
        i0 = min(int(math.floor(coord)), crop - 1)
        f = coord - i0
        i1 = min(i0 + 1, crop - 1)
        index.append([top + i0, top + i1])
        weight.append([1.0 - f, f])
    return (torch.tensor(index, device=device),
            torch.tensor(weight, dtype=torch.float32, device=device))


def cv2_linear_taps(n_in: int, scale: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Taps of ``cv2.resize(fx=scale, interpolation=INTER_LINEAR)`` along one axis: output length
    ``round(n_in * scale)``, source ``(o + 0.5) / scale - 0.5`` clamped to the edge pixels."""
    n_out = int(round(n_in * scale))
    index, weight = [], []
    for o in range(n_out):
        src = (o + 0.5) / scale - 0.5
        s = math.floor(src)
        f = src - s
        if s < 0:
            s, f = 0, 0.0
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        index.append([s, min(s + 1, n_in - 1)])
        weight.append([1.0 - f, f])
    return (torch.tensor(index, device=device),
            torch.tensor(weight, dtype=torch.float32, device=device))


_PIL_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2


def _pil_box_coeffs(n_in: int, n_out: int) -> tuple[list[int], list[list[int]]]:
    """Pillow's ``precompute_coeffs`` for the BOX filter, in its 8-bit fixed point
    (libImaging/Resample.c): first source pixel and integer weights of each output pixel."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    starts, coeffs = [], []
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        k = []
        for x in range(xmax):
            t = (x + xmin - center + 0.5) * ss
            k.append(1.0 if -0.5 < t <= 0.5 else 0.0)
        total = sum(k)
        k = [v / total if total != 0.0 else v for v in k]
        starts.append(xmin)
        coeffs.append([int(0.5 + v * (1 << _PIL_BITS)) for v in k])
    return starts, coeffs


@functools.lru_cache(maxsize=64)
def _pil_matrix(n_in: int, n_out: int) -> Tensor:
    starts, coeffs = _pil_box_coeffs(n_in, n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o, (s, c) in enumerate(zip(starts, coeffs, strict=True)):
        m[o, s:s + len(c)] = torch.tensor(c, dtype=torch.float64)
    return m


def _pil_pass(x: Tensor, dim: int, n_out: int) -> Tensor:
    """One Pillow resampling pass of integer-valued float64 pixels along ``dim``, rounded and clipped
    to 0..255 like Pillow's ``clip8``. Products and sums of these integers stay below 2^53, so the
    float64 matrix product is exact, whatever its summation order."""
    acc = apply_axis(x, dim, _pil_matrix(x.shape[dim], n_out))
    return acc.add_(1 << (_PIL_BITS - 1)).mul_(2.0 ** -_PIL_BITS).floor_().clamp_(0, 255)


def pil_box_resize(x: Tensor, height: int, width: int) -> Tensor:
    """``PIL.Image.resize((width, height), Image.BOX)`` of uint8 images (N, C, H, W), exactly:
    Pillow's integer weights, horizontal pass first, each pass rounded to 8 bits."""
    y = x.to(torch.float64)
    if width != x.shape[-1]:
        y = _pil_pass(y, -1, width)
    if height != x.shape[-2]:
        y = _pil_pass(y, -2, height)
    return y.to(torch.uint8)
