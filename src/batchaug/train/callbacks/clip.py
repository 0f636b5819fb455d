"""Gradient clipping by the global L2 norm (``optim.clip_grad_norm``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from batchaug.schema import check_bounds
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer


class ClipGradNorm(Callback):
    """Scale the gradients so that their global L2 norm is at most ``max_norm``.

    Uses the norm the trainer already measured (the one logged as ``grad_norm``, before clipping), and
    scales on the device by ``min(1, max_norm / (norm + 1e-6))``: no second pass over the gradients and
    no host sync. With AMP the gradients are already unscaled here.
    """

    name = "clip_grad_norm"
    listable = False
    option = "optim.clip_grad_norm"

    def __init__(self, max_norm: float) -> None:
        check_bounds(max_norm, "optim.clip_grad_norm", gt=0)
        self.max_norm = float(max_norm)

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> ClipGradNorm | None:
        return cls(cfg.optim.clip_grad_norm) if cfg.optim.clip_grad_norm is not None else None

    def on_before_optimizer_step(self, trainer: Trainer, grad_norm: Tensor) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        if not grads:
            return
        scale = (self.max_norm / (grad_norm.to(grads[0].device, torch.float32) + 1e-6)).clamp_(max=1.0)
        for group in _by_dtype(grads):
            torch._foreach_mul_(group, scale.to(group[0].dtype))


def _by_dtype(grads: list[Tensor]) -> list[list[Tensor]]:
    groups: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
    for g in grads:
        groups.setdefault((g.dtype, g.device), []).append(g)
    return list(groups.values())
