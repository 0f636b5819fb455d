"""Timing helpers shared by the benchmarks: a device synchronization, and calls timed in alternation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["alternate", "synchronize"]


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing to wait for on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(fns: Sequence[Callable[[], None]], repeats: int, device: torch.device, *, stream: int = 1,
              warmup: int = 2) -> list[list[float]]:
    """Seconds per call of each of ``fns``, one list per function with one entry per round.

    ``warmup`` calls of each first (allocator, kernels, lazy initialisation); then every round times each
    function in turn, so a disturbance from another process tends to hit all of a round. A round's time
    is ``stream`` back-to-back calls between two synchronizations, divided by ``stream``.
    """
    for f in fns:
        for _ in range(warmup):
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for f, out in zip(fns, times, strict=True):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(stream):
                f()
            synchronize(device)
            out.append((time.perf_counter() - t0) / stream)
    return times
