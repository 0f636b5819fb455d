"""The out-of-memory fallback, driven by a model that raises on demand: a step retried in more
micro-batches is the step a run micro-batched from the start takes (BatchNorm running statistics,
SBA's noise, BA's gradient-norm probe included), allocation failures of every form are recognised,
other errors are not swallowed, and the failed attempt's memory is unreachable before the cache is
emptied."""

from __future__ import annotations

import importlib
import weakref

import pytest
import torch
from torch import nn

from batchaug.config import OptimConfig
from batchaug.methods import MethodContext, build_method
from batchaug.runtime import memory
from batchaug.train import trainer as trainer_module
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings

pytestmark = pytest.mark.usefixtures("one_thread")
CUBLAS = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


class Raiser(nn.Module):
    """Identity that raises ``error`` on train-mode inputs of more than ``limit`` rows."""

    def __init__(self, limit: int, error=lambda: torch.OutOfMemoryError("CUDA out of memory (simulated)")) -> None:
        super().__init__()
        self.limit, self.error, self.raised, self.seen = limit, error, 0, None

    def forward(self, x):
        if self.training and x.shape[0] > self.limit:
            self.raised += 1
            self.seen = weakref.ref(x)  # a tensor of the failed attempt's graph
            raise self.error()
        return x


def _net(raiser: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.BatchNorm1d(16), nn.ReLU(), raiser or nn.Identity(),
                         nn.Linear(16, 4))


def _trainer(method_section: dict, model: nn.Module, micro_batch: int | None = None) -> Trainer:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (64,), generator=g)
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method({"policy": "standard", **method_section}, ctx)
    model = method.prepare_model(model)
    cfg = OptimConfig(lr=0.1)
    settings = TrainerSettings(batch_size=16, total_steps=3, steps_per_epoch=4, eval_every=3, seed=0,
                               micro_batch=micro_batch, progress=False)
    return Trainer(model, method, build_optimizer(model, cfg, 0.1), LRSchedule(cfg, 0.1, 1, 3), settings, images,
                   targets, images[:16], targets[:16], torch.device("cpu"))


def _run(t: Trainer) -> Trainer:
    for step in range(3):
        t.train_step(step)
    return t


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)  # BN statistics and counts included


@pytest.mark.parametrize("error", [lambda: torch.OutOfMemoryError("CUDA out of memory (simulated)"),
                                   lambda: RuntimeError(CUBLAS),
                                   lambda: RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")])
def test_a_retried_step_is_the_micro_batched_step_batchnorm_statistics_included(error) -> None:
    """BA, M=2: 32 views, at most 8 rows per pass -> 4 chunks, after two failed attempts whose train-mode
    BN forwards had moved the running statistics (and, for cuBLAS/cuDNN, had escaped the fallback)."""
    raiser = Raiser(8, error)
    fallback = _run(_trainer({"name": "ba", "m": 2}, _net(raiser)))
    reference = _run(_trainer({"name": "ba", "m": 2}, _net(), micro_batch=8))
    assert raiser.raised == 2 and fallback.n_chunks == reference.n_chunks == 4
    _assert_same_state(fallback, reference)


def test_a_retried_sba_step_draws_the_same_noise() -> None:
    """The failed attempt drew virtual copies at the latent layer before the error downstream of it."""
    section = {"name": "sba", "m": 2, "p": 1.0, "layers": ["3"], "policy": "none", "seed": 5}
    raiser = Raiser(8 * 3)  # 8 samples x (1 + M) rows fit, 16 x 3 do not
    fallback = _run(_trainer(section, _net(raiser)))
    reference = _run(_trainer(section, _net(), micro_batch=8))
    assert raiser.raised == 1 and fallback.n_chunks == reference.n_chunks == 2
    _assert_same_state(fallback, reference)


def test_a_retried_ba_step_probes_the_gradient_norm_again() -> None:
    """BA's probe runs inside the first chunk's loss; a failed attempt had consumed (or updated) it."""
    section = {"name": "ba", "m": 2, "adapt_grad_norm": True, "adapt_every": 1}
    fallback = _run(_trainer(section, _net(Raiser(8))))
    reference = _run(_trainer(section, _net(), micro_batch=8))
    assert fallback.method._scale == pytest.approx(reference.method._scale, rel=1e-5)
    assert fallback.method._scale != 1.0
    _assert_same_state(fallback, reference)


def test_other_errors_are_not_retried() -> None:
    raiser = Raiser(8, lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    t = _trainer({"name": "ba", "m": 2}, _net(raiser))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        t.train_step(0)
    assert raiser.raised == 1 and t.n_chunks == 1


def test_out_of_memory_at_one_sample_per_chunk_is_raised() -> None:
    raiser = Raiser(1)  # even one sample's 2 views do not fit
    t = _trainer({"name": "ba", "m": 2}, _net(raiser))
    with pytest.raises(torch.OutOfMemoryError):
        t.train_step(0)
    assert t.n_chunks == 16


def test_the_failed_attempt_is_released_before_the_cache_is_emptied(monkeypatch) -> None:
    raiser = Raiser(8)
    alive = []
    monkeypatch.setattr(trainer_module, "release_cached_memory", lambda device: alive.append(raiser.seen() is not None))
    _trainer({"name": "ba", "m": 2}, _net(raiser)).train_step(0)
    assert alive == [False, False]  # empty_cache would have found the failed graph still referenced


def test_out_of_memory_while_making_the_views_is_retried_once_then_explained(monkeypatch) -> None:
    t = _trainer({"name": "ba", "m": 2}, _net())
    calls = []
    make = t.method.make_batch

    def flaky(images, targets, generator=None):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return make(images, targets, generator)

    monkeypatch.setattr(t.method, "make_batch", flaky)
    t.train_step(0)  # a fragmented cache: once emptied, the views fit
    assert len(calls) == 2 and t.n_chunks == 1

    def never(images, targets, generator=None):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(t.method, "make_batch", never)
    with pytest.raises(RuntimeError, match=r"making the 32 views of step 1 .*method\.m"):
        t.train_step(1)
    assert t.n_chunks == 1  # more chunks would not have helped


def test_falls_back_on_a_torch_without_torch_out_of_memory_error(monkeypatch) -> None:
    """PyTorch < 2.5 has torch.cuda.OutOfMemoryError only: ``except torch.OutOfMemoryError`` itself raised
    AttributeError there, at the first out-of-memory error."""
    oom = torch.cuda.OutOfMemoryError
    monkeypatch.delattr(torch, "OutOfMemoryError")
    try:
        importlib.reload(memory)
        assert memory.is_out_of_memory(oom("CUDA out of memory. Tried to allocate 2.00 GiB"))
        monkeypatch.setattr(trainer_module, "is_out_of_memory", memory.is_out_of_memory, raising=False)
        raiser = Raiser(8, lambda: oom("CUDA out of memory (simulated)"))
        assert _trainer({"name": "ba", "m": 2}, _net(raiser)).train_step(0)["views"] == 32
    finally:
        monkeypatch.undo()
        importlib.reload(memory)


@pytest.mark.parametrize("exc, expected", [
    (torch.OutOfMemoryError("x"), True), (RuntimeError(CUBLAS), True),
    (RuntimeError("CUDA error: out of memory"), True), (RuntimeError("MPS backend out of memory"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
    (RuntimeError("CUDNN_STATUS_NOT_SUPPORTED"), False), (ValueError("out of memory"), False),
])
def test_is_out_of_memory(exc, expected) -> None:
    assert memory.is_out_of_memory(exc) is expected
