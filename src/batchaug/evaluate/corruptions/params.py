"""The severity parameters of the corruptions, one table per image size, as published.

Sources (github.com/hendrycks/robustness, commit 8190fe3, folder ``ImageNet-C/``):

- ``"cifar"``: ``create_c/make_cifar_c.py``, the script that made CIFAR-10-C (32x32);
- ``"tiny_imagenet"``: ``create_c/make_tinyimagenet_c.py``, Tiny ImageNet-C (64x64);
- ``"imagenet"``: ``imagenet_c/imagenet_c/corruptions.py`` (the ``imagenet_c`` package; the same
  numbers as ``create_c/make_imagenet_c.py``), ImageNet-C (224x224 centre crops).

Each entry lists severities 1 to 5 with the reference's own tuple layout (its comment names the
fields); only the formulas that use them live in the other modules. ``zoom_blur``'s zoom factors are
``numpy.arange`` calls in the reference and are evaluated with ``numpy.arange`` here, so that the
floating-point end points are the reference's: ``arange(1, 1.06, 0.01)`` has 7 values, 1.06 included,
because ``(1.06 - 1) / 0.01`` rounds to a little more than 6.

Per-table constants that are not severities: the size of the plasma fractal behind ``fog`` (the
reference's ``plasma_fractal(mapsize=...)``) and the factor by which ``frost`` shrinks its texture
(``cv2.resize(frost, (0, 0), fx=..., fy=...)``; ImageNet crops the texture at full size).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["PARAMS", "REFERENCE_SIZE", "TABLES", "TABLE_CONSTANTS", "table_for_size"]

#: The parameter tables, named by the dataset they made.
TABLES = ("cifar", "tiny_imagenet", "imagenet")

#: The image side each table was written for.
REFERENCE_SIZE = {"cifar": 32, "tiny_imagenet": 64, "imagenet": 224}


def _zooms(*stops: tuple[float, float]) -> list[tuple[float, ...]]:
    return [tuple(float(z) for z in np.arange(1, stop, step)) for stop, step in stops]


_CIFAR_SIDE = 32
_TINY_SIDE = 64
_IMAGENET_ELASTIC = 244  # sic: the reference scales ImageNet's elastic parameters by 244, not 224

PARAMS: dict[str, dict[str, list]] = {
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],  # std of the additive noise
        "shot_noise": [500, 250, 100, 75, 50],  # Poisson(x * c) / c
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],  # salt-and-pepper amount
        "speckle_noise": [0.06, 0.1, 0.12, 0.16, 0.2],  # std of the multiplicative noise
        "gaussian_blur": [0.4, 0.6, 0.7, 0.8, 1],  # sigma
        # sigma, max_delta, iterations
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],  # radius, alias_blur
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],  # radius, sigma
        "zoom_blur": _zooms((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95),  # loc, scale, zoom, threshold, radius, sigma, blend
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],  # image weight, frost weight
        "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],  # strength, wibble decay
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],  # added to V in HSV
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],  # factor about the per-channel mean
        "elastic_transform": [tuple(_CIFAR_SIDE * f for f in c) for c in  # alpha, sigma, affine offset (px)
                              [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                               (0.1, 0.03, 0.03)]],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],  # side factor of the BOX down-resize
        "jpeg_compression": [80, 65, 58, 50, 40],  # PIL quality
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0),  # loc, scale, sigma, threshold, intensity, mud
                    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],  # S * a + b in HSV
    },
    "tiny_imagenet": {
        "gaussian_noise": [0.04, 0.08, 0.12, 0.15, 0.18],
        "shot_noise": [250, 100, 50, 30, 15],
        "impulse_noise": [0.01, 0.02, 0.05, 0.08, 0.14],
        "speckle_noise": [0.15, 0.2, 0.25, 0.3, 0.35],
        "gaussian_blur": [0.5, 0.75, 1, 1.25, 1.5],
        "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
        "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
        "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
        "zoom_blur": _zooms((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)),
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8),
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
        "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
        "fog": [(0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "elastic_transform": [tuple(_TINY_SIDE * f for f in c) for c in
                              [(0, 0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03),
                               (0.16, 0.03, 0.02)]],
        "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
        "jpeg_compression": [65, 58, 50, 40, 25],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                    (0.65, 0.3, 1, 0.69, 0.6, 0),
                    (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
    },
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "speckle_noise": [0.15, 0.2, 0.35, 0.45, 0.6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": _zooms((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                 (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        "elastic_transform": [tuple(_IMAGENET_ELASTIC * f for f in c) for c in
                              [(2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02),
                               (0.12, 0.01, 0.02)]],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0),
                    (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
    },
}

#: ``plasma_size``: side of the reference's plasma fractal; ``frost_scale``: texture resize factor.
TABLE_CONSTANTS: dict[str, dict[str, float]] = {
    "cifar": {"plasma_size": 32, "frost_scale": 0.2},
    "tiny_imagenet": {"plasma_size": 64, "frost_scale": 0.3},
    "imagenet": {"plasma_size": 256, "frost_scale": 1.0},
}

# Log-scale midpoints between the reference sides: sqrt(32 * 64) ~ 45.3, sqrt(64 * 224) ~ 119.7.
_BOUNDS = ((math.sqrt(32 * 64), "cifar"), (math.sqrt(64 * 224), "tiny_imagenet"))


def table_for_size(height: int, width: int) -> str:
    """The table whose reference side is nearest (on a log scale) to the image's shorter side.

    32x32 -> ``"cifar"``; 64x64 -> ``"tiny_imagenet"``; 224 and more -> ``"imagenet"``. In between,
    the nearest table in ratio: up to 45 px CIFAR's, 46-119 px Tiny ImageNet's, 120 px and up
    ImageNet's. The parameters are used as published, in pixels, whatever the exact size.
    """
    side = min(height, width)
    for bound, table in _BOUNDS:
        if side < bound:
            return table
    return "imagenet"
