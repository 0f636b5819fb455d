"""Augmentation policies: callables that turn a uint8 batch into a batch of augmented uint8 images,
each row with its own random parameters.

A ``Policy`` draws every parameter for every row in a few vectorized calls from the generator it
is given (see ``batchaug.augment._random`` for where the numbers are drawn), so the same generator
state on the same device gives the same output. Policies compose with ``+`` (``Compose``) and
are usually built by name with ``batchaug.augment.build_policy``.

Defaults that depend on the image size are resolved from the images at each call, or once by
``policy.resolve((H, W))`` (``build_policy(..., image_size=...)`` does this): crop padding is
``round(min(H, W) / 8)`` (4 at 32x32), cutout length ``round(min(H, W) / 2)`` (16 at 32x32), and
``standard`` is pad-and-crop + flip below 64 pixels and random-resized-crop + flip from 64 up.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from batchaug.augment import _random, color, geometry
from batchaug.augment._validate import (
    check_images,
    fill_option,
    fill_values,
    interval,
    number,
    one_of,
)
from batchaug.errors import ConfigError

__all__ = [
    "ColorJitter",
    "Compose",
    "Cutout",
    "GaussianNoise",
    "HorizontalFlip",
    "Identity",
    "Policy",
    "RandomCrop",
    "RandomResizedCrop",
    "Standard",
    "Translate",
]

Size = tuple[int, int]


def _size_pair(value: int | Sequence[int] | None, name: str) -> Size | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        pair: Sequence[object] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        pair = value
    else:
        raise ConfigError(f"{name} must be an integer or a pair [height, width], got {value!r}")
    h, w = (int(number(v, name, low=1, integer=True)) for v in pair)
    return h, w


class Policy(abc.ABC):
    """A random augmentation applied independently to every row of a batch.

    ``policy(images, generator)`` takes uint8 images ``(N, C, H, W)`` on any device and returns
    uint8 images ``(N, C, H', W')`` on the same device (``H', W'`` from ``output_size``; most
    policies keep the size). Every policy returns uint8, Gaussian noise included (rounded to the
    nearest level), so that policies compose freely and normalization stays one fused step.
    The output may be the input tensor itself (``Identity``); policies never modify their input.
    Subclasses implement ``apply``; ``options`` lists the constructor arguments (used by ``repr``,
    ``==`` and ``config``) and ``name`` is the name ``build_policy`` knows.
    """

    name: ClassVar[str] = ""

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        check_images(images, type(self).__name__)
        if images.shape[0] == 0:
            h, w = self.output_size(images.shape[-2], images.shape[-1])
            return images.new_empty((0, images.shape[1], h, w))
        return self.apply(images, generator)

    @abc.abstractmethod
    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Augment a non-empty, checked uint8 batch; every row draws its own parameters."""

    def output_size(self, height: int, width: int) -> Size:
        """The ``(H', W')`` of the output for ``H x W`` input."""
        return height, width

    def resolve(self, image_size: Size) -> Policy:
        """This policy with its size-dependent defaults fixed for ``image_size`` (``(H, W)``)."""
        return self

    def options(self) -> dict[str, Any]:
        """The constructor arguments that define this policy."""
        return {}

    def config(self) -> dict[str, Any] | list[Any]:
        """A spec that ``build_policy`` turns back into an equal policy (YAML-friendly)."""
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.options().items()}}

    def __add__(self, other: Policy) -> Compose:
        if not isinstance(other, Policy):
            return NotImplemented
        return Compose([self, other])

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.options() == other.options()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self.options())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({args})"


class Compose(Policy):
    """Apply policies one after the other (each row keeps its own parameters in every stage)."""

    name = "compose"

    def __init__(self, policies: Iterable[Policy]) -> None:
        stages: list[Policy] = []
        for p in policies:
            if not isinstance(p, Policy):
                raise ConfigError(f"Compose: every stage must be a Policy, got {type(p).__name__}")
            stages.extend(p.policies if isinstance(p, Compose) else [p])
        self.policies: tuple[Policy, ...] = tuple(stages)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        for p in self.policies:
            images = p(images, generator)
        return images

    def output_size(self, height: int, width: int) -> Size:
        for p in self.policies:
            height, width = p.output_size(height, width)
        return height, width

    def resolve(self, image_size: Size) -> Policy:
        stages = []
        for p in self.policies:
            stages.append(p.resolve(image_size))
            image_size = p.output_size(*image_size)
        return Compose(stages)

    def options(self) -> dict[str, Any]:
        return {"policies": self.policies}

    def config(self) -> list[Any]:
        return [p.config() for p in self.policies]

    def __repr__(self) -> str:
        return " + ".join(repr(p) for p in self.policies) if self.policies else "Compose([])"


class Identity(Policy):
    """No augmentation (returns the input tensor itself)."""

    name = "none"

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return images


class HorizontalFlip(Policy):
    """Mirror each image left-right with probability ``p``."""

    name = "flip"

    def __init__(self, p: float = 0.5) -> None:
        self.p = number(p, "flip: p", low=0, high=1)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        mask = _random.bernoulli(self.p, (images.shape[0],), generator, images.device)
        return geometry.hflip(images, mask)

    def options(self) -> dict[str, Any]:
        return {"p": self.p}


def _default_padding(height: int, width: int) -> int:
    return round(min(height, width) / 8)


class RandomCrop(Policy):
    """Pad by ``padding`` on every side and crop a ``size`` window at a uniformly random position
    (torchvision's ``RandomCrop(size, padding, fill=fill, padding_mode=padding_mode)``).

    ``size=None`` keeps the input size; ``padding=None`` is ``round(min(H, W) / 8)``.
    """

    name = "crop"

    def __init__(self, size: int | Sequence[int] | None = None, padding: int | None = None,
                 padding_mode: str = "constant", fill: float | Sequence[float] = 0) -> None:
        self.size = _size_pair(size, "crop: size")
        self.padding = None if padding is None else int(number(padding, "crop: padding", low=0, integer=True))
        self.padding_mode = one_of(padding_mode, geometry.PADDING_MODES, "crop", "padding_mode")
        self.fill = fill_values(fill, "crop: fill") or (0.0,)

    def output_size(self, height: int, width: int) -> Size:
        return self.size or (height, width)

    def _padding_for(self, height: int, width: int) -> int:
        return _default_padding(height, width) if self.padding is None else self.padding

    def resolve(self, image_size: Size) -> Policy:
        return RandomCrop(self.size or image_size, self._padding_for(*image_size), self.padding_mode, list(self.fill))

    def _window(self, images: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, int, int, int]:
        n, _, h, w = images.shape
        pad = self._padding_for(h, w)
        oh, ow = self.output_size(h, w)
        if oh > h + 2 * pad or ow > w + 2 * pad:
            raise ConfigError(f"crop: size {oh}x{ow} is larger than the padded {h}x{w} image (padding {pad})")
        top = _random.randint(0, h + 2 * pad - oh + 1, (n,), generator, images.device)
        left = _random.randint(0, w + 2 * pad - ow + 1, (n,), generator, images.device)
        return top, left, oh, ow, pad

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        top, left, oh, ow, pad = self._window(images, generator)
        return geometry.crop(images, top, left, oh, ow, padding=pad, padding_mode=self.padding_mode,
                             fill=self.fill)

    def options(self) -> dict[str, Any]:
        return {"size": self.size, "padding": self.padding, "padding_mode": self.padding_mode,
                "fill": fill_option(self.fill)}


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> Size:
    """RandomResizedCrop's central box when no try fits: the whole image, its aspect ratio
    clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return round(width / ratio[0]), width
    if in_ratio > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def _sample_resized_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                          ratio: tuple[float, float], generator: torch.Generator | None,
                          device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's RandomResizedCrop boxes, one per row: up to 10 tries of a random area fraction
    and log-uniform aspect ratio, the first that fits wins; rows where none fits take the central
    crop with the aspect ratio clamped into ``ratio``."""
    tries = 10
    area = height * width * _random.rand((n, tries), generator, device, scale[0], scale[1])
    log_r = _random.rand((n, tries), generator, device, math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting try (0 if none)
    any_fit = fits.any(dim=1)
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    fh, fw = _fallback_size(height, width, ratio)
    h = torch.where(any_fit, h, torch.full_like(h, fh))
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    top = _random.randint(0, height - h + 1, (n,), generator, device)
    left = _random.randint(0, width - w + 1, (n,), generator, device)
    top = torch.where(any_fit, top, torch.full_like(top, (height - fh) // 2))
    left = torch.where(any_fit, left, torch.full_like(left, (width - fw) // 2))
    return top, left, h, w


class RandomResizedCrop(Policy):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` and resize it to
    ``size`` (bilinear, antialiased): torchvision's ``RandomResizedCrop``. ``size=None`` keeps
    the input size."""

    name = "resized_crop"

    def __init__(self, size: int | Sequence[int] | None = None, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), antialias: bool = True) -> None:
        self.size = _size_pair(size, "resized_crop: size")
        self.scale = interval(scale, "resized_crop: scale", low=0, high=1, positive=True)
        self.ratio = interval(ratio, "resized_crop: ratio", positive=True)
        self.antialias = bool(antialias)

    def output_size(self, height: int, width: int) -> Size:
        return self.size or (height, width)

    def resolve(self, image_size: Size) -> Policy:
        return RandomResizedCrop(self.size or image_size, self.scale, self.ratio, self.antialias)

    def _resize(self, images: Tensor, generator: torch.Generator | None, flip: Tensor | None) -> Tensor:
        n, _, h, w = images.shape
        top, left, bh, bw = _sample_resized_boxes(n, h, w, self.scale, self.ratio, generator, images.device)
        size = self.output_size(h, w)
        if min(_fallback_size(h, w, self.ratio)) < 1:  # extreme ratios: an empty fallback box, which the check rejects
            return geometry.resized_crop(images, top, left, bh, bw, size, antialias=self.antialias, flip=flip)
        # every box lies inside the image: skip the public function's check and its device sync
        return geometry._resized_crop(images, top, left, bh, bw, size, self.antialias, flip)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        return self._resize(images, generator, None)

    def options(self) -> dict[str, Any]:
        return {"size": self.size, "scale": self.scale, "ratio": self.ratio, "antialias": self.antialias}


class Standard(Policy):
    """The usual training augmentation: pad-and-crop + horizontal flip for images smaller than
    ``resized_crop_from`` pixels (CIFAR: padding 4, zero fill), random-resized-crop + flip from
    there up (ImageNet). The crop and the flip run as one gather (or one pair of matrix products),
    with the same parameters and results as the two torchvision transforms in sequence."""

    name = "standard"

    def __init__(self, padding: int | None = None, padding_mode: str = "constant",
                 fill: float | Sequence[float] = 0, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 resized_crop_from: int = 64) -> None:
        self.crop = RandomCrop(None, padding, padding_mode, fill)
        self.resized = RandomResizedCrop(None, scale, ratio)
        self.flip_p = number(flip_p, "standard: flip_p", low=0, high=1)
        self.resized_crop_from = int(number(resized_crop_from, "standard: resized_crop_from", low=1, integer=True))

    def resolve(self, image_size: Size) -> Policy:
        if min(image_size) >= self.resized_crop_from:
            return self
        o = self.options()
        o["padding"] = self.crop._padding_for(*image_size)
        return Standard(**o)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        if min(h, w) >= self.resized_crop_from:
            flip = _random.bernoulli(self.flip_p, (n,), generator, images.device)
            return self.resized._resize(images, generator, flip)
        top, left, oh, ow, pad = self.crop._window(images, generator)
        flip = _random.bernoulli(self.flip_p, (n,), generator, images.device)
        return geometry.crop(images, top, left, oh, ow, padding=pad, padding_mode=self.crop.padding_mode,
                             fill=self.crop.fill, flip=flip)

    def options(self) -> dict[str, Any]:
        c = self.crop.options()
        return {"padding": c["padding"], "padding_mode": c["padding_mode"], "fill": c["fill"],
                "scale": self.resized.scale, "ratio": self.resized.ratio, "flip_p": self.flip_p,
                "resized_crop_from": self.resized_crop_from}


class Cutout(Policy):
    """Cutout (DeVries & Taylor, 2017): ``n_holes`` squares of side ``length`` filled with ``fill``,
    each centred at a uniformly random pixel and clipped at the borders.

    ``length=None`` is ``round(min(H, W) / 2)`` (16 at 32x32, the CIFAR-10 setting). The reference
    code applies cutout after normalization, so its holes hold the dataset mean; here the policy
    runs on uint8 pixels and the holes hold ``fill`` (default 0, black; pass the mean in 0..255,
    e.g. ``[125, 123, 114]`` for CIFAR-10, to reproduce the reference exactly).
    """

    name = "cutout"

    def __init__(self, length: int | None = None, n_holes: int = 1, fill: float | Sequence[float] = 0) -> None:
        self.length = None if length is None else int(number(length, "cutout: length", low=0, integer=True))
        self.n_holes = int(number(n_holes, "cutout: n_holes", low=1, integer=True))
        self.fill = fill_values(fill, "cutout: fill") or (0.0,)

    def _length_for(self, height: int, width: int) -> int:
        return round(min(height, width) / 2) if self.length is None else self.length

    def resolve(self, image_size: Size) -> Policy:
        return Cutout(self._length_for(*image_size), self.n_holes, list(self.fill))

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        length = self._length_for(h, w)
        cy = _random.randint(0, h, (n, self.n_holes), generator, images.device)
        cx = _random.randint(0, w, (n, self.n_holes), generator, images.device)
        return geometry.cutout(images, cy, cx, length, fill=self.fill)

    def options(self) -> dict[str, Any]:
        return {"length": self.length, "n_holes": self.n_holes,
                "fill": fill_option(self.fill)}


class Translate(Policy):
    """Shift each image by a uniformly random integer number of pixels in ``[-max_shift, max_shift]``
    along each axis, filling the uncovered border with ``fill`` (``max_shift=None``:
    ``round(min(H, W) / 8)``)."""

    name = "translate"

    def __init__(self, max_shift: int | None = None, fill: float | Sequence[float] = 0) -> None:
        self.max_shift = None if max_shift is None else int(
            number(max_shift, "translate: max_shift", low=0, integer=True))
        self.fill = fill_values(fill, "translate: fill") or (0.0,)

    def _shift_for(self, height: int, width: int) -> int:
        return _default_padding(height, width) if self.max_shift is None else self.max_shift

    def resolve(self, image_size: Size) -> Policy:
        return Translate(self._shift_for(*image_size), list(self.fill))

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        s = self._shift_for(h, w)
        shifts = _random.randint(-s, s + 1, (2, n), generator, images.device)
        return geometry.translate(images, shifts[0], shifts[1], fill=self.fill, max_shift=s)

    def options(self) -> dict[str, Any]:
        return {"max_shift": self.max_shift, "fill": fill_option(self.fill)}


def _sigma_range(sigma: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        s = number(sigma, "gaussian: sigma", low=0)
        return s, s
    return interval(sigma, "gaussian: sigma", low=0)


class GaussianNoise(Policy):
    """Additive Gaussian pixel noise of standard deviation ``sigma`` (in units of the full range,
    as for images in [0, 1]), clipped and rounded back to uint8. ``sigma`` is a number or a range
    ``[low, high]`` from which each image draws its own. The noise is image-sized: with CUDA
    images, give a CUDA generator (a CPU one draws it on the CPU and copies it over)."""

    name = "gaussian"

    def __init__(self, sigma: float | Sequence[float] = 0.1) -> None:
        self.sigma = _sigma_range(sigma)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n = images.shape[0]
        lo, hi = self.sigma
        sigma = (_random.rand((n,), generator, images.device, lo, hi) if hi > lo
                 else torch.full((n,), lo, device=images.device))
        return color.gaussian_noise(images, sigma, generator)

    def options(self) -> dict[str, Any]:
        lo, hi = self.sigma
        return {"sigma": lo if lo == hi else self.sigma}


class ColorJitter(Policy):
    """Random brightness, contrast, saturation and hue in a random order per image (torchvision's
    ``ColorJitter``): factors uniform in ``[max(0, 1 - b), 1 + b]`` (likewise for contrast and
    saturation) and a hue shift uniform in ``[-hue, hue]`` (hue <= 0.5); 0 disables one."""

    name = "colorjitter"
    _OPS = ("brightness", "contrast", "saturation", "hue")

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.0) -> None:
        self.brightness = number(brightness, "colorjitter: brightness", low=0)
        self.contrast = number(contrast, "colorjitter: contrast", low=0)
        self.saturation = number(saturation, "colorjitter: saturation", low=0)
        self.hue = number(hue, "colorjitter: hue", low=0, high=0.5)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n = images.shape[0]
        dev = images.device
        strengths = (self.brightness, self.contrast, self.saturation, self.hue)
        factors = []
        for op, s in zip(self._OPS, strengths):
            lo, hi = (-s, s) if op == "hue" else (max(0.0, 1.0 - s), 1.0 + s)
            factors.append(_random.rand((n,), generator, dev, lo, hi))
        order = torch.argsort(_random.rand((n, 4), generator, dev), dim=1)  # a random permutation per row
        kernels = (color.adjust_brightness, color.adjust_contrast, color.adjust_saturation, color.adjust_hue)
        # rows per (position, operation), read back once: the call's only device synchronization
        counts = (order.t().unsqueeze(-1) == torch.arange(4, device=dev)).sum(dim=1).tolist()
        for position in range(4):
            which = order[:, position]
            live = [k for k in range(4) if counts[position][k] and strengths[k] != 0]
            if not live:
                continue
            if len(live) == 1 and counts[position][live[0]] == n:
                images = kernels[live[0]](images, factors[live[0]])
                continue
            # rows grouped by the operation at this position, each group one call, one gather back
            perm = torch.argsort(which, stable=True)
            source = images.index_select(0, perm)
            out = torch.empty_like(source)
            start = 0
            for k in range(4):
                stop = start + counts[position][k]
                if stop > start:
                    out[start:stop] = (kernels[k](source[start:stop], factors[k].index_select(0, perm[start:stop]))
                                       if strengths[k] != 0 else source[start:stop])
                start = stop
            images = out.index_select(0, torch.argsort(perm))
        return images

    def options(self) -> dict[str, Any]:
        return {"brightness": self.brightness, "contrast": self.contrast, "saturation": self.saturation,
                "hue": self.hue}
