"""From a uint8 batch to the normalized float views that the model sees.

``ViewAugmenter(policy, m, mean, std)`` makes ``M`` independently augmented views of every image
of a uint8 batch, or of a float batch in [0, 1] (Batch Augmentation's ``B * M`` batch), in chunks
so that the temporaries of large ``B * M`` stay small and are reused by the allocator, and writes
each chunk, normalized, straight into the output. ``normalize`` is the same fused conversion for
evaluation; ``repeat_targets`` repeats labels to match the view layout (the views of sample ``i``
are rows ``i * M ... i * M + M - 1``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from batchaug.augment._validate import check_images, number
from batchaug.augment.policies import Policy
from batchaug.augment.registry import build_policy
from batchaug.errors import ConfigError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ViewAugmenter",
    "normalize",
    "repeat_targets",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Default chunk on the CPU: about this many pixel values per chunk (~680 views of 3x32x32): big
# enough to amortize the per-call overheads (RandAugment's per-operation groups), small enough that
# the temporaries (uint8 images, int64 gather indices, float32 blends) stay in cache and in blocks
# the allocator reuses. Measured on 2 CPU threads, B*M = 1024-2048 views: pad-crop-flip-cutout
# is fastest at 256-768 views per chunk (~20% over 1,365), RandAugment within 5% from 512 up.
_CHUNK_ELEMENTS = 1 << 21
# On an accelerator a chunk costs kernel launches and (for the operation-grouping policies) one host
# synchronization, and cache sizes do not matter: 2**26 pixel values (~21,800 views of 3x32x32, ~445
# of 3x224x224), whose temporaries (~20 bytes per value at the peak of a RandAugment chunk) take about
# 1.3 GB. A constant, not a share of the free memory: the views depend on the chunking, so the same
# run must chunk the same way whatever else the device holds.
_DEVICE_CHUNK_ELEMENTS = 1 << 26


def chunk_elements(device: torch.device) -> int:
    """Pixel values per augmentation chunk on ``device`` (``ViewAugmenter``'s default chunking)."""
    return _CHUNK_ELEMENTS if torch.device(device).type == "cpu" else _DEVICE_CHUNK_ELEMENTS


def _default_stats(mean: float | Sequence[float] | None, std: float | Sequence[float] | None,
                   where: str) -> tuple[float | Sequence[float], float | Sequence[float]]:
    """``mean`` and ``std``, CIFAR-10's for the ones that are None, with a warning saying so: a
    silent CIFAR-10 normalization of other data trains and evaluates without error, just worse."""
    missing = [name for name, value in (("mean", mean), ("std", std)) if value is None]
    if missing:
        used = " and ".join(f"{name} {CIFAR10_MEAN if name == 'mean' else CIFAR10_STD}" for name in missing)
        warnings.warn(f"{where}: no {' or '.join(missing)} given, so it normalizes with CIFAR-10's {used}; "
                      "pass mean= and std= (per-channel sequences or numbers) for other data, e.g. "
                      "IMAGENET_MEAN and IMAGENET_STD from batchaug.augment", UserWarning, stacklevel=3)
    return (CIFAR10_MEAN if mean is None else mean), (CIFAR10_STD if std is None else std)


def _stats(values: float | Sequence[float], name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str) or len(values) == 0:
        raise ConfigError(f"{name} must be a number or a per-channel list of numbers, got {values!r}")
    return tuple(number(v, name) for v in values)


@functools.lru_cache(maxsize=64)
def _scale_shift(mean: tuple[float, ...], std: tuple[float, ...], channels: int, integer_input: bool,
                 device: torch.device) -> tuple[Tensor, Tensor]:
    """``x * scale + shift == (x / 255 - mean) / std`` (``/ 255`` only for integer input), as
    ``(1, C, 1, 1)`` float32; cached, so that ``normalize`` on every evaluation batch and every
    ``ViewAugmenter`` call reuse the constants instead of rebuilding and copying them to the
    device (callers must not modify them in place)."""
    if len(mean) not in (1, channels) or len(std) not in (1, channels):
        raise ConfigError(f"normalize: mean and std must have 1 or {channels} values (one per channel), "
                          f"got {len(mean)} and {len(std)}")
    if any(s <= 0 for s in std):
        raise ConfigError(f"normalize: std must be > 0, got {tuple(std)}")
    m = torch.tensor(mean, dtype=torch.float64).expand(channels)
    s = torch.tensor(std, dtype=torch.float64).expand(channels)
    unit = 255.0 if integer_input else 1.0
    scale = (1.0 / (unit * s)).to(torch.float32).view(1, channels, 1, 1)
    shift = (-m / s).to(torch.float32).view(1, channels, 1, 1)
    return scale.to(device), shift.to(device)


def normalize(images: Tensor, mean: float | Sequence[float] | None = None,
              std: float | Sequence[float] | None = None, *, out_dtype: torch.dtype = torch.float32,
              out: Tensor | None = None) -> Tensor:
    """``(x - mean) / std`` per channel, for uint8 images (``x`` = pixel / 255, converted in the same
    pass) or float images in [0, 1]. ``out`` (optional) receives the result.

    ``mean`` and ``std`` are a number or one value per channel; when left None, CIFAR-10's
    (:data:`CIFAR10_MEAN`, :data:`CIFAR10_STD`) are used and a ``UserWarning`` says so."""
    mean, std = _default_stats(mean, std, "normalize")
    check_images(images, "normalize", allow_float=True)
    if out_dtype not in _FLOAT_DTYPES:
        raise ConfigError(f"normalize: out_dtype must be a float dtype, got {out_dtype}")
    scale, shift = _scale_shift(_stats(mean, "normalize: mean"), _stats(std, "normalize: std"), images.shape[1],
                                not images.is_floating_point(), images.device)
    return _affine(images, scale, shift, out_dtype, out)


def _affine(images: Tensor, scale: Tensor, shift: Tensor, out_dtype: torch.dtype, out: Tensor | None) -> Tensor:
    """``images * scale + shift`` with ``scale``/``shift`` of shape ``(1, C, 1, 1)``, in one pass
    that converts uint8 inside the kernel and writes the output once.

    The constants are expanded to ``(1, C, H, W)`` first: on CPU, constants broadcast over
    ``H, W`` take ``addcmul`` off its vectorized path (several times slower, measured)."""
    _, c, h, w = images.shape
    if out is None:
        out = torch.empty(images.shape, dtype=out_dtype, device=images.device)
    compute = out.dtype if out.dtype in (torch.float32, torch.float64) else torch.float32
    full_scale = scale.to(compute).expand(1, c, h, w).contiguous()
    full_shift = shift.to(compute).expand(1, c, h, w).contiguous()
    if out.dtype == compute:
        return torch.addcmul(full_shift, images, full_scale, out=out)
    return out.copy_(torch.addcmul(full_shift, images, full_scale))  # half precision: round once


def repeat_targets(targets: Tensor, m: int) -> Tensor:
    """Repeat every target ``m`` times along dim 0, matching ``ViewAugmenter``'s view layout (works
    for class indices ``(N,)`` and soft labels ``(N, K)``)."""
    m = int(number(m, "repeat_targets: m", low=1, integer=True))
    return targets if m == 1 else targets.repeat_interleave(m, dim=0)


def _quantize(images: Tensor) -> Tensor:
    """Float images in [0, 1] as uint8 ``(x * 255).round()``; ConfigError naming the range found
    otherwise. The range check syncs with the device: the price of accepting floats."""
    if images.numel() == 0:
        return images.to(torch.uint8)
    lo, hi = torch.stack(torch.aminmax(images)).tolist()  # one read-back for both
    if not (lo >= 0.0 and hi <= 1.0):  # written so that NaN fails too
        raise ConfigError(f"ViewAugmenter: float images must lie in [0, 1], found values in [{lo:g}, {hi:g}]; "
                          "pass uint8 images (0-255) or float images scaled to [0, 1] (e.g. x / 255)")
    # float32 at least: 255 * x in (b)float16 can miss the integer that x / 255 came from
    scaled = images.to(torch.promote_types(images.dtype, torch.float32)) * 255.0
    return scaled.round_().to(torch.uint8)


class ViewAugmenter(nn.Module):
    """Make ``m`` augmented, normalized views of every image of a uint8 (or float [0, 1]) batch.

    ``ViewAugmenter(policy, m, mean, std)(images, generator)`` maps uint8 ``(N, C, H, W)`` on any
    device to ``(N * m, C, H', W')`` in ``out_dtype`` on the same device, the views of sample
    ``i`` at rows ``i * m ... i * m + m - 1`` (``repeat_targets`` matches labels to it). Every
    view draws its own parameters; the same generator state, device and ``chunk_size`` give the
    same views.

    Float images (any float dtype) must lie in [0, 1]. The policies work on uint8 pixel values,
    so float images are first quantized to 8 bits, ``(x * 255).round()`` as uint8: images that
    came from uint8 as ``x / 255`` give exactly the views of the uint8 images, and finer shades
    are rounded to the nearest of the 256 levels. Checking the range reads the batch's minimum
    and maximum back to the CPU (a device synchronization on CUDA) and the quantized copy costs
    one pass; uint8 input does neither, so it stays the fast path.

    ``mean`` and ``std`` (a number or one value per channel, applied to pixel / 255) normalize
    the views. When left None, CIFAR-10's (:data:`CIFAR10_MEAN`, :data:`CIFAR10_STD`) are used
    and the constructor warns (``UserWarning``, once per instance) that it does so.

    ``policy`` is a ``Policy`` or anything ``build_policy`` accepts. Views are made ``chunk_size``
    at a time (default: about 2M pixel values per chunk on the CPU, 64M on an accelerator, split
    evenly: :func:`chunk_elements`), each chunk normalized
    straight into the output, so memory besides the output stays bounded and temporaries are
    reused whatever ``N * m`` is. ``channels_last`` returns the output in channels-last format.

    ``reuse_output=True`` writes every call into the same output tensor (while shape, dtype and
    device stay the same): on CPU, an output above glibc's 32 MB mmap threshold (more than
    ~2,700 views of 3x32x32 in float32) is otherwise mapped and page-faulted afresh on every
    call, which costs more than making the views. The previous call's views are then
    overwritten: fine in a training loop (autograd raises, instead of silently using new data,
    if they are still needed by a pending backward), wrong if the caller keeps them.
    """

    def __init__(self, policy: Policy | str | Mapping[str, Any] | Sequence[Any] | None, m: int = 1,
                 mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None, *,
                 chunk_size: int | None = None, out_dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, reuse_output: bool = False) -> None:
        super().__init__()
        mean, std = _default_stats(mean, std, "ViewAugmenter")
        self.policy = build_policy(policy)
        self.m = int(number(m, "views: m", low=1, integer=True))
        self.mean = _stats(mean, "views: mean")
        self.std = _stats(std, "views: std")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"views: std must be > 0, got {self.std}")
        self.chunk_size = None if chunk_size is None else int(number(chunk_size, "views: chunk_size", low=1,
                                                                     integer=True))
        if out_dtype not in _FLOAT_DTYPES:
            raise ConfigError(f"views: out_dtype must be one of {', '.join(map(str, _FLOAT_DTYPES))}, got {out_dtype}")
        self.out_dtype = out_dtype
        self.channels_last = bool(channels_last)
        self.reuse_output = bool(reuse_output)
        self._last_out: Tensor | None = None

    def _output(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        last = self._last_out
        if last is not None and tuple(last.shape) == shape and last.device == device:
            return last
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(shape, dtype=self.out_dtype, device=device, memory_format=fmt)
        if self.reuse_output:
            self._last_out = out
        return out

    def forward(self, images: Tensor, generator: torch.Generator | None = None, *,
                out: Tensor | None = None) -> Tensor:
        """uint8 (or float in [0, 1]) ``(N, C, H, W)`` -> normalized views ``(N * m, C, H', W')``;
        ``out`` (optional, of that shape and ``out_dtype``) receives them instead of a new tensor.

        ``generator`` is a ``torch.Generator`` on the images' device, or a CPU one for CUDA images
        (the per-view parameters, a few small tensors, are then drawn on the CPU and copied over);
        ``None`` uses PyTorch's default generator of the images' device.

        Raises:
            ConfigError: images that are not ``(N, C, H, W)`` uint8 or float, float images with
                values outside [0, 1] (the message gives the range found), or a mismatched ``out``.
        """
        check_images(images, "ViewAugmenter", allow_float=True)
        if images.is_floating_point():
            images = _quantize(images)
        n, c, h, w = images.shape
        oh, ow = self.policy.output_size(h, w)
        total = n * self.m
        shape = (total, c, oh, ow)
        if out is None:
            out = self._output(shape, images.device)
        elif tuple(out.shape) != shape or out.dtype != self.out_dtype or out.device != images.device:
            raise ConfigError(f"ViewAugmenter: out must be {self.out_dtype} of shape {shape} on {images.device}, "
                              f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        if total == 0:
            return out
        scale, shift = _scale_shift(self.mean, self.std, c, True, images.device)
        chunk = self.chunk_size or max(1, chunk_elements(images.device) // (c * max(h * w, oh * ow)))
        if self.chunk_size is None:  # equal chunks: no small remainder paying a whole chunk's overhead
            chunk = -(-total // -(-total // chunk))
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            if self.m == 1 and start == 0 and stop == total:
                source = images
            else:
                rows = torch.arange(start, stop, device=images.device).div_(self.m, rounding_mode="floor")
                source = images.index_select(0, rows)
            views = self.policy(source, generator)
            _affine(views, scale, shift, self.out_dtype, out[start:stop])
        return out

    def extra_repr(self) -> str:
        return (f"policy={self.policy!r}, m={self.m}, mean={self.mean}, std={self.std}, "
                f"chunk_size={self.chunk_size}, out_dtype={self.out_dtype}, channels_last={self.channels_last}, "
                f"reuse_output={self.reuse_output}")
