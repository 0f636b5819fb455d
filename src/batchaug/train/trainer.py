"""The method-agnostic training loop.

The trainer owns the step: learning rate, micro-batching, mixed precision, gradient norm, optimizer
step, evaluation, checkpoints and ``metrics.jsonl``. What a batch becomes, what the loss is and what a
step carries to the next belong to the :class:`~batchaug.methods.base.Method`; which samples a step
sees to the batch source (:class:`~batchaug.data.batches.StepBatches` for images,
:class:`~batchaug.data.token_batches.TokenBatches` for token streams); what validation measures and
which number picks ``best.pt`` to the validation (:mod:`batchaug.train.validation`); everything else
around the loop (clipping, weight averages, step lines, loggers) to
:mod:`callbacks <batchaug.train.callbacks>`. The trainer never names a method, a modality or a callback.

Reproducibility: the order of samples in epoch ``e`` is a permutation drawn from a generator seeded by
``(seed, e)``, and the augmentation generator is re-seeded from ``(seed, step)`` at every step, so a
run resumed from a checkpoint draws exactly the batches and views of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from batchaug.data.batches import EpochBatchSampler, StepBatches
from batchaug.methods.base import Method
from batchaug.nn.wrappers import clean_state_dict, swapped_weights, unwrap
from batchaug.runtime.memory import is_out_of_memory, release_cached_memory
from batchaug.train import distributed as dist_utils
from batchaug.train.callbacks.base import Callback
from batchaug.train.checkpoint import load_checkpoint, save_checkpoint
from batchaug.train.metrics_log import IntervalMeter, MetricsWriter
from batchaug.train.optim import LRSchedule
from batchaug.train.step_guard import StepSnapshot
from batchaug.train.validation import ClassificationValidation, Validation, is_better

_SEED_STRIDE = 1_000_003  # a prime, so (seed, index) pairs map to distinct generator seeds


@dataclass
class TrainState:
    step: int = 0
    best: float | None = None  # best value of the validation's selection key so far
    elapsed: float = 0.0  # wall seconds of training in earlier (resumed-from) processes


@dataclass
class TrainerSettings:
    """Everything about the loop that is not the model, method or data."""

    batch_size: int
    total_steps: int
    steps_per_epoch: int
    eval_every: int | None
    """Steps between evaluations; None: at the end of every epoch (as the batch source counts them)."""
    seed: int = 0
    micro_batch: int | None = None
    amp: str = "none"
    eval_batch_size: int = 500
    progress: bool = True


class Trainer:
    """Runs ``settings.total_steps`` optimizer steps of ``method`` on ``model``.

    ``train_images``/``val_images`` are uint8 (N, C, H, W) tensors, normally already on ``device``
    (kept there for the whole run: the fast path of the design); ``train_images`` may instead be a
    map-style Dataset of ``(uint8 (C, H, W), target)`` (``train_targets=None``) streamed through
    ``num_workers`` DataLoader workers. Other data comes as a ready batch source (``batches``, e.g.
    :class:`~batchaug.data.token_batches.TokenBatches`) and a ``validation``
    (:mod:`batchaug.train.validation`); the image arguments are then None. The validation selects
    ``best.pt``; an optional test set (``test_images``/``test_targets``) is evaluated beside it at every
    evaluation (``test_*`` keys) and never used for selection. ``out_dir`` receives ``metrics.jsonl``,
    ``last.pt`` and ``best.pt``; ``callbacks`` are called at the points
    :class:`~batchaug.train.callbacks.Callback` lists.
    """

    def __init__(self, model: nn.Module, method: Method, optimizer: torch.optim.Optimizer, schedule: LRSchedule,
                 settings: TrainerSettings, train_images: Tensor | Dataset | None, train_targets: Tensor | None,
                 val_images: Tensor | None,
                 val_targets: Tensor | None, device: torch.device, out_dir: str | Path | None = None,
                 extra_checkpoint: dict[str, Any] | None = None, callbacks: Sequence[Callback] = (),
                 num_workers: int = 4, test_images: Tensor | None = None,
                 test_targets: Tensor | None = None, *, batches: Any = None,
                 validation: Validation | None = None) -> None:
        self.model = model
        self.method = method
        self.optimizer = optimizer
        self.schedule = schedule
        self.s = settings
        self.world = dist_utils.world_size()
        self.rank = dist_utils.rank()
        self.is_main = dist_utils.is_main()
        self.device = device
        if batches is None:
            if train_images is None or val_images is None or val_targets is None:
                raise ValueError("Trainer: give train/val images and targets, or a batch source and a validation")
            num_train = len(train_images) if not isinstance(train_images, Tensor) else int(train_images.shape[0])
            self.sampler: EpochBatchSampler | None = EpochBatchSampler(num_train, settings.batch_size, settings.seed,
                                                                       world=self.world, rank=self.rank)
            if self.sampler.steps_per_epoch != settings.steps_per_epoch:
                raise ValueError(f"settings.steps_per_epoch={settings.steps_per_epoch} disagrees with "
                                 f"{num_train} samples in batches of {settings.batch_size}")
            batches = StepBatches(train_images, train_targets, self.sampler, device, num_workers=num_workers)
        else:
            self.sampler = getattr(batches, "sampler", None)
            if batches.steps_per_epoch != settings.steps_per_epoch:
                raise ValueError(f"settings.steps_per_epoch={settings.steps_per_epoch} disagrees with the batch "
                                 f"source's {batches.steps_per_epoch} steps per epoch")
        self.batches = batches
        if (test_images is None) != (test_targets is None):
            raise ValueError("give both test_images and test_targets, or neither")
        if validation is None:
            if val_images is None or val_targets is None:
                raise ValueError("Trainer: give validation images and targets, or a validation")
            validation = ClassificationValidation(val_images, val_targets, settings.eval_batch_size,
                                                  test_images=test_images, test_targets=test_targets)
        self.validation = validation
        self.val_images, self.val_targets = val_images, val_targets
        self.test_images, self.test_targets = test_images, test_targets
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.extra_checkpoint = extra_checkpoint or {}
        self.callbacks = list(callbacks)
        names = [cb.name or type(cb).__name__ for cb in self.callbacks]
        if len(set(names)) != len(names):
            raise ValueError(f"two callbacks share a name (their checkpoint key): {names}")
        self.state = TrainState()
        self.meter = IntervalMeter()
        self.n_chunks = 1
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.amp == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.amp)
        self.writer: MetricsWriter | None = None
        if self.out_dir is not None and self.is_main:
            self.writer = MetricsWriter(self.out_dir / "metrics.jsonl")
        self.history: list[dict[str, Any]] = []
        self._aug_gen = torch.Generator(device=device)
        self._snapshot = StepSnapshot(model, device)
        self._wall_start = time.perf_counter()

    @property
    def streaming(self) -> bool:
        return self.batches.streaming

    def _fetch(self, step: int) -> tuple[Tensor, Tensor]:
        """uint8 images and targets of step ``step`` on the training device (in-memory path)."""
        return self.batches.fetch(step)

    def wall_time(self) -> float:
        """Seconds of training so far, summed over resumed processes (evaluations excluded)."""
        return self.state.elapsed + (time.perf_counter() - self._wall_start)

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one line to ``metrics.jsonl`` (main process) and hand it to every callback's ``on_log``."""
        written = self.writer.write(record) if self.writer is not None else record
        for cb in self.callbacks:
            cb.on_log(self, written)
        return written

    # ------------------------------------------------------------------------------ one step
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, step: int, images: Tensor | None = None, targets: Tensor | None = None) -> dict[str, Any]:
        """One optimizer step; returns the step's loss/accuracy figures (as tensors, not synced).

        ``images``/``targets`` are the step's uint8 batch; fetched from memory when not given.
        """
        epoch = self.batches.epoch_of(step)
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        if images is None or targets is None:
            images, targets = self._fetch(step)
        batch, out = self._guarded_step(step, epoch, images, targets)
        if batch.lr_scale != 1.0:  # the window's length (language models) scales this step's learning rate
            for group in self.optimizer.param_groups:
                group["lr"] = lr * batch.lr_scale
        views = batch.num_samples * self.method.views_per_sample  # network inputs (split BN: weak + strong)
        self.scaler.unscale_(self.optimizer)
        grad_norm = _grad_norm(self.model)
        for cb in self.callbacks:
            cb.on_before_optimizer_step(self, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.end_step(step, out.pop("carries"))
        out["grad_norm"] = grad_norm
        out["lr"] = lr
        out["views"] = views
        out["samples"] = batch.num_samples
        return out

    def _attempt(self, step: int, epoch: int, images: Tensor, targets: Tensor) -> tuple[Any, dict[str, Any]]:
        """The step up to its gradients: the method's draws, the views, forward and backward."""
        self.method.begin_step(step, epoch)
        self._aug_gen.manual_seed((self.s.seed * _SEED_STRIDE + step) * 2 + 1)
        try:
            batch = self.method.make_batch(images, targets, self._aug_gen)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise _ViewsOutOfMemory(step, int(targets.shape[0]), self.method.views_per_sample) from exc
            raise
        views = batch.num_samples * self.method.views_per_sample
        if self.s.micro_batch:
            self.n_chunks = max(self.n_chunks, math.ceil(views / self.s.micro_batch))
        return batch, self._forward_backward(batch)

    def _guarded_step(self, step: int, epoch: int, images: Tensor, targets: Tensor) -> tuple[Any, dict[str, Any]]:
        """:meth:`_attempt`, retried after an out-of-memory error in twice as many micro-batches (or, when
        making the views ran out, once as it was), each retry from the state the step started in
        (:class:`~batchaug.train.step_guard.StepSnapshot`): same views, same method draws, same BN
        running statistics; the update differs from the unchunked one only by per-chunk BN batch
        statistics (and per-chunk dropout masks)."""
        samples = int(targets.shape[0])  # images may be a token window: the targets count the samples
        self._snapshot.save(self.method)
        views_retried = False
        while True:
            try:
                return self._attempt(step, epoch, images, targets)
            except RuntimeError as exc:  # torch.OutOfMemoryError and cuBLAS/cuDNN allocation failures
                if not is_out_of_memory(exc):
                    raise
                if isinstance(exc, _ViewsOutOfMemory):
                    if views_retried:
                        raise
                    views_retried = True
                elif self.n_chunks >= samples:
                    raise
                else:
                    self.n_chunks = min(samples, self.n_chunks * 2)
            # Out of the except block: the failed attempt's frames, and with them its autograd graph, are
            # released only now, so the cache can give their memory back.
            self.optimizer.zero_grad(set_to_none=True)
            self._snapshot.restore(self.method)
            release_cached_memory(self.device)
            print(f"batchaug: out of memory at step {step}; retrying in {self.n_chunks} micro-batches", flush=True)

    def _forward_backward(self, batch) -> dict[str, Any]:
        self.optimizer.zero_grad(set_to_none=True)
        total = batch.num_samples
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        counted = 0
        metric_sums: dict[str, Any] = {}
        carries: list[Any] = []
        chunks = list(batch.chunks(self.n_chunks))
        for i, chunk in enumerate(chunks):
            weight = chunk.num_samples / total
            sync = contextlib.nullcontext()
            if i < len(chunks) - 1 and hasattr(self.model, "no_sync"):
                sync = self.model.no_sync()  # DDP: all-reduce gradients once, after the last chunk
            with sync:
                with self._autocast():
                    out = self.method.loss(self.model, chunk)
                self.scaler.scale(out.loss * weight).backward()
            loss_sum += out.loss.detach().float() * weight
            if out.logits is not None and out.targets is not None:
                correct += (out.logits.detach().argmax(-1) == out.targets).sum()
                counted += out.targets.numel()
            for k, v in out.metrics.items():
                v = v.detach().float() if isinstance(v, Tensor) else float(v)
                metric_sums[k] = metric_sums.get(k, 0.0) + v * weight
            carries.append(out.carry)
        return {"loss": loss_sum, "correct": correct, "counted": counted, "metrics": metric_sums, "carries": carries}

    # ------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, *, test: bool = True) -> dict[str, float]:
        """The validation's figures for the model's current weights (e.g. ``val_loss`` and ``val_acc`` of
        ``method.predict`` and of each of ``method.extra_val_predictions()``; with a test set, and
        ``test``, the same on it as ``test_*``); sharded across ranks when distributed."""
        self.model.eval()
        return self.validation(self.model, self.method, device=self.device, autocast=self._autocast, test=test)

    def eval_weights(self) -> dict[str, Tensor] | None:
        """The weights that stand for the model in validation, ``best.pt`` and ``batchaug eval``: the first
        a callback offers (e.g. NT-ASGD's average once it runs), else None (the model's own)."""
        for cb in self.callbacks:
            weights = cb.eval_weights(self)
            if weights is not None:
                return weights
        return None

    def _validate(self) -> dict[str, float]:
        weights = self.eval_weights()
        if weights is None:
            return self.evaluate()
        with swapped_weights(self.model, weights):
            return self.evaluate()

    # ------------------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        state = {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
            "meter": self.meter.state_dict(),
            "callbacks": {cb.name or type(cb).__name__: cb.state_dict() for cb in self.callbacks},
            "batches": self.batches.state_dict(),
            "step": self.state.step,
            "best": self.state.best,
            "best_key": self.validation.selection[0],
            "elapsed": self.state.elapsed,
            "n_chunks": self.n_chunks,
            "torch_rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        eval_weights = self.eval_weights()
        if eval_weights is not None:
            state["eval_model"] = eval_weights
        state.update(self.extra_checkpoint)
        return state

    def load_state(self, path: str | Path) -> dict[str, Any]:
        """Restore everything a resumed run needs from checkpoint ``path``; returns the checkpoint."""
        ckpt = load_checkpoint(path, map_location=self.device)
        unwrap(self.model).load_state_dict(clean_state_dict(ckpt["model"]))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.method.load_state_dict(ckpt.get("method", {}))
        self.meter.load_state_dict(ckpt.get("meter", {}))
        if "batches" in ckpt:
            self.batches.check_state(ckpt["batches"])
        saved = ckpt.get("callbacks", {})
        for cb in self.callbacks:
            cb.load_state_dict(saved.get(cb.name or type(cb).__name__, {}))
        self.state = TrainState(step=int(ckpt["step"]), best=_saved_best(ckpt), elapsed=float(ckpt.get("elapsed", 0.0)))
        self.n_chunks = int(ckpt.get("n_chunks", 1))
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if "cuda_rng" in ckpt and self.device.type == "cuda":
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), self.device)
        if self.writer is not None:
            self.writer.truncate_after(self.state.step)
        return ckpt

    def _save(self, name: str) -> None:
        if self.out_dir is not None and self.is_main:
            path = self.out_dir / name
            save_checkpoint(self.checkpoint_state(), path)
            for cb in self.callbacks:
                cb.on_checkpoint(self, path)

    # ------------------------------------------------------------------------------ the loop
    def fit(self) -> list[dict[str, Any]]:
        """Train until ``total_steps``; returns the evaluation records written to ``metrics.jsonl``."""
        s = self.s
        self._wall_start = time.perf_counter()
        interval_start = time.perf_counter()
        interval_views = interval_samples = 0
        for cb in self.callbacks:
            cb.on_fit_start(self)
        bar = _progress(s.total_steps, self.state.step, enabled=s.progress and self.is_main)
        try:
            for step, images, targets in self.batches.iterate(self.state.step, s.total_steps):
                out = self.train_step(step, images, targets)
                self.state.step = step + 1
                self.meter.add("train_loss", out["loss"])
                self.meter.add("grad_norm", out["grad_norm"])
                if out["counted"]:
                    self.meter.add("train_acc", out["correct"] / out["counted"])
                for k, v in out["metrics"].items():
                    self.meter.add(k, v)
                interval_views += out["views"] * self.world
                interval_samples += out["samples"] * self.world
                for cb in self.callbacks:
                    cb.on_step_end(self, step, out)
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0:
                        elapsed = max(time.perf_counter() - interval_start, 1e-9)
                        bar.set_postfix(loss=f"{float(out['loss']):.3f}",
                                        acc=f"{float(out['correct']) / max(out['counted'], 1):.3f}",
                                        samples_s=f"{interval_samples / elapsed:.0f}",
                                        views_s=f"{interval_views / elapsed:.0f}", refresh=False)
                if self._eval_due(step) or self.state.step == s.total_steps:
                    wall = self.wall_time()
                    seconds = max(time.perf_counter() - interval_start, 1e-9)
                    record = self._eval_record(out["lr"], wall, interval_views / seconds)
                    for cb in self.callbacks:
                        cb.on_eval(self, record)
                    record = self.log(record)
                    self.history.append(record)
                    if s.progress and self.is_main:
                        _echo(_format_record(record))
                    self.state.elapsed = wall
                    self._wall_start = time.perf_counter()
                    key, mode = self.validation.selection
                    is_best = is_better(record.get(key), self.state.best, mode)
                    if is_best:
                        self.state.best = record[key]
                    self.meter.reset()
                    self._save("last.pt")
                    if is_best:
                        self._save("best.pt")
                    interval_start = time.perf_counter()
                    interval_views = interval_samples = 0
        finally:
            if bar is not None:
                bar.close()
            for cb in self.callbacks:
                cb.on_fit_end(self)
            if self.writer is not None:
                self.writer.close()
        return self.history

    def _eval_due(self, step: int) -> bool:
        """Whether an evaluation follows step ``step``: every ``eval_every`` steps, or (None) at epoch ends."""
        done = step + 1
        if self.s.eval_every is not None:
            return done % self.s.eval_every == 0
        return self.batches.epoch_of(done) != self.batches.epoch_of(step)

    def _eval_record(self, lr: float, wall: float, views_per_s: float) -> dict[str, Any]:
        step = self.state.step
        means = self.meter.means()
        val = self._validate()
        record: dict[str, Any] = {
            "kind": "eval",
            "epoch": self.batches.epoch_at(step),
            "step": step,
            "images_seen": step * self.s.batch_size,
            "lr": lr,
            "train_loss": means.pop("train_loss", float("nan")),
            "train_acc": means.pop("train_acc", float("nan")),
            "val_loss": val.get("val_loss"),
            "val_acc": val.get("val_acc"),  # null where the validation measures no accuracy (language models)
            "grad_norm": means.pop("grad_norm", float("nan")),
            "wall_time": wall,
            "views_per_s": views_per_s,
            "micro_batches": self.n_chunks,
        }
        record.update({k: v for k, v in val.items() if k not in record})  # extra predictions, the test set
        record.update(self.batches.progress(step))
        record.update(means)
        return record


class _ViewsOutOfMemory(RuntimeError):
    """Out of memory while making a step's views (before any forward)."""

    def __init__(self, step: int, samples: int, views_per_sample: int) -> None:
        super().__init__(
            f"out of memory while making the {samples * views_per_sample} views of step {step} ({samples} samples x "
            f"{views_per_sample} views): a step's views are made whole (micro-batching bounds the forward and "
            "backward passes, not the views); lower train.batch_size or the method's views per sample (method.m)")


def _grad_norm(model: nn.Module) -> Tensor:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in norms]))


def _progress(total: int, initial: int, enabled: bool):
    """A progress bar on interactive terminals only: in logs and CI the evaluation lines suffice."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=False)


def _echo(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)  # prints above an active bar without breaking it


def _saved_best(ckpt: dict[str, Any]) -> float | None:
    """The best selection value of a checkpoint (``best_acc`` in image runs' checkpoints from before
    validations chose their key; -1 there meant "none yet")."""
    if "best" in ckpt:
        return None if ckpt["best"] is None else float(ckpt["best"])
    old = ckpt.get("best_acc")
    return None if old is None or old < 0 else float(old)


def _format_record(r: dict[str, Any]) -> str:
    vals = "  ".join(f"{k} {r[k]:.4f}" if k != "val_ppl" else f"{k} {r[k]:.2f}"
                     for k in ("val_loss", "val_acc", "val_ppl") if isinstance(r.get(k), (int, float)))
    return (f"step {r['step']:>6}  epoch {r['epoch']:.2f}  train_loss {_num(r['train_loss'])}  {vals}  "
            f"grad_norm {_num(r['grad_norm'], 3)}  {r['views_per_s']:.0f} img/s")


def _num(v: Any, digits: int = 4) -> str:
    return "nan" if v is None else f"{v:.{digits}f}"
