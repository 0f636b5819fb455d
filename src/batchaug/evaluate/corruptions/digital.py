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

HSV changes are applied in closed form: scikit-image's HSV round trip writes each channel as
``V (1 - S g(H))`` with ``g`` a function of the hue only, so a new V scales the pixel by
``V' / V`` and a new S gives ``V - S' V (V - x) / (V - min)``; grey pixels (no hue; scikit-image
sets ``H = 0``) become ``(V, V (1 - S'), V (1 - S'))``.

JPEG goes through torchvision's libjpeg encoder and decoder on the CPU, one image at a time: the
result equals PIL's round trip (tests/test_corruptions.py compares them), whatever the device of the
images. Pixelate reproduces Pillow's BOX resampling exactly, in its integer arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import decode_jpeg, encode_jpeg

from ._common import floor_uint8, to_unit
from .filters import gaussian_blur, pil_box_resize
from .rng import ImageRandom

__all__ = ["brightness", "contrast", "elastic_transform", "jpeg_compression", "pixelate", "saturate"]


def brightness(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = to_unit(images)
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp_(0.0, 1.0)
    out = torch.where(v > 0, x * (v_new / v.clamp(min=1e-12)), v_new.expand_as(x))
    return floor_uint8(out)


def saturate(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    a, b = param
    x = to_unit(images)
    v = x.amax(1, keepdim=True)
    span = v - x.amin(1, keepdim=True)
    s = torch.where(span > 0, span / v.clamp(min=1e-12), torch.zeros_like(v))
    s_new = (s * a + b).clamp_(0.0, 1.0)
    coloured = v - s_new * v * (v - x) / span.clamp(min=1e-12)
    hue0 = torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1)  # g(H = 0) for R, G, B
    grey = v * (1.0 - s_new * hue0)
    return floor_uint8(torch.where(span > 0, coloured, grey))


def contrast(images: Tensor, c: float, rng: ImageRandom, table: str) -> Tensor:
    x = to_unit(images)
    means = x.mean((2, 3), keepdim=True)
    return floor_uint8((x - means).mul_(c).add_(means))


def jpeg_compression(images: Tensor, quality: int, rng: ImageRandom, table: str) -> Tensor:
    cpu = images.cpu()
    out = torch.stack([decode_jpeg(encode_jpeg(im, quality=int(quality))) for im in cpu])
    return out.to(images.device)


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
