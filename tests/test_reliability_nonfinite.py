"""The trainer's NaN/Inf guard (train.on_nonfinite) on synthetic data: a stopped step is never applied, a
skipped step leaves the optimizer, the weights and the BatchNorm statistics as they were, the fp16 scaler
lowers its scale, and a weight that is not finite is never checkpointed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from batchaug.config import OptimConfig
from batchaug.errors import NonFiniteError
from batchaug.methods.base import LossOutput, Method, MethodBatch, MethodContext
from batchaug.train.nonfinite import NonFiniteGuard
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings


@dataclass
class _Opts:
    bad_steps: tuple[int, ...] = ()
    bad_value: float = float("nan")


class _PoisonMethod(Method):
    """Plain cross-entropy whose inputs are poisoned (NaN or huge) at ``bad_steps``."""

    name = "poison"
    Options = _Opts

    def begin_step(self, step: int, epoch: int) -> None:
        self._step = step

    def make_batch(self, images, targets, generator=None):
        x = self.normalize(images)
        if self._step in self.options.bad_steps:
            x = torch.full_like(x, self.options.bad_value)
        return MethodBatch({"x": x, "y": targets}, images.shape[0])

    def loss(self, model, batch):
        logits = model(batch["x"])
        return LossOutput(self.cross_entropy(logits.float(), batch["y"]), logits, batch["y"], {})


class _OutOfMemoryOnce(nn.Module):
    """Identity that, once armed, raises a (simulated) out-of-memory error on its next train-mode call."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x):
        if self.training and self.armed:
            self.armed = False
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return x


def _trainer(tmp_path=None, *, mode="stop", bad_steps=(), bad_value=float("nan"), amp="none", oom=None):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (64,), generator=g)
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = _PoisonMethod(_Opts(bad_steps, bad_value), ctx)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), oom or nn.Identity(), nn.Flatten(), nn.Linear(144, 4))
    cfg = OptimConfig(lr=0.1, momentum=0.9)
    opt = build_optimizer(model, cfg, 0.1)
    settings = TrainerSettings(batch_size=16, total_steps=8, steps_per_epoch=4, eval_every=4, progress=False,
                               on_nonfinite=mode, amp=amp)
    return Trainer(model, method, opt, LRSchedule(cfg, 0.1, 2, 8), settings, images, targets, images[:16],
                   targets[:16], torch.device("cpu"), out_dir=tmp_path)


def _state(trainer):
    params = [p.detach().clone() for p in trainer.model.parameters()]
    buffers = [b.detach().clone() for b in trainer.model.buffers() if b.is_floating_point()]
    momenta = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in trainer.model.parameters()
               if "momentum_buffer" in trainer.optimizer.state[p]]
    return params, buffers, momenta


def _same(a, b):
    for xs, ys in zip(a, b, strict=True):
        assert len(xs) == len(ys)
        for x, y in zip(xs, ys, strict=True):
            assert torch.equal(x, y)


def test_stop_raises_naming_the_step_before_applying_it():
    tr = _trainer(bad_steps=(2,))
    tr.train_step(0)
    tr.train_step(1)
    params, _, momenta = _state(tr)
    with pytest.raises(NonFiniteError, match=r"^step 3: non-finite loss nan and gradient norm nan"):
        tr.train_step(2)
    after = _state(tr)
    _same((params, momenta), (after[0], after[2]))  # (its forward pass did touch the BN statistics: never saved)


@pytest.mark.parametrize("bad_value", [float("nan"), 1e30])
def test_skip_leaves_optimizer_weights_and_bn_statistics_untouched(bad_value):
    """1e30 inputs: a finite loss on the overflowed BN statistics is no excuse either."""
    tr = _trainer(mode="skip", bad_steps=(2,), bad_value=bad_value)
    tr.train_step(0)
    tr.train_step(1)
    before = _state(tr)
    out = tr.train_step(2)
    assert out["skipped"] and tr.guard.skipped == 1
    _same(before, _state(tr))
    tr.train_step(3)  # training goes on from where it was
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_skip_after_an_out_of_memory_retry_restores_the_step_start(capsys):
    """The out-of-memory retry's snapshot and the guard's restore together: the failed attempt and the
    retried, non-finite one both moved the BN statistics (and their counts); the skip leaves the state the
    step started in."""
    oom = _OutOfMemoryOnce()
    tr = _trainer(mode="skip", bad_steps=(2,), oom=oom)
    tr.train_step(0)
    tr.train_step(1)
    before = _state(tr), {k: v.clone() for k, v in tr.model.state_dict().items()}
    oom.armed = True
    out = tr.train_step(2)
    assert out["skipped"] and tr.n_chunks == 2 and "out of memory at step 2" in capsys.readouterr().out
    _same(before[0], _state(tr))
    after = tr.model.state_dict()
    for key, value in before[1].items():  # num_batches_tracked included
        assert torch.equal(value, after[key]), key
    tr.train_step(3)
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())


def test_skipped_steps_are_counted_in_the_metrics_and_the_checkpoint(tmp_path):
    tr = _trainer(tmp_path, mode="skip", bad_steps=(1, 5))
    records = tr.fit()
    assert [r["skipped_steps"] for r in records] == [1, 2]
    assert all(r["train_loss"] is not None for r in records)  # the dropped steps are not in the means
    resumed = _trainer(tmp_path, mode="skip")
    resumed.load_state(tmp_path / "last.pt")
    assert resumed.guard.skipped == 2


def test_fp16_scaler_lowers_its_scale_on_a_skipped_step():
    tr = _trainer(mode="skip", bad_steps=(1,), amp="fp16")
    assert tr.scaler.is_enabled() and tr.guard.scaled
    tr.train_step(0)
    scale = tr.scaler.get_scale()
    before = _state(tr)
    assert tr.train_step(1)["skipped"]
    _same(before, _state(tr))
    assert tr.scaler.get_scale() < scale
    tr.train_step(2)  # the scaler is ready for the next step (no "unscale_() already called")


def test_accelerator_stop_check_is_read_at_the_next_line_or_checkpoint():
    guard = NonFiniteGuard("stop", "cuda")  # off the CPU: recorded on the device, read later
    assert not guard.eager
    assert guard.step_ok(4, torch.tensor(1.0), torch.tensor(2.0))
    guard.raise_pending()
    assert guard.step_ok(5, torch.tensor(float("inf")), torch.tensor(2.0))
    assert guard.step_ok(6, torch.tensor(float("nan")), torch.tensor(2.0))
    with pytest.raises(NonFiniteError, match=r"^step 6: "):  # the first bad step
        guard.raise_pending()


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path):
    tr = _trainer(tmp_path)
    tr.fit()
    good = (tmp_path / "last.pt").read_bytes(), (tmp_path / "best.pt").read_bytes()
    with torch.no_grad():
        next(tr.model.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="weights hold NaN or Inf values and are not saved"):
        tr._save_checkpoints(is_best=True)
    assert ((tmp_path / "last.pt").read_bytes(), (tmp_path / "best.pt").read_bytes()) == good
