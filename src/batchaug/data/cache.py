"""On-disk cache of decoded splits, so that only the first load of a dataset pays for decoding.

A cache file is ``<cache_dir()>/decoded/<key>.pt`` where the key is a SHA-256 of everything that
determines the tensors: the source's fingerprint (archive path + size + mtime, or every file's size
and mtime for a folder), the split and the decoding options. It is written to a temporary file and
moved into place with ``os.replace`` (:func:`batchaug.io.atomic_path`), so a reader never sees half a
file, and read back with ``torch.load(weights_only=True, mmap=True)`` (no pickled code runs; pages come
straight from the page cache). A CRC-32 of the tensors and the class names is stored alongside and
checked on every load because ``torch.load`` itself does not notice flipped bytes: a file that fails
any check is rebuilt, never trusted. Temporary files that a killed writer left behind are removed the
next time this process writes the cache (:func:`batchaug.io.remove_orphans`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import torch

from batchaug.data.paths import cache_dir
from batchaug.data.tensors import TensorSplit
from batchaug.io import atomic_path, make_dirs, remove_orphans

CACHE_FORMAT = 2
"""Version of the file layout; 2: the checksum covers the class names."""
ORPHAN_AGE = 60.0
"""Seconds after which an unlocked temporary file in the cache is a killed writer's leftover."""
_cleaned: set[Path] = set()  # cache folders already cleaned of orphans by this process


def cache_key(material: dict[str, Any]) -> str:
    """A stable hex key for a JSON-serialisable description of a decoded split."""
    blob = json.dumps({"format": CACHE_FORMAT, **material}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:40]


def cache_path(key: str) -> Path:
    """Where the split with this key is (or would be) cached."""
    return cache_dir() / "decoded" / f"{key}.pt"


def _checksum(split: TensorSplit) -> int:
    crc = zlib.crc32(split.images.cpu().contiguous().numpy().data)
    crc = zlib.crc32(split.targets.cpu().contiguous().numpy().data, crc)
    return zlib.crc32(json.dumps(list(split.classes)).encode("utf-8"), crc)


def load_cached(path: Path, key: str) -> TensorSplit | None:
    """The cached split, or None when the file is absent or fails any check (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT or blob.get("key") != key:
            raise ValueError("not a batchaug cache file for this source and options")
        classes = blob["classes"]
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ValueError("bad class list")
        split = TensorSplit(blob["images"], blob["targets"], classes)
        if _checksum(split) != blob["crc32"]:
            raise ValueError("checksum mismatch")
        if len(split) and int(split.targets.max()) >= len(classes):
            raise ValueError("targets out of range")
    except Exception as exc:  # noqa: BLE001 - any failure means: do not trust, rebuild
        warnings.warn(f"ignoring unreadable cache file {path} ({type(exc).__name__}: {exc}); "
                      "it will be rebuilt", RuntimeWarning, stacklevel=3)
        return None
    return split


def save_cached(path: Path, key: str, split: TensorSplit) -> bool:
    """Write the split atomically; returns False (with a warning) when the cache is not writable."""
    blob = {"format": CACHE_FORMAT, "key": key, "images": split.images.cpu(),
            "targets": split.targets.cpu(), "classes": list(split.classes), "crc32": _checksum(split)}
    try:
        make_dirs(path.parent)
        if path.parent not in _cleaned:
            _cleaned.add(path.parent)
            remove_orphans(path.parent, min_age=ORPHAN_AGE)
        # Saved by name: torch's C++ writer, several times faster than through a Python file object.
        # Not durable (no fsync): a file left half-written by a power cut fails the CRC check and is
        # rebuilt, and syncing 150+ MB would double the cost of a cold load.
        with atomic_path(path, durable=False) as tmp:
            torch.save(blob, tmp)
    except OSError as exc:
        warnings.warn(f"could not write cache file {path} ({exc}); continuing without the cache",
                      RuntimeWarning, stacklevel=3)
        return False
    return True
