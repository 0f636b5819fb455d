"""One entry point per question: load a split (:func:`load_split`), describe a dataset
(:func:`dataset_info`), check every image (:func:`verify_source`).

Kinds:
  ``cifar10_jpeg``  the CIFAR-10 JPEG archive (``cifar10-jpeg.zip``) or its unpacked folder;
  ``imagefolder``   any ImageFolder tree or zip (:mod:`batchaug.data.imagefolder`);
  ``imagenet``      ImageNet as an ImageFolder tree (``train/`` and ``val/`` sorted into class folders);
  ``cifar10``, ``cifar100``  torchvision's pickle format (:mod:`batchaug.data.cifar_pickle`);
  ``auto``          chosen from the path (:func:`detect_kind`).

Image-folder kinds are decoded in parallel and the result cached on disk (:mod:`batchaug.data.cache`);
pickle kinds load in well under a second and are not cached.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from batchaug.data.archive import open_tree, zip_fingerprint
from batchaug.data.cache import cache_key, cache_path, load_cached, save_cached
from batchaug.data.cifar_pickle import (
    CIFAR_FORMATS,
    cifar_counts,
    download_cifar,
    looks_like_cifar,
    read_cifar,
)
from batchaug.data.decode import check_backend, check_image_size, check_resize_mode, fit_to_size
from batchaug.data.imagefolder import ImageFolderSource, discover_layout
from batchaug.data.paths import cache_dir, resolve_data_path
from batchaug.data.tensors import TensorSplit
from batchaug.errors import ConfigError, DataError
from batchaug.limits import DEFAULT_MAX_PIXELS

KINDS = ("auto", "cifar10_jpeg", "imagefolder", "cifar10", "cifar100", "imagenet")
PICKLE_KINDS = ("cifar10", "cifar100")
DEFAULT_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10_jpeg": ("cifar10-jpeg.zip", "cifar10-jpeg"),
    "imagefolder": (),
    "cifar10": (CIFAR_FORMATS["cifar10"].folder, CIFAR_FORMATS["cifar10"].archive),
    "cifar100": (CIFAR_FORMATS["cifar100"].folder, CIFAR_FORMATS["cifar100"].archive),
    "imagenet": ("imagenet", "imagenet.zip"),
}
"""File or folder names searched for each kind when no path is given."""
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10's class names (its ``batches.meta``), sorted: how ``cifar10_jpeg`` data is recognised."""
_AUTO_SEARCH = ("cifar10_jpeg", "cifar10", "cifar100")

CHECKS = ("none", "quick", "full")
FULL_CHECK_LIMIT = 5_000
"""``dataset_info(check="quick")`` decodes every image of datasets up to this size."""
FOLDER_QUICK_CHECK_LIMIT = 200_000
"""...and reads both ends of every file up to this many files in a folder (zips: no limit)."""


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"data.kind={kind!r}: allowed values are {', '.join(KINDS)}")


def detect_kind(path: str | os.PathLike[str]) -> str:
    """The kind of an existing dataset path: pickle CIFAR by its files, ``cifar10_jpeg`` and
    ``imagenet`` by name, any other folder or zip as ``imagefolder``."""
    p = Path(path)
    pickled = looks_like_cifar(p)
    if pickled:
        return pickled
    stem = p.name.lower().removesuffix(".zip")
    if stem.startswith("cifar10-jpeg"):
        return "cifar10_jpeg"
    if "imagenet" in stem or "ilsvrc" in stem:
        return "imagenet"
    if p.is_dir() or (p.is_file() and p.suffix.lower() == ".zip"):
        return "imagefolder"
    raise DataError(f"{p}: cannot tell what dataset this is; expected a folder, a .zip in ImageFolder "
                    "layout, or CIFAR's python version (pass kind= to say which)")


def resolve_source(source: str | os.PathLike[str] | None, kind: str = "auto", *,
                   download: bool = False) -> tuple[str, Path]:
    """(kind, path) of a dataset: explicit path, then ``$BATCHAUG_DATA``, then the cache directory.

    With ``kind="auto"`` and no path, the default names of ``cifar10_jpeg``, ``cifar10`` and
    ``cifar100`` are searched in that order. ``download=True`` fetches CIFAR (pickle kinds only)
    into the path or the cache directory when nothing is found.
    """
    _check_kind(kind)
    if kind == "auto":
        if source is None:
            errors = []
            for candidate in _AUTO_SEARCH:
                try:
                    return candidate, resolve_data_path(None, DEFAULT_NAMES[candidate])
                except DataError as exc:
                    errors.append(str(exc))
            raise DataError("no dataset found and no path given: " + "; ".join(errors))
        names = tuple(n for k in _AUTO_SEARCH for n in DEFAULT_NAMES[k])
        path = resolve_data_path(source, names)
        return detect_kind(path), path
    if kind == "imagefolder" and source is None:
        raise DataError("kind 'imagefolder' has no default location: pass the folder or zip "
                        "(config key data.root)")
    try:
        return kind, resolve_data_path(source, DEFAULT_NAMES[kind])
    except DataError:
        if not download:
            raise
        if kind not in PICKLE_KINDS:
            raise DataError(f"download is only available for {' and '.join(PICKLE_KINDS)}, "
                            f"not {kind!r}") from None
    return kind, download_cifar(Path(source) if source is not None else cache_dir(), kind)


def load_split(source: str | os.PathLike[str] | None, split: str = "train", *, kind: str = "auto",
               image_size: int | None = None, grayscale_to_rgb: bool = False, cache: bool = True,
               download: bool = False, resize_mode: str = "center_crop",
               num_workers: int | None = None, backend: str | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> TensorSplit:
    """Load a whole split as uint8 tensors.

    Args:
        source: a file or folder (or the folder holding the kind's default file); None searches
            ``$BATCHAUG_DATA`` and the cache directory (:func:`resolve_source`).
        split: ``"train"``, ``"test"`` or ``"val"`` (``"test"`` and ``"val"`` stand in for each other).
        kind: one of :data:`KINDS`.
        image_size: bring every image to ``image_size x image_size``; None keeps the native size.
        grayscale_to_rgb: load grayscale datasets with 3 channels.
        cache: read/write the decoded tensors under ``$BATCHAUG_CACHE`` (image-folder kinds).
        download: let torchvision download CIFAR when missing (pickle kinds).
        resize_mode: how ``image_size`` is reached: ``"center_crop"``, ``"stretch"`` or ``"crop"``.
        num_workers: decoding threads; default: the CPUs available.
        backend: image decoder, ``"torchvision"`` or ``"pil"`` (default: torchvision when available).
        max_pixels: refuse images of more pixels (width x height), checked before decoding; None: no limit.

    Raises:
        DataError: missing/unreadable data, naming the file (and the zip member); data that is not what
            ``kind`` names (e.g. another dataset under ``cifar10_jpeg``, whose statistics would be wrong).
        ConfigError: an option outside its allowed values.
    """
    return cache_split(source, split, kind=kind, image_size=image_size,
                       grayscale_to_rgb=grayscale_to_rgb, cache=cache, download=download,
                       resize_mode=resize_mode, num_workers=num_workers, backend=backend,
                       max_pixels=max_pixels)[0]


def cache_split(source: str | os.PathLike[str] | None, split: str = "train", *, kind: str = "auto",
                image_size: int | None = None, grayscale_to_rgb: bool = False, cache: bool = True,
                download: bool = False, resize_mode: str = "center_crop",
                num_workers: int | None = None, backend: str | None = None,
                max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[TensorSplit, Path | None]:
    """:func:`load_split` that also returns the cache file used (None for uncached kinds)."""
    check_resize_mode(resize_mode)
    backend = check_backend(backend)
    check_image_size(image_size)
    kind, path = resolve_source(source, kind, download=download)
    if kind in PICKLE_KINDS:
        data = read_cifar(path, kind, split)
        if image_size is not None:
            data = TensorSplit(fit_to_size(data.images, image_size, resize_mode).contiguous(),
                               data.targets, data.classes)
        return data, None

    options = {"split": split, "image_size": image_size, "resize_mode": resize_mode,
               "grayscale_to_rgb": grayscale_to_rgb, "backend": backend}
    file: Path | None = None
    key = ""
    if cache and path.is_file():
        # A zip is identified by its size and mtime: a warm load need not even open it.
        key = cache_key({"source": zip_fingerprint(path), **options})
        file = cache_path(key)
        hit = load_cached(file, key)
        if hit is not None:
            check_kind_matches(kind, path, hit.classes, int(hit.images.shape[1]))
            return hit, file
    src = ImageFolderSource(path, split, image_size=image_size, resize_mode=resize_mode,
                            grayscale_to_rgb=grayscale_to_rgb, backend=backend, max_pixels=max_pixels)
    check_kind_matches(kind, path, src.classes, src.channels)
    if cache and file is None:
        key = cache_key({"source": src.fingerprint(), **options})
        file = cache_path(key)
        hit = load_cached(file, key)
        if hit is not None:
            check_kind_matches(kind, path, hit.classes, int(hit.images.shape[1]))
            return hit, file
    data = src.load(num_workers)
    if cache and file is not None and not save_cached(file, key, data):
        file = None
    return data, file


def check_kind_matches(kind: str, path: str | os.PathLike[str], classes: list[str], channels: int) -> None:
    """Raise :class:`DataError` when image data is not what ``kind`` names: ``cifar10_jpeg`` needs CIFAR-10's
    ten classes in colour, ``imagenet`` colour images. Another dataset under such a kind would be normalized
    with that dataset's statistics (wrongly, or for the wrong number of channels); the message says which
    ``data.kind`` to set."""
    names = [c.lower() for c in classes]
    if kind == "cifar10_jpeg" and (tuple(names) != CIFAR10_CLASSES or channels != 3):
        listed = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        raise DataError(f"{path}: data.kind is 'cifar10_jpeg' but this is not CIFAR-10 ({len(classes)} classes: "
                        f"{listed}; {channels}-channel images); set data.kind=imagefolder to train on it (its "
                        "normalization is then measured from its own images)")
    if kind == "imagenet" and channels != 3:
        raise DataError(f"{path}: data.kind is 'imagenet' but its images have {channels} channel(s), ImageNet's 3; "
                        "set data.kind=imagefolder to train on it (its normalization is then measured from its "
                        "own images)")


def dataset_info(source: str | os.PathLike[str] | None, kind: str = "auto", *,
                 check: str = "quick", num_workers: int | None = None) -> dict[str, Any]:
    """Describe a dataset without loading it.

    Counts come from the zip/folder listing; one image per split is decoded for the shape.

    Args:
        check: how hard to look for corrupt images:
            ``"none"``   only the one image per split;
            ``"quick"``  (default) datasets of up to :data:`FULL_CHECK_LIMIT` images are decoded
                         whole; larger ones have both ends of every JPEG/PNG checked for the format's
                         start/end markers (suspects are then decoded), which catches truncated and
                         garbage files at ~2 us per zip member; folders above
                         :data:`FOLDER_QUICK_CHECK_LIMIT` files are skipped (use ``verify``);
            ``"full"``   decode everything (:func:`verify_source`).

    Returns:
        ``{"path", "kind", "splits": {name: count}, "num_classes", "classes", "shape": [C, H, W],
        "check"}``; ``shape`` is the first split's first image (``image_size`` unset).

    Raises:
        DataError: missing path, bad layout, or (per ``check``) a corrupt image, naming the file.
    """
    if check not in CHECKS:
        raise ConfigError(f"check={check!r}: allowed values are {', '.join(CHECKS)}")
    kind, path = resolve_source(source, kind)
    if kind in PICKLE_KINDS:
        counts, classes = cifar_counts(path, kind)
        return {"path": str(path), "kind": kind, "splits": counts, "num_classes": len(classes),
                "classes": classes, "shape": [3, 32, 32], "check": "full (pickles parsed)"}
    tree = open_tree(path)
    try:
        layout = discover_layout(tree)
        sources = [ImageFolderSource(tree, name) for name in layout.splits]
        check_kind_matches(kind, path, sources[0].classes, sources[0].channels)
        total = sum(len(s) for s in sources)
        if check == "full" or (check == "quick" and total <= FULL_CHECK_LIMIT):
            for s in sources:
                s.verify(num_workers)
            done = f"full: decoded all {total} images"
        elif check == "quick" and (path.is_file() or total <= FOLDER_QUICK_CHECK_LIMIT):
            for s in sources:
                s.quick_check(num_workers)
            done = f"quick: start/end markers of all {total} files"
        elif check == "quick":
            done = (f"skipped: {total} files in a folder is too many for a quick check; "
                    "run 'batchaug data verify'")
        else:
            done = "none: one image per split decoded"
    finally:
        tree.close()
    return {"path": str(path), "kind": kind, "splits": {s.split: len(s) for s in sources},
            "num_classes": len(layout.classes), "classes": list(layout.classes),
            "shape": list(sources[0].shape), "check": done}


def verify_source(source: str | os.PathLike[str] | None, kind: str = "auto", *,
                  split: str | None = None, num_workers: int | None = None) -> dict[str, int]:
    """Decode every image (of one split, or all); returns images per split.

    Raises:
        DataError: naming the first corrupt image (file, or zip and member) in index order.
    """
    kind, path = resolve_source(source, kind)
    if kind in PICKLE_KINDS:
        splits = [split] if split else ["train", "test"]
        return {s: len(read_cifar(path, kind, s)) for s in splits}
    tree = open_tree(path)
    try:
        layout = discover_layout(tree)
        names = [layout.resolve(split, str(path))] if split else list(layout.splits)
        return {name: ImageFolderSource(tree, name).verify(num_workers) for name in names}
    finally:
        tree.close()
