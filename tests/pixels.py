"""What "equal to torchvision" may promise for uint8 images, on any CPU and on CUDA.

Operations that only move, compare or count integers (flips, integer crops and pads, cutout,
posterize, solarize, invert, equalize, autocontrast's lookup) are exact by construction and are
compared with ``assert_close_uint8`` and no tolerance.

Everything else computes in float32 before rounding back to uint8, and float32 arithmetic is not
the same everywhere: whether a multiply-add is fused (``add(alpha=)``, ``addcmul``), the vector
width of a kernel and the order of a sum (a mean, a convolution) change the last bit, and the last
bit decides two things. A value that lands within rounding of a rounding (or truncation) boundary
goes to either neighbour: **one grey level on a few pixels** (``assert_rounded_close``: blends,
hue, sharpness, bilinear resampling). A sampling coordinate that lands within rounding of a tie
``k + 0.5`` makes nearest pick either neighbouring *pixel* (**any difference, but only at those
pixels**) and makes bilinear land on the midpoint of two levels (**one level at those pixels**):
``assert_resampled_close``. Nothing more is allowed, so that a real bug (a shifted
centre, a wrong fill, a transposed shear) still fails; ``test_pixels.py`` shows that it does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: Distance from a rounding tie, in source pixels, inside which float32 coordinates may round
#: either way. A coordinate is a few float32 operations on values below ~10^2 (off by ~1e-5 at
#: most); 1e-4 covers that with room and marks only ~0.04% of generic pixels (x or y in the band).
TIE_BAND = 1e-4

#: Distance from ``k + 0.5`` grey levels inside which a float32 bilinear result may round either
#: way: the coordinate error (~1e-5 px) times the steepest gradient (255 levels per pixel), doubled.
VALUE_BAND = 5e-3

#: Largest fraction of pixels that may differ by one grey level after float math and rounding (the
#: worst case measured across CPUs was 1.7e-4).
ROUNDING_FRACTION = 1e-3


def assert_close_uint8(ours: Tensor, ref: Tensor, *, max_diff: int = 0, max_fraction: float = 0.0,
                       allowed: Tensor | None = None) -> None:
    """``ours`` equals ``ref`` up to ``max_diff`` grey levels on at most ``max_fraction`` of the
    pixels; where ``allowed`` (bool, broadcastable to ``(N, 1, H, W)``) is set, anything goes."""
    assert ours.dtype == torch.uint8 and ref.dtype == torch.uint8, (ours.dtype, ref.dtype)
    assert ours.shape == ref.shape, (tuple(ours.shape), tuple(ref.shape))
    diff = (ours.int() - ref.int()).abs()
    if allowed is not None:
        diff = diff * ~allowed.to(diff.device).expand_as(diff)
    worst = int(diff.max()) if diff.numel() else 0
    assert worst <= max_diff, f"max difference {worst} > {max_diff} at {_first_bad(diff, max_diff)}"
    fraction = float((diff > 0).float().mean()) if diff.numel() else 0.0
    assert fraction <= max_fraction, f"{fraction:.2e} of pixels differ (at most {max_fraction:.0e} allowed)"


def assert_rounded_close(ours: Tensor, ref: Tensor, *, max_fraction: float = ROUNDING_FRACTION,
                         allowed: Tensor | None = None) -> None:
    """``ours`` and ``ref`` are the same float computation rounded to uint8: at most one grey level
    apart, on at most ``max_fraction`` of the pixels (not counting those in ``allowed``)."""
    if allowed is not None:
        assert_close_uint8(ours, ref, max_diff=1, max_fraction=1.0)
    assert_close_uint8(ours, ref, max_diff=1, max_fraction=max_fraction, allowed=allowed)


def _first_bad(diff: Tensor, max_diff: int) -> tuple[int, ...]:
    return tuple(int(i) for i in (diff > max_diff).nonzero()[0])


def source_coordinates(matrix: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """The source pixel coordinates ``(x, y)``, float64 ``(N, H, W)``, that torchvision's affine
    grid (``align_corners=False``) samples for each output pixel, for inverse matrices ``(N, 2, 3)``
    in torchvision's centred convention (``_get_inverse_affine_matrix``)."""
    m = matrix.to(torch.float64).reshape(-1, 6, 1, 1)
    bx = (torch.arange(width, dtype=torch.float64) - (width - 1) / 2).view(1, 1, width)
    by = (torch.arange(height, dtype=torch.float64) - (height - 1) / 2).view(1, height, 1)
    x = m[:, 0] * bx + m[:, 1] * by + m[:, 2] + (width - 1) / 2
    y = m[:, 3] * bx + m[:, 4] * by + m[:, 5] + (height - 1) / 2
    return x, y


def near_ties(matrix: Tensor, height: int, width: int, band: float = TIE_BAND) -> Tensor:
    """Output pixels (bool ``(N, 1, H, W)``) whose nearest-neighbour source is ambiguous: the x or
    y coordinate lies within ``band`` of ``k + 0.5``, where rounding (and the inside/outside test
    at the border, ``-0.5`` and ``size - 0.5``) may go either way."""
    x, y = source_coordinates(matrix, height, width)
    return (_near_half(x, band) | _near_half(y, band)).unsqueeze(1)


def _near_half(v: Tensor, band: float) -> Tensor:
    return ((v - v.floor()) - 0.5).abs() < band


def exact_bilinear(images: Tensor, matrix: Tensor, fill: Sequence[float] | float | None = None) -> Tensor:
    """torchvision's bilinear ``affine`` (zeros outside, or ``fill`` blended in by coverage) computed
    in float64 before rounding: the value whose distance to ``k + 0.5`` says whether float32 may
    round it either way."""
    n, c, h, w = images.shape
    x, y = source_coordinates(matrix, h, w)
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    src = images.to(torch.float64)
    if fill is not None:
        src = torch.cat([src, torch.ones(n, 1, h, w, dtype=torch.float64)], dim=1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if fill is None:
        return out
    value = torch.tensor([float(fill)] if isinstance(fill, (int, float)) else [float(f) for f in fill],
                         dtype=torch.float64).view(1, -1, 1, 1)
    return (out[:, :c] - value) * out[:, c:] + value


def assert_resampled_close(ours: Tensor, ref: Tensor, images: Tensor, matrix: Tensor, interpolation: str,
                           fill: Sequence[float] | float | None = None) -> None:
    """``ours`` and ``ref`` are ``images`` resampled through the inverse affine ``matrix`` (one per
    row, torchvision's centred convention) with ``interpolation`` and ``fill``: equal except where
    float32 may round either way, as the module explains."""
    if interpolation == "nearest":
        assert_close_uint8(ours, ref, allowed=near_ties(matrix, ours.shape[-2], ours.shape[-1]))
    elif interpolation == "bilinear":
        # exactly k + 0.5 happens often (a shear by a rational slope has rational weights), and
        # there either neighbour is right; elsewhere a few pixels may still be one level off
        ambiguous = _near_half(exact_bilinear(images, matrix, fill), VALUE_BAND)
        assert_rounded_close(ours, ref, allowed=ambiguous)
    else:
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
