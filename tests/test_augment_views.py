"""ViewAugmenter, normalize and repeat_targets: the view layout, normalization against torchvision,
chunking, output formats, determinism, devices, and property tests over shapes (hypothesis)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pixels import assert_close_uint8, assert_resampled_close, assert_rounded_close
from test_augment_ops import gen, load_cifar
from torch import Tensor

from batchaug.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    POLICY_NAMES,
    Standard,
    ViewAugmenter,
    build_policy,
    normalize,
    repeat_targets,
)
from batchaug.errors import ConfigError

# small batches: a second torch thread only adds OpenMP waits on a loaded machine
pytestmark = pytest.mark.usefixtures("one_thread")

CIFAR = {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}  # explicit: omitted statistics warn


@pytest.fixture(scope="module")
def images(cifar_zip: Path) -> Tensor:
    return load_cifar(cifar_zip, 12)


def torchvision_normalize(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), list(mean), list(std))


def test_normalize_matches_torchvision(images: Tensor) -> None:
    torch.testing.assert_close(normalize(images, CIFAR10_MEAN, CIFAR10_STD),
                               torchvision_normalize(images, CIFAR10_MEAN, CIFAR10_STD))
    as_float = images.float() / 255
    torch.testing.assert_close(normalize(as_float, IMAGENET_MEAN, IMAGENET_STD),
                               TF.normalize(as_float, list(IMAGENET_MEAN), list(IMAGENET_STD)))
    gray = images[:, :1]
    torch.testing.assert_close(normalize(gray, 0.5, 0.25), torchvision_normalize(gray, (0.5,), (0.25,)))


def test_normalize_out_and_dtypes(images: Tensor) -> None:
    ref = normalize(images, **CIFAR)
    out = torch.empty_like(ref)
    assert normalize(images, **CIFAR, out=out) is out and torch.equal(out, ref)
    half = normalize(images, **CIFAR, out_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, atol=0.02, rtol=0.01)


@pytest.mark.parametrize("mean, std, words", [((0.5, 0.5), (0.2,) * 3, "one per channel"),
                                              ((0.5,), (0.0,), "std must be > 0"),
                                              ("grey", (0.2,), "mean")])
def test_normalize_rejects_bad_statistics(images: Tensor, mean: object, std: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        normalize(images, mean, std)  # type: ignore[arg-type]


def test_views_of_sample_i_are_rows_i_m_to_i_m_plus_m_minus_1(images: Tensor) -> None:
    m = 3
    views = ViewAugmenter("none", m, **CIFAR)(images)
    expected = torchvision_normalize(images, CIFAR10_MEAN, CIFAR10_STD).repeat_interleave(m, dim=0)
    torch.testing.assert_close(views, expected)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 1000])
def test_every_view_is_a_crop_and_flip_of_its_own_sample(images: Tensor, chunk_size: int | None) -> None:
    """With the standard policy each view must equal one of the 162 pad-4 crops (x2 flips) of
    sample ``row // m``, whatever the chunking."""
    m, x = 5, images[:4]
    views = ViewAugmenter(Standard(), m, **CIFAR, chunk_size=chunk_size)(x, gen(1))
    padded = TF.pad(x, [4])
    candidates = torch.stack([padded[:, :, t:t + 32, s:s + 32] for t in range(9) for s in range(9)], dim=1)
    candidates = torch.cat([candidates, candidates.flip(-1)], dim=1)  # (4, 162, 3, 32, 32)
    candidates = torchvision_normalize(candidates.flatten(0, 1), CIFAR10_MEAN, CIFAR10_STD).view(4, 162, -1)
    for row in range(views.shape[0]):
        gap = (candidates[row // m] - views[row].flatten()).abs().amax(dim=1)
        assert float(gap.min()) < 1e-5, row


def test_chunking_changes_no_deterministic_view(images: Tensor) -> None:
    whole = ViewAugmenter("none", 4, **CIFAR)(images)
    for chunk in (1, 5, 13):
        # each chunk is its own addcmul over another shape: whether an element lands in the kernel's
        # vectorized body or its scalar tail (or in another thread's range) moves with the chunking,
        # and nothing promises that the two round alike (fusing the multiply-add is the compiler's
        # choice per path); float32's default tolerance is a few ulps, a chunking bug whole pixels
        torch.testing.assert_close(ViewAugmenter("none", 4, **CIFAR, chunk_size=chunk)(images), whole)


@pytest.mark.parametrize("spec", ["standard+cutout", "randaugment", "augmix", "gaussian"])
def test_same_seed_same_views(images: Tensor, spec: str) -> None:
    va = ViewAugmenter(spec, 4, **CIFAR, chunk_size=9)
    a, b, c = va(images, gen(3)), va(images, gen(3)), va(images, gen(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_output_formats_and_out_argument(images: Tensor) -> None:
    va = ViewAugmenter("standard", 2, **CIFAR, channels_last=True)
    out = va(images, gen())
    assert out.is_contiguous(memory_format=torch.channels_last) and out.shape == (24, 3, 32, 32)
    bf = ViewAugmenter("standard", 2, **CIFAR, out_dtype=torch.bfloat16)(images, gen())
    assert bf.dtype == torch.bfloat16
    torch.testing.assert_close(bf.float(), ViewAugmenter("standard", 2, **CIFAR)(images, gen()), atol=0.03, rtol=0.01)
    buffer = torch.empty(24, 3, 32, 32)
    assert ViewAugmenter("standard", 2, **CIFAR)(images, gen(), out=buffer) is buffer
    with pytest.raises(ConfigError, match="out must be"):
        ViewAugmenter("standard", 3, **CIFAR)(images, gen(), out=buffer)


def test_reuse_output_writes_into_one_tensor_and_autograd_notices(images: Tensor) -> None:
    va = ViewAugmenter("standard", 2, **CIFAR, reuse_output=True)
    first = va(images, gen(1))
    kept = first.clone()
    weight = torch.ones(3, requires_grad=True)
    loss = (first * weight.view(1, 3, 1, 1)).pow(2).sum()  # saves ``first`` for backward
    second = va(images, gen(2))
    assert second is first and not torch.equal(second, kept)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    fresh = ViewAugmenter("standard", 2, **CIFAR)
    assert fresh(images, gen(1)) is not fresh(images, gen(1))
    assert va(images[:5], gen(3)).shape[0] == 10  # a new shape gets a new tensor


def test_resizing_policy_views(images: Tensor) -> None:
    views = ViewAugmenter({"name": "resized_crop", "size": 24}, 2, **CIFAR)(images, gen())
    assert views.shape == (24, 3, 24, 24)


# ------------------------------------------------------------------------------ float input, stats

FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("spec", ["standard+cutout", "randaugment"])
def test_float_images_give_the_views_of_their_uint8_source(images: Tensor, dtype: torch.dtype, spec: str) -> None:
    va = ViewAugmenter(spec, 3, **CIFAR)
    as_float = (images.double() / 255).to(dtype)
    assert torch.equal(va(as_float, gen(7)), va(images, gen(7)))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_every_uint8_level_survives_the_float_round_trip(dtype: torch.dtype) -> None:
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    va = ViewAugmenter("none", 1, mean=0.0, std=1.0)  # views = pixel / 255 exactly as the uint8 path makes them
    assert torch.equal(va((levels.double() / 255).to(dtype)), va(levels))


def test_float_images_are_quantized_to_the_nearest_level() -> None:
    x = torch.tensor([0.0, 0.3 / 255, 0.6 / 255, 254.4 / 255, 1.0]).view(1, 1, 1, 5)
    views = ViewAugmenter("none", 1, mean=0.0, std=1.0)(x)
    assert (views * 255).round().flatten().tolist() == [0, 0, 1, 254, 255]


@pytest.mark.parametrize("low, high, found", [(-0.25, 0.5, "[-0.25, 0.5]"), (0.0, 2.0, "[0, 2]"),
                                              (0.0, 255.0, "[0, 255]"), (float("nan"), 0.5, "nan")])
def test_float_images_outside_0_1_are_rejected_naming_the_range(low: float, high: float, found: str) -> None:
    x = torch.full((2, 3, 8, 8), 0.5)
    x[0, 0, 0, 0], x[1, 2, 7, 7] = low, high
    with pytest.raises(ConfigError, match="must lie in \\[0, 1\\]") as exc:
        ViewAugmenter("standard", 2, **CIFAR)(x, gen())
    assert found in str(exc.value)


def test_empty_float_batch_needs_no_range() -> None:
    assert ViewAugmenter("standard", 2, **CIFAR)(torch.empty(0, 3, 8, 8), gen()).shape == (0, 3, 8, 8)


def test_omitted_statistics_warn_once_per_instance_and_mean_cifar10(images: Tensor) -> None:
    with pytest.warns(UserWarning, match="no mean or std given.*CIFAR-10") as record:
        va = ViewAugmenter("none", 2)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # calls do not warn again
        assert torch.equal(va(images), ViewAugmenter("none", 2, **CIFAR)(images))
        va(images)
    with pytest.warns(UserWarning, match="no mean given.*CIFAR-10's mean") as record:
        ViewAugmenter("none", 2, std=CIFAR10_STD)
    assert "std (" not in str(record[0].message)  # std was given: only the mean falls back


def test_normalize_warns_exactly_when_statistics_are_omitted(images: Tensor) -> None:
    with pytest.warns(UserWarning, match="normalize: no mean or std given.*CIFAR-10") as record:
        default = normalize(images)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(default, normalize(images, CIFAR10_MEAN, CIFAR10_STD))
        ViewAugmenter("standard", 2, mean=0.5, std=0.25)


@pytest.mark.parametrize("kwargs, words", [({"m": 0}, "m must be >= 1"), ({"std": (0.1, 0.0, 0.1)}, "std"),
                                           ({"out_dtype": torch.int64}, "out_dtype"),
                                           ({"chunk_size": 0}, "chunk_size")])
def test_bad_view_options(kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        ViewAugmenter("standard", **{**CIFAR, **kwargs})


def test_one_channel_images_need_matching_statistics() -> None:
    gray = torch.randint(0, 256, (2, 1, 16, 16), dtype=torch.uint8, generator=gen())
    assert ViewAugmenter("standard", 2, mean=0.5, std=0.5)(gray, gen()).shape == (4, 1, 16, 16)
    with pytest.raises(ConfigError, match="one per channel"):
        ViewAugmenter("standard", 2, **CIFAR)(gray, gen())  # CIFAR-10's three means


def test_repeat_targets_matches_the_layout() -> None:
    t = torch.tensor([3, 1, 4])
    assert repeat_targets(t, 2).tolist() == [3, 3, 1, 1, 4, 4]
    soft = torch.eye(3)
    assert torch.equal(repeat_targets(soft, 2), soft.repeat_interleave(2, dim=0))
    assert repeat_targets(t, 1) is t
    with pytest.raises(ConfigError, match="m must be >= 1"):
        repeat_targets(t, 0)


# ----------------------------------------------------------------------------------- property tests


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(list(POLICY_NAMES) + ["standard+cutout"]), n=st.integers(0, 4),
       channels=st.sampled_from([1, 3]), height=st.integers(3, 40), width=st.integers(3, 40),
       m=st.integers(1, 3), seed=st.integers(0, 2**31 - 1))
def test_any_shape_any_policy(name: str, n: int, channels: int, height: int, width: int, m: int, seed: int) -> None:
    """Any batch size (including empty), one or three channels, non-square sizes down to 3 pixels:
    the views have the right shape and dtype, are finite, lie in the normalized pixel range, and
    repeat under the same seed."""
    x = torch.randint(0, 256, (n, channels, height, width), dtype=torch.uint8, generator=gen(seed))
    mean, std = (0.5,) * channels, (0.25,) * channels
    va = ViewAugmenter(build_policy(name), m, mean, std)
    out = va(x, gen(seed))
    assert out.shape == (n * m, channels, height, width) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())
    if out.numel():
        assert float(out.min()) >= (0 - 0.5) / 0.25 - 1e-5 and float(out.max()) <= (1 - 0.5) / 0.25 + 1e-5
    assert torch.equal(out, va(x, gen(seed)))


@settings(max_examples=25, deadline=None)
@given(height=st.integers(1, 48), width=st.integers(1, 48), size=st.integers(1, 40), seed=st.integers(0, 1000))
def test_resized_crop_boxes_always_fit(height: int, width: int, size: int, seed: int) -> None:
    x = torch.randint(0, 256, (6, 3, height, width), dtype=torch.uint8, generator=gen(seed))
    out = build_policy({"name": "resized_crop", "size": size, "scale": [0.01, 1.0], "ratio": [0.2, 5.0]})(x, gen(seed))
    assert out.shape == (6, 3, size, size)


# -------------------------------------------------------------------------------------------- devices


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("spec", ["standard+cutout", "randaugment", "autoaugment", "augmix", "colorjitter",
                                  {"name": "resized_crop", "size": 24}])
def test_cuda_views_stay_on_the_device_and_repeat(images: Tensor, spec: object) -> None:
    x = images.cuda()
    va = ViewAugmenter(spec, 4, **CIFAR)
    a, b = va(x, gen(5, "cuda")), va(x, gen(5, "cuda"))
    assert a.is_cuda and torch.equal(a, b)
    c = va(x, gen(5, "cpu"))  # a CPU generator drives CUDA images: drawn on the CPU, then moved
    assert c.is_cuda and torch.equal(c, va(x, gen(5, "cpu")))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_ops_equal_cpu_ops_for_the_same_parameters(images: Tensor) -> None:
    _assert_ops_agree_with_cpu(images, "cuda")


def _assert_ops_agree_with_cpu(images: Tensor, device: str) -> None:
    """``apply_ops`` on ``device`` against the CPU, with what ``pixels`` allows float32 to change:
    the geometric rows (nearest) may pick the other neighbour where a source coordinate is within
    rounding of a tie, the blends may be one level off on a few pixels, the rest is exact."""
    from batchaug.augment import apply_ops
    from batchaug.augment import autoaugment as AA

    n, _, h, w = images.shape
    op = torch.arange(n) % 15
    value = torch.linspace(-0.3, 0.9, n)
    value[op == 10] = 6  # posterize bits
    cpu = apply_ops(images, op, value)
    other = apply_ops(images.to(device), op.to(device), value.to(device)).cpu()
    names = [AA.OPS[int(i)] for i in op]
    geometric = torch.tensor([name in AA._GEOMETRIC for name in names])
    float_math = torch.tensor([name in ("brightness", "color", "contrast", "sharpness") for name in names])
    exact = ~(geometric | float_math)
    matrix = AA._affine_matrices(op, value, h, w)
    assert_resampled_close(other[geometric], cpu[geometric], images[geometric], matrix[geometric], "nearest")
    assert_rounded_close(other[float_math], cpu[float_math])
    assert_close_uint8(other[exact], cpu[exact])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uint8_views_do_not_synchronize_but_float_ones_check_their_range(images: Tensor) -> None:
    """Accepting float input must not cost the uint8 fast path a device synchronization; the float
    path's range check is the one that does (and gives the uint8 path's views)."""
    x = images.cuda()
    va = ViewAugmenter("none", 4, **CIFAR)
    expected = va(x)  # warm-up: the normalization constants are copied to the device once, then cached
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        va(x)
        with pytest.raises(RuntimeError, match="synchroniz"):
            va(x.float() / 255)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert torch.equal(va(x.float() / 255), expected)
