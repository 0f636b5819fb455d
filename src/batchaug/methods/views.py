"""The views method: the part that baseline, Batch Augmentation and regime adaptation are made of.

:class:`ViewsMethod` turns a uint8 batch into ``views_per_sample`` augmented views per sample (one
:class:`~batchaug.augment.ViewAugmenter`), optionally passes them through a batch transform
(``method.mix``: MixUp or CutMix, :mod:`batchaug.methods.mixing`) and trains on the cross-entropy
over the views (soft targets when mixed). A method that differs only in how many views it makes,
in its regime or in its loss subclasses it and overrides that one thing (``docs/extending.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.methods.base import (
    LossOutput,
    Method,
    MethodBatch,
    MethodContext,
    check_policy,
)
from batchaug.methods.mixing import (
    BATCH_TRANSFORMS,
    BatchTransform,
    build_batch_transform,
)
from batchaug.schema import option

__all__ = ["AugmentOptions", "ViewsMethod", "ViewsOptions", "build_view_augmenter"]


def build_view_augmenter(policy: Any, m: int, context: MethodContext) -> Any:
    """The :class:`~batchaug.augment.ViewAugmenter` of a method: ``policy`` (any ``build_policy``
    spec, its size-dependent defaults resolved for the run's images), ``m`` views per sample,
    normalized with the run's statistics, in the run's memory format."""
    from batchaug.augment import ViewAugmenter, build_policy

    return ViewAugmenter(build_policy(policy, image_size=context.image_size), m=m, mean=context.mean,
                         std=context.std, channels_last=context.channels_last)


@dataclass
class AugmentOptions:
    """The option every image method shares: the input augmentation."""

    policy: Any = "standard"
    """Augmentation policy: a name (``batchaug.augment.POLICY_NAMES``), ``a+b``, or a mapping with ``name``."""

    def validate(self, prefix: str) -> None:
        check_policy(self.policy, f"{prefix}.policy")


@dataclass
class ViewsOptions(AugmentOptions):
    """Options of every views method: the policy and the batch transform."""

    mix: str = "none"
    """Batch transform after augmentation: ``none``, ``mixup`` or ``cutmix`` (per view, soft targets)."""
    mix_alpha: float = option(1.0, gt=0)
    """Concentration α of the mixing weight λ ~ Beta(α, α)."""
    mix_prob: float = option(1.0, ge=0, le=1)
    """Probability that a view is mixed."""

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        allowed = ("none", *BATCH_TRANSFORMS)
        if self.mix not in allowed:
            raise ConfigError(f"{prefix}.mix: {self.mix!r} is not allowed; choose one of "
                              + ", ".join(repr(a) for a in allowed))


class ViewsMethod(Method):
    """``views_per_sample`` augmented views of every sample, a batch transform, cross-entropy over the views.

    Batch tensors: ``inputs`` (the views), ``targets`` (int64 label of each view) and, when a batch
    transform mixes the views, ``soft_targets`` (``(N, K)`` probabilities the loss uses). The auxiliary
    heads of a model that has them are trained on the same targets (``Method.split_auxiliary``).
    """

    Options = ViewsOptions

    def __init__(self, options: Any, context: MethodContext) -> None:
        super().__init__(options, context)
        self.views_spread = False
        self.augmenter = build_view_augmenter(options.policy, self.views_per_sample, context)
        self.transform: BatchTransform | None = build_batch_transform(options.mix, options.mix_alpha,
                                                                      options.mix_prob)

    @property
    def sample_views(self) -> int:
        """The method's views of each sample (BA's M); 1 for the baseline and RA."""
        return 1

    @property
    def views_per_sample(self) -> int:
        """Views made of each input row: :attr:`sample_views`, or 1 once the views are spread over the
        processes (:meth:`spread_views`: the rows are then the repeated samples)."""
        return 1 if self.views_spread else self.sample_views

    def spread_views(self) -> None:
        """One view per input row from now on (``train.view_placement: spread``)."""
        self.views_spread = True
        self.augmenter = build_view_augmenter(self.options.policy, 1, self.context)

    def describe(self) -> str:
        parts = [f"policy {self.options.policy}"]
        if self.transform is not None:
            parts.append(f"{self.options.mix} α={self.options.mix_alpha:g}"
                         + (f" p={self.options.mix_prob:g}" if self.options.mix_prob < 1 else ""))
        return f"{self.name} ({', '.join(self._describe_parts() + parts)})"

    def _describe_parts(self) -> list[str]:
        """What a subclass adds to :meth:`describe` before the policy."""
        return []

    def make_batch(self, images: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> MethodBatch:
        from batchaug.augment import repeat_targets

        m = self.views_per_sample
        views = self.augmenter(images, generator)
        view_targets = repeat_targets(targets, m)
        tensors = {"inputs": views, "targets": view_targets}
        if self.transform is not None:
            tensors["inputs"], tensors["soft_targets"] = self.transform(views, view_targets, self.context.num_classes,
                                                                        m, generator)
        return MethodBatch(tensors, images.shape[0])

    def objective_targets(self, batch: MethodBatch) -> Tensor:
        """What the loss compares the logits with: soft targets when mixed, else the labels."""
        return batch.tensors.get("soft_targets", batch["targets"])

    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        target = self.objective_targets(batch)

        def objective(logits: Tensor) -> Tensor:
            return self.cross_entropy(logits, target)

        logits, aux_loss, metrics = self.split_auxiliary(model(batch["inputs"]), objective)
        return LossOutput(objective(logits) + aux_loss, logits, batch["targets"], metrics)
