"""The ``affinity`` suite: how far each augmentation policy moves the data from what the model knows.

Affinity (Gontijo-Lopes et al. 2020, "Tradeoffs in data augmentation: an empirical study"; the
Split-BN paper's Table 1, first column) is the accuracy on augmented validation images minus the
clean accuracy, for a model trained *without* augmentation: evaluate such a run. Diversity is the
final training loss of a run trained *with* the augmentation over that of the clean run: with
``--reference RUN`` (a run trained with a policy), it is ``reference's final train_loss / this run's
final train_loss`` (the last evaluation lines of their ``metrics.jsonl``), reported under the
reference's training policy (which is then also measured for Affinity).

Augmented images are drawn per batch from a generator seeded by the evaluation seed and the batch's
first split index: the same images for the same ``--limit`` and batch size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from batchaug.errors import ConfigError
from batchaug.evaluate.suite import Model, Suite

__all__ = ["AffinityOptions", "AffinitySuite", "policy_key"]


def policy_key(spec: Any) -> str:
    """A policy spec as a result key: the name as written, a mapping or list as compact JSON."""
    return spec if isinstance(spec, str) else json.dumps(spec, sort_keys=True, separators=(",", ":"))


@dataclass
class AffinityOptions:
    policies: list[Any] = field(default_factory=lambda: ["cutout", "randaugment"])
    """Policies to measure (any ``build_policy`` spec)."""
    reference: str | None = None
    """A run directory trained with augmentation: adds its policy's Diversity."""


class AffinitySuite(Suite):
    """``{policy: {"affinity", "augmented_acc", "clean_acc", "diversity", "num_images"}}`` per mode."""

    name = "affinity"
    Options = AffinityOptions

    def check(self) -> None:
        from batchaug.augment import build_policy

        specs = list(self.options.policies)
        self.diversity: dict[str, float] = {}
        if self.options.reference is not None:
            ref_spec, diversity = self._diversity(Path(self.options.reference))
            if policy_key(ref_spec) not in map(policy_key, specs):
                specs.append(ref_spec)
            self.diversity[policy_key(ref_spec)] = diversity
        if not specs:
            raise ConfigError("affinity.policies: give at least one policy, e.g. --policies cutout,randaugment")
        self.policies = {}
        for spec in specs:
            try:
                self.policies[policy_key(spec)] = build_policy(spec, image_size=self.ctx.run.data.image_size)
            except ConfigError as exc:
                raise ConfigError(f"affinity.policies: {exc}") from exc

    def _diversity(self, reference: Path) -> tuple[Any, float]:
        from batchaug.methods import MethodContext
        from batchaug.train.metrics_log import read_metrics
        from batchaug.train.run import load_run_config

        ref_cfg = load_run_config(reference)
        data = self.ctx.run.data
        ref_method = ref_cfg.method.build(MethodContext(num_classes=len(data.classes), image_size=data.image_size,
                                                        mean=data.mean, std=data.std))
        losses = [_last_train_loss(read_metrics(d)) for d in (reference, self.ctx.run.run_dir)]
        if None in losses:
            raise ConfigError(f"affinity.reference: {reference} and {self.ctx.run.run_dir} both need evaluation lines "
                              "with a train_loss in metrics.jsonl for Diversity")
        return ref_method.view_policy(), losses[0] / losses[1]

    def start(self) -> Tensor:
        return torch.zeros(len(self.policies) + 2, dtype=torch.float64, device=self.ctx.device)  # clean, policies.., n

    def update(self, accs: Mapping[str, Tensor], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        counts: dict[str, list[Tensor]] = {mode: [] for mode in accs}
        inputs = [images]
        for k, policy in enumerate(self.policies.values()):
            g = torch.Generator(device=images.device).manual_seed((self.ctx.seed * 1_000_003 + int(index[0])) * 31 + k)
            inputs.append(policy(images, g))
        for x in inputs:
            for mode, logits in predict(x).items():
                counts[mode].append((logits.argmax(-1) == targets).sum())
        n = torch.tensor(targets.numel(), device=targets.device)
        for mode, acc in accs.items():
            acc += torch.stack([*counts[mode], n]).double()

    def result(self, acc: Tensor) -> dict[str, Any]:
        values = acc.tolist()
        n = max(values[-1], 1)
        clean = values[0] / n
        out = {}
        for k, key in enumerate(self.policies):
            augmented = values[1 + k] / n
            out[key] = {"affinity": augmented - clean, "augmented_acc": augmented, "clean_acc": clean,
                        "diversity": self.diversity.get(key), "num_images": int(n)}
        return out


def _last_train_loss(records: list[dict[str, Any]]) -> float | None:
    losses = [r.get("train_loss") for r in records if r.get("train_loss") is not None]
    return float(losses[-1]) if losses else None
