"""The trainer on synthetic data with a test method: micro-batching, OOM fallback, determinism."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from batchaug.config import OptimConfig
from batchaug.methods.base import LossOutput, Method, MethodBatch, MethodContext
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings


@dataclass
class _Opts:
    m: int = 3
    oom_above: int | None = None


class _RepeatMethod(Method):
    """m noisy copies per sample; raises OutOfMemoryError for chunks above ``oom_above`` samples."""

    name = "test"
    Options = _Opts

    @property
    def views_per_sample(self) -> int:
        return self.options.m

    def make_batch(self, images, targets, generator=None):
        x = self.normalize(images).repeat_interleave(self.options.m, 0)
        x = x + 0.1 * torch.randn(x.shape, generator=generator, device=x.device)
        return MethodBatch({"x": x, "y": targets.repeat_interleave(self.options.m)}, images.shape[0])

    def loss(self, model, batch):
        if self.options.oom_above is not None and batch.num_samples > self.options.oom_above:
            raise torch.OutOfMemoryError("simulated")
        logits = model(batch["x"])
        rows = float(batch["x"].shape[0])
        return LossOutput(self.cross_entropy(logits, batch["y"]), logits, batch["y"], {"rows": rows})


def _setup(micro_batch=None, oom_above=None, seed=0):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (64,), generator=g)
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = _RepeatMethod(_Opts(oom_above=oom_above), ctx)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 4))  # no BN: chunking is exact
    cfg = OptimConfig(lr=0.1)
    opt = build_optimizer(model, cfg, 0.1)
    settings = TrainerSettings(batch_size=16, total_steps=8, steps_per_epoch=4, eval_every=4, seed=seed,
                               micro_batch=micro_batch, progress=False)
    return Trainer(model, method, opt, LRSchedule(cfg, 0.1, 2, 8), settings, images, targets, images[:16],
                   targets[:16], torch.device("cpu"))


def _params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_micro_batching_gives_the_same_update():
    a, b = _setup(), _setup(micro_batch=12)  # 16 samples x 3 views = 48 views -> 4 chunks
    ha, hb = a.fit(), b.fit()
    assert b.n_chunks == 4 and a.n_chunks == 1
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)
    assert ha[-1]["train_loss"] == pytest.approx(hb[-1]["train_loss"], rel=1e-5)
    assert ha[-1]["rows"] == 48 and hb[-1]["rows"] == pytest.approx(48 / 4)  # per-chunk metric, sample-weighted


def test_out_of_memory_falls_back_to_chunks():
    a, b = _setup(), _setup(oom_above=5)
    a.fit()
    b.fit()
    assert b.n_chunks == 4  # 16 -> 8 -> 4 samples per chunk
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-5, atol=1e-6)


def test_same_seed_same_run_different_seed_different_run():
    a, b, c = _setup(seed=0), _setup(seed=0), _setup(seed=1)
    ra, rb, _ = a.fit(), b.fit(), c.fit()
    assert ra == [dict(r, wall_time=x["wall_time"], views_per_s=x["views_per_s"]) for r, x in zip(rb, ra)]
    assert not torch.equal(_params(a), _params(c))


def test_batches_cover_each_epoch_without_repeats():
    t = _setup()
    seen = torch.cat([t.sampler.indices(s) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(64))
    assert not torch.equal(t.sampler.indices(0), t.sampler.indices(4))  # a new permutation per epoch


def test_tensorboard_events_written_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    t = _setup()
    from batchaug.train.callbacks.loggers import TensorBoardLogger
    from batchaug.train.metrics_log import MetricsWriter

    t.out_dir = tmp_path
    t.writer = MetricsWriter(tmp_path / "metrics.jsonl")
    t.callbacks.append(TensorBoardLogger(tmp_path / "tensorboard"))
    t.fit()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert {"val_acc", "train_loss", "grad_norm"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("val_acc")] == [4, 8]
