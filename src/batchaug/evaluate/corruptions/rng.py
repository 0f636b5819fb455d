"""Per-image random numbers that depend only on (seed, corruption, severity, image index).

A corruption of image ``i`` must not change when the images around it change (another batch size,
another ``--limit``, another slice of the dataset). torch's generators give one stream per call, so
drawing a batch's noise from one generator ties image ``i``'s noise to its position in the batch.
Instead every number is a hash of a counter (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011, call this design *counter-based*):

- a 32-bit key per image: ``hash(seed, corruption name, severity, dataset index)``;
- one key per named *stream* of that image (``"noise"``, ``"angle"``, ...), so that adding a draw to a
  corruption does not shift the others;
- the ``j``-th number of a stream: ``hash(stream key XOR hash(j))``.

The hash is Chris Wellons' ``lowbias32`` (xor-shift / multiply, bias 0.17 on his avalanche measure),
computed on int32 tensors whose products wrap modulo 2^32 on every PyTorch backend, so a stream is the
same integer sequence on the CPU and on CUDA. All images and all elements are hashed at once, a few
integer operations per number, with no Python loop over images. (Two images can share one value at
unrelated positions when ``key_a XOR key_b`` equals ``hash(j) XOR hash(k)``: about count² / 2^32 of
the pairs of images, one value each, which no corruption statistic can see.)
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import Tensor

__all__ = ["ImageRandom", "hash32"]

_M32 = 0xFFFFFFFF
_C1 = 0x21F0AAAD
_C2 = 0x735A2D97
_GOLDEN = 0x9E3779B9


def _signed(v: int) -> int:
    """The int32 whose bits are the low 32 bits of ``v``."""
    v &= _M32
    return v - (1 << 32) if v >= 1 << 31 else v


def hash32(x: int) -> int:
    """``lowbias32`` of a Python int, as an unsigned 32-bit int (the reference of :func:`_hash_`)."""
    x &= _M32
    x ^= x >> 16
    x = (x * _C1) & _M32
    x ^= x >> 15
    x = (x * _C2) & _M32
    x ^= x >> 15
    return x


def _hash_(x: Tensor) -> Tensor:
    """``lowbias32`` of int32 bit patterns, in place. ``>>`` on int32 is arithmetic, so each shift is
    masked to make it logical; the products wrap modulo 2^32."""
    x ^= (x >> 16) & 0xFFFF
    x *= _signed(_C1)
    x ^= (x >> 15) & 0x1FFFF
    x *= _signed(_C2)
    x ^= (x >> 15) & 0x1FFFF
    return x


def _to_int32(t: Tensor) -> Tensor:
    """int64 values in [0, 2^32) -> the int32 tensor with the same low 32 bits (an explicit wrap:
    a plain cast of an out-of-range value is implementation-defined)."""
    return torch.where(t >= 1 << 31, t - (1 << 32), t).to(torch.int32)


def _name_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8")) & _M32


class ImageRandom:
    """Random numbers for a batch of images, each image's numbers a function of (seed, name,
    severity, its dataset index) only.

    Args:
        seed: any integer (its low 64 bits are used).
        name: the corruption's name.
        severity: 1 to 5.
        index: int64 (N,) dataset indices of the images, on the images' device.

    Every draw takes a ``stream`` name and returns one row per image: ``(N, *shape)``.
    """

    def __init__(self, seed: int, name: str, severity: int, index: Tensor) -> None:
        base = hash32(seed & _M32)
        for part in ((seed >> 32) & _M32, _name_key(name), severity):
            base = hash32(base ^ part)
        index = index.to(torch.int64)
        self.device = index.device
        lo = _to_int32(index & _M32)
        hi = _to_int32((index >> 32) & _M32)
        key = _hash_(lo ^ _signed(base))
        self._image = _hash_(key ^ hi)
        self.n = index.numel()

    def bits(self, stream: str, count: int) -> Tensor:
        """(N, count) int32: the first ``count`` 32-bit numbers of ``stream`` for every image."""
        key = _hash_(self._image ^ _signed(hash32(_name_key(stream))))
        j = torch.arange(count, dtype=torch.int64, device=self.device).mul_(_GOLDEN).bitwise_and_(_M32)
        counter = _hash_(_to_int32(j))
        return _hash_(key[:, None] ^ counter[None, :])

    def uniform(self, stream: str, shape: tuple[int, ...] = (), low: float = 0.0, high: float = 1.0) -> Tensor:
        """(N, *shape) float32 uniform in ``[low, high)`` (24 bits of resolution)."""
        u = self._unit(self.bits(stream, math.prod(shape)))
        if low != 0.0 or high != 1.0:
            u = u.mul_(high - low).add_(low)
        return u.view(self.n, *shape)

    def uniform64(self, stream: str, shape: tuple[int, ...] = ()) -> Tensor:
        """(N, *shape) float64 uniform in (0, 1), all 32 bits used: for inversion sampling."""
        b = self.bits(stream, math.prod(shape)).to(torch.int64).bitwise_and_(_M32)
        return b.to(torch.float64).add_(0.5).mul_(2.0 ** -32).view(self.n, *shape)

    def normal(self, stream: str, shape: tuple[int, ...] = (), mean: float = 0.0, std: float = 1.0) -> Tensor:
        """(N, *shape) float32 normal variates (Box-Muller on pairs of 24-bit uniforms)."""
        count = math.prod(shape)
        half = (count + 1) // 2
        b = self.bits(stream, 2 * half)
        u1 = self._unit(b[:, :half]).neg_().add_(1.0)  # (0, 1]: the log is finite
        u2 = self._unit(b[:, half:]).mul_(2.0 * math.pi)
        r = u1.log_().mul_(-2.0).sqrt_()
        z = torch.cat((r * u2.cos(), r * u2.sin()), dim=1)[:, :count]
        if mean != 0.0 or std != 1.0:
            z = z.mul_(std).add_(mean)
        return z.reshape(self.n, *shape)

    def randint(self, stream: str, shape: tuple[int, ...], low: int | Tensor, high: int | Tensor) -> Tensor:
        """(N, *shape) int64 uniform in ``[low, high)``; ``low``/``high`` may be (N,) tensors (one
        range per image). 24 bits of randomness, so the bias is below range / 2^24."""
        b = (self.bits(stream, math.prod(shape)) >> 8).bitwise_and_(0xFFFFFF).to(torch.int64)
        b = b.view(self.n, *shape)
        if isinstance(low, Tensor) or isinstance(high, Tensor):
            low_t = torch.as_tensor(low, dtype=torch.int64, device=self.device).reshape(-1, *([1] * len(shape)))
            high_t = torch.as_tensor(high, dtype=torch.int64, device=self.device).reshape(-1, *([1] * len(shape)))
            return (b * (high_t - low_t) >> 24) + low_t
        return (b * (high - low) >> 24) + low

    @staticmethod
    def _unit(b: Tensor) -> Tensor:
        return ((b >> 8) & 0xFFFFFF).to(torch.float32).mul_(2.0 ** -24)
