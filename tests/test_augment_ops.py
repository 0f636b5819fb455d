"""Every vectorized operation against torchvision's functional operation, image by image, on the
same parameters: real CIFAR-10 images plus edge cases (flat, two-level, gradient), square and
non-square, RGB and one-channel. Integer operations are compared bit for bit; operations done in
floating point with the tolerance ``pixels`` documents (what float32 promises on any CPU or GPU)."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageOps
from pixels import assert_close_uint8, assert_resampled_close, assert_rounded_close
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.functional import (
    _get_inverse_affine_matrix as tv_inverse_affine,
)

from batchaug.augment import autoaugment as AA
from batchaug.augment import color, geometry
from batchaug.errors import ConfigError

InterpolationMode = TF.InterpolationMode

# small batches: a second torch thread only adds OpenMP waits on a loaded machine
pytestmark = pytest.mark.usefixtures("one_thread")


def load_cifar(path: Path, n: int) -> Tensor:
    """``n`` decoded CIFAR-10 test images spread over the classes, uint8 (n, 3, 32, 32)."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(x for x in zf.namelist() if "/test/" in x and x.endswith(".jpg"))
        picked = names[:: len(names) // n][:n]
        arrays = [np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB")) for name in picked]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def rgb(cifar_zip: Path) -> Tensor:
    x = load_cifar(cifar_zip, 64)
    x[0] = 128  # flat
    x[1, 0] = 7  # one flat channel
    x[2] = x[2] // 128 * 255  # two levels
    x[3] = torch.arange(0, 256, 8, dtype=torch.uint8).view(1, 1, 32).expand(3, 32, 32)  # gradient
    return x


@pytest.fixture(params=["rgb", "nonsquare", "gray"])
def images(request: pytest.FixtureRequest, rgb: Tensor) -> Tensor:
    if request.param == "rgb":
        return rgb
    if request.param == "nonsquare":
        return rgb[:, :, 3:27, :].contiguous()  # 24 x 32
    return rgb[:, 1:2].contiguous()


def per_image(images: Tensor, fn) -> Tensor:
    return torch.stack([fn(images[i], i) for i in range(images.shape[0])])


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    """A seeded generator (shared by the augment test modules)."""
    return torch.Generator(device=device).manual_seed(seed)


# ----------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("mode", geometry.PADDING_MODES)
def test_crop_with_padding_and_flip_matches_pad_crop_flip(images: Tensor, mode: str) -> None:
    n, c, h, w = images.shape
    g = gen(1)
    top = torch.randint(0, 9, (n,), generator=g)
    left = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    fill = 7 if c == 1 or mode != "constant" else [7, 80, 200]  # torchvision: per-channel fill is constant-only
    ours = geometry.crop(images, top, left, h, w, padding=4, padding_mode=mode, fill=fill, flip=flip)

    def ref(img: Tensor, i: int) -> Tensor:
        out = TF.crop(TF.pad(img, [4], fill=fill, padding_mode=mode), int(top[i]), int(left[i]), h, w)
        return TF.horizontal_flip(out) if flip[i] else out

    assert_close_uint8(ours, per_image(images, ref))


def test_crop_to_a_smaller_window(rgb: Tensor) -> None:
    n = rgb.shape[0]
    top, left = torch.randint(0, 13, (n,), generator=gen(2)), torch.randint(0, 5, (n,), generator=gen(3))
    ours = geometry.crop(rgb, top, left, 20, 28)
    assert_close_uint8(ours, per_image(rgb, lambda img, i: TF.crop(img, int(top[i]), int(left[i]), 20, 28)))


def test_translate_matches_integer_affine(images: Tensor) -> None:
    n = images.shape[0]
    dx = torch.randint(-12, 13, (n,), generator=gen(4))
    dy = torch.randint(-12, 13, (n,), generator=gen(5))
    ours = geometry.translate(images, dx, dy)
    ref = per_image(images, lambda img, i: TF.affine(img, angle=0.0, translate=[int(dx[i]), int(dy[i])], scale=1.0,
                                                     shear=[0.0, 0.0]))
    assert_close_uint8(ours, ref)


def test_hflip_on_masked_rows(images: Tensor) -> None:
    mask = torch.rand(images.shape[0], generator=gen(6)) < 0.5
    ours = geometry.hflip(images, mask)
    assert_close_uint8(ours, per_image(images, lambda img, i: TF.horizontal_flip(img) if mask[i] else img))


@pytest.mark.parametrize("length, holes", [(16, 1), (8, 3), (5, 1)])
def test_cutout_matches_erase_of_clipped_squares(images: Tensor, length: int, holes: int) -> None:
    n, c, h, w = images.shape
    cy = torch.randint(0, h, (n, holes), generator=gen(7))
    cx = torch.randint(0, w, (n, holes), generator=gen(8))
    fill = [1, 2, 3][:c] if c == 3 else [9]
    ours = geometry.cutout(images, cy, cx, length, fill=fill)

    def ref(img: Tensor, i: int) -> Tensor:
        for k in range(holes):
            y0, x0 = int(cy[i, k]) - length // 2, int(cx[i, k]) - length // 2
            y1, x1 = max(0, y0), max(0, x0)
            y2, x2 = min(h, y0 + length), min(w, x0 + length)
            if y2 > y1 and x2 > x1:
                img = TF.erase(img, y1, x1, y2 - y1, x2 - x1, torch.tensor(fill, dtype=torch.uint8).view(-1, 1, 1))
        return img

    assert_close_uint8(ours, per_image(images, ref))


@pytest.mark.parametrize("size", [32, (20, 28), 48])
def test_resized_crop_matches_within_one_level(images: Tensor, size: int | tuple[int, int]) -> None:
    """torchvision's uint8 CPU kernel rounds in fixed point between its two passes; ours is float32
    throughout. Against torchvision's float path (rounded once) the results are equal."""
    n = images.shape[0]
    torch.manual_seed(0)
    boxes = [v2.RandomResizedCrop.get_params(images[0], scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3]) for _ in range(n)]
    top, left, bh, bw = (torch.tensor(v) for v in zip(*boxes))
    hw = [size, size] if isinstance(size, int) else list(size)
    ours = geometry.resized_crop(images, top, left, bh, bw, size)
    ref = per_image(images, lambda img, i: TF.resized_crop(img, int(top[i]), int(left[i]), int(bh[i]), int(bw[i]),
                                                           hw, antialias=True))
    assert_close_uint8(ours, ref, max_diff=1, max_fraction=0.3)
    ref_float = per_image(images.float(), lambda img, i: TF.resized_crop(img, int(top[i]), int(left[i]), int(bh[i]),
                                                                         int(bw[i]), hw, antialias=True))
    assert_close_uint8(ours, ref_float.round().clamp(0, 255).to(torch.uint8), max_diff=1, max_fraction=1e-3)


def test_resized_crop_flip_mirrors_the_rows(rgb: Tensor) -> None:
    n = rgb.shape[0]
    top, left, size = torch.full((n,), 3), torch.full((n,), 5), torch.full((n,), 20)
    flip = torch.arange(n) % 2 == 0
    plain = geometry.resized_crop(rgb, top, left, size, size, 32)
    flipped = geometry.resized_crop(rgb, top, left, size, size, 32, flip=flip)
    assert torch.equal(flipped[flip], plain[flip].flip(-1)) and torch.equal(flipped[~flip], plain[~flip])


def test_resized_crop_rejects_boxes_outside_the_image(rgb: Tensor) -> None:
    one = torch.ones(rgb.shape[0], dtype=torch.long)
    with pytest.raises(ConfigError, match="inside"):
        geometry.resized_crop(rgb, one * 30, one, one * 8, one * 8, 16)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
@pytest.mark.parametrize("fill", [None, 0, "color"])
def test_rotate_matches(images: Tensor, interpolation: str, fill: object) -> None:
    n, c = images.shape[:2]
    if fill == "color":
        fill = [10, 20, 30] if c == 3 else [40]
    angle = torch.rand(n, generator=gen(9)) * 360 - 180
    angle[:16] = torch.tensor([0.0, 90.0, -90.0, 180.0, 270.0, 30.0, -30.0, 45.0, 12.0, -7.0, 1.0, 359.0, 720.0,
                               -0.5, 135.0, 29.0])
    ours = geometry.rotate(images, angle, interpolation=interpolation, fill=fill)
    mode = InterpolationMode(interpolation)
    ref = per_image(images, lambda img, i: TF.rotate(img, float(angle[i]), interpolation=mode,
                                                     fill=fill))
    matrix = torch.tensor([tv_inverse_affine([0.0, 0.0], -(float(a) % 360), [0.0, 0.0], 1.0, [0.0, 0.0])
                           for a in angle])
    assert_resampled_close(ours, ref, images, matrix, interpolation, fill)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_affine_matches_with_every_parameter(images: Tensor, interpolation: str) -> None:
    n, _, h, w = images.shape
    g = gen(10)
    angle = torch.rand(n, generator=g) * 90 - 45
    translate = torch.randint(-6, 7, (n, 2), generator=g).double()
    shear = torch.rand(n, 2, generator=g).double() * 40 - 20
    center = torch.randint(0, min(h, w), (n, 2), generator=g).double()
    ours = geometry.affine(images, angle, translate, shear, center=center, interpolation=interpolation)

    def ref(img: Tensor, i: int) -> Tensor:
        return TF.affine(img, angle=float(angle[i]), translate=translate[i].tolist(), scale=1.0,
                         shear=shear[i].tolist(), center=center[i].tolist(),
                         interpolation=InterpolationMode(interpolation))

    matrix = torch.tensor([tv_inverse_affine([float(center[i, 0]) - w * 0.5, float(center[i, 1]) - h * 0.5],
                                             float(angle[i]), translate[i].tolist(), 1.0, shear[i].tolist())
                           for i in range(n)])
    assert_resampled_close(ours, per_image(images, ref), images, matrix, interpolation)


# -------------------------------------------------------------------------------------------- color


def _factors(n: int, seed: int) -> Tensor:
    """RandAugment's blend factors 1 +- linspace(0, 0.9, 31) plus a few wide ones."""
    g = gen(seed)
    f = 1 + torch.linspace(0, 0.9, 31)[torch.randint(0, 31, (n,), generator=g)] * torch.where(
        torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    f[:4] = torch.tensor([0.0, 1.0, 2.0, 1.99])
    return f


@pytest.mark.parametrize("name", ["brightness", "saturation", "contrast", "sharpness"])
def test_blends_match(images: Tensor, name: str) -> None:
    factor = _factors(images.shape[0], 11)
    ours = getattr(color, f"adjust_{name}")(images, factor)
    ref_fn = getattr(TF, f"adjust_{name}")
    assert_rounded_close(ours, per_image(images, lambda img, i: ref_fn(img, float(factor[i]))))


def test_hue_matches_within_one_level(images: Tensor) -> None:
    shift = torch.rand(images.shape[0], generator=gen(12)) - 0.5
    ours = color.adjust_hue(images, shift)
    ref = per_image(images, lambda img, i: TF.adjust_hue(img, float(shift[i])))
    assert_rounded_close(ours, ref)


def test_solarize_posterize_invert_match(images: Tensor) -> None:
    n = images.shape[0]
    g = gen(13)
    threshold = 255.0 * torch.linspace(1.0, 0.0, 31)[torch.randint(0, 31, (n,), generator=g)].double()
    bits = torch.randint(0, 9, (n,), generator=g)
    assert_close_uint8(color.solarize(images, threshold),
                       per_image(images, lambda img, i: TF.solarize(img, float(threshold[i]))))
    assert_close_uint8(color.posterize(images, bits), per_image(images, lambda img, i: TF.posterize(img, int(bits[i]))))
    assert_close_uint8(color.invert(images), per_image(images, lambda img, i: TF.invert(img)))


def test_histogram_ops_match_torchvision_and_pil(images: Tensor) -> None:
    assert_close_uint8(color.autocontrast(images), per_image(images, lambda img, i: TF.autocontrast(img)))
    assert_close_uint8(color.equalize(images), per_image(images, lambda img, i: TF.equalize(img)))
    if images.shape[1] == 3:
        pil = per_image(images, lambda img, i: TF.pil_to_tensor(ImageOps.equalize(TF.to_pil_image(img))))
        assert_close_uint8(color.equalize(images), pil)


def test_gaussian_noise_on_float_images_matches_torchvision(rgb: Tensor) -> None:
    x = rgb[:8].float() / 255
    torch.manual_seed(3)
    ref = TF.gaussian_noise(x, mean=0.0, sigma=0.1, clip=True)  # one randn_like over the batch
    ours = color.gaussian_noise(x, torch.full((8,), 0.1), gen(3))
    torch.testing.assert_close(ours, ref)


def test_gaussian_noise_on_uint8_has_the_asked_spread(rgb: Tensor) -> None:
    x = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    sigma = torch.linspace(0.0, 0.2, 64)
    out = color.gaussian_noise(x, sigma, gen(4))
    assert out.dtype == torch.uint8
    spread = (out.float() - 128).flatten(1).std(dim=1) / 255
    assert torch.allclose(spread, sigma, atol=0.01)


# ------------------------------------------------------------------------- RandAugment operation set

_MAGNITUDES = {  # every bin: some (e.g. shear 0.28 on 24-pixel-high images) hit float32 ties
    "randaugment": (AA._RANDAUGMENT_SPACE, 31),
    "trivialaugment": (AA._TRIVIAL_SPACE, 31),
    "augmix": (AA._AUGMIX_ALL_SPACE, 10),
    "autoaugment": (AA._AUTOAUGMENT_SPACE, 10),
}


# operations that blend in float (a weighted grey level, a mean, a blur) before rounding to uint8
_FLOAT_MATH_OPS = ("brightness", "color", "contrast", "sharpness")


def torchvision_op(img: Tensor, op: str, v: float, interpolation: InterpolationMode) -> Tensor:
    """torchvision's RandAugment/AutoAugment operation ``op`` at signed magnitude ``v``, spelled out
    with the public functional API (its conventions: shears about the corner by atan(v), integer
    translations, blends at 1 + v, solarize at 255 * v)."""
    if op == "identity":
        return img
    if op in ("shear_x", "shear_y"):
        deg = math.degrees(math.atan(v))
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0,
                         shear=[deg, 0.0] if op == "shear_x" else [0.0, deg], interpolation=interpolation,
                         center=[0, 0])
    if op in ("translate_x", "translate_y"):
        t = [int(v), 0] if op == "translate_x" else [0, int(v)]
        return TF.affine(img, angle=0.0, translate=t, scale=1.0, shear=[0.0, 0.0], interpolation=interpolation)
    if op == "rotate":
        return TF.rotate(img, v, interpolation=interpolation)
    blend = {"brightness": TF.adjust_brightness, "color": TF.adjust_saturation, "contrast": TF.adjust_contrast,
             "sharpness": TF.adjust_sharpness}
    if op in blend:
        return blend[op](img, 1.0 + v)
    if op == "posterize":
        return TF.posterize(img, int(v))
    if op == "solarize":
        return TF.solarize(img, 255.0 * v)
    return {"autocontrast": TF.autocontrast, "equalize": TF.equalize, "invert": TF.invert}[op](img)


@pytest.mark.parametrize("space", list(_MAGNITUDES))
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_every_operation_at_every_table_magnitude_matches(images: Tensor, space: str, interpolation: str) -> None:
    """One row per (operation, bin, sign), all in one batch: the grouped engine, its precomputed
    matrices (integer bins) and the same values passed as floats (``apply_ops``)."""
    spec, bins = _MAGNITUDES[space]
    _, _, h, w = images.shape
    table = AA._Table(spec, bins, h, w, torch.device("cpu"))
    k, m, neg = (t.flatten() for t in torch.meshgrid(torch.arange(table.size), torch.arange(bins),
                                                      torch.tensor([0, 1]), indexing="ij"))
    neg = neg.bool()
    rows = images[torch.arange(k.numel()) % images.shape[0]]
    op, value, matrix = table.lookup(k, m, neg)
    ours = AA._apply_ops(rows, op, value, matrix, interpolation, None)
    ours_public = AA.apply_ops(rows, op, value, interpolation=interpolation)
    mode = InterpolationMode(interpolation)
    ref = per_image(rows, lambda img, i: torchvision_op(img, AA.OPS[int(op[i])], float(value[i]), mode))
    names = [AA.OPS[int(i)] for i in op]
    geometric = torch.tensor([n in AA._GEOMETRIC for n in names])
    float_math = torch.tensor([n in _FLOAT_MATH_OPS for n in names])
    exact = ~(geometric | float_math)
    assert exact.any() and geometric.any() and float_math.any()
    assert_resampled_close(ours[geometric], ref[geometric], rows[geometric], matrix[geometric], interpolation)
    assert_rounded_close(ours[float_math], ref[float_math])
    assert_close_uint8(ours[exact], ref[exact])
    # the same values passed as floats must pick the same pixels as the precomputed matrices up to
    # the same float32 rounding (the matrices are built once in float64, apply_ops per call)
    assert_resampled_close(ours_public[geometric], ours[geometric], rows[geometric], matrix[geometric],
                           interpolation)
    assert_close_uint8(ours_public[~geometric], ours[~geometric])


@pytest.mark.parametrize("tv_cls, space, bins", [
    (v2.RandAugment, AA._RANDAUGMENT_SPACE, 31), (v2.TrivialAugmentWide, AA._TRIVIAL_SPACE, 31),
    (v2.AugMix, AA._AUGMIX_ALL_SPACE, 10), (v2.AutoAugment, AA._AUTOAUGMENT_SPACE, 10)])
def test_magnitude_tables_equal_torchvisions(tv_cls: type, space: dict, bins: int) -> None:
    names = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
             "AutoContrast": "autocontrast", "Color": "color"}
    tv_space = getattr(tv_cls, "_AUGMENTATION_SPACE", None)
    if tv_space is None:
        pytest.skip("this torchvision keeps its magnitude tables elsewhere")
    ours = AA._Table(space, bins, 24, 40, torch.device("cpu"))
    assert {names.get(k, k.lower()) for k in tv_space} == set(space)
    for tv_name, (fn, signed) in tv_space.items():
        k = list(space).index(names.get(tv_name, tv_name.lower()))
        tv_values = fn(bins, 24, 40)
        assert bool(ours.signed[k]) == signed, tv_name
        if tv_values is not None:
            assert torch.equal(ours.values[k], tv_values.float()), tv_name


@pytest.mark.parametrize("policy", ["cifar10", "imagenet", "svhn"])
def test_autoaugment_policies_equal_torchvisions(policy: str) -> None:
    tv = v2.AutoAugment(v2.AutoAugmentPolicy(policy))._policies
    to_ours = {"ShearX": "shear_x", "ShearY": "shear_y", "TranslateX": "translate_x", "TranslateY": "translate_y",
               "AutoContrast": "autocontrast"}
    expected = tuple(tuple((to_ours.get(op, op.lower()), p, m) for op, p, m in sub) for sub in tv)
    assert AA.AUTOAUGMENT_POLICIES[policy] == expected


def test_apply_ops_rejects_bad_rows(rgb: Tensor) -> None:
    with pytest.raises(ConfigError, match="op"):
        AA.apply_ops(rgb, torch.zeros(3, dtype=torch.long), torch.zeros(rgb.shape[0]))
    with pytest.raises(ConfigError, match="uint8"):
        AA.apply_ops(rgb.float(), torch.zeros(rgb.shape[0], dtype=torch.long), torch.zeros(rgb.shape[0]))


def test_colour_ops_name_the_channel_rule() -> None:
    with pytest.raises(ConfigError, match="1 or 3 channels"):
        color.adjust_saturation(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), torch.ones(2))
