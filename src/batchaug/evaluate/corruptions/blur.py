"""The blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur.

Formulas of the reference (``make_cifar_c.py`` and siblings, see params.py), x in [0, 1]:

- gaussian_blur: ``skimage.filters.gaussian(x, sigma)`` (scipy kernel truncated at 4 sigma,
  ``"nearest"`` border);
- defocus_blur: ``cv2.filter2D`` of every channel with ``disk(radius, alias_blur)`` (a normalized
  disk smoothed by a small Gaussian, see :func:`filters.defocus_kernel`), reflect-101 border;
- glass_blur: Gaussian blur, truncate to 8 bits, then for each iteration visit the pixels
  ``h = H - d .. d + 1`` (rows, descending) and ``w = W - d .. d + 1`` (columns, descending) and give
  each the value of the pixel at ``(h + dy, w + dx)``, ``dx, dy`` uniform integers in ``[-d, d)``
  (the reference means a swap; see :func:`glass_shuffle`); blur again;
- motion_blur: ImageMagick's ``MotionBlurImage(radius, sigma, angle)``, angle uniform in
  (-45, 45) degrees (see :func:`filters.motion_blur`); ImageMagick writes 8 bits, so the result is
  rounded;
- zoom_blur: the mean of x and of ``clipped_zoom(x, z)`` for every zoom factor z of the severity
  (centre crop, bilinear ``scipy.ndimage.zoom``, centre crop back).

The glass blur's steps are sequential by definition (a pixel moved early can be moved again); they
are computed exactly, with one vectorized step per column and per row of the image instead of one
per pixel (see :func:`glass_shuffle`).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ._common import floor_uint8, round_uint8, to_unit
from .filters import apply_axis, defocus_kernel, filter2d, zoom_matrix
from .filters import gaussian_blur as _gaussian
from .filters import motion_blur as _motion
from .rng import ImageRandom


def gaussian_blur(images: Tensor, sigma: float, rng: ImageRandom, table: str) -> Tensor:
    return floor_uint8(_gaussian(to_unit(images), sigma))


def defocus_blur(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    radius, alias_blur = param
    kernel = defocus_kernel(radius, alias_blur).to(images.device, torch.float32)
    return floor_uint8(filter2d(to_unit(images), kernel))


_GLASS_BUDGET = 1 << 24  # int64 band entries held at once (128 MB)


def glass_shuffle(images: Tensor, delta: int, offsets: Tensor) -> Tensor:
    """The glass blur's local pixel "swaps" of uint8 images (N, C, H, W). ``offsets``: int64
    (N, iterations, positions, 2) of ``(dx, dy)`` in ``[-delta, delta)``, positions in the visiting
    order (rows ``H - delta`` down to ``delta + 1``, within each the columns ``W - delta`` down).

    The reference writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on an (H, W, 3) numpy array,
    whose right-hand side holds *views*: pixel (h, w) takes the value of (h', w'), which keeps its
    own. CIFAR-10-C and ImageNet-C were made that way, and so is this: a copy, not a swap.

    Exactly the reference's sequential steps, in fewer sequential steps: the steps of one row only
    touch the band of rows ``h - delta .. h + delta - 1``, so every row's steps are first applied to
    its own band (all rows and images at once, one step per column), and the rows' band maps are
    then composed in the visiting order (one step per row)."""
    n, c, h, w = images.shape
    d = delta
    rows = list(range(h - d, d, -1))
    cols = list(range(w - d, d, -1))
    if not rows or not cols:
        return images.clone()
    r, k, band = len(rows), len(cols), 2 * d * w
    per_chunk = max(1, _GLASS_BUDGET // (r * band))  # the bands of a 224 px batch are large: chunk it
    if n > per_chunk:
        return torch.cat([glass_shuffle(images[i:i + per_chunk], delta, offsets[i:i + per_chunk])
                          for i in range(0, n, per_chunk)])
    device = images.device
    shift = (offsets[..., 1] * w + offsets[..., 0]).to(device).view(n, offsets.shape[1], r, k)
    # perm[p] = the source pixel now at position p; local[.., j] likewise within a row's band
    perm = torch.arange(h * w, device=device).repeat(n, 1)
    for it in range(offsets.shape[1]):
        local = torch.arange(band, device=device).repeat(n, r, 1)
        for t, x in enumerate(cols):
            a = d * w + x  # (row h, column x) in its band, which starts at row h - d
            b = (shift[:, it, :, t] + a).unsqueeze(-1)
            local[:, :, a] = local.gather(2, b).squeeze(-1)
        for t, y in enumerate(rows):
            lo = (y - d) * w
            perm[:, lo:lo + band] = perm[:, lo:lo + band].gather(1, local[:, t])
    return images.flatten(2).gather(2, perm.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)


def glass_blur(images: Tensor, param: tuple[float, int, int], rng: ImageRandom, table: str) -> Tensor:
    sigma, delta, iterations = param
    h, w = images.shape[-2:]
    count = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    offsets = rng.randint("shuffle", (iterations, count, 2), -delta, delta)
    blurred = floor_uint8(_gaussian(to_unit(images), sigma))
    return floor_uint8(_gaussian(to_unit(glass_shuffle(blurred, delta, offsets)), sigma))


def motion_blur(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    radius, sigma = param
    angles = rng.uniform("angle", (), -45.0, 45.0)
    return round_uint8(_motion(images.to(torch.float32), radius, sigma, angles))


def zoom(x: Tensor, factor: float) -> Tensor:
    """The reference's ``clipped_zoom`` of float images (..., H, W), along both axes."""
    h, w = x.shape[-2:]
    return apply_axis(apply_axis(x, -2, zoom_matrix(h, factor)), -1, zoom_matrix(w, factor))


@functools.lru_cache(maxsize=16)
def _zoom_blur_matrix(h: int, w: int, factors: tuple[float, ...]) -> Tensor:
    """The whole zoom blur of an H x W image as one (HW, HW) matrix: the mean of the identity and of
    every ``clipped_zoom``, each the Kronecker product of its row and column resamplers."""
    total = torch.eye(h * w, dtype=torch.float64)
    for z in factors:
        total += torch.kron(zoom_matrix(h, z), zoom_matrix(w, z))
    return total / (len(factors) + 1)


def zoom_blur(images: Tensor, factors: tuple[float, ...], rng: ImageRandom, table: str) -> Tensor:
    x = to_unit(images)
    n, c, h, w = x.shape
    if h * w <= 4096:  # small images: one product with the (HW, HW) matrix, fewer operations than 2 per zoom
        m = _zoom_blur_matrix(h, w, tuple(factors)).to(x.device, x.dtype)
        return floor_uint8((x.reshape(n, c, h * w) @ m.T).view(n, c, h, w))
    out = x.clone()
    for z in factors:
        out += zoom(x, z)
    return floor_uint8(out.div_(len(factors) + 1))
