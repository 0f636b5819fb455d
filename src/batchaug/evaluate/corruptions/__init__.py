"""Common corruptions (Hendrycks & Dietterich, ICLR 2019), generated on the device for a batch.

The 15 CIFAR-10-C / ImageNet-C corruptions and the 4 extra ones, 5 severities each, with the
parameters of the authors' scripts (github.com/hendrycks/robustness): ``make_cifar_c.py`` for
32x32 images, ``make_tinyimagenet_c.py`` for 64x64 and the ``imagenet_c`` package's
``corruptions.py`` for 224 px and larger (:func:`table_for_size` says which table an image size
gets). The code is batchaug's own, in torch; each module's docstring gives the formulas.

    from batchaug.evaluate.corruptions import CORRUPTIONS, corrupt
    x = corrupt(images, "fog", 3, seed=0, index=torch.arange(lo, hi))  # uint8 in, uint8 out

Determinism: image i's corruption is a function of (seed, name, severity, index[i]) and of the image
alone; the batch size, the other images of the batch and which slice of the dataset is corrupted do
not matter. See :mod:`.rng` for the counter-based random numbers behind this.

Also here: :func:`load_corruption_dir` (read a CIFAR-10-C-style directory) and
:func:`corruption_metrics` (uCE, CE, mCE, relative mCE of an error table).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from batchaug.augment._validate import check_images
from batchaug.errors import ConfigError

from . import blur, digital, noise, spatter, weather
from .metrics import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, SEVERITIES, corruption_metrics
from .names import BENCHMARK_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, RGB_ONLY
from .params import PARAMS, TABLES, table_for_size
from .reader import CorruptionDir, load_corruption_dir
from .rng import ImageRandom

__all__ = [
    "ALEXNET_CLEAN_ERROR", "ALEXNET_ERRORS", "BENCHMARK_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS",
    "RGB_ONLY", "SEVERITIES", "TABLES", "CorruptionDir", "corrupt", "corruption_metrics", "corruption_params",
    "load_corruption_dir", "table_for_size",
]

Corruption = Callable[[Tensor, object, ImageRandom, str], Tensor]

#: name -> function(images uint8, severity parameter, per-image random numbers, table) -> uint8.
_FUNCTIONS: dict[str, Corruption] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise,
    "gaussian_blur": blur.gaussian_blur,
    "spatter": spatter.spatter,
    "saturate": digital.saturate,
}
assert tuple(_FUNCTIONS) == CORRUPTIONS


def corruption_params(name: str, severity: int, table: str) -> object:
    """The reference's parameter of ``name`` at ``severity`` in ``table`` (see :mod:`.params`)."""
    _check_name(name)
    _check_severity(severity)
    if table not in TABLES:
        raise ConfigError(f"corruption table must be one of {', '.join(TABLES)}, got {table!r}")
    return PARAMS[table][name][severity - 1]


def _check_name(name: object) -> None:
    if name not in _FUNCTIONS:
        raise ConfigError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")


def _check_severity(severity: object) -> None:
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ConfigError(f"corruption severity must be an integer 1 to 5, got {severity!r}")


def _seed_from(generator: torch.Generator | None) -> int:
    bits = torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device if generator else "cpu")
    return int(bits.item())


@torch.no_grad()
def corrupt(images: Tensor, name: str, severity: int, generator: torch.Generator | None = None, *,
            seed: int | None = None, index: Tensor | None = None, table: str | None = None) -> Tensor:
    """Corrupt a batch of uint8 images with one corruption at one severity.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3 (:data:`RGB_ONLY` corruptions need 3), any device.
        name: one of :data:`CORRUPTIONS`.
        severity: 1 to 5.
        generator: where the seed comes from when ``seed`` is not given (one draw); neither given:
            torch's default generator. Give ``seed`` (and ``index``) for results that do not depend
            on the batch.
        seed: the seed of the corruption's random numbers (any integer).
        index: int64 (N,) dataset indices of the images (default ``arange(N)``): image i's result
            depends only on (seed, name, severity, index[i]) and the image.
        table: parameter table, one of :data:`TABLES`; default :func:`table_for_size` of H x W.

    Returns:
        uint8 (N, C, H, W) on the images' device.
    """
    check_images(images, f"corrupt({name!r})", channels=(1, 3))
    _check_name(name)
    _check_severity(severity)
    n, c, h, w = images.shape
    if name in RGB_ONLY and c != 3:
        raise ConfigError(f"corruption {name!r} needs RGB images (3 channels), got {c}; "
                          f"the corruptions defined on colour only are {', '.join(RGB_ONLY)}")
    if seed is not None and generator is not None:
        raise ConfigError("corrupt: give seed or generator, not both")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"corrupt: seed must be an integer, got {seed!r}")
    if index is None:
        index = torch.arange(n, device=images.device)
    elif not isinstance(index, Tensor) or index.shape != (n,) or index.is_floating_point() or index.is_complex():
        got = tuple(index.shape) if isinstance(index, Tensor) else type(index).__name__
        raise ConfigError(f"corrupt: index must be an integer tensor of shape ({n},), one dataset index per "
                          f"image, got {got}")
    elif n and int(index.min()) < 0:
        raise ConfigError(f"corrupt: index must hold dataset indices >= 0, got {int(index.min())}")
    table = table or table_for_size(h, w)
    param = corruption_params(name, severity, table)
    if n == 0:
        return images.clone()
    if seed is None:
        seed = _seed_from(generator)
    rng = ImageRandom(seed, name, severity, index.to(images.device))
    return _FUNCTIONS[name](images, param, rng, table).contiguous()
