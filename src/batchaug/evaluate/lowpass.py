"""The ``lowpass`` suite: accuracy against the bandwidth of a low-pass filter (Split-BN paper, Fig. 5;
the filter of Yin et al. 2019).

"A low pass filter of bandwidth B [is] the operation that [sets] all of the frequency components
outside of a centered square of width B in the Fourier spectrum, centered around the lowest frequency,
to be zero. Then, an inverse Discrete Fourier Transform is applied to recover the image."
(splitbn_merchant2020_fulltext.txt, §6.2). Here the square is the positions
``[c - B//2, c - B//2 + B)`` of the centred spectrum along each axis (``c`` the lowest frequency's
position), the real part of the inverse is taken and clipped to [0, 1]: for even ``B`` the two
frequencies ``±B/2`` then count half, and ``B = H`` is the identity. The paper uses 500 test images
(``--limit 500``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from batchaug.evaluate.suite import Model, Suite
from batchaug.schema import option

__all__ = ["LowPassOptions", "LowPassSuite", "low_pass"]


def low_pass(images: Tensor, bandwidth: int) -> Tensor:
    """Float images in [0, 1] ``(N, C, H, W)`` keeping only the centred ``bandwidth``-wide square of
    their spectrum (see the module docstring); the result is clipped to [0, 1]."""
    h, w = images.shape[-2:]

    def keep(size: int) -> Tensor:
        width = min(bandwidth, size)
        lo = size // 2 - width // 2
        axis = torch.zeros(size, device=images.device)
        axis[lo:lo + width] = 1
        return axis

    mask = keep(h).view(-1, 1) * keep(w).view(1, -1)
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1))
    filtered = torch.fft.ifft2(torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))).real
    return filtered.clamp_(0, 1)


@dataclass
class LowPassOptions:
    bandwidths: list[int] | None = option(None, ge=1)
    """Widths of the kept square; unset: every width from 1 to the image's size."""


class LowPassSuite(Suite):
    """Accuracy of the low-pass-filtered images at each bandwidth; ``{"bandwidth", "accuracy"}``."""

    name = "lowpass"
    Options = LowPassOptions

    def start(self) -> dict[str, Any]:
        return {"correct": None, "n": 0, "bandwidths": None}

    def update(self, accs: Mapping[str, dict[str, Any]], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        bandwidths = list(self.options.bandwidths or range(1, max(images.shape[-2:]) + 1))
        x = images.float() / 255
        correct = {mode: [] for mode in accs}
        for b in bandwidths:
            for mode, logits in predict(low_pass(x, b)).items():
                correct[mode].append((logits.argmax(-1) == targets).sum())
        for mode, acc in accs.items():
            counts = torch.stack(correct[mode])
            acc["correct"] = counts if acc["correct"] is None else acc["correct"] + counts
            acc["n"] += images.shape[0]
            acc["bandwidths"] = bandwidths

    def result(self, acc: dict[str, Any]) -> dict[str, Any]:
        accuracy = (acc["correct"].double() / max(acc["n"], 1)).tolist()
        return {"bandwidth": acc["bandwidths"], "accuracy": accuracy, "num_images": acc["n"]}
