"""The tolerances of ``pixels`` are loose enough for float32 on any CPU and tight enough to catch
the bugs a resampling kernel has: a shifted centre, a wrong fill, a transposed shear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from pixels import (
    VALUE_BAND,
    assert_close_uint8,
    assert_resampled_close,
    assert_rounded_close,
    exact_bilinear,
    near_ties,
    source_coordinates,
)
from test_augment_ops import load_cifar
from torch import Tensor
from torchvision.transforms.functional import (
    _get_inverse_affine_matrix as tv_inverse_affine,
)

from batchaug.augment import geometry

pytestmark = pytest.mark.usefixtures("one_thread")
INTERPOLATIONS = ["nearest", "bilinear"]


@pytest.fixture(scope="module")
def images(cifar_zip: Path) -> Tensor:
    return load_cifar(cifar_zip, 32)[:, :, 3:27, :].contiguous()  # non-square: 24 x 32


def _angles(n: int) -> Tensor:
    return torch.linspace(-170.0, 170.0, n, dtype=torch.float64)


def _rotation_matrices(angle: Tensor) -> Tensor:
    return torch.tensor([tv_inverse_affine([0.0, 0.0], -(float(a) % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
                         for a in angle])


def _torchvision_rotate(images: Tensor, angle: Tensor, interpolation: str, fill: list[float] | None) -> Tensor:
    mode = TF.InterpolationMode(interpolation)
    return torch.stack([TF.rotate(img, float(a), interpolation=mode, fill=fill) for img, a in zip(images, angle)])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_the_correct_rotation_passes(images: Tensor, interpolation: str) -> None:
    angle = _angles(images.shape[0])
    ours = geometry.rotate(images, angle, interpolation=interpolation, fill=[10, 20, 30])
    ref = _torchvision_rotate(images, angle, interpolation, [10, 20, 30])
    assert_resampled_close(ours, ref, images, _rotation_matrices(angle), interpolation, [10, 20, 30])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_a_centre_shifted_by_one_pixel_fails(images: Tensor, interpolation: str) -> None:
    n, _, h, w = images.shape
    angle = _angles(n)
    centre = torch.tensor([[w * 0.5 + 1.0, h * 0.5]] * n, dtype=torch.float64)
    ours = geometry.affine(images, angle=-angle, center=centre, interpolation=interpolation)
    ref = _torchvision_rotate(images, angle, interpolation, None)
    with pytest.raises(AssertionError):
        assert_resampled_close(ours, ref, images, _rotation_matrices(angle), interpolation)


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("wrong_fill", [[11, 20, 30], None])
def test_a_wrong_fill_fails(images: Tensor, interpolation: str, wrong_fill: list[float] | None) -> None:
    angle = _angles(images.shape[0])
    ours = geometry.rotate(images, angle, interpolation=interpolation, fill=wrong_fill)
    ref = _torchvision_rotate(images, angle, interpolation, [10, 20, 30])
    with pytest.raises(AssertionError):
        assert_resampled_close(ours, ref, images, _rotation_matrices(angle), interpolation, [10, 20, 30])


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_a_transposed_shear_fails(images: Tensor, interpolation: str) -> None:
    n = images.shape[0]
    slope = torch.linspace(5.0, 25.0, n, dtype=torch.float64)
    zero = torch.zeros(n, dtype=torch.float64)
    ours = geometry.affine(images, shear=torch.stack([zero, slope], 1), interpolation=interpolation)
    mode = TF.InterpolationMode(interpolation)
    ref = torch.stack([TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[float(s), 0.0],
                                 interpolation=mode) for img, s in zip(images, slope)])
    matrix = torch.tensor([tv_inverse_affine([0.0, 0.0], 0.0, [0.0, 0.0], 1.0, [float(s), 0.0]) for s in slope])
    with pytest.raises(AssertionError):
        assert_resampled_close(ours, ref, images, matrix, interpolation)


def test_one_grey_level_everywhere_is_not_rounding(images: Tensor) -> None:
    brighter = (images.int() + 1).clamp(max=255).to(torch.uint8)
    with pytest.raises(AssertionError, match="pixels differ"):
        assert_rounded_close(brighter, images)
    with pytest.raises(AssertionError, match="max difference 2"):
        assert_rounded_close((images.int() + 2).clamp(max=255).to(torch.uint8), images)
    one = images.clone()
    one[0, 0, 0, 0] ^= 1
    assert_rounded_close(one, images)
    with pytest.raises(AssertionError, match="max difference 1 > 0"):
        assert_close_uint8(one, images)


def test_source_coordinates_of_the_identity_are_the_pixel_indices() -> None:
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    x, y = source_coordinates(identity, 3, 5)
    assert torch.equal(x[0], torch.arange(5.0, dtype=torch.float64).expand(3, 5))
    assert torch.equal(y[0], torch.arange(3.0, dtype=torch.float64)[:, None].expand(3, 5))
    assert not near_ties(identity, 3, 5).any()


def test_a_half_pixel_shift_puts_every_pixel_on_a_tie() -> None:
    half = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    assert near_ties(half, 4, 6).all()
    images = torch.randint(0, 256, (1, 3, 4, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    shifted = torch.roll(images, 1, dims=-1)
    assert_resampled_close(shifted, images, images, half, "nearest")  # every pixel may pick either neighbour


def test_ambiguous_pixels_are_rare_for_generic_rotations(images: Tensor) -> None:
    """The rules loosen only at ambiguous pixels; for generic angles those are few."""
    matrix = _rotation_matrices(_angles(images.shape[0]) + 0.123)
    assert float(near_ties(matrix, images.shape[-2], images.shape[-1]).float().mean()) < 2e-3
    value = exact_bilinear(images, matrix, [10, 20, 30])
    assert float((((value - value.floor()) - 0.5).abs() < VALUE_BAND).float().mean()) < 2e-2


def test_exact_bilinear_is_torchvisions_before_rounding(images: Tensor) -> None:
    angle = _angles(images.shape[0])
    ref = _torchvision_rotate(images.double(), angle, "bilinear", [10, 20, 30])
    # torchvision's float64 path still builds part of its grid in float32 (~1e-4 levels); a wrong
    # convention (centre, direction, fill) would be off by whole levels
    torch.testing.assert_close(exact_bilinear(images, _rotation_matrices(angle), [10, 20, 30]), ref,
                               atol=1e-3, rtol=0)
