"""Split BatchNorms (Merchant, Zoph & Cubuk, "Does Data Augmentation Benefit from Split BatchNorms?", 2020;
the auxiliary BN comes from AdvProp, Xie et al. 2020).

Every sample is seen twice per step: a weakly augmented view goes through the *main* BatchNorms, a
strongly augmented view (RandAugment, Gaussian noise, AugMix, or L∞ PGD noise) through the *auxiliary*
ones, in one forward pass over ``cat([weak, strong])``; the loss is the mean of the two cross-entropies
(plus, for a model with auxiliary classifier heads, ``aux_weight ·`` the same mean of theirs).
Evaluation uses the main BNs by default; the auxiliary BNs and α-blends are available for the
accuracy/robustness trade-off (``eval_branch``, :func:`batchaug.evaluate.splitbn.evaluate_splitbn`).

``split_bn: false`` keeps plain BatchNorms, so both views share one set of statistics: with the same
weak/strong policies this is the paper's "without split BN" ablation, and with ``weak=strong`` it is
"two augmented batches through one BN". ``shared_affine: true`` splits the statistics but shares γ/β.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.methods.base import (
    JointPredictor,
    LossOutput,
    Method,
    MethodBatch,
    MethodContext,
    Predictor,
    check_policy,
)
from batchaug.methods.views import build_view_augmenter
from batchaug.nn.bn_utils import frozen_bn_stats
from batchaug.nn.split_bn import (
    convert_split_bn,
    convert_sync_split_bn,
    route,
    split_batchnorms,
)
from batchaug.nn.wrappers import unwrap
from batchaug.schema import option

PGD = "pgd"


@dataclass
class SplitBNOptions:
    """Options of ``method.name=splitbn`` (``docs/splitbn.md`` explains the defaults)."""

    weak: Any = None
    """Policy of the main branch (any ``build_policy`` spec: ``standard``, ``cutout``, ``flip``, ``none``,
    ``augmix``, ``gaussian``, ``randaugment``...). Unset: ``policy``."""
    strong: Any = "randaugment"
    """Policy of the auxiliary branch: a ``build_policy`` spec or ``pgd`` (adversarial noise, below)."""
    weak_options: dict[str, Any] = field(default_factory=dict)
    """Options merged into ``weak`` (e.g. ``{length: 8}`` for cutout)."""
    strong_options: dict[str, Any] = field(default_factory=dict)
    """Options merged into ``strong`` (e.g. ``{num_ops: 2, magnitude: 9}``, ``{sigma: 0.1}``)."""
    policy: Any = "standard"
    """The main branch's policy under the key every method shares, so ``method.name=splitbn`` runs on a
    config written for another method; ``weak`` takes precedence."""
    pgd_eps: float = option(8 / 255, gt=0)
    """L∞ radius of ``strong: pgd`` in [0, 1] pixel units."""
    pgd_steps: int = option(7, ge=1)
    """Signed-gradient steps of the attack."""
    pgd_step_size: float = option(2 / 255, gt=0)
    """Step of the attack in [0, 1] pixel units."""
    pgd_random_start: bool = True
    """Start each attack from a uniform draw in the ε-ball."""
    split_bn: bool = True
    """Separate main/auxiliary BatchNorms; false: one BN sees both views (ablation)."""
    shared_affine: bool = False
    """Share γ/β between the branches, keep separate statistics (ablation)."""
    sync_bn: bool = False
    """Synchronize each split's batch statistics across processes under ``torchrun``."""
    eval_branch: Literal["main", "aux", "blend"] = "main"
    """Branch that validation (``predict``) uses: main BNs, auxiliary BNs, or the α-blend of their predictions."""
    eval_alpha: float = option(0.5, ge=0, le=1)
    """α of ``eval_branch: blend``: p = (1 - α)·p_main + α·p_aux."""

    def validate(self, prefix: str) -> None:
        weak = self.policy if self.weak is None else self.weak
        if weak == PGD:
            raise ConfigError(f"{prefix}.weak: 'pgd' is only available for {prefix}.strong (the attack is made "
                              f"through the auxiliary BatchNorms)")
        check_policy(_spec(weak, self.weak_options), f"{prefix}.weak" if self.weak is not None else f"{prefix}.policy")
        if self.strong == PGD:
            if self.strong_options:
                raise ConfigError(f"{prefix}.strong_options: strong=pgd takes {prefix}.pgd_eps, pgd_steps and "
                                  f"pgd_step_size, not {sorted(self.strong_options)}")
            if self.pgd_eps > 1:
                raise ConfigError(f"{prefix}.pgd_eps: {self.pgd_eps} is in [0, 1] pixel units (e.g. 8/255 = "
                                  f"0.0314); values above 1 are meaningless")
        else:
            check_policy(_spec(self.strong, self.strong_options), f"{prefix}.strong")
        if not self.split_bn:
            for key, bad in (("shared_affine", self.shared_affine), ("sync_bn", self.sync_bn),
                             ("eval_branch", self.eval_branch != "main")):
                if bad:
                    raise ConfigError(f"{prefix}.{key}: needs {prefix}.split_bn=true (without split BNs there is "
                                      f"one set of BatchNorms)")


def _spec(policy: Any, options: Mapping[str, Any]) -> Any:
    """A build_policy spec: ``policy`` with ``options`` merged in (a name becomes ``{name, **options}``)."""
    if not options:
        return policy
    if isinstance(policy, str):
        return {"name": policy, **options}
    if isinstance(policy, Mapping):
        return {**policy, **options}
    raise ConfigError(f"policy options {dict(options)} need a policy name or mapping, got {policy!r}")


class SplitBNMethod(Method):
    """Weak views through the main BatchNorms, strong views through the auxiliary ones; mean of the losses."""

    name = "splitbn"
    Options = SplitBNOptions

    def __init__(self, options: SplitBNOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        o = options
        weak = o.policy if o.weak is None else o.weak
        self.pgd = o.strong == PGD
        self.weak_views = build_view_augmenter(_spec(weak, o.weak_options), 1, context)
        self.strong_views = None if self.pgd else build_view_augmenter(_spec(o.strong, o.strong_options), 1, context)

    @property
    def views_per_sample(self) -> int:
        return 2

    def describe(self) -> str:
        o = self.options
        strong = "pgd" if self.pgd else _spec(o.strong, o.strong_options)
        bn = "split BN" if o.split_bn else "one BN (ablation)"
        return f"splitbn (weak {self.view_policy()}, strong {strong}, {bn})"

    def view_policy(self) -> Any:
        """The main branch's (weak) policy: test-time views are clean-like views."""
        o = self.options
        return _spec(o.policy if o.weak is None else o.weak, o.weak_options)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Swap every BatchNorm for a 2-way split BatchNorm (unless ``split_bn`` is off)."""
        if not self.options.split_bn:
            return model
        model = convert_split_bn(model, num_splits=2, shared_affine=self.options.shared_affine)
        if not split_batchnorms(model):
            raise ConfigError("method.split_bn: the model has no BatchNorm layers to split; use a model with "
                              "BatchNorm or set method.split_bn=false")
        if self.options.sync_bn:
            convert_sync_split_bn(model)
        return model

    # ------------------------------------------------------------------------------ one step
    def make_batch(self, images: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> MethodBatch:
        """``weak`` and ``strong`` views (B, C, H, W) of the same samples; for PGD, ``pgd_init`` holds the
        attack's random start (uniform in [-1, 1], scaled by ε in :meth:`loss`) drawn from ``generator``."""
        weak = self.weak_views(images, generator)
        tensors = {"weak": weak, "targets": targets}
        if self.pgd:
            if self.options.pgd_random_start:
                u = torch.rand(weak.shape, generator=generator, device=weak.device, dtype=weak.dtype)
                tensors["pgd_init"] = u.mul_(2).sub_(1)
        else:
            assert self.strong_views is not None  # built whenever strong is a policy
            tensors["strong"] = self.strong_views(images, generator)
        return MethodBatch(tensors, int(images.shape[0]))

    def adversarial_views(self, model: nn.Module, images: Tensor, targets: Tensor,
                          init: Tensor | None = None) -> Tensor:
        """PGD views of normalized ``images``, attacked through the auxiliary BNs (the only BNs without
        ``split_bn``) in the model's current mode, leaving every BN running statistic untouched."""
        from batchaug.methods.pgd import pgd_attack

        o = self.options
        net = unwrap(model)  # the attack needs no gradient sync
        with frozen_bn_stats(net), (route(net, "aux") if o.split_bn else contextlib.nullcontext()):
            return pgd_attack(net, images, targets, eps=o.pgd_eps, steps=o.pgd_steps, step_size=o.pgd_step_size,
                              mean=self.context.mean, std=self.context.std, random_start=False, init=init)

    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        weak, y = batch["weak"], batch["targets"]
        if self.pgd:
            strong = self.adversarial_views(model, weak, y, batch.tensors.get("pgd_init"))
        else:
            strong = batch["strong"]
        x = torch.cat([weak, strong])
        with route(model, "split") if self.options.split_bn else contextlib.nullcontext():
            out = model(x)
        b = weak.shape[0]

        def head_objective(head_logits: Tensor) -> Tensor:
            # an auxiliary classifier head sees both halves too: the same mean of the two branches' losses
            return 0.5 * (self.cross_entropy(head_logits[:b], y) + self.cross_entropy(head_logits[b:], y))

        logits, head_loss, head_metrics = self.split_auxiliary(out, head_objective)
        main, aux = logits[:b], logits[b:]
        loss_main = self.cross_entropy(main, y)
        loss_aux = self.cross_entropy(aux, y)
        metrics: dict[str, float | Tensor] = {
            "loss_main": loss_main.detach(),
            "loss_aux": loss_aux.detach(),
            "acc_aux": (aux.detach().argmax(-1) == y).float().mean(),
            **head_metrics,
        }
        return LossOutput(0.5 * (loss_main + loss_aux) + head_loss, main, y, metrics)

    # ------------------------------------------------------------------------------ evaluation
    def branch_logits(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """(main, aux) logits of normalized ``x`` in one pass over ``cat([x, x])`` (eval-mode statistics)."""
        if not self.options.split_bn:
            raise ConfigError("method.split_bn is false: the model has a single set of BatchNorms")
        with route(model, "split"):
            logits = model(torch.cat([x, x]))
        return logits[:x.shape[0]], logits[x.shape[0]:]

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        """Logits of the branch ``eval_branch`` names; for ``blend``, log of the α-blended probabilities."""
        branch = self.options.eval_branch
        return self.predict_branch(model, images, branch, self.options.eval_alpha)

    def predict_branch(self, model: nn.Module, images: Tensor, branch: str, alpha: float = 0.5) -> Tensor:
        """Eval logits of ``branch`` ("main", "aux" or "blend" with ``alpha``) for uint8 (or [0, 1]) images."""
        x = self.normalize(images)
        if not self.options.split_bn:
            if branch != "main":
                raise ConfigError(f"eval branch {branch!r} needs method.split_bn=true")
            return model(x)
        if branch in ("main", "aux"):
            with route(model, branch):
                return model(x)
        if branch != "blend":
            raise ConfigError(f"eval branch must be 'main', 'aux' or 'blend', got {branch!r}")
        main, aux = self.branch_logits(model, x)
        return blend_log_probs(main, aux, alpha)

    #: the α blends ``--modes all`` runs (any α in [0, 1] can be asked for by name)
    ALL_MODE_ALPHAS = (0.25, 0.5, 0.75)

    def eval_modes(self) -> dict[str, Predictor]:
        """``default`` (the ``eval_branch`` prediction), ``main``, ``aux`` and the blends
        ``alpha=0.25/0.5/0.75`` (p = (1 - α)·p_main + α·p_aux); without split BNs only ``default``."""
        modes: dict[str, Predictor] = {"default": self.predict}
        if not self.options.split_bn:
            return modes
        modes["main"] = lambda model, images: self.predict_branch(model, images, "main")
        modes["aux"] = lambda model, images: self.predict_branch(model, images, "aux")
        for alpha in self.ALL_MODE_ALPHAS:
            modes[f"alpha={alpha:g}"] = self._blend_mode(alpha)
        return modes

    def eval_mode_patterns(self) -> dict[str, str]:
        if not self.options.split_bn:
            return {}
        return {"alpha=<a>": "(1 - a)·p_main + a·p_aux, two branches in one pass",
                "single_pass=<a>": "one pass with every BN's statistics and affine interpolated by a",
                "single_pass_affine=<a>": "one pass with every BN's folded transform interpolated by a"}

    def parse_eval_mode(self, name: str) -> Predictor | None:
        kind, sep, value = name.partition("=")
        if not sep or kind not in ("alpha", "single_pass", "single_pass_affine") or not self.options.split_bn:
            return None
        try:
            alpha = float(value)
        except ValueError:
            raise ConfigError(f"--modes: {name!r}: {value!r} is not a number in [0, 1]") from None
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"--modes: {name!r}: the blend weight must be in [0, 1]")
        if kind == "alpha":
            return self._blend_mode(alpha)
        route_kind = "blend" if kind == "single_pass" else "blend_affine"

        def single_pass(model: nn.Module, images: Tensor) -> Tensor:
            with route(model, (route_kind, alpha)):
                return model(self.normalize(images))

        return single_pass

    def joint_predictor(self, names: Sequence[str]) -> JointPredictor:
        """``main``, ``aux``, every ``alpha=<a>`` and ``default`` come from one pass over ``cat([x, x])``
        (the two branches); the single-pass blends take a pass each."""
        names = list(names)
        if not self.options.split_bn:
            return super().joint_predictor(names)
        shared: dict[str, float | str] = {}
        for name in names:
            kind, sep, value = name.partition("=")
            if name in ("main", "aux"):
                shared[name] = name
            elif name == "default":
                o = self.options
                shared[name] = o.eval_alpha if o.eval_branch == "blend" else o.eval_branch
            elif kind == "alpha" and sep:
                self.eval_mode(name)  # validates the weight
                shared[name] = float(value)
        rest = super().joint_predictor([n for n in names if n not in shared]) if len(shared) < len(names) else None

        def predict(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
            out: dict[str, Tensor] = {}
            if shared:
                main, aux = self.branch_logits(model, self.normalize(images))
                for name, how in shared.items():
                    out[name] = main if how == "main" else aux if how == "aux" else blend_log_probs(main, aux, how)
            if rest is not None:
                out.update(rest(model, images))
            return {name: out[name] for name in names}

        return predict

    def _blend_mode(self, alpha: float) -> Predictor:
        return lambda model, images: self.predict_branch(model, images, "blend", alpha)


def blend_log_probs(main_logits: Tensor, aux_logits: Tensor, alpha: float) -> Tensor:
    """log((1 - α)·softmax(main) + α·softmax(aux)), computed stably; usable as logits."""
    lp_main = torch.log_softmax(main_logits.float(), -1)
    lp_aux = torch.log_softmax(aux_logits.float(), -1)
    if alpha <= 0.0:
        return lp_main
    if alpha >= 1.0:
        return lp_aux
    return torch.logaddexp(lp_main + math.log1p(-alpha), lp_aux + math.log(alpha))


__all__ = ["SplitBNMethod", "SplitBNOptions", "blend_log_probs"]
