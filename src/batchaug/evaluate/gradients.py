"""The ``gradients`` suite: the gradient's L2 norm and the variance of the mini-batch gradient at a
checkpoint, for several numbers of views M (the BA paper's Figs. 4 and 6: BA's gradient norm lies below
the baseline's, M = 1, and falls as M grows).

For each M, ``batches`` training batches of ``train.batch_size`` samples (the run's batches of steps
``0 .. batches-1``, each with M augmented views per sample drawn from a generator seeded by the
evaluation seed and the batch) give gradients ``g_k`` of the mean cross-entropy over their views, at
the checkpoint's weights, in training mode with the BatchNorm running statistics untouched. Reported:
``grad_norm`` (the mean of ``‖g_k‖``), ``grad_norm_std``, ``mean_grad_norm`` (``‖ḡ‖``) and
``variance`` (``mean_k ‖g_k - ḡ‖²``, the trace of the gradient's covariance over batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from batchaug.evaluate.suite import EvalData, Suite
from batchaug.schema import option

__all__ = ["GradientOptions", "GradientSuite"]


@dataclass
class GradientOptions:
    ms: list[int] = option(default_factory=lambda: [1, 2, 4, 8, 16, 32], ge=1)
    """Views per sample to compare (Fig. 4: the baseline M = 1 and BA with M in {2, 4, 8, 16, 32})."""
    batches: int = option(8, ge=2)
    """Mini-batches per M (the variance needs at least two)."""
    batch_size: int | None = option(None, ge=1)
    """Samples per batch; unset: the run's ``train.batch_size``."""


class GradientSuite(Suite):
    """Gradient statistics of the training objective for each M (runs once; modes do not apply)."""

    name = "gradients"
    Options = GradientOptions
    per_mode = False

    def run(self, data: EvalData, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
        from batchaug.data.batches import EpochBatchSampler
        from batchaug.methods import MethodContext
        from batchaug.methods.batch_augmentation import BAOptions, BatchAugmentation
        from batchaug.nn.bn_utils import frozen_bn_stats
        from batchaug.train.run import load_run_data

        run, device = self.ctx.run, self.ctx.device
        train = load_run_data(run.cfg, device)
        b = self.options.batch_size or run.cfg.train.batch_size
        sampler = EpochBatchSampler(len(train.train_images), b, self.ctx.seed)
        context = MethodContext(num_classes=len(run.data.classes), image_size=run.data.image_size, mean=run.data.mean,
                                std=run.data.std, device=device, channels_last=run.cfg.train.channels_last)
        model = run.model
        params = [p for p in model.parameters() if p.requires_grad]
        out: dict[str, Any] = {"batch_size": b, "batches": self.options.batches, "policy": run.method.view_policy()}
        was_training = model.training
        model.train()
        torch.manual_seed(self.ctx.seed)  # dropout masks, if the model has any
        try:
            with torch.enable_grad(), frozen_bn_stats(model):
                for m in self.options.ms:
                    method = BatchAugmentation(BAOptions(m=m, policy=run.method.view_policy()), context)
                    grads = []
                    for k in range(self.options.batches):
                        idx = sampler.indices(k, train.train_images.device)
                        images = train.train_images.index_select(0, idx).to(device)
                        targets = train.train_targets.index_select(0, idx).to(device)
                        g = torch.Generator(device=device).manual_seed(self.ctx.seed * 1_000_003 + k)
                        batch = method.make_batch(images, targets, g)
                        loss = method.loss(model, batch).loss
                        flat = torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                          for x, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params,
                                                          strict=True)])
                        grads.append(flat.double())
                    stack = torch.stack(grads)
                    norms = stack.norm(dim=1)
                    mean = stack.mean(0)
                    out[str(m)] = {"grad_norm": float(norms.mean()), "grad_norm_std": float(norms.std()),
                                   "mean_grad_norm": float(mean.norm()),
                                   "variance": float((stack - mean).pow(2).sum(1).mean())}
        finally:
            model.train(was_training)
        return {"default": out}
