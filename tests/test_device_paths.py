"""CUDA code paths checked on the CPU: copies between a generator's device and the images' device,
per-device constants, generator states that move between devices, BatchNorm bookkeeping without host
reads. Devices other than the CPU are simulated: a ``meta`` generator device stands for an accelerator
(tensors there have shapes but no data), and a TorchFunctionMode intercepts the copies off it."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from batchaug.augment import _random


class _FakeAccelerator(TorchFunctionMode):
    """Records every ``Tensor.to`` between devices; a copy off the ``meta`` device yields zeros on the
    target (meta tensors have no data), a copy onto a device other than the CPU stays on the CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[tuple[str, str, bool]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is Tensor.to and args and isinstance(args[0], Tensor):
            target = next((torch.device(a) for a in args[1:] if isinstance(a, (str, torch.device))),
                          kwargs.get("device"))
            if target is not None and torch.device(target) != args[0].device:
                target = torch.device(target)
                self.copies.append((args[0].device.type, target.type, bool(kwargs.get("non_blocking", False))))
                if args[0].device.type == "meta":
                    return torch.zeros(args[0].shape, dtype=args[0].dtype)
                return args[0]
        return func(*args, **kwargs)


DRAWS = {
    "rand": lambda g, d: _random.rand((5,), g, d, 0.0, 2.0),
    "randint": lambda g, d: _random.randint(0, 7, (5,), g, d),
    "normal": lambda g, d: _random.normal((5,), g, d),
    "gamma": lambda g, d: _random.gamma(0.5, (5,), g, d),
    "bernoulli": lambda g, d: _random.bernoulli(0.5, (5,), g, d),
}


@pytest.mark.parametrize("draw", list(DRAWS))
def test_numbers_drawn_on_an_accelerator_for_cpu_images_arrive_with_a_blocking_copy(draw, monkeypatch) -> None:
    """A non-blocking device-to-host copy returns before the data has arrived: the CPU would read
    garbage. (Before the fix every helper copied with ``non_blocking=True`` whatever the direction.)"""
    monkeypatch.setattr(_random, "_where", lambda generator, device: torch.device("meta"))
    with _FakeAccelerator() as fake:
        out = DRAWS[draw](torch.Generator(), torch.device("cpu"))
    assert out.device.type == "cpu"
    assert fake.copies and all(src == "meta" and dst == "cpu" and not nb for src, dst, nb in fake.copies)


def test_numbers_drawn_on_the_cpu_for_accelerator_images_are_queued_without_blocking() -> None:
    with _FakeAccelerator() as fake:
        _random.rand((5,), torch.Generator(), torch.device("cuda"))
    assert fake.copies == [("cpu", "cuda", True)]


def test_per_row_bounds_take_python_numbers_without_an_upload() -> None:
    from batchaug.runtime import count_syncs

    high = torch.tensor([3, 5, 9])
    with count_syncs() as syncs:
        k = _random.randint(1, high, (3,), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert syncs.uploads == 0 and syncs.total == 0
    assert ((k >= 1) & (k < high)).all()


# ------------------------------------------------------------------------ BatchNorm, momentum=None

@pytest.mark.parametrize("kind", ["split", "ghost"])
def test_cumulative_batchnorm_averages_without_reading_the_count_back(kind: str) -> None:
    """``momentum=None`` (cumulative average): ``nn.BatchNorm`` computes ``1 / float(num_batches_tracked)``,
    one host read per layer and step; batchaug's layers keep the factor on the device, same averages."""
    from batchaug.nn import GhostBatchNorm2d, SplitBatchNorm2d
    from batchaug.runtime import count_syncs

    layer = SplitBatchNorm2d(3, momentum=None) if kind == "split" else GhostBatchNorm2d(3, 4, momentum=None)
    reference = torch.nn.BatchNorm2d(3, momentum=None)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = torch.randn(8, 3, 5, 5, generator=g) * (step + 1) + step
        with count_syncs() as syncs:
            layer(torch.cat([x, x]) if kind == "split" else x)
        assert syncs.total == 0, syncs.where
        if kind == "split":
            reference(x)
        else:  # ghost: the mean of the two virtual batches' statistics per step
            ref_mean = torch.stack([c.mean(dim=(0, 2, 3)) for c in x.split(4)]).mean(0)
            ref_var = torch.stack([c.var(dim=(0, 2, 3)) for c in x.split(4)]).mean(0)
            reference.running_mean.lerp_(ref_mean, 1 / (step + 1))
            reference.running_var.lerp_(ref_var, 1 / (step + 1))
    torch.testing.assert_close(layer.running_mean, reference.running_mean)
    torch.testing.assert_close(layer.running_var, reference.running_var)
    if kind == "split":
        torch.testing.assert_close(layer.aux1_running_var, reference.running_var)
