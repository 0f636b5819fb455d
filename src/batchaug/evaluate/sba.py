"""SBA inference: accuracy of the raw prediction, of the mean and of the majority vote of the raw and the
M virtual predictions made at an eligible layer (``batchaug eval RUN --sba-vote`` -> ``eval/sba.json``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.evaluate.clean import majority_vote
from batchaug.evaluate.suite import EvalData, Suite, default_result
from batchaug.methods.sba import StochasticBatchAugmentation

__all__ = ["SBASuite", "evaluate_sba"]


@torch.no_grad()
def evaluate_sba(model: nn.Module, method: StochasticBatchAugmentation, images: Tensor, targets: Tensor, *,
                 batch_size: int = 500, layer: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Plain, mean and vote accuracy (fractions 0-1) of an SBA-trained ``model`` on uint8 ``images``.

    One pass per batch gives all three: in eval mode the raw rows of an augmented pass are the plain
    prediction. The virtual copies are made at ``layer`` (default: the method's ``eval_layer``) with a
    generator seeded by ``seed``, so the numbers are reproducible. Also reported: ``virtual_acc``, the
    mean accuracy of a single virtual prediction (how much the noise alone costs).
    """
    if not isinstance(method, StochasticBatchAugmentation):
        raise TypeError(f"evaluate_sba needs the SBA method, got {type(method).__name__}")
    if method.latent is None:
        method.prepare_model(model)
    layer = layer or method.eval_layer
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=device).manual_seed(seed)
    n = int(images.shape[0])
    # Sums stay on the device (float64, equal to host-side sums) and are read once at the end.
    plain, mean, vote, virtual_correct = torch.zeros(4, dtype=torch.float64, device=device).unbind()
    try:
        for lo in range(0, n, batch_size):
            x = method.normalize(images[lo:lo + batch_size].to(device))
            y = targets[lo:lo + batch_size].to(device)
            raw, virtual = method.virtual_predictions(model, x, layer=layer, generator=generator)
            every = torch.cat([raw.unsqueeze(1), virtual], 1).float()  # (b, 1+M, K)
            plain += (raw.argmax(-1) == y).sum()
            mean += (every.softmax(-1).mean(1).argmax(-1) == y).sum()
            vote += (majority_vote(every) == y).sum()
            virtual_correct += (virtual.argmax(-1) == y[:, None]).float().mean(1).sum()
    finally:
        model.train(was_training)
    o = method.options
    return {
        "plain_acc": float(plain) / n, "mean_acc": float(mean) / n, "vote_acc": float(vote) / n,
        "virtual_acc": float(virtual_correct) / n,
        "m": method.m, "gauss_copies": o.num_gauss, "dropout_copies": o.num_dropout, "sigma": o.sigma,
        "tau": o.clip, "dropout_p": o.dropout_p, "layer": layer, "seed": seed, "num_images": n,
    }


class SBASuite(Suite):
    """``eval/sba.json``: :func:`evaluate_sba` (plain / mean / vote / single-virtual accuracy and the
    virtual-sample settings) for runs whose method makes virtual predictions. The same accuracies are
    the ``plain``/``mean``/``vote`` modes of any other suite."""

    name = "sba"
    per_mode = False

    def check(self) -> None:
        if not isinstance(self.ctx.method, StochasticBatchAugmentation):
            raise ConfigError(f"suite sba (--sba-vote) needs an SBA run; {self.ctx.run.cfg.method.name!r} makes no "
                              "virtual predictions")

    def top_level(self, results: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
        """The whole report at the top level too, as the file had it before suites had modes."""
        return dict(default_result(results[self.name]))

    def run(self, data: EvalData, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {"default": evaluate_sba(self.ctx.model, self.ctx.method, data.images, data.targets,
                                        batch_size=self.ctx.batch_size, seed=self.ctx.seed)}
