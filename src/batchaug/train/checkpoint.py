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
        raise DataError(f"checkpoint {path} could not be read ({_reason(exc)})") from exc


def _reason(exc: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` failed. Its own message for a refused pickle
    suggests loading with ``weights_only=False``, which would run whatever code the file holds: never
    passed on."""
    text = str(exc)
    if text.startswith("Weights only load failed"):
        rest = text.split("\n", 1)[1] if "\n" in text else ""
        rest = rest.split("WeightsUnpickler error:", 1)[-1]
        lines = [line.strip() for line in rest.splitlines()
                 if line.strip() and not line.strip().startswith("Check the documentation")]
        detail = lines[0].split(". ")[0].rstrip(".") if lines else "refused"
        return f"damaged, or not a checkpoint of tensors and plain values: {_cut(detail)}; code in a file is never run"
    if "mmap can only be used with files saved with" in text:  # torch's advice would be to save it again
        return "damaged, or not a checkpoint batchaug wrote: not in torch.save's zip format"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {_cut(first)}"


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
