"""Reading an existing CIFAR-10-C-style directory (Hendrycks & Dietterich's released layout).

The layout, as ``make_cifar_c.py`` writes it: one ``<corruption>.npy`` per corruption holding the
5 severities stacked, ``(5 N, H, W, C)`` uint8 (severity 1's N images first), and ``labels.npy``
with the N labels repeated for each severity (``5 N`` values; N values are accepted too). The 15
benchmark corruptions must be there; the 4 extra ones are read when present; other files are ignored.
Everything is checked from the files' headers before any image is read, and the images are read one
corruption and severity at a time (memory-mapped), since a CIFAR-10-C directory holds 2.9 GB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from batchaug.errors import DataError

from .names import BENCHMARK_CORRUPTIONS, CORRUPTIONS

__all__ = ["CorruptionDir", "load_corruption_dir"]


@dataclass(frozen=True, eq=False)
class CorruptionDir(Mapping):
    """A validated corruption directory: a mapping corruption name -> uint8 (5, N, C, H, W).

    Attributes:
        path: the directory.
        names: the corruptions found, in :data:`CORRUPTIONS` order.
        labels: int64 (N,), the labels of every severity.
        image_shape: (C, H, W).
    """

    path: Path
    names: tuple[str, ...]
    labels: Tensor
    image_shape: tuple[int, int, int]

    @property
    def num_images(self) -> int:
        """N, the images per severity."""
        return int(self.labels.numel())

    def severity(self, name: str, severity: int) -> Tensor:
        """uint8 (N, C, H, W): the images of one corruption at one severity (1-5)."""
        if name not in self.names:
            raise DataError(f"{self.path}: no {name}.npy; this directory has {', '.join(self.names)}")
        if severity not in (1, 2, 3, 4, 5):
            raise DataError(f"severity must be 1, 2, 3, 4 or 5, got {severity!r}")
        n = self.num_images
        array = np.load(self.path / f"{name}.npy", mmap_mode="r")
        block = np.array(array[(severity - 1) * n:severity * n])
        if block.ndim == 3:
            block = block[..., None]
        return torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()

    def __getitem__(self, name: str) -> Tensor:
        return torch.stack([self.severity(name, s) for s in (1, 2, 3, 4, 5)])

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:  # without reading the file, unlike Mapping's
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)


def _header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{file}: not a readable .npy array ({e})") from None
    return tuple(array.shape), array.dtype


def load_corruption_dir(path: str | os.PathLike[str]) -> CorruptionDir:
    """Validate a CIFAR-10-C-style directory and return it as a :class:`CorruptionDir`.

    Raises:
        DataError: the directory or ``labels.npy`` or a benchmark corruption's file is missing; a
            file is not a uint8 ``(5 N, H, W, C)`` array (C = 1 or 3, or ``(5 N, H, W)``); the files
            disagree on N or on the image shape; the labels are not N or 5 N integers, or differ
            between severities. The message names the file and what was expected.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"corruption directory {root} does not exist or is not a directory")
    missing = [f"{name}.npy" for name in BENCHMARK_CORRUPTIONS if not (root / f"{name}.npy").is_file()]
    if not (root / "labels.npy").is_file():
        missing.insert(0, "labels.npy")
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)} (a CIFAR-10-C-style directory has labels.npy "
                        f"and one .npy per corruption: {', '.join(BENCHMARK_CORRUPTIONS)})")
    names = tuple(name for name in CORRUPTIONS if (root / f"{name}.npy").is_file())
    shapes = {}
    for name in names:
        file = root / f"{name}.npy"
        shape, dtype = _header(file)
        if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
            raise DataError(f"{file}: expected uint8 images (5 N, H, W, C) with C = 1 or 3, "
                            f"got {dtype} {shape}")
        if shape[0] % 5 or shape[0] == 0:
            raise DataError(f"{file}: expected 5 severities of N images stacked (5 N, H, W, C), "
                            f"got {shape[0]} images, not a multiple of 5")
        shapes[name] = shape if len(shape) == 4 else (*shape, 1)
    first = names[0]
    for name in names[1:]:
        if shapes[name] != shapes[first]:
            raise DataError(f"{root / (name + '.npy')}: shape {shapes[name]} differs from "
                            f"{first}.npy's {shapes[first]}")
    total, h, w, c = shapes[first]
    n = total // 5

    label_file = root / "labels.npy"
    lshape, ldtype = _header(label_file)
    if len(lshape) != 1 or not np.issubdtype(ldtype, np.integer):
        raise DataError(f"{label_file}: expected a 1-D integer array, got {ldtype} {lshape}")
    if lshape[0] not in (n, 5 * n):
        raise DataError(f"{label_file}: {lshape[0]} labels, but the images are 5 x {n} = {5 * n} "
                        f"(expected {5 * n} labels, or {n})")
    labels = np.load(label_file, allow_pickle=False).astype(np.int64)
    if labels.size == 5 * n:
        blocks = labels.reshape(5, n)
        if not (blocks == blocks[0]).all():
            raise DataError(f"{label_file}: the labels differ between severities; expected the same {n} "
                            "labels repeated 5 times")
        labels = blocks[0]
    if labels.size and labels.min() < 0:
        raise DataError(f"{label_file}: negative label {int(labels.min())}")
    return CorruptionDir(path=root, names=names, labels=torch.from_numpy(labels.copy()), image_shape=(c, h, w))
