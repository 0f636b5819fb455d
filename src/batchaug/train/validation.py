"""What the trainer's periodic validation measures, and which of its numbers picks ``best.pt``.

A *validation* is a callable ``validation(model, method, device=..., autocast=...) -> {key: float}``
with a ``selection = (key, "max" | "min")`` attribute. The trainer calls it at every evaluation (model
in eval mode, no gradients), writes its keys into the metrics line, and keeps ``best.pt`` at the best
value of the selection key. Shipped:

- :class:`ClassificationValidation`: cross-entropy and top-1 accuracy of ``method.predict`` on an
  image split (``val_loss``, ``val_acc``; selection: max ``val_acc``);
- :class:`~batchaug.evaluate.perplexity.PerplexityValidation`: a language model's perplexity over a
  token stream with the hidden state carried (``val_loss``, ``val_ppl``; selection: min ``val_ppl``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.methods.base import Method
from batchaug.train import distributed as dist_utils

__all__ = ["ClassificationValidation", "Validation", "is_better"]

Autocast = Callable[[], contextlib.AbstractContextManager]


class Validation(Protocol):
    selection: tuple[str, str]
    """``(key, mode)``: the result key ``best.pt`` follows and whether higher (``max``) or lower is better."""

    def __call__(self, model: nn.Module, method: Method, *, device: torch.device,
                 autocast: Autocast) -> dict[str, float]:
        ...


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (None: nothing yet) under ``mode`` (``max`` or ``min``)."""
    if value is None:
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class ClassificationValidation:
    """Loss and accuracy of ``method.predict`` on uint8 ``images`` (sharded across ranks when distributed).

    ``images`` and ``targets`` may live on another device than the model (each batch is moved).
    """

    selection = ("val_acc", "max")

    def __init__(self, images: Tensor, targets: Tensor, batch_size: int = 500) -> None:
        self.images, self.targets, self.batch_size = images, targets, int(batch_size)

    def __call__(self, model: nn.Module, method: Method, *, device: torch.device,
                 autocast: Autocast) -> dict[str, float]:
        rank, world = dist_utils.rank(), dist_utils.world_size()
        n = self.images.shape[0]
        shard = torch.arange(rank, n, world)
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        for lo in range(0, shard.numel(), self.batch_size):
            idx = shard[lo:lo + self.batch_size].to(self.images.device)
            images = self.images.index_select(0, idx).to(device, non_blocking=True)
            targets = self.targets.index_select(0, idx).to(device, non_blocking=True)
            with autocast():
                logits = method.predict(model, images)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum").double()
            correct += (logits.argmax(-1) == targets).sum().double()
        stats = dist_utils.all_reduce_sum(torch.stack([loss_sum, correct]))
        return {"val_loss": float(stats[0]) / max(n, 1), "val_acc": float(stats[1]) / max(n, 1)}
