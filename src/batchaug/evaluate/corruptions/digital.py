"""The digital corruptions: brightness, contrast, saturate, jpeg_compression, pixelate,
elastic_transform.

Formulas of the reference (``make_cifar_c.py`` and siblings, see params.py), x in [0, 1]:

- brightness: in scikit-image's HSV, ``V <- clip(V + c, 0, 1)``;
- saturate: in scikit-image's HSV, ``S <- clip(S a + b, 0, 1)``;
- contrast: ``(x - m) c + m``, m the mean of each channel over the image;
- jpeg_compression: a JPEG round trip at the severity's quality (PIL ``save(..., "JPEG", quality=q)``,
  libjpeg defaults: 4:2:0 chroma subsampling, the standard tables scaled by quality);
- pixelate: PIL ``resize`` down by the severity's factor and back up, both with ``Image.BOX``;
- elastic_transform: a random affine warp (three control points moved by ``U(-c2, c2)`` pixels,
  ``cv2.warpAffine`` with bilinear sampling and reflect-101 border), then a displacement field
  ``c0 * gaussian(U(-1, 1), c1)`` per axis (scikit-image, ``mode="reflect"``, truncated at
  3 sigma), sampled with ``scipy.ndimage.map_coordinates(order=1, mode="reflect")``.

The HSV corruptions follow scikit-image's ``rgb2hsv`` / ``hsv2rgb`` operation for operation in
float64, so that values landing exactly on a grey level (common: a brightness shift of a flat
region) are truncated the way the reference truncates them. Grey pixels get ``H = 0``, so
``saturate`` tints them red where ``b > 0``, as the reference does. A 1-channel image is its own V.

JPEG is a real JPEG round trip, the reference's own: PIL (libjpeg) on the CPU, one image at a time,
whatever the device of the images (the one corruption that leaves the device; about 0.1 ms per
32x32 image). Pixelate reproduces Pillow's BOX resampling exactly, in its integer arithmetic.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ._common import floor_uint8, to_unit
from .filters import gaussian_blur, pil_box_resize
from .rng import ImageRandom

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pixelate", "saturate"]


def _rgb_to_hsv(x: Tensor) -> Tensor:
    """scikit-image's ``rgb2hsv`` of float64 RGB (N, 3, H, W), operation for operation."""
    v = x.amax(1)
    delta = v - x.amin(1)
    grey = delta == 0
    s = torch.where(grey, 0.0, delta / torch.where(v == 0, 1.0, v))
    safe = torch.where(grey, 1.0, delta)
    r, g, b = x.unbind(1)
    h = torch.zeros_like(v)
    h = torch.where(r == v, (g - b) / safe, h)  # later rules win ties, as in scikit-image
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.where(grey, 0.0, torch.remainder(h / 6.0, 1.0))
    return torch.stack((h, s, v), 1)


# which of (v, p, q, t) is R, G and B in each of hsv2rgb's six hue sectors
_SECTORS = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    """scikit-image's ``hsv2rgb`` of float64 HSV (N, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.to(torch.int64).remainder_(6)
    choice = _SECTORS.to(hsv.device)[sector].movedim(-1, 1)  # (N, 3, H, W) indices into (v, p, q, t)
    return torch.stack((v, p, q, t), 1).gather(1, choice)


def brightness(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = images.to(torch.float64) / 255.0
    if images.shape[1] == 1:  # HSV of a grey pixel: V is the pixel, and V is all that changes
        return floor_uint8((x + c).clamp_(0.0, 1.0))
    hsv = _rgb_to_hsv(x)
    hsv[:, 2] = (hsv[:, 2] + c).clamp_(0.0, 1.0)
    return floor_uint8(_hsv_to_rgb(hsv))


def saturate(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    a, b = param
    hsv = _rgb_to_hsv(images.to(torch.float64) / 255.0)
    hsv[:, 1] = (hsv[:, 1] * a + b).clamp_(0.0, 1.0)
    return floor_uint8(_hsv_to_rgb(hsv))


def contrast(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = images.to(torch.float64) / 255.0  # float64 as the reference: flat regions stay on their level
    means = x.mean((2, 3), keepdim=True)
    return floor_uint8((x - means).mul_(c).add_(means))


def _jpeg_round_trip(images: np.ndarray, quality: int, mode: str) -> np.ndarray:
    out = np.empty_like(images)
    for i, image in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(image[..., 0] if mode == "L" else image, mode).save(buf, "JPEG", quality=quality)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert(mode)).reshape(image.shape)
    return out


def jpeg_compression(images: Tensor, quality: int, rng: ImageRandom, table: str) -> Tensor:
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    mode = "L" if images.shape[1] == 1 else "RGB"
    # libjpeg runs without the GIL: one chunk of images per torch CPU thread
    workers = max(1, min(torch.get_num_threads(), len(array) // 64))
    chunks = np.array_split(array, workers)
    if workers == 1:
        out = _jpeg_round_trip(array, int(quality), mode)
    else:
        with ThreadPoolExecutor(workers) as pool:
            out = np.concatenate(list(pool.map(lambda a: _jpeg_round_trip(a, int(quality), mode), chunks)))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images.device)


def pixelate(images: Tensor, factor: float, rng: ImageRandom, table: str) -> Tensor:
    h, w = images.shape[-2:]
    small = pil_box_resize(images, int(h * factor), int(w * factor))
    return pil_box_resize(small, h, w)


def _affine_sources(offsets: Tensor, h: int, w: int) -> Tensor:
    """(N, H, W, 2) source (x, y) of every pixel of ``cv2.warpAffine`` with the affine map that moves
    the reference's three control points by ``offsets`` (N, 3, 2) (x, y)."""
    cx, cy, s = w // 2, h // 2, min(h, w) // 3
    src = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]],
                       dtype=torch.float64, device=offsets.device)
    dst = src + offsets.to(torch.float64)
    ones = torch.ones(3, 1, dtype=torch.float64, device=offsets.device)
    # the map M with M [src; 1] = dst; warpAffine samples the source at M^-1 (x, y)
    m = torch.linalg.solve(torch.cat((src, ones), 1).expand(offsets.shape[0], 3, 3), dst).transpose(1, 2)
    a, t = m[:, :, :2], m[:, :, 2:]
    a_inv = torch.linalg.inv(a)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=offsets.device),
                            torch.arange(w, dtype=torch.float64, device=offsets.device), indexing="ij")
    pts = torch.stack((xx, yy), -1).view(1, -1, 2, 1)  # (1, HW, 2, 1)
    sources = a_inv[:, None] @ (pts - t[:, None])  # (N, HW, 2, 1)
    return sources.view(-1, h, w, 2)


def _grid(xy: Tensor, h: int, w: int, align_corners: bool) -> Tensor:
    """Pixel coordinates (x, y) -> grid_sample's normalized coordinates."""
    if align_corners:
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=xy.dtype, device=xy.device)
        return xy * scale - 1.0
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=xy.dtype, device=xy.device)
    return (xy + 0.5) * scale - 1.0


def elastic_transform(images: Tensor, param: tuple[float, float, float], rng: ImageRandom, table: str) -> Tensor:
    alpha, sigma, affine = param
    n, c, h, w = images.shape
    x = to_unit(images)
    offsets = rng.uniform("affine", (3, 2), -affine, affine)
    grid = _grid(_affine_sources(offsets, h, w), h, w, align_corners=True).to(torch.float32)
    # cv2's BORDER_REFLECT_101 reflects about the edge pixels' centres: grid_sample's reflection
    # with align_corners=True
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    fields = rng.uniform("field", (2, h, w), -1.0, 1.0)
    fields = gaussian_blur(fields, sigma, truncate=3.0, mode="symmetric").mul_(alpha)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=x.device),
                            torch.arange(w, dtype=torch.float32, device=x.device), indexing="ij")
    # fields[:, 0] moves the columns (dx), fields[:, 1] the rows (dy), as the reference's dx, dy
    coords = torch.stack((xx + fields[:, 0], yy + fields[:, 1]), -1)
    # scipy's "reflect" mirrors about the outer edges (-0.5, n - 0.5): reflection, align_corners=False
    x = F.grid_sample(x, _grid(coords, h, w, align_corners=False), mode="bilinear", padding_mode="reflection",
                      align_corners=False)
    return floor_uint8(x)
