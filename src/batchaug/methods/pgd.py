"""L∞ projected gradient descent (PGD, Madry et al. 2018): adversarial views for the auxiliary BatchNorm.

Input domain: the attack works on the tensors the model takes. Pass ``mean``/``std`` when those are
normalized images (``(x/255 - mean) / std``, what every batchaug method feeds the model); ε and the step
size are always in [0, 1] pixel units, so they are divided by ``std`` per channel, and the adversarial
image is kept inside the valid pixel range [0, 1] (in normalized units, ``[-mean/std, (1-mean)/std]``).
Without ``mean``/``std`` the inputs are taken to be [0, 1] images.

The attack only reads the model: gradients are taken with ``torch.autograd.grad`` with respect to the
input, so no parameter's ``.grad`` changes. It runs the model in whatever mode and routing it is in;
the Split-BN method calls it with the auxiliary BatchNorm routed and ``frozen_bn_stats`` so the attack
steps leave every running statistic untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.nn.outputs import split_output
from batchaug.runtime.constants import device_constant


def _channel_view(values: Sequence[float] | Tensor | None, like: Tensor, fill: float) -> Tensor:
    if values is None:
        return torch.full((1, like.shape[1]) + (1,) * (like.dim() - 2), fill, device=like.device, dtype=like.dtype)
    if isinstance(values, Tensor):
        t = values.to(like.device, like.dtype).flatten()
    else:  # made once per device: a tensor from Python numbers is a blocking upload at every call
        t = device_constant([float(v) for v in values], like.device, like.dtype)
    if t.numel() not in (1, like.shape[1]):
        raise ValueError(f"pgd_attack: {t.numel()} mean/std values for {like.shape[1]} channels")
    return t.expand(like.shape[1]).reshape((1, like.shape[1]) + (1,) * (like.dim() - 2))


def pgd_attack(model: nn.Module, images: Tensor, targets: Tensor, *, eps: float, steps: int, step_size: float,
               mean: Sequence[float] | Tensor | None = None, std: Sequence[float] | Tensor | None = None,
               random_start: bool = True, init: Tensor | None = None, generator: torch.Generator | None = None,
               loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """Return ``images`` perturbed to raise ``loss_fn(model(x), targets)``, within ε in L∞.

    Args:
        images: float (N, C, ...) model inputs, normalized with ``mean``/``std`` or in [0, 1] without them.
        eps, step_size: L∞ radius and step of the attack in [0, 1] pixel units (e.g. 8/255, 2/255).
        steps: number of signed-gradient ascent steps (0: only the random start).
        random_start: start from a uniform draw in the ε-ball (Madry et al.) rather than from ``images``.
        init: the random start as uniform noise in [-1, 1] with ``images``' shape (scaled by ε here);
            lets a caller draw it with its own generator ahead of time. Overrides ``random_start``.
        loss_fn: ``(logits, targets) -> scalar``; cross-entropy summed over the batch by default (the
            sum keeps gradients away from fp16 underflow; the sign step does not depend on the scale).

    Returns the adversarial inputs, detached, in the same domain as ``images``; every element is
    within ``eps`` pixel units of ``images`` and inside the valid pixel range.
    """
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"pgd_attack: eps must be >= 0 (pixel units in [0, 1]), got {eps!r}")
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"pgd_attack: step_size must be >= 0, got {step_size!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"pgd_attack: steps must be an integer >= 0, got {steps!r}")
    if not images.is_floating_point():
        raise ValueError(f"pgd_attack: images must be float model inputs, got {images.dtype}")
    if init is not None and init.shape != images.shape:
        raise ValueError(f"pgd_attack: init has shape {tuple(init.shape)}, images {tuple(images.shape)}")
    if (mean is None) != (std is None):
        raise ValueError("pgd_attack: give both mean and std (normalized inputs) or neither ([0, 1] inputs)")
    loss_fn = loss_fn or (lambda logits, y: F.cross_entropy(logits.float(), y, reduction="sum"))

    x = images.detach()
    m = _channel_view(mean, x, 0.0)
    s = _channel_view(std, x, 1.0)
    radius = eps / s  # per channel, in input units
    lo, hi = (0.0 - m) / s, (1.0 - m) / s
    if init is not None:
        delta = init.detach().to(x.dtype) * radius
    elif random_start and eps > 0:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = (u * 2 - 1) * radius
    else:
        delta = torch.zeros_like(x)
    x_adv = torch.maximum(torch.minimum(x + delta, hi), lo)
    step = step_size / s
    with torch.enable_grad():
        for _ in range(int(steps)):
            x_adv.requires_grad_(True)
            loss = loss_fn(split_output(model(x_adv))[0], targets)  # the main logits of a model with heads
            (grad,) = torch.autograd.grad(loss, x_adv)
            with torch.no_grad():
                x_adv = x_adv + step * grad.sign()
                x_adv = torch.maximum(torch.minimum(x_adv, x + radius), x - radius)
                x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    return x_adv.detach()


__all__ = ["pgd_attack"]
