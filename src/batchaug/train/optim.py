"""Optimizers and learning-rate schedules of the papers' regimes."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from batchaug.config import OptimConfig
from batchaug.nn.bn_utils import is_batch_norm


def param_groups(model: nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> list[dict]:
    """Parameter groups; with ``no_wd_bn_bias`` the BatchNorm parameters and all biases get no decay."""
    if not no_wd_bn_bias or weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = is_batch_norm(module) or isinstance(module, (nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if is_norm or name.endswith("bias") or p.dim() <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.no_wd_bn_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr)


class LRSchedule:
    """Learning rate as a function of the optimizer step.

    The regime is written in epochs (as in the papers) and mapped onto the run's ``total_steps``:
    ``epoch(step) = step / total_steps * epochs``. A full run has ``total_steps = epochs * steps_per_epoch``;
    a run shortened with ``train.max_steps`` keeps the regime's shape compressed into fewer steps.
    """

    def __init__(self, cfg: OptimConfig, base_lr: float, epochs: float, total_steps: int,
                 milestones: Sequence[float] | None = None) -> None:
        self.cfg = cfg
        self.base_lr = base_lr
        self.epochs = max(float(epochs), 1e-12)
        self.total_steps = max(int(total_steps), 1)
        self.milestones = sorted(milestones if milestones is not None else cfg.milestones)

    def epoch_at(self, step: int) -> float:
        return step / self.total_steps * self.epochs

    def __call__(self, step: int) -> float:
        cfg = self.cfg
        e = self.epoch_at(step)
        if cfg.schedule == "step":
            lr = self.base_lr * cfg.gamma ** sum(1 for m in self.milestones if e >= m)
        elif cfg.schedule == "cosine":
            start = min(cfg.warmup_epochs, self.epochs)
            t = 0.0 if self.epochs <= start else max(0.0, (e - start) / (self.epochs - start))
            lr = cfg.min_lr + (self.base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        else:
            lr = self.base_lr
        if cfg.warmup_epochs > 0 and e < cfg.warmup_epochs:
            frac = e / cfg.warmup_epochs
            lr = lr * (cfg.warmup_start + (1 - cfg.warmup_start) * frac)
        return lr
