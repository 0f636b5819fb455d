"""Split-BN evaluation: main BN, auxiliary BN, α-blended predictions and their single-pass counterparts
(``batchaug eval RUN --alphas 0,0.5,1`` -> ``eval/splitbn.json``).

Blended prediction (Merchant et al. 2020, Fig. 3): ``p = (1 - α)·p_main + α·p_aux``, two forward passes'
worth of work (done here as one pass over ``cat([x, x])``). The paper leaves open whether one forward
pass can do the same; two single-pass candidates are measured against it:

``single_pass``
    every BN uses γ, β, μ, σ² interpolated with α (route ``("blend", α)``);
``single_pass_affine``
    every BN uses its folded eval-mode transform ``x·scale + shift`` interpolated with α (route
    ``("blend_affine", α)``), i.e. at every layer the blend of the two BNs' outputs for the same input.

Both can be exported as a plain-BN model (:func:`batchaug.nn.export_blend`), so they cost nothing at
inference. Their ``*_agreement`` is the fraction of images whose predicted class equals the blended
prediction's, and ``*_max_prob_diff`` the mean over images of the largest absolute difference between
their class probabilities and the blended ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.evaluate.suite import EvalData, Suite, default_result
from batchaug.methods.splitbn import SplitBNMethod, blend_log_probs
from batchaug.nn.split_bn import route, split_batchnorms

__all__ = ["SplitBNSuite", "alpha_keys", "evaluate_splitbn"]


def alpha_keys(alphas: Sequence[float | str]) -> list[tuple[str, float]]:
    out = []
    for a in alphas:
        key = a if isinstance(a, str) else format(float(a), "g")
        try:
            value = float(a)
        except ValueError:
            raise ConfigError(f"alphas: {a!r} is not a number; give e.g. 0,0.5,1") from None
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"alphas: {a} is outside [0, 1]")
        out.append((key, value))
    if not out:
        raise ConfigError("alphas: give at least one value, e.g. 0,0.5,1")
    return out


@torch.no_grad()
def evaluate_splitbn(model: nn.Module, method: SplitBNMethod, images: Tensor, targets: Tensor,
                     alphas: Sequence[float | str], *, batch_size: int = 500) -> dict[str, Any]:
    """Accuracies (fractions 0-1) of a split-BN ``model`` on uint8 ``images`` for every α in ``alphas``.

    Returns ``main``, ``aux``, ``alphas`` (blended predictions, keyed by the α strings given),
    ``single_pass`` and ``single_pass_affine`` (one-pass blends) with their ``*_agreement`` and
    ``*_max_prob_diff`` against the blended predictions, ``branch_agreement`` (main vs aux predicted
    class) and ``num_images``. The model is evaluated in eval mode and left in the mode it was in.
    """
    if not isinstance(method, SplitBNMethod):
        raise TypeError(f"evaluate_splitbn needs the split-BN method, got {type(method).__name__}")
    if not method.options.split_bn or not split_batchnorms(model):
        raise ConfigError("evaluate_splitbn: the run has no split BatchNorms (method.split_bn=false); only its "
                          "plain accuracy can be evaluated")
    keyed = alpha_keys(alphas)
    if batch_size < 1:
        raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
    if images.shape[0] != targets.shape[0]:
        raise ValueError(f"evaluate_splitbn: {images.shape[0]} images but {targets.shape[0]} targets")
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else images.device
    n = int(images.shape[0])
    # Sums stay on the device (float64, so they equal the host-side sums) and are read once at the end.
    def zeros() -> dict[str, Tensor]:
        return {key: torch.zeros((), dtype=torch.float64, device=device) for key, _ in keyed}

    blended, single, affine = zeros(), zeros(), zeros()
    agree, agree_affine, diff, diff_affine = zeros(), zeros(), zeros(), zeros()
    main_correct, aux_correct, branch_agree = (torch.zeros((), dtype=torch.float64, device=device)
                                               for _ in range(3))
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, n, batch_size):
            x = method.normalize(images[lo:lo + batch_size].to(device))
            y = targets[lo:lo + batch_size].to(device)
            main, aux = method.branch_logits(model, x)
            main_correct += (main.argmax(-1) == y).sum()
            aux_correct += (aux.argmax(-1) == y).sum()
            branch_agree += (main.argmax(-1) == aux.argmax(-1)).sum()
            for key, alpha in keyed:
                log_p = blend_log_probs(main, aux, alpha)
                pred, prob = log_p.argmax(-1), log_p.exp()
                blended[key] += (pred == y).sum()
                for kind, acc, agr, dif in (("blend", single, agree, diff),
                                            ("blend_affine", affine, agree_affine, diff_affine)):
                    with route(model, (kind, alpha)):
                        logits = model(x).float()
                    acc[key] += (logits.argmax(-1) == y).sum()
                    agr[key] += (logits.argmax(-1) == pred).sum()
                    dif[key] += (logits.softmax(-1) - prob).abs().amax(-1).sum()
    finally:
        model.train(was_training)

    def frac(d: dict[str, Tensor]) -> dict[str, float]:
        return {k: float(v) / max(n, 1) for k, v in d.items()}

    return {
        "main": float(main_correct) / max(n, 1),
        "aux": float(aux_correct) / max(n, 1),
        "alphas": frac(blended),
        "single_pass": frac(single),
        "single_pass_agreement": frac(agree),
        "single_pass_max_prob_diff": frac(diff),
        "single_pass_affine": frac(affine),
        "single_pass_affine_agreement": frac(agree_affine),
        "single_pass_affine_max_prob_diff": frac(diff_affine),
        "branch_agreement": float(branch_agree) / max(n, 1),
        "num_images": n,
    }


@dataclass
class SplitBNOptions:
    alphas: list[str] = field(default_factory=lambda: ["0", "0.5", "1"])
    """Blend weights α of the auxiliary BN's predictions (strings as given, the keys of the result)."""

    def validate(self, prefix: str) -> None:
        try:
            alpha_keys(self.alphas)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}.{exc}") from None


class SplitBNSuite(Suite):
    """``eval/splitbn.json``: :func:`evaluate_splitbn` (main, aux, α-blends, the single-pass blends and
    their agreement) for runs with split BatchNorms. The same predictions are the ``main``/``aux``/
    ``alpha=<a>``/``single_pass=<a>`` modes of any other suite."""

    name = "splitbn"
    Options = SplitBNOptions
    per_mode = False

    def check(self) -> None:
        method = self.ctx.method
        if not isinstance(method, SplitBNMethod) or not method.options.split_bn:
            raise ConfigError(f"suite splitbn (--alphas) needs a split-BN run; method {self.ctx.run.cfg.method.name!r} "
                              "has no split BatchNorms")

    def top_level(self, results: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
        """The whole report at the top level too, as the file had it before suites had modes."""
        return dict(default_result(results[self.name]))

    def run(self, data: EvalData, modes: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {"default": evaluate_splitbn(self.ctx.model, self.ctx.method, data.images, data.targets,
                                            self.options.alphas, batch_size=self.ctx.batch_size)}
