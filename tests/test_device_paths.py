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


# ---------------------------------------------------------------- SBA's generators between devices

def _sba(seed: int = 0):
    from batchaug.methods import MethodContext, build_method
    from batchaug.models import build_model

    context = MethodContext(num_classes=10, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
                            model_name="resnet20")
    method = build_method({"name": "sba", "m": 4, "policy": "none", "seed": seed}, context)
    torch.manual_seed(0)
    model = method.prepare_model(build_model("resnet20"))
    return method, model


def _draws(method, model, steps=range(3, 9)) -> list:
    from batchaug.methods.base import MethodBatch

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    batch = MethodBatch({"inputs": method.normalize(x), "targets": torch.arange(4)}, 4)
    out = []
    for step in steps:
        method.begin_step(step, 0)
        out.append((method.augmented, method.layer))
    method.augmented = True
    with torch.no_grad():
        out.append(method.loss(model.eval(), batch).loss.item())  # the noise of the last step
    return out


def test_sba_state_holds_no_generator_state_and_moves_between_devices() -> None:
    method, model = _sba(seed=3)
    _draws(method, model, range(3))
    state = method.state_dict()
    assert not any(isinstance(v, Tensor) for v in state.values())  # nothing tied to a device
    other, other_model = _sba(seed=99)
    other.load_state_dict(state)  # the seed comes with the state
    assert _draws(other, other_model) == _draws(method, model)


def test_sba_checkpoint_from_a_cuda_generator_loads_on_the_cpu() -> None:
    """A CUDA generator's state is 16 bytes (seed, offset), a CPU one's 5,056: checkpoints written with
    the generators' states made a CUDA-trained SBA run fail to evaluate or resume on the CPU."""
    method, model = _sba()
    cuda_written = {"sched_rng": torch.Generator().get_state(), "noise_rng": torch.zeros(16, dtype=torch.uint8),
                    "augmented": True, "layer": "features_out", "lambda_epoch": 0}
    method.load_state_dict(cuda_written)
    assert (method.augmented, method.layer) == (True, "features_out")
    fresh, fresh_model = _sba()
    assert _draws(method, model) == _draws(fresh, fresh_model)


def test_sba_draws_of_a_step_do_not_depend_on_earlier_calls() -> None:
    """begin_step(s) again for the same step gives the same λ, k and noise: what a retried step needs."""
    a, model_a = _sba()
    b, model_b = _sba()
    _draws(b, model_b, range(50))  # b has drawn much more
    assert _draws(a, model_a, [7]) == _draws(b, model_b, [7])


# --------------------------------------------------------------------------- evaluation's copies

class _BlockingCopies(TorchFunctionMode):
    """Records ``Tensor.to(device)`` calls made without ``non_blocking=True``: on CUDA each is a copy
    followed by a stream synchronization."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is Tensor.to and not kwargs.get("non_blocking", False) and (
                "device" in kwargs or any(isinstance(a, (str, torch.device)) for a in args[1:])):
            self.calls += 1
        return func(*args, **kwargs)


def test_validation_makes_no_blocking_copy_per_batch() -> None:
    """The trainer's evaluation copied each batch's host-made index to the images' device with a
    blocking copy (one synchronization per evaluation batch)."""
    from batchaug.config import OptimConfig
    from batchaug.methods import MethodContext, build_method
    from batchaug.train.optim import LRSchedule, build_optimizer
    from batchaug.train.trainer import Trainer, TrainerSettings

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (40,), generator=g)
    method = build_method({"name": "baseline", "policy": "none"},
                          MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    cfg = OptimConfig(lr=0.1)
    settings = TrainerSettings(batch_size=8, total_steps=1, steps_per_epoch=5, eval_every=1, progress=False,
                               eval_batch_size=7)
    t = Trainer(model, method, build_optimizer(model, cfg, 0.1), LRSchedule(cfg, 0.1, 1, 1), settings, images,
                targets, images, targets, torch.device("cpu"))
    t.evaluate()  # warm-up: the normalization constants are made on the device once
    with _BlockingCopies() as copies:
        result = t.evaluate()
    assert copies.calls == 0  # 6 batches (before: 6 blocking index copies)
    with torch.no_grad():
        logits = model(method.normalize(images))
    assert result["val_acc"] == pytest.approx((logits.argmax(-1) == targets).float().mean().item())
    assert result["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), rel=1e-5)


def test_latent_hooks_are_registered_once_and_removable() -> None:
    """Permanent hooks (torch.compile does not see hooks added later): one pre-hook on the model and one
    hook per eligible layer, inert outside ``active``; preparing the method again replaces them."""
    method, model = _sba()
    hooks = lambda: len(model._forward_pre_hooks) + sum(len(m._forward_hooks) for m in model.modules())  # noqa: E731
    assert hooks() == 1 + len(method.layers)
    x = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)  # inactive: the plain model
        with method.latent.active(method.layers[-1], torch.Generator().manual_seed(0)):
            assert model(x).shape == (2 * 5, 10)
    method.prepare_model(model)
    assert hooks() == 1 + len(method.layers)
    method.latent.remove()
    assert hooks() == 0
