"""Baseline, Batch Augmentation (Hoffer et al., "Augment your batch", 2019) and regime adaptation.

- ``baseline``: one augmented view per sample.
- ``ba``: M differently augmented views of every sample in the same batch (effective batch B·M); the
  learning-rate schedule and number of epochs are unchanged, so the number of SGD steps is the baseline's.
- ``ra``: regime adaptation, the BA paper's Fig. 5 comparison: a plain batch of B·M distinct samples
  trained for M× the epochs (again the same number of steps), optionally with the learning rate scaled.

All three are :class:`~batchaug.methods.views.ViewsMethod`: ``method.mix`` (MixUp, CutMix) works with each.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.methods.base import LossOutput, MethodBatch, MethodContext, Regime
from batchaug.methods.views import ViewsMethod, ViewsOptions
from batchaug.nn.bn_utils import frozen_bn_stats
from batchaug.nn.wrappers import unwrap
from batchaug.schema import option


@dataclass
class BaselineOptions(ViewsOptions):
    """Options of ``method.name=baseline``: the policy and the batch transform of every views method."""


@dataclass
class BAOptions(ViewsOptions):
    m: int = option(4, ge=1)
    """Views per sample (the paper's M)."""
    average_outputs: bool = False
    """Average the M views' logits per sample before the loss (one prediction per sample)."""
    adapt_grad_norm: bool = False
    """Rescale the loss so the gradient norm matches that of a single copy of the batch (see docs)."""
    adapt_every: int = option(50, ge=1)
    """Steps between single-copy gradient-norm probes when ``adapt_grad_norm`` is on."""
    adapt_momentum: float = option(0.9, ge=0, lt=1)
    """Exponential smoothing of the measured norm ratio."""


@dataclass
class RAOptions(ViewsOptions):
    m: int = option(4, ge=1)
    """Batch multiplier: batch B·M of distinct samples, M× the epochs."""
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    """How the learning rate follows the larger batch (``sqrt``: Hoffer et al. 2017)."""


class Baseline(ViewsMethod):
    """One augmented view per sample: ordinary training."""

    name = "baseline"
    Options = BaselineOptions


class BatchAugmentation(ViewsMethod):
    """M differently augmented views of every sample in the same batch (Hoffer et al. 2019)."""

    name = "ba"
    Options = BAOptions

    def __init__(self, options: BAOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        self._step = 0
        self._probe_pending = False
        self._scale = 1.0  # smoothed ||g_single|| / ||g_all||

    @property
    def m(self) -> int:
        return self.options.m

    @property
    def sample_views(self) -> int:
        return self.options.m

    def spread_views(self) -> None:
        """One view per row, the M views of a sample made on different processes; the options that need
        a sample's M views side by side cannot follow them there."""
        for key in ("average_outputs", "adapt_grad_norm"):
            if getattr(self.options, key) and self.m > 1:
                raise ConfigError(f"method.{key}: needs the M views of a sample on one process; unset it or use "
                                  "train.view_placement=local")
        super().spread_views()

    def _describe_parts(self) -> list[str]:
        return [f"M={self.m} views per sample"]

    def begin_step(self, step: int, epoch: int) -> None:
        self._step = step
        self._probe_pending = self.options.adapt_grad_norm and step % self.options.adapt_every == 0

    def objective(self, target: Tensor) -> Callable[[Tensor], Tensor]:
        """The loss of one set of logits against ``target`` (labels or soft targets of the views): the
        cross-entropy over the views, or of the per-sample mean logits with ``average_outputs``. The
        main logits and every auxiliary head's go through it."""
        m = self.views_per_sample
        if not (self.options.average_outputs and m > 1):
            return lambda logits: self.cross_entropy(logits, target)
        per_target = target[::m] if target.dim() == 1 else target.view(-1, m, target.shape[-1]).mean(1)
        return lambda logits: self.cross_entropy(logits.float().view(-1, m, logits.shape[-1]).mean(1), per_target)

    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        x, y = batch["inputs"], batch["targets"]
        target = self.objective_targets(batch)
        if self._probe_pending:
            self._probe_pending = False
            self._update_grad_scale(model, x, target)
        objective = self.objective(target)
        logits, aux_loss, aux_metrics = self.split_auxiliary(model(x), objective)
        loss = objective(logits) + aux_loss
        metrics: dict[str, float | Tensor] = dict(aux_metrics)
        if self.options.adapt_grad_norm:
            loss = loss * self._scale
            metrics["grad_scale"] = self._scale
        return LossOutput(loss, logits, y, metrics)

    def _update_grad_scale(self, model: nn.Module, x: Tensor, y: Tensor) -> None:  # y: labels or soft targets
        """Measure ||∇L(one copy)|| / ||∇L(all M copies)|| on this chunk and smooth it.

        Both gradients come from ``torch.autograd.grad`` (``.grad`` is untouched) inside
        :func:`frozen_bn_stats`, so the probe changes neither the step's gradient nor BN running statistics.
        The single copy is the first view of every sample; its BN statistics are computed on B views
        instead of B·M, which is exactly the single-copy training step being imitated.

        Under torchrun both gradients are averaged over the processes before their norms are taken (the
        step's gradient is the ranks' mean, which ``autograd.grad`` does not see: it bypasses DDP's
        hooks), so every rank gets the same ratio, that of the global batch. All ranks probe the same steps.
        """
        net = unwrap(model)  # the probe's gradients are reduced below, not by DDP
        params = [p for p in net.parameters() if p.requires_grad]
        with frozen_bn_stats(net):
            g_all = torch.autograd.grad(self._plain_loss(net, x, y), params, allow_unused=True)
            one = slice(None, None, self.m)
            g_one = torch.autograd.grad(self._plain_loss(net, x[one], y[one]), params, allow_unused=True)
        norm_all, norm_one = _process_mean_norms(params, g_all, g_one)
        if norm_all > 0 and math.isfinite(norm_one / norm_all):
            ratio = norm_one / norm_all
            mom = self.options.adapt_momentum if self._step > 0 else 0.0
            self._scale = mom * self._scale + (1 - mom) * ratio

    def _plain_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Cross-entropy over the views ``x``, auxiliary heads included: the objective the probe compares."""
        def objective(logits: Tensor) -> Tensor:
            return self.cross_entropy(logits, y)

        logits, aux_loss, _ = self.split_auxiliary(model(x), objective)
        return objective(logits) + aux_loss

    def state_dict(self) -> dict[str, Any]:
        return {"grad_scale": self._scale}

    def load_state_dict(self, state: Any) -> None:
        self._scale = float(state.get("grad_scale", 1.0))


class RegimeAdaptation(ViewsMethod):
    """Plain large batch B·M trained for M× the epochs (the BA paper's Fig. 5 baseline)."""

    name = "ra"
    Options = RAOptions

    def _describe_parts(self) -> list[str]:
        o = self.options
        return [f"batch x{o.m}, epochs x{o.m}" + (f", lr {o.lr_scaling}" if o.lr_scaling != "none" else "")]

    @classmethod
    def regime_of(cls, options: RAOptions) -> Regime:
        m = options.m
        lr_mult = {"none": 1.0, "linear": float(m), "sqrt": math.sqrt(m)}[options.lr_scaling]
        return Regime(batch_multiplier=m, epoch_multiplier=float(m), lr_multiplier=lr_mult)


def _process_mean_norms(params: list[Tensor], *grad_sets: tuple[Tensor | None, ...]) -> list[float]:
    """The L2 norm of each set of gradients of ``params`` (None: unused, zero), each first averaged over
    the processes when ``torch.distributed`` runs several: the norm of the gradient the step applies."""
    flat = torch.stack([torch.cat([(g if g is not None else torch.zeros_like(p)).detach().float().flatten()
                                   for p, g in zip(params, grads, strict=True)]) for grads in grad_sets])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)  # one call for all sets
        flat /= dist.get_world_size()
    return torch.linalg.vector_norm(flat, dim=1).tolist()


__all__ = ["BAOptions", "Baseline", "BaselineOptions", "BatchAugmentation", "RAOptions", "RegimeAdaptation"]
