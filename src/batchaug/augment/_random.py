"""Per-view random draws from an explicit ``torch.Generator``.

Every policy draws all of its per-view parameters through these helpers, a few vectorized calls per
batch, so that one seeded generator fixes every view. Where the numbers are drawn: on the
generator's device when a generator is given (then moved to the images' device, which costs one
small host-to-device copy when a CPU generator drives CUDA images), else on the images' device with
PyTorch's default generator for that device. The same seed therefore gives the same views on one
device; CPU and CUDA generators produce different streams.

None of them synchronizes with the device: a draw on a CUDA generator for CUDA images, or on a
CPU generator for any images, is queued like any other kernel. Only a CUDA generator with CPU
images (numbers drawn on the GPU for a CPU batch) reads device memory, with a blocking copy: a
non-blocking device-to-host copy returns before the data has arrived.
"""

from __future__ import annotations

import torch
from torch import Tensor

from batchaug.errors import ConfigError

__all__ = ["bernoulli", "dirichlet", "gamma", "normal", "rand", "randint", "to_device"]


def _where(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """``t`` on ``device``: a non-blocking copy onto an accelerator (queued on its stream, safe), a
    blocking one onto the CPU (a non-blocking device-to-host copy may still be in flight when the
    CPU reads the result)."""
    device = torch.device(device)
    if t.device == device:
        return t
    return t.to(device, non_blocking=device.type != "cpu")


def rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
         low: float | Tensor = 0.0, high: float | Tensor = 1.0) -> Tensor:
    """Uniform float32 numbers in ``[low, high)`` of ``shape`` on ``device``."""
    u = to_device(torch.rand(shape, generator=generator, device=_where(generator, device)), device)
    if isinstance(low, Tensor) or isinstance(high, Tensor) or low != 0.0 or high != 1.0:
        u = u * (high - low) + low
    return u


def randint(low: int | Tensor, high: int | Tensor, shape: tuple[int, ...],
            generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Integers uniform in ``[low, high)`` (int64); ``low``/``high`` may be per-row tensors."""
    if not isinstance(low, Tensor) and not isinstance(high, Tensor):
        out = torch.randint(int(low), int(high), shape, generator=generator, device=_where(generator, device))
        return to_device(out, device)
    # Python bounds stay Python numbers: torch.as_tensor(5, device="cuda") would be a blocking upload
    span = high - low
    u = rand(shape, generator, device)
    # float32 rounding can push u * span up to span itself; the clamp keeps the draw in range.
    k = torch.minimum((u * span).floor().long(), (span - 1).clamp(min=0).long())
    return k + low


def bernoulli(p: float | Tensor, shape: tuple[int, ...], generator: torch.Generator | None,
              device: torch.device) -> Tensor:
    """Boolean draws that are ``True`` with probability ``p`` (a number or a per-row tensor)."""
    return rand(shape, generator, device) < p


def normal(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
           dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal numbers of ``shape`` on ``device``."""
    z = torch.randn(shape, generator=generator, device=_where(generator, device), dtype=dtype)
    return to_device(z, device)


def gamma(alpha: float, shape: tuple[int, ...], generator: torch.Generator | None,
          device: torch.device) -> Tensor:
    """Gamma(alpha, 1) numbers (float32) drawn from ``generator``, on ``device``.

    ``torch._standard_gamma`` (the sampler of ``torch.distributions.Gamma``: Marsaglia & Tsang's
    rejection method with the ``alpha < 1`` boost, run per element inside one kernel) takes the
    generator, so the draw is one kernel with no host round trip; a rejection loop written with
    tensor ops would need the number of rejected entries on the host at every round.
    """
    if not alpha > 0:
        raise ConfigError(f"gamma: alpha must be > 0, got {alpha}")
    where = _where(generator, device)
    concentration = torch.full(tuple(shape), float(alpha), device=where, dtype=torch.float32)
    return to_device(torch._standard_gamma(concentration, generator=generator), device)


def dirichlet(alpha: float, k: int, n: int, generator: torch.Generator | None,
              device: torch.device) -> Tensor:
    """``n`` rows of Dirichlet(alpha, ..., alpha) weights over ``k`` categories, shape ``(n, k)``."""
    g = gamma(alpha, (n, k), generator, device)
    return g / g.sum(dim=1, keepdim=True).clamp_min(1e-30)
