"""Geometric operations on image batches, vectorized with one set of parameters per image (row).

Every function takes uint8 images ``(N, C, H, W)`` and per-row parameter tensors of length ``N``
and returns uint8 images, with no Python loop over rows. For the same parameters each matches
torchvision's functional operation on one image (``torchvision.transforms.v2.functional``):

=====================  =========================================================================
``hflip``              ``horizontal_flip`` on the rows where ``mask`` is set
``crop``               ``pad(padding, fill, padding_mode)`` then ``crop(top, left, h, w)`` (then
                       ``horizontal_flip`` where ``flip``): RandomCrop(padding=...) in one gather
``translate``          ``affine(angle=0, translate=[dx, dy], scale=1, shear=0)`` (integer shifts)
``cutout``             ``erase`` of squares centred at given points and clipped at the borders
``resized_crop``       ``resized_crop(top, left, h, w, size, bilinear, antialias)``
``affine`` /           ``affine`` / ``rotate`` with nearest or bilinear interpolation and fill:
``rotate``             the same inverse matrix and sampling grid as torchvision, so the same pixels
=====================  =========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from batchaug.augment._validate import (
    check_images,
    check_rows,
    fill_tensor,
    fill_values,
    one_of,
)
from batchaug.errors import ConfigError
from batchaug.runtime.constants import device_constant

__all__ = [
    "INTERPOLATIONS",
    "PADDING_MODES",
    "affine",
    "affine_matrix",
    "crop",
    "cutout",
    "hflip",
    "resized_crop",
    "rotate",
    "translate",
    "warp_affine",
]

PADDING_MODES = ("constant", "edge", "reflect", "symmetric")
INTERPOLATIONS = ("nearest", "bilinear")


def _host_reads_are_free(device: torch.device) -> bool:
    """Whether reading ``device`` data on the host costs no synchronization (the CPU), so that a
    data-dependent shape (``nonzero``) is the faster route; elsewhere the sync-free route is taken."""
    return device.type == "cpu"


def hflip(images: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mirror the images left-right; with ``mask`` (bool, one per row) only the rows where it is set."""
    check_images(images, "hflip", allow_float=True)
    if mask is None:
        return images.flip(-1)
    mask = check_rows(mask, images.shape[0], "hflip", "mask").to(images.device, torch.bool)
    if not _host_reads_are_free(images.device):  # no nonzero: it would read the mask back to the host
        return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)
    # copying the chosen rows is ~6x faster on CPU than torch.where with a per-row mask
    rows = mask.nonzero().squeeze(1)
    return images.index_copy(0, rows, images.index_select(0, rows).flip(-1))


def _source_index(index: Tensor, size: int, padding_mode: str) -> Tensor:
    """Map out-of-range source indices into ``[0, size)`` for the non-constant padding modes."""
    if padding_mode == "edge":
        return index.clamp(0, size - 1)
    if padding_mode == "reflect":  # mirror without repeating the edge pixel: -1 -> 1
        period = 2 * (size - 1)
        if period == 0:
            return torch.zeros_like(index)
        index = index.remainder(period)
        return torch.where(index >= size, period - index, index)
    # symmetric: mirror repeating the edge pixel: -1 -> 0
    period = 2 * size
    index = index.remainder(period)
    return torch.where(index >= size, period - 1 - index, index)


def _pad_constant(images: Tensor, padding: int, fill: tuple[float, ...]) -> Tensor:
    if padding == 0:
        return images
    value = [round(f) for f in fill]
    out = F.pad(images, (padding,) * 4, value=value[0] if len(value) == 1 else 0)
    if len(value) > 1 and any(value):
        v = fill_tensor(tuple(value), images.shape[1], images.device, images.dtype, "crop")
        for border in (out[..., :padding, :], out[..., -padding:, :], out[..., :, :padding], out[..., :, -padding:]):
            border.copy_(v.expand_as(border))
    return out


def crop(images: Tensor, top: Tensor, left: Tensor, height: int, width: int, *, padding: int = 0,
         padding_mode: str = "constant", fill: float | Sequence[float] = 0,
         flip: Tensor | None = None) -> Tensor:
    """Crop a ``height x width`` window at ``(top[i], left[i])`` of each image padded by ``padding``.

    ``top``/``left`` are in padded coordinates, as for torchvision's ``pad`` followed by ``crop``
    (RandomCrop with ``padding``), and must lie in ``[0, H + 2 * padding - height]`` (and
    likewise for ``left``; values outside are clamped). ``padding_mode`` is one of
    ``PADDING_MODES`` (torchvision's names); ``fill`` is the constant for "constant" (a number or
    one per channel). ``flip`` (bool per row) mirrors those crops left-right in the same gather.
    """
    check_images(images, "crop")
    n, c, h, w = images.shape
    one_of(padding_mode, PADDING_MODES, "crop", "padding_mode")
    if padding < 0:
        raise ConfigError(f"crop: padding must be >= 0, got {padding}")
    if padding_mode == "reflect" and padding >= min(h, w):
        raise ConfigError(f"crop: reflect padding ({padding}) must be smaller than the image ({h}x{w})")
    ph, pw = h + 2 * padding, w + 2 * padding
    if not (1 <= height <= ph and 1 <= width <= pw):
        raise ConfigError(f"crop: a {height}x{width} window does not fit the {h}x{w} image padded by {padding}")
    dev = images.device
    top = check_rows(top, n, "crop", "top").to(dev, torch.long).clamp(0, ph - height)
    left = check_rows(left, n, "crop", "left").to(dev, torch.long).clamp(0, pw - width)
    rows = top[:, None] + torch.arange(height, device=dev)  # in padded coordinates
    cols = left[:, None] + torch.arange(width, device=dev)
    if flip is not None:
        flip = check_rows(flip, n, "crop", "flip").to(dev, torch.bool)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    if padding_mode == "constant":
        # gather from the padded images: cheaper than masking the border afterwards
        source = _pad_constant(images, padding, fill_values(fill) or (0.0,))
        sw = pw
    else:
        source = images
        rows = _source_index(rows - padding, h, padding_mode)
        cols = _source_index(cols - padding, w, padding_mode)
        sw = w
    index = (rows[:, :, None] * sw + cols[:, None, :]).view(n, 1, height * width)
    out = torch.gather(source.reshape(n, c, -1), 2, index.expand(n, c, height * width))
    return out.view(n, c, height, width)


def translate(images: Tensor, dx: Tensor, dy: Tensor, *, fill: float | Sequence[float] = 0,
              max_shift: int | None = None) -> Tensor:
    """Shift each image by integer ``(dx[i], dy[i])`` pixels (positive: right / down), filling the
    uncovered border with ``fill``. ``max_shift`` (a bound on ``|dx|, |dy|``) saves a device sync."""
    check_images(images, "translate")
    n, _, h, w = images.shape
    dev = images.device
    dx = check_rows(dx, n, "translate", "dx").to(dev, torch.long).clamp(-w, w)
    dy = check_rows(dy, n, "translate", "dy").to(dev, torch.long).clamp(-h, h)
    if max_shift is None:
        max_shift = int(torch.maximum(dx.abs(), dy.abs()).max()) if n else 0
    pad = min(int(max_shift), max(h, w))
    return crop(images, pad - dy, pad - dx, h, w, padding=pad, fill=fill)


def cutout(images: Tensor, center_y: Tensor, center_x: Tensor, length: int, *,
           fill: float | Sequence[float] = 0) -> Tensor:
    """Fill ``length x length`` squares centred at ``(center_y, center_x)``, clipped at the borders.

    ``center_y``/``center_x`` have shape ``(N,)`` or ``(N, K)`` for ``K`` holes per image. A hole
    covers rows ``[cy - length // 2, cy - length // 2 + length)`` (DeVries & Taylor's squares,
    which for odd lengths are one pixel short), and likewise for columns.
    """
    check_images(images, "cutout")
    n, c, h, w = images.shape
    if length < 0:
        raise ConfigError(f"cutout: length must be >= 0, got {length}")
    dev = images.device
    cy = center_y.to(dev, torch.long).reshape(n, -1)
    cx = center_x.to(dev, torch.long).reshape(n, -1)
    if cy.shape != cx.shape:
        raise ConfigError(f"cutout: center_y and center_x must have the same shape, got "
                          f"{tuple(center_y.shape)} and {tuple(center_x.shape)}")
    y0 = (cy - length // 2)[..., None]
    x0 = (cx - length // 2)[..., None]
    ys = torch.arange(h, device=dev)
    xs = torch.arange(w, device=dev)
    # kept pixels as uint8 arithmetic on per-axis indicators: bool masks broadcast over an
    # (N, H, W) grid are ~10x slower on CPU
    keep_y = ((ys < y0) | (ys >= y0 + length)).to(torch.uint8)  # (N, K, H)
    keep_x = ((xs < x0) | (xs >= x0 + length)).to(torch.uint8)  # (N, K, W)
    keep = keep_y[..., :, None] | keep_x[..., None, :]  # (N, K, H, W): outside hole k
    keep = keep.amin(dim=1, keepdim=True) if keep.shape[1] > 1 else keep
    out = images * keep
    fill_v = tuple(round(f) for f in fill_values(fill) or (0.0,))
    if any(fill_v):
        out += (1 - keep) * fill_tensor(fill_v, c, dev, images.dtype, "cutout")
    return out


def _resize_weights(offset: Tensor, length: Tensor, in_size: int, out_size: int, antialias: bool) -> Tensor:
    """Per-row ``(N, out_size, in_size)`` matrices that resize the window ``[offset, offset + length)``
    of an axis to ``out_size`` samples: PyTorch's bilinear (triangle) filter with
    ``align_corners=False``, widened by the scale factor when shrinking with ``antialias``, and
    renormalized where the window's edge cuts it (which also gives the edge clamping of plain
    bilinear)."""
    dev = offset.device
    scale = length.to(torch.float32) / out_size  # input pixels per output pixel
    invscale = 1.0 / scale.clamp(min=1.0) if antialias else torch.ones_like(scale)
    center = scale[:, None] * (torch.arange(out_size, device=dev, dtype=torch.float32) + 0.5)
    pos = torch.arange(in_size, device=dev)[None, :] - offset[:, None]  # position inside the window
    dist = (pos[:, None, :].to(torch.float32) + 0.5 - center[:, :, None]) * invscale[:, None, None]
    weights = (1.0 - dist.abs()).clamp_(min=0.0)
    weights = weights * ((pos >= 0) & (pos < length[:, None]))[:, None, :]
    return weights / weights.sum(dim=-1, keepdim=True).clamp_(min=1e-12)


def resized_crop(images: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor,
                 size: int | tuple[int, int], *, antialias: bool = True, flip: Tensor | None = None) -> Tensor:
    """Crop ``(top, left, height, width)`` (per row, inside the image) and resize it to ``size``
    with bilinear interpolation (antialiased when shrinking, as torchvision's default); ``flip``
    (bool per row) also mirrors those rows left-right, at no extra cost.

    Separable: two batched matrix products with per-row interpolation matrices, in float32, then
    rounded. torchvision's CPU uint8 kernel rounds in fixed point between its two passes, so the
    two differ by at most one grey level on some pixels.
    """
    check_images(images, "resized_crop")
    n, _, h, w = images.shape
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if oh < 1 or ow < 1:
        raise ConfigError(f"resized_crop: size must be >= 1, got {size!r}")
    dev = images.device
    top, left, height, width = (check_rows(v, n, "resized_crop", name).to(dev, torch.long)
                                for v, name in ((top, "top"), (left, "left"), (height, "height"), (width, "width")))
    bad = (height < 1) | (width < 1) | (top < 0) | (left < 0) | (top + height > h) | (left + width > w)
    if bool(bad.any()):  # one device sync, not one per condition
        raise ConfigError(f"resized_crop: every crop box must lie inside the {h}x{w} image with a size >= 1")
    if flip is not None:
        flip = check_rows(flip, n, "resized_crop", "flip").to(dev, torch.bool)
    return _resized_crop(images, top, left, height, width, (oh, ow), antialias, flip)


def _resized_crop(images: Tensor, top: Tensor, left: Tensor, height: Tensor, width: Tensor, size: tuple[int, int],
                  antialias: bool, flip: Tensor | None) -> Tensor:
    """``resized_crop`` on boxes known to be valid (int64 rows on the images' device, ``flip`` bool or
    ``None``): no checks, so no device sync; the policies call this with boxes they drew."""
    n, _, h, w = images.shape
    oh, ow = size
    wy = _resize_weights(top, height, h, oh, antialias)  # (N, oh, H)
    wx = _resize_weights(left, width, w, ow, antialias)  # (N, ow, W)
    if flip is not None:
        wx = torch.where(flip.view(n, 1, 1), wx.flip(1), wx)
    out = torch.matmul(wy[:, None], images.to(torch.float32))  # (N, C, oh, W)
    out = torch.matmul(out, wx.transpose(1, 2)[:, None])  # (N, C, oh, ow)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class _TorchMath:
    """The few ``math`` functions ``_inverse_affine`` needs, on float64 tensors."""

    cos, sin, tan, radians = staticmethod(torch.cos), staticmethod(torch.sin), staticmethod(torch.tan), \
        staticmethod(torch.deg2rad)


def _inverse_affine(angle: Any, tx: Any, ty: Any, shear_x: Any, shear_y: Any, cx: Any, cy: Any, scale: Any, *,
                    lib: Any) -> list[Any]:
    """The six entries of the inverse of ``T(t) C(c) R(angle) S(scale) ShY ShX C(c)^-1``, for
    Python floats (``lib=math``) or tensors (``lib=_TorchMath``), in torchvision's order of
    operations so that the float64 results agree to the last bit with Python floats."""
    rot, sx, sy = lib.radians(angle), lib.radians(shear_x), lib.radians(shear_y)
    tan_sx = lib.tan(sx)
    # forward rotation-shear block [[a, b], [c, d]] (determinant 1)
    a = lib.cos(rot - sy) / lib.cos(sy)
    b = -(a * tan_sx + lib.sin(rot))
    c = lib.sin(rot - sy) / lib.cos(sy)
    d = lib.cos(rot) - c * tan_sx
    m00, m01, m10, m11 = d / scale, -b / scale, -c / scale, a / scale
    ox, oy = cx + tx, cy + ty
    return [m00, m01, cx - m00 * ox - m01 * oy, m10, m11, cy - m10 * ox - m11 * oy]


def affine_matrix(angle: Tensor, translate: Tensor, shear: Tensor, center: Tensor,
                  scale: Tensor | None = None, *, exact_limit: int = 256) -> Tensor:
    """Inverse affine matrices ``(N, 2, 3)`` (float64), output pixel -> input pixel, in coordinates
    centred on the image, as torchvision's ``_get_inverse_affine_matrix``: the forward map is
    ``T(translate) * C(center) * R(angle) * S(scale) * ShearY * ShearX * C(center)^-1``.

    ``angle`` (N,) and ``shear`` (N, 2) are in degrees, ``translate`` and ``center`` (N, 2) in
    pixels (``center`` relative to the image centre). Up to ``exact_limit`` distinct parameter
    rows are evaluated with Python's ``math`` like torchvision, so that float32 entries that fall
    exactly halfway between two floats round the same way (a one-ulp difference in float64 ``tan``
    would move pixels); with more (e.g. continuous random angles, which have no torchvision
    counterpart to agree with), torch's float64 functions are used. Finding the distinct rows reads
    them back to the host (a device synchronization); ``exact_limit=0`` skips that and uses torch's.
    """
    n = angle.shape[0]
    s = torch.ones(n, dtype=torch.float64, device=angle.device) if scale is None else scale
    params = torch.stack([angle.reshape(n), translate[:, 0], translate[:, 1], shear[:, 0], shear[:, 1],
                          center[:, 0], center[:, 1], s.reshape(n)], dim=1).to(torch.float64)
    if exact_limit <= 0:
        return torch.stack(_inverse_affine(*params.unbind(1), lib=_TorchMath), dim=1).view(n, 2, 3)
    distinct, index = torch.unique(params, dim=0, return_inverse=True)
    if distinct.shape[0] <= exact_limit:
        rows = [_inverse_affine(*p, lib=math) for p in distinct.tolist()]
        return torch.tensor(rows, dtype=torch.float64, device=angle.device)[index].view(n, 2, 3)
    return torch.stack(_inverse_affine(*params.unbind(1), lib=_TorchMath), dim=1).view(n, 2, 3)


def warp_affine(images: Tensor, matrix: Tensor, *, interpolation: str = "nearest",
                fill: float | Sequence[float] | None = None) -> Tensor:
    """Resample each image through its inverse affine ``matrix`` (N, 2, 3) (see ``affine_matrix``).

    The sampling grid and the fill rule are torchvision's: ``fill=None`` reads zeros outside the
    image; a given ``fill`` is blended in through a coverage channel (for nearest: pixels whose
    source lies outside take ``fill``).
    """
    check_images(images, "warp_affine")
    one_of(interpolation, INTERPOLATIONS, "warp_affine", "interpolation")
    n, c, h, w = images.shape
    dev = images.device
    xs, ys, half = _grid_base(h, w, dev)
    t = (matrix.to(dev, torch.float32) / half).view(n, 6, 1, 1)
    # grid = [x, y, 1] @ theta^T per pixel, written out as (x * a + y * b) + c: the same float32
    # values as torchvision's bmm (the tests compare pixels), and far cheaper on CPU than a
    # (HW x 3) @ (3 x 2) bmm per image
    gx = torch.add(xs * t[:, 0], ys * t[:, 1]).add_(t[:, 2])
    gy = torch.add(xs * t[:, 3], ys * t[:, 4]).add_(t[:, 5])
    fill_v = fill_values(fill)
    if interpolation == "nearest":
        return _nearest_gather(images, gx, gy, fill_v)
    src = images.to(torch.float32)
    grid = torch.stack((gx, gy), dim=-1)
    if fill_v is not None:
        src = torch.cat([src, torch.ones(n, 1, h, w, device=dev)], dim=1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if fill_v is not None:
        out, cover = out[:, :c], out[:, c:]
        value = fill_tensor(fill_v, c, dev, torch.float32, "warp_affine")
        out = (out - value).mul_(cover).add_(value)
    return out.round_().to(torch.uint8)


_GRID_BASES: dict[tuple[int, int, str], tuple[Tensor, Tensor, Tensor]] = {}


def _grid_base(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-centre coordinates relative to the image centre, ``(1, 1, W)`` and ``(1, H, 1)``, and
    the ``(1, 2, 1)`` half sizes that scale them into grid_sample's [-1, 1] (cached per size)."""
    key = (h, w, str(device))
    if key not in _GRID_BASES:
        xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=device).view(1, 1, w)
        ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=device).view(1, h, 1)
        _GRID_BASES[key] = (xs, ys, torch.tensor([0.5 * w, 0.5 * h], device=device).view(1, 2, 1))
    return _GRID_BASES[key]


def _nearest_gather(images: Tensor, gx: Tensor, gy: Tensor, fill: tuple[float, ...] | None) -> Tensor:
    """``grid_sample(mode="nearest", align_corners=False)`` on uint8 as one gather: the same
    unnormalization ``((g + 1) * size - 1) / 2`` and round-half-to-even as PyTorch's kernel,
    without converting the images to float and back. Pixels whose source is outside take
    ``fill`` (0 when ``None``). ``gx``/``gy`` are consumed."""
    n, c, h, w = images.shape
    ix = gx.add_(1.0).mul_(w).sub_(1.0).div_(2.0).round_()
    iy = gy.add_(1.0).mul_(h).sub_(1.0).div_(2.0).round_()
    ixc, iyc = ix.clamp(0, w - 1), iy.clamp(0, h - 1)
    keep = ((ixc == ix) & (iyc == iy)).to(torch.uint8).unsqueeze(1)  # source inside the image
    index = iyc.mul_(w).add_(ixc).to(torch.long).view(n, 1, h * w)
    out = torch.gather(images.reshape(n, c, h * w), 2, index.expand(n, c, h * w)).view(n, c, h, w)
    out = out * keep
    fill_v = tuple(round(f) for f in fill) if fill is not None else (0,)
    if any(fill_v):
        out += (1 - keep) * fill_tensor(fill_v, c, images.device, torch.uint8, "warp_affine")
    return out


def _param_rows(value: Tensor | None, n: int, cols: int, device: torch.device, name: str) -> Tensor:
    """A per-row parameter as float64 ``(n, cols)``; ``None`` is zeros."""
    if value is None:
        return torch.zeros(n, cols, device=device, dtype=torch.float64)
    if not isinstance(value, Tensor) or value.numel() != n * cols:
        got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ConfigError(f"affine: {name} must be a tensor with {cols} value(s) per image ({n} images), got {got}")
    return value.to(device, torch.float64).reshape(n, cols)


def affine(images: Tensor, angle: Tensor | None = None, translate: Tensor | None = None,
           shear: Tensor | None = None, *, center: Tensor | None = None, interpolation: str = "nearest",
           fill: float | Sequence[float] | None = None) -> Tensor:
    """Per-row affine transforms with torchvision's ``affine`` conventions (scale 1).

    ``angle`` (N,) degrees, ``translate`` (N, 2) pixels, ``shear`` (N, 2) degrees; ``center``
    (N, 2) is in pixel coordinates (``None``: the image centre; RandAugment's shears use the
    top-left corner ``[0, 0]``). ``None`` parameters are zero.
    """
    check_images(images, "affine")
    n, _, h, w = images.shape
    dev = images.device
    center_t = _param_rows(center, n, 2, dev, "center")
    if center is not None:  # pixel coordinates -> relative to the image centre
        center_t = center_t - device_constant([w * 0.5, h * 0.5], dev, torch.float64)
    matrix = affine_matrix(_param_rows(angle, n, 1, dev, "angle")[:, 0], _param_rows(translate, n, 2, dev, "translate"),
                           _param_rows(shear, n, 2, dev, "shear"), center_t)
    return warp_affine(images, matrix, interpolation=interpolation, fill=fill)


def rotate(images: Tensor, angle: Tensor, *, interpolation: str = "nearest",
           fill: float | Sequence[float] | None = None) -> Tensor:
    """Rotate each image by ``angle[i]`` degrees counter-clockwise about its centre, keeping the size
    (torchvision's ``rotate`` with ``expand=False``)."""
    check_images(images, "rotate")
    n = images.shape[0]
    angle = check_rows(angle, n, "rotate", "angle").to(torch.float64).remainder(360.0)
    return affine(images, angle=-angle, interpolation=interpolation, fill=fill)
