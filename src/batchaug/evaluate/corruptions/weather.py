"""The weather corruptions: snow, frost, fog.

Formulas of the reference (``make_cifar_c.py`` and siblings, see params.py), x in [0, 1]:

- fog: ``x + c0 * plasma``, rescaled by ``max(x) / (max(x) + c0)``; ``plasma`` is the reference's
  diamond-square fractal (random offsets ``wibble * U(-wibble, wibble)``, ``wibble`` starting at 100
  and divided by the severity's decay at every level; the fractal wraps around its edges), scaled to
  [0, 1] and cropped to the image's top-left corner. Computed for the whole batch level by level.
- frost: ``c0 * x + c1 * crop`` in 0..255, the crop a random window of one of the first five frost
  textures (the reference draws ``randint(5)`` of its six) shrunk by the table's factor with
  ``cv2.resize`` (bilinear).
- snow: a snow layer ``N(loc, scale)`` per pixel, zoomed by ``clipped_zoom``, zeroed below a
  threshold, stored in 8 bits, motion-blurred by ImageMagick (angle uniform in (-135, -45) degrees,
  8-bit result); the image is lightened to ``c6 x + (1 - c6) max(x, 1.5 gray(x) + 0.5)``, gray
  OpenCV's ``0.299 R + 0.587 G + 0.114 B``, and the layer is added twice, once rotated by 180 degrees.

The frost textures ship with the ``imagecorruptions`` package (``pip install imagecorruptions``, or
the ``robustness`` extra of batchaug); they are read from its installed folder, the package itself is
never imported (its module imports scikit-image and OpenCV and fails on numpy 2).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from batchaug.errors import ConfigError

from ._common import floor_uint8, round_uint8, to_unit
from .blur import zoom
from .filters import cv2_linear_taps, motion_blur, resample_axis
from .params import TABLE_CONSTANTS
from .rng import ImageRandom

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def plasma_fractal(rng: ImageRandom, size: int, decay: float) -> Tensor:
    """(N, size, size) float64 diamond-square heightmaps in [0, 1], ``size`` a power of two."""
    m = torch.zeros(rng.n, size, size, dtype=torch.float64, device=rng.device)
    step, wibble, level = size, 100.0, 0

    def wibbled(total: Tensor, part: str) -> Tensor:
        u = rng.uniform(f"plasma{level}{part}", tuple(total.shape[1:]), -wibble, wibble).to(torch.float64)
        return total / 4.0 + wibble * u

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        m[:, half::step, half::step] = wibbled(square, "s")
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2), "r")
        m[:, half::step, 0::step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1), "c")
        step //= 2
        wibble /= decay
        level += 1
    m -= m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


def fog(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    strength, decay = param
    h, w = images.shape[-2:]
    size = int(TABLE_CONSTANTS[table]["plasma_size"])
    while size < max(h, w):  # a larger image than the table's gets a larger fractal, cropped as usual
        size *= 2
    plasma = plasma_fractal(rng, size, decay)[:, None, :h, :w]
    x = images.to(torch.float64) / 255.0
    top = x.amax((1, 2, 3), keepdim=True)
    x = (x + strength * plasma) * (top / (top + strength))
    return floor_uint8(x)


def frost_texture_folder() -> Path:
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("corruption 'frost' needs the frost textures of the imagecorruptions package: "
                          "pip install --no-deps imagecorruptions (only its image files are read)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    missing = [f for f in FROST_FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"corruption 'frost': {folder} lacks {', '.join(missing)}; "
                          "reinstall imagecorruptions (pip install --force-reinstall imagecorruptions)")
    return folder


@functools.lru_cache(maxsize=8)
def frost_textures(scale: float, min_height: int, min_width: int, device: str) -> tuple[Tensor, Tensor]:
    """The five textures as one zero-padded uint8 tensor (5, 3, H, W) and their (5, 2) sizes, each
    resized by ``scale`` like ``cv2.resize`` (bilinear, rounded to 8 bits), then enlarged further
    where needed so that a ``min_height x min_width`` window has room to move."""
    textures = []
    for name in FROST_FILES:
        with Image.open(frost_texture_folder() / name) as im:
            rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).to(torch.float32)
        th, tw = rgb.shape[-2:]
        s = max(scale, (min_height + 1) / th, (min_width + 1) / tw)  # room for a random offset
        if s != 1.0:
            rgb = resample_axis(rgb, -1, *cv2_linear_taps(tw, s, rgb.device))
            rgb = resample_axis(rgb, -2, *cv2_linear_taps(th, s, rgb.device))
        textures.append(round_uint8(rgb))
    sizes = torch.tensor([t.shape[-2:] for t in textures])
    stack = torch.zeros(len(textures), 3, int(sizes[:, 0].max()), int(sizes[:, 1].max()), dtype=torch.uint8)
    for i, t in enumerate(textures):
        stack[i, :, :t.shape[1], :t.shape[2]] = t
    return stack.to(device), sizes.to(device)


def frost(images: Tensor, param: tuple[float, float], rng: ImageRandom, table: str) -> Tensor:
    image_weight, frost_weight = param
    n, _, h, w = images.shape
    stack, sizes = frost_textures(float(TABLE_CONSTANTS[table]["frost_scale"]), h, w, str(images.device))
    which = rng.randint("texture", (), 0, len(FROST_FILES))
    top = rng.randint("top", (), 0, sizes[which, 0] - h)
    left = rng.randint("left", (), 0, sizes[which, 1] - w)
    rows = (top[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (N, 1, W)
    crop = stack[which[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # (N, 3, H, W)
    x = images.to(torch.float32).mul_(image_weight).add_(crop.to(torch.float32), alpha=frost_weight)
    return x.clamp_(0.0, 255.0).floor_().to(torch.uint8)


def snow(images: Tensor, param: tuple, rng: ImageRandom, table: str) -> Tensor:
    loc, scale, zoom_factor, threshold, radius, sigma, blend = param
    n, c, h, w = images.shape
    layer = rng.normal("snow", (1, h, w), mean=loc, std=scale)
    layer = zoom(layer, zoom_factor)
    layer = layer.masked_fill_(layer < threshold, 0.0)
    layer = layer.clamp_(0.0, 1.0).mul_(255.0).floor_()  # the reference saves the layer as an 8-bit PNG
    angles = rng.uniform("angle", (), -135.0, -45.0)
    layer = round_uint8(motion_blur(layer, radius, sigma, angles)).to(torch.float32).div_(255.0)
    x = to_unit(images)
    if c == 3:
        gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    else:
        gray = x
    x = blend * x + (1.0 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return floor_uint8(x + layer + layer.flip(-1, -2))
