"""What a data kind holds: images or token streams (torch-free, so configs resolve without loading torch).

A run's modality decides which implementation a method name stands for (``batchaug.methods.spec``):
``method.name: ba`` is Batch Augmentation on either, with image views on images and independent
dropout masks per copy on token streams. The trainer never asks; only the places that assemble a run
(config resolution, ``batchaug.train.run``, ``batchaug eval``) do.
"""

from __future__ import annotations

IMAGES = "images"
TOKENS = "tokens"
MODALITIES = (IMAGES, TOKENS)

#: ``data.kind`` values whose files are word-level text (a folder of {train,valid,test}.txt)
TOKEN_KINDS = ("ptb", "text")


def modality_of(kind: object) -> str:
    """``"tokens"`` for a text kind (:data:`TOKEN_KINDS`), ``"images"`` for anything else."""
    return TOKENS if kind in TOKEN_KINDS else IMAGES


__all__ = ["IMAGES", "MODALITIES", "TOKENS", "TOKEN_KINDS", "modality_of"]
