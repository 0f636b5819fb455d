"""The ``fourier`` suite: the Fourier sensitivity heatmap of Yin et al. (2019), "A Fourier perspective
on model robustness in computer vision" (used by the Split-BN paper, Fig. 4, with norm 8).

For every frequency ``(i, j)`` of the ``H x W`` DFT there is a real basis image ``U_ij``: the inverse
DFT of a spectrum that is 1 at ``(i, j)`` and at its conjugate ``(-i, -j)``, scaled to unit L2 norm
(:func:`fourier_basis`). Every test image, as floats in [0, 1], is perturbed as
``clip(x + r·v·U_ij, 0, 1)`` with ``v`` the norm (``--fourier-norm``, default 4 as in Yin et al.; the
Split-BN paper uses 8) and a random sign ``r`` per image, channel and frequency, and the error of the
model on the perturbed images is the heatmap's value at ``(i, j)``. ``U_ij = U_-i-j``, so only half
the frequencies are evaluated and the grid is mirrored. The grid is laid out as the paper plots it:
the lowest frequency at the centre (``fftshift`` order, row = vertical frequency).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from batchaug.evaluate.suite import Model, Suite
from batchaug.schema import option

__all__ = ["FourierOptions", "FourierSuite", "fourier_basis", "frequency_pairs", "perturbation_signs"]


@functools.lru_cache(maxsize=8)
def _basis_cpu(height: int, width: int) -> Tensor:
    shifted = torch.zeros(height * width, height, width, dtype=torch.complex128)
    idx = torch.arange(height * width)
    u, v = idx // width, idx % width  # positions in the centred (fftshift) grid
    ku, kv = (u - height // 2) % height, (v - width // 2) % width  # the DFT indices they stand for
    shifted[idx, ku, kv] += 1
    shifted[idx, (-ku) % height, (-kv) % width] += 1
    basis = torch.fft.ifft2(shifted).real
    return (basis / basis.flatten(1).norm(dim=1).view(-1, 1, 1)).to(torch.float32)


def fourier_basis(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """``(H·W, H, W)`` float32: the unit-L2-norm real basis image of every frequency, indexed by its
    position in the centred grid (row-major: ``u * W + v``, the lowest frequency at ``(H//2, W//2)``)."""
    return _basis_cpu(height, width).to(device)


def frequency_pairs(height: int, width: int) -> tuple[Tensor, Tensor]:
    """``(representatives, partner)``: one centred-grid position per conjugate pair (the frequencies to
    evaluate) and, for every position, the position of its representative (to mirror the grid)."""
    idx = torch.arange(height * width)
    u, v = idx // width, idx % width
    ku, kv = (u - height // 2) % height, (v - width // 2) % width
    cu, cv = (-ku) % height, (-kv) % width  # conjugate DFT index
    conj = ((cu + height // 2) % height) * width + (cv + width // 2) % width  # back to a centred position
    rep = torch.minimum(idx, conj)
    return torch.unique(rep), rep


def perturbation_signs(index: Tensor, channels: int, frequencies: int, seed: int) -> Tensor:
    """``(N, F, C)`` signs ±1 for images with split indices ``index``: each image's from a generator
    seeded by ``(seed, index)``, so an image's perturbations do not depend on its batch."""
    out = torch.empty(index.numel(), frequencies, channels)
    for row, i in enumerate(index.tolist()):
        g = torch.Generator().manual_seed((seed * 1_000_003 + i) % 2**63)
        out[row] = torch.randint(0, 2, (frequencies, channels), generator=g) * 2.0 - 1.0
    return out


@dataclass
class FourierOptions:
    norm: float = option(4.0, gt=0)
    """L2 norm ``v`` of each perturbation (per channel, over ``H x W``)."""


class FourierSuite(Suite):
    """Test error under each Fourier basis perturbation; ``{"norm", "grid", "mean_error"}``."""

    name = "fourier"
    Options = FourierOptions

    def start(self) -> dict[str, Any]:
        return {"wrong": None, "n": 0}

    def update(self, accs: Mapping[str, dict[str, Any]], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        n, c, h, w = images.shape
        reps, _ = frequency_pairs(h, w)
        basis = fourier_basis(h, w, images.device)[reps.to(images.device)]  # (F, H, W)
        signs = perturbation_signs(index, c, reps.numel(), self.ctx.seed).to(images.device)  # (N, F, C)
        x = images.float() / 255
        wrong = {mode: torch.zeros(reps.numel(), dtype=torch.float64, device=images.device) for mode in accs}
        for f in range(reps.numel()):
            noise = (signs[:, f, :, None, None] * self.options.norm) * basis[f]
            for mode, logits in predict((x + noise).clamp_(0, 1)).items():
                wrong[mode][f] = (logits.argmax(-1) != targets).sum()
        for mode, acc in accs.items():
            acc["wrong"] = wrong[mode] if acc["wrong"] is None else acc["wrong"] + wrong[mode]
            acc["n"] += n
            acc["size"] = (h, w)

    def result(self, acc: dict[str, Any]) -> dict[str, Any]:
        h, w = acc["size"]
        reps, rep_of = frequency_pairs(h, w)
        error = torch.zeros(h * w, dtype=torch.float64)
        error[reps] = acc["wrong"].cpu() / max(acc["n"], 1)
        grid = error[rep_of].view(h, w)
        return {"norm": self.options.norm, "grid": grid.tolist(), "mean_error": float(grid.mean()),
                "frequencies_evaluated": int(reps.numel()), "num_images": acc["n"]}
