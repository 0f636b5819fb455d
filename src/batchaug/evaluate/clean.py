"""Clean accuracy (the ``clean`` suite) and the helpers of test-time views: averaging and majority vote."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from batchaug.evaluate.suite import Model, Suite, default_result


@torch.no_grad()
def evaluate_clean(predict: Callable[[Tensor], Tensor], images: Tensor, targets: Tensor, *,
                   batch_size: int = 500, device: torch.device | None = None) -> dict[str, float]:
    """Top-1/top-5 accuracy and mean cross-entropy of ``predict`` (uint8 images -> logits)."""
    device = device or images.device
    n = images.shape[0]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top-1, top-5: one sync at the end
    for lo in range(0, n, batch_size):
        x = images[lo:lo + batch_size].to(device)
        y = targets[lo:lo + batch_size].to(device)
        logits = predict(x).float()
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum"), (top[:, 0] == y).sum(),
                             (top == y[:, None]).any(-1).sum()]).double()
    loss, top1, top5 = sums.tolist()
    return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n, "num_images": n}


def majority_vote(view_logits: Tensor) -> Tensor:
    """Per-sample class chosen by most views (``view_logits``: (N, M, K)); ties go to the class with
    the highest mean probability among the tied ones."""
    n, m, k = view_logits.shape
    votes = F.one_hot(view_logits.argmax(-1), k).sum(1).float()  # (N, K)
    tie_break = view_logits.float().softmax(-1).mean(1) / (m + 1)  # < 1 vote, only separates ties
    return (votes + tie_break).argmax(-1)


@torch.no_grad()
def evaluate_views(model: Callable[[Tensor], Tensor], augment: Callable[[Tensor, torch.Generator], Tensor],
                   m: int, images: Tensor, targets: Tensor, *, batch_size: int = 500,
                   generator: torch.Generator | None = None, device: torch.device | None = None) -> dict[str, float]:
    """Accuracy of averaging the softmax of ``m`` augmented views, and of their majority vote.

    ``augment`` maps uint8 images (n, C, H, W) to normalized views (n·m, C, H, W), sample-major
    (a :class:`batchaug.augment.ViewAugmenter`).
    """
    device = device or images.device
    n = images.shape[0]
    per = max(1, batch_size // m)
    correct = torch.zeros(3, dtype=torch.int64, device=device)  # mean, vote, single view
    for lo in range(0, n, per):
        x = images[lo:lo + per].to(device)
        y = targets[lo:lo + per].to(device)
        logits = model(augment(x, generator)).float().view(x.shape[0], m, -1)
        correct += torch.stack([(logits.softmax(-1).mean(1).argmax(-1) == y).sum(),
                                (majority_vote(logits) == y).sum(), (logits[:, 0].argmax(-1) == y).sum()])
    mean_correct, vote_correct, single_correct = correct.tolist()
    return {"views": m, "mean_acc": mean_correct / n, "vote_acc": vote_correct / n,
            "single_view_acc": single_correct / n, "num_images": n}


class CleanSuite(Suite):
    """Top-1/top-5 accuracy and mean cross-entropy on the evaluation images."""

    name = "clean"

    def start(self) -> Tensor:
        return torch.zeros(4, dtype=torch.float64, device=self.ctx.device)  # loss, top-1, top-5, n

    def update(self, accs: Mapping[str, Tensor], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        n = torch.tensor(targets.numel(), device=targets.device)
        for mode, logits in predict(images).items():
            top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
            accs[mode] += torch.stack([F.cross_entropy(logits, targets, reduction="sum"), (top[:, 0] == targets).sum(),
                                       (top == targets[:, None]).any(-1).sum(), n]).double()

    def top_level(self, results: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
        """clean.json's keys from before modes: the default mode's top1/top5/loss, and with the views
        suite (``--views M``) its result as ``test_time_views``."""
        first = default_result(results[self.name])
        flat = {k: first[k] for k in ("top1", "top5", "loss", "num_images")}
        if "views" in results:
            flat["test_time_views"] = default_result(results["views"])
        return flat

    def result(self, acc: Tensor) -> dict[str, Any]:
        loss, top1, top5, n = acc.tolist()
        n = max(n, 1)
        return {"top1": top1 / n, "top5": top5 / n, "loss": loss / n, "error": 1 - top1 / n, "num_images": int(n)}
