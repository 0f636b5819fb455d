"""Dropout for recurrent language models, with masks drawn apart from the forward pass.

The three regularizers of the AWD-LSTM (Merity, Keskar & Socher, "Regularizing and Optimizing LSTM
Language Models", 2017; reference code salesforce/awd-lstm-lm ``locked_dropout.py``,
``embed_regularize.py``, ``weight_drop.py``):

- **locked (variational) dropout**: one mask per sequence and feature, the same at every time step;
- **embedding dropout**: whole words dropped from the embedding matrix (every occurrence of a dropped
  word in a sequence is zero);
- **weight drop**: DropConnect on the hidden-to-hidden matrix of an LSTM, one mask for all time steps.

Masks are boolean "keep" tensors drawn by :func:`keep_mask` from a ``torch.Generator``, and applied with
the inverted-dropout scale ``1 / (1 - p)``. Drawing them outside the forward pass is what lets a
training method give each copy of a sample its own masks, reproducibly from a seed (Batch
Augmentation for sequences, :mod:`batchaug.methods.sequence`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["apply_keep", "embedding_keep", "keep_mask", "locked_dropout"]


def keep_mask(shape: tuple[int, ...] | torch.Size, p: float, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
    """A boolean mask of ``shape`` whose entries are kept with probability ``1 - p``.

    Drawn on ``device`` (the generator's device when given) from ``generator`` (the global RNG when None).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p!r}")
    if generator is not None and device is None:
        device = generator.device
    return torch.rand(tuple(shape), generator=generator, device=device) >= p


def apply_keep(x: Tensor, keep: Tensor, p: float) -> Tensor:
    """``x`` times ``keep / (1 - p)`` (inverted dropout); ``keep`` broadcasts against ``x``."""
    return x * (keep.to(x.dtype) * (1.0 / (1.0 - p)))


def locked_dropout(x: Tensor, keep: Tensor | None, p: float) -> Tensor:
    """Locked dropout of a time-major sequence ``x`` (L, N, F) with a per-sequence mask ``keep`` (N, F):
    the same features of a sequence are dropped at every time step. ``keep`` None: ``x`` unchanged."""
    if keep is None or p == 0.0:
        return x
    if keep.shape != x.shape[1:]:
        raise ValueError(f"locked dropout mask of shape {tuple(keep.shape)} does not fit a sequence of "
                         f"shape {tuple(x.shape)} (expected {tuple(x.shape[1:])})")
    return apply_keep(x, keep.unsqueeze(0), p)


def embedding_keep(word_keep: Tensor, tokens: Tensor) -> Tensor:
    """Per-token keep mask of embedding dropout: ``word_keep`` (C, V) says which words copy ``c`` keeps;
    row ``r`` of ``tokens`` (L, N) belongs to copy ``r % C`` (rows are sample-major: each sample's
    C copies are adjacent). Returns a (L, N) boolean mask; multiply the embeddings with
    :func:`apply_keep` (the same as dropping rows of the embedding matrix, as the reference does)."""
    copies = word_keep.shape[0]
    copy_of_row = torch.arange(tokens.shape[1], device=tokens.device) % copies
    return word_keep[copy_of_row.unsqueeze(0), tokens]
