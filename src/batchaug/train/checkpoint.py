"""Checkpoints: written atomically, loaded with ``weights_only=True``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from batchaug.errors import DataError
from batchaug.io import atomic_write, make_dirs


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically and durably (:func:`batchaug.io.atomic_write`): a reader sees
    the previous checkpoint or this one, never a half-written file, whatever stops the writer.

    Raises:
        WriteError: the checkpoint could not be written (``cannot write PATH: reason``); ``path`` is untouched.
    """
    path = Path(path)
    make_dirs(path.parent)
    with atomic_write(path) as f:
        torch.save(state, f)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint`; errors name the file. ``mmap=True`` maps the
    tensors instead of reading them (cheap when only the plain entries, e.g. ``config``, are wanted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # unpickling errors come in many types
        raise DataError(f"checkpoint {path} could not be read ({type(exc).__name__}: {exc})") from exc
