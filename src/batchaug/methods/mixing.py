"""Batch transforms: what happens to a step's views after augmentation, with their labels.

A :class:`BatchTransform` takes the normalized float views ``(N, C, H, W)`` of a step, their int64
labels ``(N,)`` and the views per sample ``m`` (views of sample ``i`` are rows ``i*m ... i*m+m-1``),
and returns new views with soft targets ``(N, K)``. :class:`~batchaug.methods.views.ViewsMethod`
applies the one ``method.mix`` names, so every views method (baseline, BA, RA) gets it:

- ``mixup`` (Zhang et al. 2018): ``x = λ·x_i + (1-λ)·x_j``, targets ``λ·y_i + (1-λ)·y_j``;
- ``cutmix`` (Yun et al. 2019): a box of area ``1-λ`` of view ``i`` replaced by view ``j``'s,
  targets weighted by the area actually kept (the box is clipped at the border).

Every view draws its own λ ~ Beta(α, α), its own partner and (CutMix) its own box, and is mixed
with probability ``prob``. The partner of a view is the same view slot of another sample (a random
cyclic permutation of the samples per slot), so a view is never mixed with a copy of its own image.
Mixing normalized views equals mixing the images and normalizing, the normalization being affine.

Adding a transform is one class and one line in :data:`BATCH_TRANSFORMS` (``docs/extending.md``).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from batchaug.errors import ConfigError

__all__ = ["BATCH_TRANSFORMS", "BatchTransform", "CutMix", "MixUp", "build_batch_transform", "mixing_generator"]

_MIX_STREAM = 0x6D6978  # keeps the mixing draws apart from the augmentation draws of the same seed


def mixing_generator(generator: torch.Generator | None) -> torch.Generator:
    """A CPU generator for a step's mixing draws, derived from the step's augmentation generator
    without reading it (``initial_seed`` is host state: no device sync, and the augmentation stream
    is left untouched); ``None``: seeded from PyTorch's global CPU generator."""
    if generator is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    else:
        seed = generator.initial_seed()
    return torch.Generator().manual_seed((seed * 1_000_003 + _MIX_STREAM) % 2**63)


def sample_beta(n: int, alpha: float, generator: torch.Generator) -> Tensor:
    """``n`` draws of Beta(α, α) on the CPU from ``generator`` (torch's Beta takes no generator, so
    the global CPU stream is forked and seeded from it)."""
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        concentration = torch.full((n,), float(alpha), dtype=torch.float64)
        return torch.distributions.Beta(concentration, concentration).sample().to(torch.float32)


def _cyclic_partners(samples: int, m: int, g: torch.Generator) -> Tensor:
    """``(samples, m)``: per view slot, the sample each sample is mixed with, a random cyclic
    permutation (σ(k) -> σ(k+1)) so that no sample is its own partner (when there are two or more)."""
    order = torch.stack([torch.randperm(samples, generator=g) for _ in range(m)], dim=1)  # (samples, m) = σ
    partner = torch.empty_like(order)
    partner.scatter_(0, order, order.roll(-1, dims=0))
    return partner


class BatchTransform(abc.ABC):
    """Mix the views of a step; returns ``(views, soft_targets)``.

    Args:
        alpha: the Beta(α, α) concentration of λ.
        prob: probability that a view is mixed at all (an unmixed view keeps its one-hot target).
    """

    name: str = ""

    def __init__(self, alpha: float = 1.0, prob: float = 1.0) -> None:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"{self.name}: alpha must be > 0, got {alpha!r}")
        if not (isinstance(prob, (int, float)) and 0.0 <= prob <= 1.0):
            raise ConfigError(f"{self.name}: prob must be in [0, 1], got {prob!r}")
        self.alpha, self.prob = float(alpha), float(prob)

    def draw(self, n: int, m: int, g: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per view: λ (1 where the view is not mixed) and the row of its partner, on ``device``,
        drawn from the CPU generator ``g``."""
        if n % m:
            raise ConfigError(f"{self.name}: {n} views are not a whole number of samples of m={m} views")
        samples = n // m
        lam = sample_beta(n, self.alpha, g)
        mixed = torch.rand(n, generator=g) < self.prob
        lam = torch.where(mixed, lam, torch.ones_like(lam))
        partner = _cyclic_partners(samples, m, g) * m + torch.arange(m)
        return lam.to(device, non_blocking=True), partner.reshape(n).to(device, non_blocking=True)

    def __call__(self, views: Tensor, targets: Tensor, num_classes: int, m: int = 1,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if views.dim() != 4 or not views.is_floating_point():
            raise ConfigError(f"{self.name}: views must be float (N, C, H, W), got {views.dtype} {tuple(views.shape)}")
        if targets.shape != (views.shape[0],):
            raise ConfigError(f"{self.name}: targets must be class indices of shape ({views.shape[0]},), "
                              f"got {tuple(targets.shape)}")
        g = mixing_generator(generator)
        lam, partner = self.draw(views.shape[0], m, g, views.device)
        mixed, kept = self.mix(views, lam, partner, g)
        one_hot = F.one_hot(targets, num_classes).to(torch.float32)
        kept = kept.view(-1, 1)
        soft = one_hot * kept + one_hot.index_select(0, partner) * (1.0 - kept)
        return mixed, soft

    @abc.abstractmethod
    def mix(self, views: Tensor, lam: Tensor, partner: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Mixed views and, per view, the fraction of its own image that they keep (``g``: the CPU
        generator of this step's mixing draws, for any further draws)."""


class MixUp(BatchTransform):
    """``λ·x_i + (1-λ)·x_partner`` per view."""

    name = "mixup"

    def mix(self, views: Tensor, lam: Tensor, partner: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        weight = lam.to(views.dtype).view(-1, 1, 1, 1)
        return torch.lerp(views.index_select(0, partner), views, weight), lam


class CutMix(BatchTransform):
    """A box of area ``(1-λ)·H·W`` at a uniform centre, clipped at the border, taken from the partner."""

    name = "cutmix"

    def mix(self, views: Tensor, lam: Tensor, partner: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, h, w = views.shape
        centre = torch.rand(n, 2, generator=g).to(views.device)
        ratio = (1.0 - lam).clamp(min=0).sqrt()
        cut_h, cut_w = (ratio * h).floor(), (ratio * w).floor()
        cy, cx = (centre[:, 0] * h).floor(), (centre[:, 1] * w).floor()
        y1, y2 = (cy - cut_h // 2).clamp(0, h), (cy + cut_h - cut_h // 2).clamp(0, h)
        x1, x2 = (cx - cut_w // 2).clamp(0, w), (cx + cut_w - cut_w // 2).clamp(0, w)
        ys = torch.arange(h, device=views.device, dtype=torch.float32)
        xs = torch.arange(w, device=views.device, dtype=torch.float32)
        in_y = (ys >= y1[:, None]) & (ys < y2[:, None])  # (N, H)
        in_x = (xs >= x1[:, None]) & (xs < x2[:, None])  # (N, W)
        box = (in_y[:, :, None] & in_x[:, None, :]).unsqueeze(1)  # (N, 1, H, W)
        kept = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        return torch.where(box, views.index_select(0, partner), views), kept


#: name (``method.mix``) -> transform class
BATCH_TRANSFORMS: dict[str, type[BatchTransform]] = {"mixup": MixUp, "cutmix": CutMix}


def build_batch_transform(name: str, alpha: float = 1.0, prob: float = 1.0) -> BatchTransform | None:
    """The transform ``method.mix`` names (``none``: no transform)."""
    if name == "none":
        return None
    cls = BATCH_TRANSFORMS.get(name)
    if cls is None:
        raise ConfigError(f"method.mix: {name!r} is not allowed; choose one of 'none', "
                          + ", ".join(repr(k) for k in BATCH_TRANSFORMS))
    return cls(alpha, prob)
