"""From a resolved language-model config to a trainer: corpus, token windows, model, method, validation.

The counterpart of :func:`batchaug.train.run.prepare_run`'s image path for ``data.kind`` ``ptb`` or
``text``: the training split becomes :class:`~batchaug.data.token_batches.TokenBatches` (``train.batch_size``
columns, windows of ``data.bptt``), validation is :class:`~batchaug.evaluate.perplexity.PerplexityValidation`
over ``eval.split`` (``eval.batch_size`` columns), and after training the test perplexity of ``best.pt``
(``eval.test_batch_size`` columns) goes to ``eval/perplexity.json`` and ``summary.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from batchaug.config import RunConfig
from batchaug.errors import ConfigError
from batchaug.methods import Method, MethodContext, Regime, build_method
from batchaug.nn.wrappers import unwrap
from batchaug.train import distributed as dist_utils
from batchaug.train.callbacks import build_callbacks
from batchaug.train.optim import build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings

__all__ = ["build_lm", "load_text_corpus", "plan_token_run", "prepare_lm_run", "validation_split"]

_SPLIT_NAMES = {"valid": "valid", "val": "valid", "validation": "valid", "test": "test", "train": "train"}


def load_text_corpus(cfg: RunConfig):
    """The corpus of ``cfg.data`` (``ptb``: ``data.root`` or ``$BATCHAUG_DATA/ptb``; ``text``: ``data.root``)."""
    from batchaug.data.ptb import load_corpus

    d = cfg.data
    if d.kind == "text" and d.root is None:
        raise ConfigError("data.root: kind 'text' needs the corpus folder (train, valid and test as "
                          "<split>.txt or ptb.<split>.txt)")
    return load_corpus(d.root, "ptb")


def validation_split(cfg: RunConfig) -> str:
    """The corpus split ``eval.split`` names (``valid``, ``val`` and ``validation`` are the same)."""
    split = _SPLIT_NAMES.get(cfg.eval.split)
    if split is None:
        raise ConfigError(f"eval.split: {cfg.eval.split!r} is not a split of a text corpus; use valid or test")
    return split


def _check_model(cfg: RunConfig, vocab_size: int) -> None:
    from batchaug.models import get_spec

    spec = get_spec(cfg.model.name)
    if spec.family != "text":
        raise ConfigError(f"model.name: {cfg.model.name!r} is an image model ({spec.family}); data.kind "
                          f"{cfg.data.kind!r} needs a language model (family text, e.g. awd_lstm: batchaug models)")
    if cfg.model.num_classes is not None and cfg.model.num_classes != vocab_size:
        raise ConfigError(f"model.num_classes: {cfg.model.num_classes} differs from the corpus's {vocab_size}-word "
                          "vocabulary; leave it unset")


def build_lm(cfg: RunConfig, vocab_size: int, device: torch.device) -> tuple[nn.Module, Method]:
    """The plain language model of ``cfg`` for ``vocab_size`` words on ``device``, and its method."""
    from batchaug.models import build_model

    _check_model(cfg, vocab_size)
    context = MethodContext(num_classes=vocab_size, device=device, label_smoothing=cfg.optim.label_smoothing,
                            model_name=cfg.model.name)
    method = build_method(cfg.method, context)
    model = method.prepare_model(build_model(cfg.model.name, num_classes=vocab_size, **cfg.model.kwargs))
    return model.to(device), method


def plan_token_run(cfg: RunConfig, regime: Regime, batches: Any):
    """Steps, schedule axis and evaluation interval of a language-model run over ``batches``."""
    from batchaug.train.run import RunPlan

    t = cfg.train
    if regime.batch_multiplier != 1 or regime.epoch_multiplier != 1.0:
        raise ConfigError(f"method {cfg.method.name!r}: a regime that changes the batch or the epochs is not "
                          "available on token streams")
    steps_per_epoch = batches.steps_per_epoch
    epochs = t.epochs if t.epochs is not None else 0.0
    if t.max_steps is not None:
        total_steps = t.max_steps
        if t.epochs is None:
            epochs = total_steps / steps_per_epoch
    elif t.epochs is not None:
        total_steps = batches.steps_for_epochs(t.epochs)
    else:
        raise ConfigError("train: set train.epochs or train.max_steps")
    eval_every = min(t.eval_every, total_steps) if t.eval_every is not None else None
    return RunPlan(t.batch_size, steps_per_epoch, total_steps, epochs, tuple(cfg.optim.milestones),
                   cfg.optim.lr * regime.lr_multiplier, eval_every)


def prepare_lm_run(cfg: RunConfig, out_dir: str | Path | None, device: torch.device, distributed: bool, *,
                   resume: bool = False):
    """Build corpus, token windows, model, method, optimizer and trainer; restore ``last.pt`` when resuming."""
    from batchaug.data.token_batches import TokenBatches
    from batchaug.evaluate.perplexity import PerplexityValidation
    from batchaug.models import build_model
    from batchaug.train.run import PreparedRun, schedule_of, warn_if_schedule_changed, wrap_model

    d, t = cfg.data, cfg.train
    corpus = load_text_corpus(cfg)
    vocab = len(corpus.vocab)
    train_ids = corpus["train"][: d.subset] if d.subset is not None else corpus["train"]
    split = validation_split(cfg)
    val_ids = corpus[split][: d.val_subset] if d.val_subset is not None else corpus[split]
    world, rank = dist_utils.world_size(), dist_utils.rank()
    batches = TokenBatches(train_ids, t.batch_size, d.bptt, cfg.seed, variable=d.variable_bptt, device=device,
                           world=world, rank=rank)
    _check_model(cfg, vocab)
    context = MethodContext(num_classes=vocab, device=device, label_smoothing=cfg.optim.label_smoothing,
                            model_name=cfg.model.name)
    method = build_method(cfg.method, context)
    model = wrap_model(cfg, method, build_model(cfg.model.name, num_classes=vocab, **cfg.model.kwargs), device,
                       distributed=distributed)
    plan = plan_token_run(cfg, method.regime(), batches)
    optimizer = build_optimizer(model, cfg.optim, plan.lr)
    settings = TrainerSettings(batch_size=plan.batch_size, total_steps=plan.total_steps,
                               steps_per_epoch=plan.steps_per_epoch, eval_every=plan.eval_every, seed=cfg.seed,
                               micro_batch=t.micro_batch, amp=t.amp, eval_batch_size=cfg.eval.batch_size,
                               progress=t.progress)
    validation = PerplexityValidation(val_ids, cfg.eval.batch_size, d.bptt, device)
    trainer = Trainer(model, method, optimizer, schedule_of(cfg, plan), settings, None, None, None, None, device,
                      out_dir, extra_checkpoint={"config": json.loads(json.dumps(cfg.to_dict())),
                                                 "vocab": list(corpus.vocab.itos)},
                      callbacks=build_callbacks(cfg, out_dir), batches=batches, validation=validation)
    if resume:
        ckpt = trainer.load_state(Path(out_dir) / "last.pt")
        warn_if_schedule_changed(ckpt.get("config"), cfg, plan, trainer.state.step,
                                 lambda c: plan_token_run(c, c.method.method_class.regime_of(c.method.options),
                                                          batches))

    def describe() -> str:
        from batchaug.models import count_params

        m = method.views_per_sample
        where = str(device) + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
        lengths = (f"about {d.bptt} (AWD-LSTM's random lengths)" if d.variable_bptt else f"{d.bptt}")
        length = (f"{plan.total_steps} steps = {plan.total_steps / plan.steps_per_epoch:.2f} epochs of about "
                  f"{plan.steps_per_epoch} steps, evaluation "
                  + (f"every {plan.eval_every} steps" if plan.eval_every else "at every epoch end"))
        return "\n".join([
            f"model    {cfg.model.name}: {count_params(unwrap(model)) / 1e6:.2f}M parameters, {vocab}-word vocabulary",
            f"device   {where}" + (f", {world} processes" if world > 1 else "")
            + (f", amp {t.amp}" if t.amp != "none" else ""),
            f"method   {method.describe()}",
            f"batch    B={plan.batch_size} columns x {m} cop{'ies' if m != 1 else 'y'} = {plan.batch_size * m} rows "
            f"per step, windows of {lengths} tokens",
            f"length   {length}",
            f"data     {cfg.data.kind}: {len(train_ids)} training tokens, {len(val_ids)} validation tokens ({split}), "
            f"validation in {cfg.eval.batch_size} columns",
        ])

    def finish(out: Path) -> None:
        from batchaug.evaluate.perplexity import evaluate_run_perplexity

        result = evaluate_run_perplexity(out, "best", str(device), splits=("test",))
        folder = Path(out) / "eval"
        folder.mkdir(exist_ok=True)
        tmp = folder / "perplexity.json.tmp"
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(folder / "perplexity.json")
        test = result["modes"]["plain"]["test"]
        print(f"test     perplexity {test['ppl']:.2f} (loss {test['loss']:.4f}) of {result['checkpoint']} over "
              f"{test['tokens']} tokens in {test['batch_size']} column{'s' if test['batch_size'] != 1 else ''}",
              flush=True)

    return PreparedRun(cfg, trainer, method, model, corpus, device, plan, describe=describe,
                       finish=finish if out_dir is not None else None)
