"""The corruptions' names, as Hendrycks & Dietterich name them (the functions of their
``make_cifar_c.py`` and the ``.npy`` files of CIFAR-10-C)."""

from __future__ import annotations

__all__ = ["BENCHMARK_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "RGB_ONLY"]

#: The 15 corruptions of the CIFAR-10-C / ImageNet-C benchmark, in the papers' order (noise, blur,
#: weather, digital).
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog",
    "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)

#: The four held-out corruptions released with the benchmark (not part of mCE).
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")

#: All 19.
CORRUPTIONS = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS

#: The corruptions defined on colour only: saturate (HSV saturation), frost (colour textures) and
#: spatter (coloured water and mud). The others take 1-channel images too.
RGB_ONLY = ("saturate", "frost", "spatter")
