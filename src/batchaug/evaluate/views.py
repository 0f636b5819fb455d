"""The ``views`` suite: accuracy of averaging, and of the majority vote of, M augmented test-time views
(the BA paper's evaluation with the training augmentation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from batchaug.errors import ConfigError
from batchaug.evaluate.clean import majority_vote
from batchaug.evaluate.suite import Model, Suite
from batchaug.schema import option

__all__ = ["ViewsOptions", "ViewsSuite"]


@dataclass
class ViewsOptions:
    m: int = option(8, ge=1)
    """Test-time views per image."""
    policy: Any = None
    """Their augmentation policy (any ``build_policy`` spec); unset: the policy the run trained with."""


class ViewsSuite(Suite):
    """Mean-softmax and majority-vote accuracy over ``m`` augmented views of every image (each view its own
    draw, from a generator seeded by the evaluation seed and the batch's first index), and the accuracy of
    a single view."""

    name = "views"
    Options = ViewsOptions

    def check(self) -> None:
        from batchaug.augment import build_policy

        spec = self.policy_spec()
        try:
            self.policy = build_policy(spec, image_size=self.ctx.run.data.image_size)
        except ConfigError as exc:
            raise ConfigError(f"views.policy: {exc}") from exc

    def policy_spec(self) -> Any:
        return self.options.policy if self.options.policy is not None else self.ctx.method.view_policy()

    def start(self) -> Tensor:
        return torch.zeros(4, dtype=torch.float64, device=self.ctx.device)  # mean, vote, single, n

    def update(self, accs: Mapping[str, Tensor], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        m = self.options.m
        generator = torch.Generator(device=images.device).manual_seed(self.ctx.seed * 1_000_003 + int(index[0]))
        rows = torch.arange(images.shape[0] * m, device=images.device) // m
        views = self.policy(images.index_select(0, rows), generator)  # uint8, sample-major
        n = torch.tensor(targets.numel(), device=targets.device)
        for mode, logits in predict(views).items():
            logits = logits.view(images.shape[0], m, -1)
            accs[mode] += torch.stack([(logits.softmax(-1).mean(1).argmax(-1) == targets).sum(),
                                       (majority_vote(logits) == targets).sum(),
                                       (logits[:, 0].argmax(-1) == targets).sum(), n]).double()

    def result(self, acc: Tensor) -> dict[str, Any]:
        mean, vote, single, n = acc.tolist()
        n = max(n, 1)
        return {"views": self.options.m, "policy": self.policy_spec(), "mean_acc": mean / n, "vote_acc": vote / n,
                "single_view_acc": single / n, "num_images": int(n)}
