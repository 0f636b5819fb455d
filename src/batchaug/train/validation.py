"""What the trainer's periodic validation measures, and which of its numbers picks ``best.pt``.

A *validation* is a callable ``validation(model, method, device=..., autocast=...) -> {key: float}``
with a ``selection = (key, "max" | "min")`` attribute. The trainer calls it at every evaluation (model
in eval mode, no gradients), writes its keys into the metrics line, and keeps ``best.pt`` at the best
value of the selection key. Shipped:

- :class:`ClassificationValidation`: cross-entropy and top-1 accuracy of ``method.predict`` (and of the
  method's extra predictions) on an image split (``val_loss``, ``val_acc``; selection: max ``val_acc``),
  and on a test set beside it (``test_*``);
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
                 autocast: Autocast, test: bool = True) -> dict[str, float]:
        """``test=False``: the selection set only (e.g. to compare a weight average on it)."""
        ...


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (None: nothing yet) under ``mode`` (``max`` or ``min``)."""
    if value is None:
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


class ClassificationValidation:
    """Loss and accuracy of ``method.predict`` (``val_loss``, ``val_acc``) and of each of
    ``method.extra_val_predictions()`` (``val_loss_<name>``, ``val_acc_<name>``) on uint8 ``images``; with
    a test set (``test_images``/``test_targets``, and ``test``), the same on it as ``test_*``, never used
    for selection. Sharded across ranks when distributed.

    ``images`` and ``targets`` may live on another device than the model (each batch is moved).
    """

    selection = ("val_acc", "max")

    def __init__(self, images: Tensor, targets: Tensor, batch_size: int = 500, *, test_images: Tensor | None = None,
                 test_targets: Tensor | None = None) -> None:
        self.images, self.targets, self.batch_size = images, targets, int(batch_size)
        self.test_images, self.test_targets = test_images, test_targets

    def __call__(self, model: nn.Module, method: Method, *, device: torch.device, autocast: Autocast,
                 test: bool = True) -> dict[str, float]:
        predictors = {"": method.predict}
        predictors.update({f"_{name}": fn for name, fn in method.extra_val_predictions().items()})
        out = self._evaluate_set(model, self.images, self.targets, "val", predictors, device, autocast)
        if test and self.test_images is not None and self.test_targets is not None:
            out.update(self._evaluate_set(model, self.test_images, self.test_targets, "test", predictors, device,
                                          autocast))
        return out

    def _evaluate_set(self, model: nn.Module, images_all: Tensor, targets_all: Tensor, prefix: str,
                      predictors: dict[str, Callable[[nn.Module, Tensor], Tensor]], device: torch.device,
                      autocast: Autocast) -> dict[str, float]:
        rank, world = dist_utils.rank(), dist_utils.world_size()
        n = images_all.shape[0]
        # this rank's rows, made where the images are: a host-made index copied to the device per batch
        # was a blocking copy, one device synchronization per evaluation batch
        shard = torch.arange(rank, n, world, device=images_all.device) if world > 1 else None
        # one row of (loss sum, correct count) per predictor, summed on the device and read once
        sums = torch.zeros(len(predictors), 2, device=device, dtype=torch.float64)
        for lo in range(0, n if shard is None else shard.numel(), self.batch_size):
            hi = lo + self.batch_size
            if shard is None:  # one process: contiguous slices, no gather
                images, targets = images_all[lo:hi], targets_all[lo:hi]
            else:
                images, targets = images_all.index_select(0, shard[lo:hi]), targets_all.index_select(0, shard[lo:hi])
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            for i, predict in enumerate(predictors.values()):
                with autocast():
                    logits = predict(model, images)
                sums[i, 0] += F.cross_entropy(logits.float(), targets, reduction="sum").double()
                sums[i, 1] += (logits.argmax(-1) == targets).sum().double()
        stats = dist_utils.all_reduce_sum(sums.flatten()).view(-1, 2).tolist()
        out = {}
        for suffix, (loss, correct) in zip(predictors, stats, strict=True):
            out[f"{prefix}_loss{suffix}"] = loss / max(n, 1)
            out[f"{prefix}_acc{suffix}"] = correct / max(n, 1)
        return out
