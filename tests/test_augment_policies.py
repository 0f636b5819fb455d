"""Policies: building them by name, the output contract, distinct views per sample, determinism,
and that every view is distributed like one torchvision call on that image (two-sample
Kolmogorov-Smirnov tests on image statistics, torchvision sampled per image as the reference)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from test_augment_ops import gen, load_cifar
from torch import Tensor
from torchvision.transforms import v2

from batchaug.augment import (
    POLICY_NAMES,
    AugMix,
    AutoAugment,
    ColorJitter,
    Compose,
    Cutout,
    GaussianNoise,
    HorizontalFlip,
    Identity,
    Policy,
    RandAugment,
    RandomCrop,
    RandomResizedCrop,
    Standard,
    TrivialAugment,
    _random,
    build_policy,
)
from batchaug.errors import ConfigError

# small batches: a second torch thread only adds OpenMP waits on a loaded machine
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(cifar_zip: Path) -> Tensor:
    return load_cifar(cifar_zip, 16)


RANDOMIZED = ["crop", "resized_crop", "standard", "cutout", "translate", "colorjitter", "gaussian", "randaugment",
              "trivialaugment", "augmix", "standard+cutout"]


# ----------------------------------------------------------------------------------------- building


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_name_builds_and_round_trips_through_its_config(name: str) -> None:
    policy = build_policy(name)
    assert isinstance(policy, Policy)
    assert build_policy(policy.config()) == policy
    stages = policy.policies if isinstance(policy, Compose) else (policy,)
    assert all(f"{type(stage).__name__}(" in repr(policy) for stage in stages)


def test_cutout_alone_is_the_whole_recipe_and_a_stage_in_compositions() -> None:
    recipe = Standard() + Cutout()
    assert build_policy("cutout") == recipe
    assert build_policy("standard+cutout") == recipe
    assert build_policy(["standard", "cutout"]) == recipe
    assert build_policy({"name": "cutout"}) == recipe
    assert build_policy({"name": "cutout", "length": 8}) == Standard() + Cutout(length=8)
    assert build_policy(["standard", {"name": "randaugment", "num_ops": 3}, "cutout"]) == Compose(
        [Standard(), RandAugment(num_ops=3), Cutout()])
    assert build_policy(None) == Identity()


def test_options_from_yaml_style_mappings() -> None:
    p = build_policy({"name": "randaugment", "num_ops": 3, "magnitude": 5, "magnitude_std": 0.5})
    assert (p.num_ops, p.magnitude, p.magnitude_std) == (3, 5, 0.5)
    assert build_policy({"name": "gaussian", "sigma": [0.0, 0.2]}).sigma == (0.0, 0.2)
    assert build_policy({"name": "autoaugment", "policy": "svhn"}).policy == "svhn"


@pytest.mark.parametrize("spec, words", [
    ("randaug", ["unknown name 'randaug'", "randaugment", "standard"]),
    ("standard+flp", ["unknown name 'flp'"]),
    ({"name": "randaugment", "n": 2}, ["unknown option 'n'", "num_ops", "magnitude"]),
    ({"num_ops": 2}, ["'name'"]),
    ({"name": "randaugment", "magnitude": 31}, ["magnitude", "<= 30"]),
    ({"name": "crop", "padding": -1}, ["padding", ">= 0"]),
    ({"name": "crop", "padding_mode": "wrap"}, ["padding_mode", "reflect"]),
    ({"name": "flip", "p": 1.5}, ["p", "<= 1"]),
    ({"name": "autoaugment", "policy": "mnist"}, ["cifar10", "imagenet", "svhn"]),
    ({"name": "augmix", "depth": 0}, ["depth"]),
    ({"name": "gaussian", "sigma": [0.3, 0.1]}, ["sigma", "low <= high"]),
    ({"name": "cutout", "fill": [300]}, ["fill", "255"]),
    ({"name": "randaugment", "interpolation": "bicubic"}, ["interpolation", "nearest", "bilinear"]),
    (3, ["name, a mapping, a list"]),
])
def test_bad_specs_say_what_is_wrong_and_what_is_allowed(spec: object, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_policy(spec)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_image_size_fixes_the_size_dependent_defaults() -> None:
    small = build_policy("cutout", image_size=32)
    assert small.config() == [
        {"name": "standard", "padding": 4, "padding_mode": "constant", "fill": 0.0, "scale": [0.08, 1.0],
         "ratio": [3 / 4, 4 / 3], "flip_p": 0.5, "resized_crop_from": 64},
        {"name": "cutout", "length": 16, "n_holes": 1, "fill": 0.0}]
    assert build_policy("cutout", image_size=(224, 224)).policies[1].length == 112
    assert build_policy("autoaugment", image_size=32).policy == "cifar10"
    assert build_policy("autoaugment", image_size=224).policy == "imagenet"
    assert build_policy("crop", image_size=(40, 24)).padding == 3
    with pytest.raises(ConfigError, match="image_size"):
        build_policy("standard", image_size=0)


def test_standard_switches_to_random_resized_crop_from_64_pixels() -> None:
    def two_levels(h: int, w: int) -> Tensor:
        return (torch.rand(8, 3, h, w, generator=gen()) < 0.5).to(torch.uint8) * 200

    # a resized crop interpolates, making grey levels that pad-and-crop (zero padding) never makes
    big, small = two_levels(96, 80), two_levels(40, 40)
    out_big, out_small = Standard()(big, gen()), Standard()(small, gen())
    assert out_big.shape == big.shape and out_small.shape == small.shape
    assert set(out_small.unique().tolist()) <= {0, 200}
    assert len(set(out_big.unique().tolist()) - {0, 200}) > 100


# -------------------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", list(POLICY_NAMES) + ["standard+cutout", "flip+gaussian+trivialaugment"])
@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (5, 1, 20, 36), (0, 3, 16, 16)])
def test_output_is_uint8_of_the_right_shape_on_the_same_device(name: str, shape: tuple[int, ...]) -> None:
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen(1))
    policy = build_policy(name)
    out = policy(x, gen(2))
    assert out.dtype == torch.uint8 and out.device == x.device
    assert tuple(out.shape) == (shape[0], shape[1], *policy.output_size(shape[2], shape[3]))
    assert torch.equal(x, torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen(1)))  # input untouched


def test_resizing_policies_report_their_output_size() -> None:
    x = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=gen())
    for policy in (RandomCrop(size=24, padding=0), RandomResizedCrop(size=(16, 24))):
        out = policy(x, gen())
        assert tuple(out.shape[-2:]) == policy.output_size(40, 40)


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8), "img"])
def test_policies_reject_what_is_not_a_uint8_batch(bad: object) -> None:
    with pytest.raises(ConfigError, match="images"):
        build_policy("standard")(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", RANDOMIZED + ["autoaugment"])
def test_views_of_one_sample_differ(images: Tensor, name: str) -> None:
    """At M = 16, at least 95% of the pairs of a sample's views differ. AutoAugment's CIFAR-10
    policy often applies nothing, so it is held to what torchvision's per-image sampling gives on
    the same images instead (its rate here is about 0.9)."""
    m = 16
    views = build_policy(name)(images.repeat_interleave(m, dim=0), gen(3)).view(images.shape[0], m, -1)
    rate = _distinct_pair_rate(views)
    if name != "autoaugment":
        assert rate >= 0.95, rate
        return
    torch.manual_seed(3)
    tv = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    ref = torch.stack([torch.stack([tv(img) for _ in range(m)]) for img in images]).view(images.shape[0], m, -1)
    assert rate >= _distinct_pair_rate(ref) - 0.05


def _distinct_pair_rate(views: Tensor) -> float:
    m = views.shape[1]
    i, j = torch.triu_indices(m, m, 1)
    same = (views[:, i] == views[:, j]).all(dim=-1)
    return 1.0 - float(same.float().mean())


@pytest.mark.parametrize("name", RANDOMIZED + ["flip", "autoaugment"])
def test_same_seed_same_views_other_seed_other_views(images: Tensor, name: str) -> None:
    policy = build_policy(name)
    x = images.repeat_interleave(4, dim=0)
    a, b, c = policy(x, gen(5)), policy(x, gen(5)), policy(x, gen(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_generator_is_used_without_one(images: Tensor) -> None:
    torch.manual_seed(7)
    a = build_policy("randaugment")(images)
    torch.manual_seed(7)
    assert torch.equal(a, build_policy("randaugment")(images))


# ------------------------------------------------------------------- distributions per view vs torchvision


def _stats(batch: Tensor) -> np.ndarray:
    """Per image: mean of each channel and overall spread, as float64 columns."""
    x = batch.double().flatten(2)
    return torch.cat([x.mean(dim=2), x.flatten(1).std(dim=1, keepdim=True)], dim=1).numpy()


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    cdf_a, cdf_b = np.searchsorted(a, grid, "right") / a.size, np.searchsorted(b, grid, "right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _assert_same_distribution(ours: Tensor, ref: Tensor) -> None:
    """Every statistic's KS distance below the 1e-4 critical value (deterministic seeds: no flakes)."""
    sa, sb = _stats(ours), _stats(ref)
    n, m = sa.shape[0], sb.shape[0]
    critical = math.sqrt(-math.log(1e-4 / 2) / 2) * math.sqrt((n + m) / (n * m))
    for col in range(sa.shape[1]):
        d = _ks(sa[:, col], sb[:, col])
        assert d < critical, f"statistic {col}: KS distance {d:.3f} >= {critical:.3f}"


def _torchvision_per_image(transform, image: Tensor, n: int, seed: int) -> Tensor:
    torch.manual_seed(seed)
    return torch.stack([transform(image) for _ in range(n)])


@pytest.mark.parametrize("ours, theirs, n", [
    (RandAugment(num_ops=2, magnitude=9), v2.RandAugment(num_ops=2, magnitude=9), 2000),
    (RandAugment(num_ops=1, magnitude=20), v2.RandAugment(num_ops=1, magnitude=20), 2000),
    (TrivialAugment(), v2.TrivialAugmentWide(), 2000),
    (AutoAugment("cifar10"), v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10), 2000),
    (AutoAugment("imagenet"), v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET), 2000),
    (AugMix(), v2.AugMix(), 600),
    (ColorJitter(0.4, 0.4, 0.4, 0.1), v2.ColorJitter(0.4, 0.4, 0.4, 0.1), 1000),
    (Standard() + Cutout(), None, 2000),
], ids=["randaugment", "randaugment-1op-m20", "trivialaugment", "autoaugment-cifar10", "autoaugment-imagenet",
        "augmix", "colorjitter", "standard+cutout"])
def test_each_view_is_distributed_like_one_torchvision_call(images: Tensor, ours: Policy, theirs: object,
                                                            n: int) -> None:
    image = images[5]
    if theirs is None:  # the authors' route: PIL crop + flip, then the reference cutout
        theirs = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.PILToTensor(), _reference_cutout])
        image = T.functional.to_pil_image(image)
    ref = _torchvision_per_image(theirs, image, n, seed=11)
    out = ours(images[5:6].expand(n, -1, -1, -1).contiguous(), gen(12))
    _assert_same_distribution(out, ref)


def _reference_cutout(img: Tensor) -> Tensor:
    """DeVries & Taylor's cutout, per image (numpy-style clipping of a 16x16 square)."""
    h, w = img.shape[1:]
    y, x = int(torch.randint(h, ())), int(torch.randint(w, ()))
    out = img.clone()
    out[:, max(0, y - 8):min(h, y + 8), max(0, x - 8):min(w, x + 8)] = 0
    return out


def test_the_kolmogorov_smirnov_check_catches_a_wrong_magnitude(images: Tensor) -> None:
    ref = _torchvision_per_image(v2.RandAugment(num_ops=2, magnitude=9), images[5], 2000, seed=11)
    out = RandAugment(num_ops=2, magnitude=14)(images[5:6].expand(2000, -1, -1, -1).contiguous(), gen(12))
    with pytest.raises(AssertionError, match="KS distance"):
        _assert_same_distribution(out, ref)


def test_crop_offsets_and_flips_are_uniform_per_view() -> None:
    """A coordinate image reveals each view's crop offset and flip: all 81 offsets and both flips
    occur, with frequencies within 5 standard errors of uniform."""
    h = w = 32
    coords = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    coords[0, 0] = torch.arange(1, h + 1, dtype=torch.uint8).view(h, 1)
    coords[0, 1] = torch.arange(1, w + 1, dtype=torch.uint8).view(1, w)
    n = 16200
    out = Standard()(coords.expand(n, -1, -1, -1).contiguous(), gen(13))
    centre = out[:, :, 16, 16].long()  # the centre pixel is never padding
    dy, dx = centre[:, 0] - 17, centre[:, 1] - 17
    flipped = (out[:, 1, 16, 17].long() - out[:, 1, 16, 16].long()) < 0
    dx = torch.where(flipped, -dx - 1, dx)  # a flipped crop's centre column mirrors
    counts = torch.bincount((dy + 4) * 9 + (dx + 4), minlength=81).double()
    assert counts.numel() == 81 and bool((counts > 0).all())
    expected = n / 81
    assert float((counts - expected).abs().max()) < 5 * math.sqrt(expected)
    assert abs(float(flipped.double().mean()) - 0.5) < 5 * math.sqrt(0.25 / n)


def test_flip_probability_is_respected() -> None:
    x = torch.arange(2, dtype=torch.uint8).view(1, 1, 1, 2).expand(20000, 1, 1, 2).contiguous()
    out = HorizontalFlip(p=0.3)(x, gen(14))
    assert abs(float((out[:, 0, 0, 0] == 1).double().mean()) - 0.3) < 0.015


def test_gaussian_sigma_range_is_drawn_per_view() -> None:
    x = torch.full((400, 1, 32, 32), 128, dtype=torch.uint8)
    out = GaussianNoise(sigma=[0.02, 0.12])(x, gen(15))
    spread = (out.double() - 128).flatten(1).std(dim=1) / 255
    assert 0.015 < float(spread.min()) < 0.03 and 0.11 < float(spread.max()) < 0.13


def test_magnitude_noise_spreads_randaugment_magnitudes(images: Tensor) -> None:
    x = images[5:6].expand(1500, -1, -1, -1).contiguous()
    fixed = RandAugment(num_ops=1, magnitude=15)(x, gen(16))
    noisy = RandAugment(num_ops=1, magnitude=15, magnitude_std=math.inf)(x, gen(16))
    # uniform in [0, 15] is weaker on average than 15: images stay closer to the original
    dist_fixed = (fixed.float() - x.float()).abs().mean()
    dist_noisy = (noisy.float() - x.float()).abs().mean()
    assert dist_noisy < dist_fixed


# ---------------------------------------------------------------------------------- random sources


@pytest.mark.parametrize("alpha", [0.3, 1.0, 4.0])
def test_gamma_and_dirichlet_sampler_moments(alpha: float) -> None:
    g = _random.gamma(alpha, (40000,), gen(17), torch.device("cpu"))
    assert abs(float(g.mean()) - alpha) < 0.03 * max(alpha, 1) and abs(float(g.var()) - alpha) < 0.08 * max(alpha, 1)
    d = _random.dirichlet(alpha, 3, 20000, gen(18), torch.device("cpu"))
    assert torch.allclose(d.sum(dim=1), torch.ones(20000))
    assert torch.allclose(d.mean(dim=0), torch.full((3,), 1 / 3), atol=0.01)
    # Dirichlet marginal Beta(alpha, 2 alpha): variance (1/3)(2/3) / (3 alpha + 1)
    assert abs(float(d[:, 0].var()) - (2 / 9) / (3 * alpha + 1)) < 0.01
