"""Trainer callbacks: EMA against a hand computation, clipping, step lines, CSV, the registry."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_trainer_unit import _setup

from batchaug.config import load_config
from batchaug.errors import ConfigError
from batchaug.train.callbacks import CALLBACKS, Callback, build_callbacks
from batchaug.train.callbacks.clip import ClipGradNorm
from batchaug.train.callbacks.ema import EMA, ema_weights, swapped_weights
from batchaug.train.callbacks.loggers import CSVLogger
from batchaug.train.callbacks.step_log import StepLog
from batchaug.train.metrics_log import MetricsWriter, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")
QUICK = "configs/quick/cifar10_resnet20.yaml"


class _Record(Callback):
    """Keeps the weights after every step and the gradient norm the optimizer sees."""

    name = "record"

    def __init__(self) -> None:
        self.weights: list[dict[str, torch.Tensor]] = []
        self.norms: list[float] = []

    def on_fit_start(self, trainer) -> None:
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    def on_before_optimizer_step(self, trainer, grad_norm) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def on_step_end(self, trainer, step, out) -> None:
        self.weights.append({k: v.clone() for k, v in trainer.model.state_dict().items()})


def test_ema_equals_the_hand_computation_and_is_evaluated() -> None:
    t = _setup()
    record, ema = _Record(), EMA(0.8)
    t.callbacks += [record, ema]
    history = t.fit()
    expected = dict(record.weights[0])
    for w in record.weights[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * w[k] for k in expected}
    assert ema.updates == 8 == len(record.weights) - 1
    for k, v in expected.items():
        torch.testing.assert_close(ema.weights[k], v, rtol=1e-5, atol=1e-6)
    assert all(0 <= r["val_acc_ema"] <= 1 and r["val_loss_ema"] > 0 for r in history)
    # evaluating the average leaves the model's own weights exactly as they were
    after = {k: v.clone() for k, v in t.model.state_dict().items()}
    with swapped_weights(t.model, ema.weights):
        assert torch.equal(t.model[1].weight, ema.weights["1.weight"])
    assert all(torch.equal(after[k], v) for k, v in t.model.state_dict().items())
    assert ema_weights({"callbacks": {"ema": ema.state_dict()}})["1.weight"] is not None


def test_clipping_bounds_the_norm_the_optimizer_sees() -> None:
    t = _setup()
    record = _Record()
    t.callbacks += [ClipGradNorm(0.05), record]  # clipping runs first, the recorder sees its result
    history = t.fit()
    assert max(record.norms) <= 0.05 * (1 + 1e-4)
    assert history[0]["grad_norm"] > 0.05  # what is logged is the norm before clipping
    unclipped = _setup()
    unclipped.fit()
    assert not torch.equal(unclipped.model[1].weight, t.model[1].weight)


def test_step_lines_every_log_every_steps_and_eval_lines_unchanged(tmp_path) -> None:
    t = _setup()
    t.out_dir, t.writer = tmp_path, MetricsWriter(tmp_path / "metrics.jsonl")
    t.callbacks += [StepLog(3), CSVLogger(tmp_path / "metrics.csv")]
    t.fit()
    steps = read_metrics(tmp_path, kind="step")
    assert [r["step"] for r in steps] == [3, 6]
    assert set(steps[0]) == {"kind", "epoch", "step", "images_seen", "lr", "train_loss", "grad_norm", "wall_time"}
    assert steps[1]["epoch"] == 1.5 and steps[1]["images_seen"] == 6 * 16
    evals = read_metrics(tmp_path)
    assert [r["step"] for r in evals] == [4, 8] and all(r["kind"] == "eval" and "val_acc" in r for r in evals)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in lines] == [("step", 3), ("eval", 4), ("step", 6), ("eval", 8)]
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], int(r["step"])) for r in rows] == [(r["kind"], r["step"]) for r in lines]
    assert float(rows[1]["val_acc"]) == pytest.approx(lines[1]["val_acc"]) and rows[0]["val_acc"] == ""


def test_step_line_means_are_the_means_of_the_steps() -> None:
    t = _setup()
    losses = []

    class Losses(Callback):
        name = "losses"

        def on_step_end(self, trainer, step, out) -> None:
            losses.append(float(out["loss"]))

    logged = []
    t.callbacks += [Losses(), StepLog(4)]
    t.log = lambda record: logged.append(record) or record  # type: ignore[method-assign]
    t.fit()
    step_lines = [r for r in logged if r.get("kind") == "step"]
    assert [r["train_loss"] for r in step_lines] == pytest.approx([sum(losses[:4]) / 4, sum(losses[4:]) / 4])


def test_the_registry_builds_what_the_config_asks_for(tmp_path) -> None:
    cfg = load_config(QUICK, ["train.ema_decay=0.99", "optim.clip_grad_norm=1", "train.log_every=5",
                              "train.loggers=[csv]"])
    names = [cb.name for cb in build_callbacks(cfg, tmp_path)]
    assert names == ["clip_grad_norm", "ema", "step_log", "csv"]
    assert [cb.name for cb in build_callbacks(load_config(QUICK), tmp_path)] == ["tensorboard"]
    assert build_callbacks(load_config(QUICK, ["train.tensorboard=false"]), tmp_path) == []
    with pytest.raises(ConfigError, match="train.callbacks: unknown callback 'nope'; registered: clip_grad_norm"):
        build_callbacks(load_config(QUICK, ["train.callbacks=[nope]"]), tmp_path)
    with pytest.raises(ConfigError, match="'ema' is switched on by train.ema_decay"):
        build_callbacks(load_config(QUICK, ["train.callbacks=[ema]"]), tmp_path)
    assert set(CALLBACKS) >= {"ema", "clip_grad_norm", "step_log", "tensorboard", "csv", "wandb"}


def test_wandb_needs_its_package(tmp_path, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    t = _setup()
    (cb,) = build_callbacks(load_config(QUICK, ["train.loggers=[wandb]"]), tmp_path)
    t.callbacks.append(cb)
    with pytest.raises(ConfigError, match=r"pip install 'batchaug\[wandb\]'"):
        t.fit()


def test_bad_callback_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="train.ema_decay: must be in \\[0, 1\\)"):
        EMA(1.0)
    with pytest.raises(ConfigError, match="optim.clip_grad_norm: must be > 0"):
        ClipGradNorm(0)
    with pytest.raises(ConfigError, match="train.log_every: must be >= 1"):
        StepLog(0)
