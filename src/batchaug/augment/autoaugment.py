"""Learned and random operation-sequence policies with per-image draws: RandAugment (Cubuk et al.,
2020), AutoAugment (Cubuk et al., 2019; the CIFAR-10, ImageNet and SVHN policies), TrivialAugment
(Müller & Hutter, 2021, the "wide" space) and AugMix (Hendrycks et al., 2020).

Operations, magnitude tables and sampling follow torchvision's implementations, so that a row
here is distributed like one torchvision call on that image; the difference is that every row
draws its own operations, magnitudes and signs (torchvision's transforms draw once per call, and
kornia's RandAugment once per batch). The engine draws all choices for the batch at once, sorts
the rows by operation, and applies each operation once to its group (the five geometric
operations share one batched warp), so the number of kernel launches grows with the number of
distinct operations, not with the batch. Grouping needs the group sizes on the host: a policy draws
every operation of every slot (RandAugment's ``num_ops``, AugMix's chains and steps) first and reads
all their group sizes back at once, one device synchronization per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from batchaug.augment import _random, color, geometry
from batchaug.augment._validate import (
    check_images,
    check_rows,
    fill_option,
    fill_values,
    number,
    one_of,
)
from batchaug.augment.policies import Policy
from batchaug.errors import ConfigError
from batchaug.runtime.constants import device_constant

__all__ = ["AUTOAUGMENT_POLICIES", "OPS", "AugMix", "AutoAugment", "RandAugment", "TrivialAugment", "apply_ops"]

#: Every operation the engine knows, in the order of their ids.
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
       "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize", "invert")
_ID = {name: i for i, name in enumerate(OPS)}
_GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")

# Kernels: the geometric operations run as one "affine" group; every other operation is its own.
_KERNELS = ("identity", "affine") + tuple(op for op in OPS if op != "identity" and op not in _GEOMETRIC)
_KERNEL_OF_OP = tuple(1 if op in _GEOMETRIC else _KERNELS.index(op) for op in OPS)
_BLENDS = {"brightness": color.adjust_brightness, "color": color.adjust_saturation, "contrast": color.adjust_contrast,
           "sharpness": color.adjust_sharpness}

# A magnitude space maps an operation to (bin values for (num_bins, height, width), signed), or
# to None for operations without a magnitude. Solarize values are fractions of 255.
_Bins = Callable[[int, int, int], Tensor]
_Space = dict[str, "tuple[_Bins, bool] | None"]


def _linear(top: float) -> _Bins:
    return lambda bins, h, w: torch.linspace(0.0, top, bins)


def _posterize_bins(start: int, steps: int) -> _Bins:
    return lambda bins, h, w: (start - torch.arange(bins) / ((bins - 1) / steps)).round()


_SOLARIZE: _Bins = lambda bins, h, w: torch.linspace(1.0, 0.0, bins)

_RANDAUGMENT_SPACE: _Space = {
    "identity": None,
    "shear_x": (_linear(0.3), True),
    "shear_y": (_linear(0.3), True),
    "translate_x": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * w, bins), True),
    "translate_y": (lambda bins, h, w: torch.linspace(0.0, 150.0 / 331.0 * h, bins), True),
    "rotate": (_linear(30.0), True),
    "brightness": (_linear(0.9), True),
    "color": (_linear(0.9), True),
    "contrast": (_linear(0.9), True),
    "sharpness": (_linear(0.9), True),
    "posterize": (_posterize_bins(8, 4), False),
    "solarize": (_SOLARIZE, False),
    "autocontrast": None,
    "equalize": None,
}
_AUTOAUGMENT_SPACE: _Space = {**{k: v for k, v in _RANDAUGMENT_SPACE.items() if k != "identity"}, "invert": None}
_TRIVIAL_SPACE: _Space = {
    "identity": None,
    "shear_x": (_linear(0.99), True),
    "shear_y": (_linear(0.99), True),
    "translate_x": (_linear(32.0), True),
    "translate_y": (_linear(32.0), True),
    "rotate": (_linear(135.0), True),
    "brightness": (_linear(0.99), True),
    "color": (_linear(0.99), True),
    "contrast": (_linear(0.99), True),
    "sharpness": (_linear(0.99), True),
    "posterize": (_posterize_bins(8, 6), False),
    "solarize": (_SOLARIZE, False),
    "autocontrast": None,
    "equalize": None,
}
_AUGMIX_SPACE: _Space = {
    "shear_x": (_linear(0.3), True),
    "shear_y": (_linear(0.3), True),
    "translate_x": (lambda bins, h, w: torch.linspace(0.0, w / 3.0, bins), True),
    "translate_y": (lambda bins, h, w: torch.linspace(0.0, h / 3.0, bins), True),
    "rotate": (_linear(30.0), True),
    "posterize": (_posterize_bins(4, 4), False),
    "solarize": (_SOLARIZE, False),
    "autocontrast": None,
    "equalize": None,
}
_AUGMIX_ALL_SPACE: _Space = {**_AUGMIX_SPACE, "brightness": (_linear(0.9), True), "color": (_linear(0.9), True),
                             "contrast": (_linear(0.9), True), "sharpness": (_linear(0.9), True)}


class _Table:
    """A magnitude space laid out as tensors on one device: the global op id of each of its ``K``
    operations, a ``(K, num_bins)`` table of magnitude values (0 where an operation has none),
    which operations take a random sign, and the inverse matrices of the geometric operations at
    every bin and sign, so that binned magnitudes need no trigonometry per batch."""

    def __init__(self, space: _Space, num_bins: int, height: int, width: int, device: torch.device) -> None:
        self.size = len(space)
        self.num_bins = num_bins
        self.op_ids = torch.tensor([_ID[op] for op in space], device=device)
        values = torch.zeros(len(space), num_bins)
        for k, entry in enumerate(space.values()):
            if entry is not None:
                values[k] = entry[0](num_bins, height, width).to(torch.float32)
        self.values = values.to(device)
        self.signed = torch.tensor([e is not None and e[1] for e in space.values()], device=device)
        signed_values = torch.stack([self.values, -self.values], dim=-1)  # (K, bins, [+, -])
        ops = self.op_ids.view(-1, 1, 1).expand_as(signed_values)
        self.matrices = _affine_matrices(ops.reshape(-1), signed_values.reshape(-1), height, width,
                                         exact_limit=signed_values.numel()).view(self.size, num_bins, 2, 2, 3)

    def lookup(self, k: Tensor, magnitude: Tensor, negate: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Global op ids, signed float32 magnitude values and (for integer bins) inverse affine
        matrices for space indices ``k`` at bin positions ``magnitude``: an integer tensor, or a
        float tensor of fractional positions (values interpolated between bins, no matrices)."""
        negate = negate & self.signed[k]
        if not magnitude.is_floating_point():
            value = self.values[k, magnitude]
            return self.op_ids[k], torch.where(negate, -value, value), self.matrices[k, magnitude, negate.long()]
        low = magnitude.floor().long().clamp(0, self.num_bins - 1)
        high = (low + 1).clamp(max=self.num_bins - 1)
        value = torch.lerp(self.values[k, low], self.values[k, high], magnitude - low)
        return self.op_ids[k], torch.where(negate, -value, value), None


class _TableCache:
    """Tables per (space, bins, image size, device), built on first use."""

    def __init__(self) -> None:
        self._tables: dict[tuple[Any, ...], _Table] = {}

    def get(self, space: _Space, num_bins: int, height: int, width: int, device: torch.device) -> _Table:
        key = (id(space), num_bins, height, width, str(device))
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = _Table(space, num_bins, height, width, device)
        return table


def _degrees_of_atan(v: Tensor, exact_limit: int) -> Tensor:
    """``degrees(atan(v))`` (the shear angle of slope ``v``), with Python's ``math`` for up to
    ``exact_limit`` distinct values as torchvision computes it (see ``geometry.affine_matrix`` on
    why the last bit matters), else with torch."""
    if exact_limit <= 0:  # continuous values: no host round trip for the distinct ones
        return torch.rad2deg(torch.atan(v))
    distinct, index = torch.unique(v, return_inverse=True)
    if distinct.numel() > exact_limit:
        return torch.rad2deg(torch.atan(v))
    return torch.tensor([math.degrees(math.atan(x)) for x in distinct.tolist()], dtype=torch.float64,
                        device=v.device)[index]


def _affine_matrices(op: Tensor, value: Tensor, height: int, width: int, *, exact_limit: int = 256) -> Tensor:
    """Inverse affine matrices (N, 2, 3) of the geometric operations with torchvision's
    RandAugment conventions: shears by ``atan(v)`` about the top-left corner, translations by
    ``int(v)`` pixels, rotations by ``v`` degrees about the centre (``rotate`` is ``affine`` by
    ``-(v mod 360)``). Rows with other operations get the identity."""
    v = value.to(torch.float64)
    zero = torch.zeros_like(v)
    is_shear_x, is_shear_y = op == _ID["shear_x"], op == _ID["shear_y"]
    is_shear = is_shear_x | is_shear_y
    shear_deg = _degrees_of_atan(torch.where(is_shear, v, zero), exact_limit)
    angle = torch.where(op == _ID["rotate"], -v.remainder(360.0), zero)
    shear = torch.stack([torch.where(is_shear_x, shear_deg, zero), torch.where(is_shear_y, shear_deg, zero)], 1)
    shift = v.trunc()
    translate = torch.stack([torch.where(op == _ID["translate_x"], shift, zero),
                             torch.where(op == _ID["translate_y"], shift, zero)], 1)
    corner = device_constant([-0.5 * width, -0.5 * height], v.device, torch.float64)
    center = torch.where(is_shear[:, None], corner, torch.zeros_like(corner))
    return geometry.affine_matrix(angle, translate, shear, center, exact_limit=exact_limit)


def _run_kernel(kernel: str, images: Tensor, op: Tensor, value: Tensor, matrix: Tensor | None,
                interpolation: str, fill: tuple[float, ...] | None, exact_limit: int) -> Tensor:
    if kernel == "affine":
        if matrix is None:
            matrix = _affine_matrices(op, value, images.shape[-2], images.shape[-1], exact_limit=exact_limit)
        return geometry.warp_affine(images, matrix, interpolation=interpolation, fill=fill)
    if kernel in _BLENDS:
        return _BLENDS[kernel](images, 1.0 + value.to(torch.float64))
    if kernel == "posterize":
        return color.posterize(images, value.long())
    if kernel == "solarize":
        return color.solarize(images, 255.0 * value.to(torch.float64))
    if kernel == "autocontrast":
        return color.autocontrast(images)
    if kernel == "equalize":
        return color.equalize(images)
    if kernel == "invert":
        return color.invert(images)
    raise AssertionError(kernel)  # identity never reaches here


def apply_ops(images: Tensor, op: Tensor, value: Tensor, *, interpolation: str = "nearest",
              fill: float | Sequence[float] | None = None) -> Tensor:
    """Apply operation ``OPS[op[i]]`` with magnitude ``value[i]`` to row ``i`` of ``images``.

    Magnitudes are in torchvision's units: shear ``v`` (slope), translate pixels, rotate degrees,
    brightness/color/contrast/sharpness ``factor - 1``, posterize bits, solarize threshold as a
    fraction of 255. The rows are sorted by operation once (one host sync for the group sizes),
    each operation runs once on its contiguous slice, and one gather puts the rows back. Up to 256
    distinct geometric magnitudes get torchvision's matrices to the last bit (a second host sync).
    """
    check_images(images, "apply_ops")
    _check_interpolation(interpolation, "apply_ops")
    n = images.shape[0]
    op = check_rows(op, n, "apply_ops", "op").to(images.device, torch.long)
    value = check_rows(value, n, "apply_ops", "value").to(images.device, torch.float32)
    return _apply_ops(images, op, value, None, interpolation, fill_values(fill), exact_limit=256)


def _kernel_of(op: Tensor) -> Tensor:
    """The kernel index (into ``_KERNELS``) of every row's operation."""
    return device_constant(_KERNEL_OF_OP, op.device, torch.long)[op]


def _group_counts(ops: list[Tensor]) -> list[list[int]]:
    """Rows per kernel for each of several slots of operations (``(n,)`` op ids each), read back to
    the host in one transfer: the only device synchronization of a policy call."""
    if not ops:
        return []
    kernels = torch.stack([_kernel_of(op) for op in ops])  # (slots, n)
    ids = torch.arange(len(_KERNELS), device=kernels.device)
    # an (slots, n, kernels) comparison, not bincount: CUDA's bincount reads its input's maximum back
    return (kernels.unsqueeze(-1) == ids).sum(dim=1).tolist()


def _apply_ops(images: Tensor, op: Tensor, value: Tensor, matrix: Tensor | None, interpolation: str,
               fill: tuple[float, ...] | None, *, counts: list[int] | None = None, exact_limit: int = 0) -> Tensor:
    """``apply_ops`` with optional precomputed inverse matrices for the geometric rows and rows per
    kernel (``_group_counts``; computed here, one sync, when not given). ``exact_limit``: see
    ``geometry.affine_matrix`` (0 on the policies' path: no host round trip for the matrices)."""
    n = images.shape[0]
    if n == 0:
        return images
    kernel = _kernel_of(op)
    if counts is None:
        counts = _group_counts([op])[0]
    present = [k for k, c in enumerate(counts) if c]
    if present == [0]:
        return images
    if len(present) == 1:
        return _run_kernel(_KERNELS[present[0]], images, op, value, matrix, interpolation, fill, exact_limit)
    order = torch.argsort(kernel, stable=True)
    source, op, value = images.index_select(0, order), op[order], value[order]
    matrix = None if matrix is None else matrix[order]
    result = torch.empty_like(images)
    result[:counts[0]] = source[:counts[0]]  # identity rows
    start = counts[0]
    for k in present:
        if k == 0:
            continue
        stop = start + counts[k]
        result[start:stop] = _run_kernel(_KERNELS[k], source[start:stop], op[start:stop], value[start:stop],
                                         None if matrix is None else matrix[start:stop], interpolation, fill,
                                         exact_limit)
        start = stop
    # undo the sort with a gather (index_select), several times faster on CPU than index_copy_
    return result.index_select(0, torch.argsort(order))


def _check_interpolation(interpolation: str, where: str) -> str:
    return one_of(interpolation, geometry.INTERPOLATIONS, where, "interpolation")


class RandAugment(Policy):
    """RandAugment: ``num_ops`` operations drawn uniformly (with replacement) from the 14 of the
    paper (identity, autocontrast, equalize, rotate, solarize, color, posterize, contrast,
    brightness, sharpness, shear x/y, translate x/y), all at ``magnitude`` out of ``num_bins - 1``
    (torchvision's tables: 9 of 30 by default), each signed operation negated with probability 1/2.

    ``magnitude_std > 0`` draws each operation's magnitude from N(magnitude, magnitude_std),
    clipped to ``[0, num_bins - 1]`` (timm's "mstd"); ``magnitude_std = inf`` draws it uniformly
    from ``[0, magnitude]``. Fractional magnitudes interpolate between bins.
    """

    name = "randaugment"

    def __init__(self, num_ops: int = 2, magnitude: float = 9, num_bins: int = 31, magnitude_std: float = 0.0,
                 interpolation: str = "nearest", fill: float | Sequence[float] | None = None) -> None:
        self.num_ops = int(number(num_ops, "randaugment: num_ops", low=0, integer=True))
        self.num_bins = int(number(num_bins, "randaugment: num_bins", low=2, integer=True))
        self.magnitude = number(magnitude, "randaugment: magnitude", low=0, high=self.num_bins - 1)
        if not (isinstance(magnitude_std, (int, float)) and magnitude_std == math.inf):
            number(magnitude_std, "randaugment: magnitude_std", low=0)
        self.magnitude_std = float(magnitude_std)
        self.interpolation = _check_interpolation(interpolation, "randaugment")
        self.fill = fill_values(fill, "randaugment: fill")
        self._tables = _TableCache()

    def _magnitudes(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        shape = (n, self.num_ops)
        if self.magnitude_std == math.inf:
            return _random.rand(shape, generator, device, 0.0, self.magnitude)
        if self.magnitude_std > 0:
            noise = _random.normal(shape, generator, device)
            return (self.magnitude + self.magnitude_std * noise).clamp_(0, self.num_bins - 1)
        if float(self.magnitude).is_integer():  # integer bins: exact table values and matrices
            return torch.full(shape, int(self.magnitude), device=device, dtype=torch.long)
        return torch.full(shape, float(self.magnitude), device=device)

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        dev = images.device
        table = self._tables.get(_RANDAUGMENT_SPACE, self.num_bins, h, w, dev)
        k = _random.randint(0, table.size, (n, self.num_ops), generator, dev)
        negate = _random.bernoulli(0.5, (n, self.num_ops), generator, dev)
        magnitude = self._magnitudes(n, generator, dev)
        slots = [table.lookup(k[:, slot], magnitude[:, slot], negate[:, slot]) for slot in range(self.num_ops)]
        counts = _group_counts([op for op, _, _ in slots])
        for (op, value, matrix), rows in zip(slots, counts, strict=True):
            images = _apply_ops(images, op, value, matrix, self.interpolation, self.fill, counts=rows)
        return images

    def options(self) -> dict[str, Any]:
        return {"num_ops": self.num_ops, "magnitude": self.magnitude, "num_bins": self.num_bins,
                "magnitude_std": self.magnitude_std, "interpolation": self.interpolation,
                "fill": fill_option(self.fill)}


# AutoAugment's published sub-policies: two (operation, probability, magnitude bin of 10) steps each.
_AUTOAUGMENT_TEXT = {
    "cifar10": """
        invert .1 -, contrast .2 6 | rotate .7 2, translate_x .3 9 | sharpness .8 1, sharpness .9 3
        shear_y .5 8, translate_y .7 9 | autocontrast .5 -, equalize .9 - | shear_y .2 7, posterize .3 7
        color .4 3, brightness .6 7 | sharpness .3 9, brightness .7 9 | equalize .6 -, equalize .5 -
        contrast .6 7, sharpness .6 5 | color .7 7, translate_x .5 8 | equalize .3 -, autocontrast .4 -
        translate_y .4 3, sharpness .2 6 | brightness .9 6, color .2 8 | solarize .5 2, invert 0 -
        equalize .2 -, autocontrast .6 - | equalize .2 -, equalize .6 - | color .9 9, equalize .6 -
        autocontrast .8 -, solarize .2 8 | brightness .1 3, color .7 0 | solarize .4 5, autocontrast .9 -
        translate_y .9 9, translate_y .7 9 | autocontrast .9 -, solarize .8 3 | equalize .8 -, invert .1 -
        translate_y .7 9, autocontrast .9 -""",
    "imagenet": """
        posterize .4 8, rotate .6 9 | solarize .6 5, autocontrast .6 - | equalize .8 -, equalize .6 -
        posterize .6 7, posterize .6 6 | equalize .4 -, solarize .2 4 | equalize .4 -, rotate .8 8
        solarize .6 3, equalize .6 - | posterize .8 5, equalize 1 - | rotate .2 3, solarize .6 8
        equalize .6 -, posterize .4 6 | rotate .8 8, color .4 0 | rotate .4 9, equalize .6 -
        equalize 0 -, equalize .8 - | invert .6 -, equalize 1 - | color .6 4, contrast 1 8
        rotate .8 8, color 1 2 | color .8 8, solarize .8 7 | sharpness .4 7, invert .6 -
        shear_x .6 5, equalize 1 - | color .4 0, equalize .6 - | equalize .4 -, solarize .2 4
        solarize .6 5, autocontrast .6 - | invert .6 -, equalize 1 - | color .6 4, contrast 1 8
        equalize .8 -, equalize .6 -""",
    "svhn": """
        shear_x .9 4, invert .2 - | shear_y .9 8, invert .7 - | equalize .6 -, solarize .6 6
        invert .9 -, equalize .6 - | equalize .6 -, rotate .9 3 | shear_x .9 4, autocontrast .8 -
        shear_y .9 8, invert .4 - | shear_y .9 5, solarize .2 6 | invert .9 -, autocontrast .8 -
        equalize .6 -, rotate .9 3 | shear_x .9 4, solarize .3 3 | shear_y .8 8, invert .7 -
        equalize .9 -, translate_y .6 6 | invert .9 -, equalize .6 - | contrast .3 3, rotate .8 4
        invert .8 -, translate_y 0 2 | shear_y .7 6, solarize .4 8 | invert .6 -, rotate .8 4
        shear_y .3 7, translate_x .9 3 | shear_x .1 6, invert .6 - | solarize .7 2, translate_y .6 7
        shear_y .8 4, invert .8 - | shear_x .7 9, translate_y .8 3 | shear_y .8 5, autocontrast .7 -
        shear_x .7 2, invert .1 -""",
}

SubPolicy = tuple[tuple[str, float, "int | None"], tuple[str, float, "int | None"]]


def _parse_policies(text: str) -> tuple[SubPolicy, ...]:
    out = []
    for sub in text.replace("\n", "|").split("|"):
        if not sub.strip():
            continue
        steps = []
        for step in sub.split(","):
            name, p, m = step.split()
            steps.append((name, float(p), None if m == "-" else int(m)))
        out.append((steps[0], steps[1]))
    return tuple(out)


#: name -> the 25 sub-policies, each ((op, probability, magnitude bin), (op, probability, bin)).
AUTOAUGMENT_POLICIES: dict[str, tuple[SubPolicy, ...]] = {k: _parse_policies(v) for k, v in _AUTOAUGMENT_TEXT.items()}


class AutoAugment(Policy):
    """AutoAugment: each image picks one of the policy's 25 sub-policies uniformly and applies its
    two steps, each with its probability, at its magnitude bin out of 10 (torchvision's tables),
    signed operations negated with probability 1/2.

    ``policy`` is "cifar10", "imagenet" or "svhn"; ``None`` picks "cifar10" for images smaller
    than 64 pixels and "imagenet" otherwise.
    """

    name = "autoaugment"

    def __init__(self, policy: str | None = None, interpolation: str = "nearest",
                 fill: float | Sequence[float] | None = None) -> None:
        if policy is not None and policy not in AUTOAUGMENT_POLICIES:
            raise ConfigError(f"autoaugment: policy must be one of {', '.join(AUTOAUGMENT_POLICIES)}, got {policy!r}")
        self.policy = policy
        self.interpolation = _check_interpolation(interpolation, "autoaugment")
        self.fill = fill_values(fill, "autoaugment: fill")
        self._tables = _TableCache()
        self._steps: dict[tuple[str, str], tuple[Tensor, Tensor, Tensor]] = {}

    def _policy_for(self, height: int, width: int) -> str:
        return self.policy or ("cifar10" if min(height, width) < 64 else "imagenet")

    def resolve(self, image_size: tuple[int, int]) -> Policy:
        return AutoAugment(self._policy_for(*image_size), self.interpolation, fill_option(self.fill))

    def _step_tensors(self, policy: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """(25, 2) tensors: index into the magnitude space, probability, magnitude bin (0 if none)."""
        key = (policy, str(device))
        if key not in self._steps:
            names = list(_AUTOAUGMENT_SPACE)
            subs = AUTOAUGMENT_POLICIES[policy]
            k = torch.tensor([[names.index(s[0]) for s in sub] for sub in subs], device=device)
            p = torch.tensor([[s[1] for s in sub] for sub in subs], device=device)
            m = torch.tensor([[int(s[2] or 0) for s in sub] for sub in subs], device=device)
            self._steps[key] = (k, p, m)
        return self._steps[key]

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        dev = images.device
        table = self._tables.get(_AUTOAUGMENT_SPACE, 10, h, w, dev)
        k_all, p_all, m_all = self._step_tensors(self._policy_for(h, w), dev)
        sub = _random.randint(0, k_all.shape[0], (n,), generator, dev)
        u = _random.rand((n, 2), generator, dev)
        negate = _random.bernoulli(0.5, (n, 2), generator, dev)
        steps = []
        for step in range(2):
            op, value, matrix = table.lookup(k_all[sub, step], m_all[sub, step], negate[:, step])
            op = torch.where(u[:, step] <= p_all[sub, step], op, torch.zeros_like(op))  # skipped: identity
            steps.append((op, value, matrix))
        counts = _group_counts([op for op, _, _ in steps])
        for (op, value, matrix), rows in zip(steps, counts, strict=True):
            images = _apply_ops(images, op, value, matrix, self.interpolation, self.fill, counts=rows)
        return images

    def options(self) -> dict[str, Any]:
        return {"policy": self.policy, "interpolation": self.interpolation, "fill": fill_option(self.fill)}


class TrivialAugment(Policy):
    """TrivialAugment (wide): one operation per image, uniform over 14, at a magnitude bin drawn
    uniformly from ``num_bins`` (torchvision's ``TrivialAugmentWide`` tables)."""

    name = "trivialaugment"

    def __init__(self, num_bins: int = 31, interpolation: str = "nearest",
                 fill: float | Sequence[float] | None = None) -> None:
        self.num_bins = int(number(num_bins, "trivialaugment: num_bins", low=2, integer=True))
        self.interpolation = _check_interpolation(interpolation, "trivialaugment")
        self.fill = fill_values(fill, "trivialaugment: fill")
        self._tables = _TableCache()

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        dev = images.device
        table = self._tables.get(_TRIVIAL_SPACE, self.num_bins, h, w, dev)
        k = _random.randint(0, table.size, (n,), generator, dev)
        magnitude = _random.randint(0, self.num_bins, (n,), generator, dev)
        negate = _random.bernoulli(0.5, (n,), generator, dev)
        op, value, matrix = table.lookup(k, magnitude, negate)
        return _apply_ops(images, op, value, matrix, self.interpolation, self.fill)

    def options(self) -> dict[str, Any]:
        return {"num_bins": self.num_bins, "interpolation": self.interpolation, "fill": fill_option(self.fill)}


class AugMix(Policy):
    """AugMix: ``width`` chains of 1-3 operations (``depth``; -1 draws it per chain and image) from
    AugMix's space at a magnitude bin below ``severity`` (of 10), mixed with Dirichlet(alpha)
    weights, then blended with the original by a Beta(alpha, alpha) weight; as torchvision's
    ``AugMix`` (bilinear interpolation by default, mixing in float32, truncated to uint8) but
    with every image drawing its own chains. ``all_ops=False`` leaves out brightness, color,
    contrast and sharpness (they overlap ImageNet-C's corruptions)."""

    name = "augmix"

    def __init__(self, severity: int = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
                 all_ops: bool = True, interpolation: str = "bilinear",
                 fill: float | Sequence[float] | None = None) -> None:
        self.severity = int(number(severity, "augmix: severity", low=1, high=10, integer=True))
        self.width = int(number(width, "augmix: width", low=1, integer=True))
        self.depth = int(number(depth, "augmix: depth", low=-1, integer=True))
        if self.depth == 0:
            raise ConfigError("augmix: depth must be -1 (random 1-3) or >= 1, got 0")
        self.alpha = number(alpha, "augmix: alpha", low=0, low_open=True)
        self.all_ops = bool(all_ops)
        self.interpolation = _check_interpolation(interpolation, "augmix")
        self.fill = fill_values(fill, "augmix: fill")
        self._tables = _TableCache()

    def apply(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        n, _, h, w = images.shape
        dev = images.device
        table = self._tables.get(_AUGMIX_ALL_SPACE if self.all_ops else _AUGMIX_SPACE, 10, h, w, dev)
        steps = 3 if self.depth < 0 else self.depth
        beta = _random.dirichlet(self.alpha, 2, n, generator, dev)  # (n, 2): original, mixture
        weights = _random.dirichlet(self.alpha, self.width, n, generator, dev) * beta[:, 1:]
        if self.depth < 0:
            depth = _random.randint(1, 4, (n, self.width), generator, dev)
        else:
            depth = torch.full((n, self.width), self.depth, device=dev)
        k = _random.randint(0, table.size, (n, self.width, steps), generator, dev)
        magnitude = _random.randint(0, self.severity, (n, self.width, steps), generator, dev)
        negate = _random.bernoulli(0.5, (n, self.width, steps), generator, dev)
        ops = []
        for chain in range(self.width):
            for step in range(steps):
                op, value, matrix = table.lookup(k[:, chain, step], magnitude[:, chain, step], negate[:, chain, step])
                ops.append((torch.where(step < depth[:, chain], op, torch.zeros_like(op)), value, matrix))
        counts = iter(_group_counts([op for op, _, _ in ops]))
        chained = iter(ops)
        mix = images.to(torch.float32).mul_(beta[:, 0].view(n, 1, 1, 1))
        for _chain in range(self.width):
            aug = images
            for _ in range(steps):
                op, value, matrix = next(chained)
                aug = _apply_ops(aug, op, value, matrix, self.interpolation, self.fill, counts=next(counts))
            mix.add_(aug.to(torch.float32).mul_(weights[:, _chain].view(n, 1, 1, 1)))
        return mix.to(torch.uint8)

    def options(self) -> dict[str, Any]:
        return {"severity": self.severity, "width": self.width, "depth": self.depth, "alpha": self.alpha,
                "all_ops": self.all_ops, "interpolation": self.interpolation, "fill": fill_option(self.fill)}
