"""Trainer callbacks: behaviour around the training loop that the trainer does not know by name.

The trainer calls every callback's hooks, in order, at fixed points of the loop (:class:`Callback`
lists them). Shipped: gradient clipping (``optim.clip_grad_norm``), the drop-path schedule
(``model.drop_path``), an exponential moving average of the weights (``train.ema_decay``), NT-ASGD's
weight average (``optim.ntasgd_nonmono``), step-level logging (``train.log_every``), a watch on the
compiler (``train.compile``) and the loggers of ``train.loggers`` (TensorBoard, CSV, W&B).
``metrics.jsonl`` itself is the trainer's (the run directory contract), every other sink is a callback.

:data:`CALLBACKS` maps a name to ``"module:Class"``; :func:`build_callbacks` asks each registered
class for the callback a run config wants (:meth:`Callback.from_config`). Adding one is a module
with a :class:`Callback` subclass and one line here; a user's callback is switched on by listing
its name in ``train.callbacks`` (``docs/extending.md``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchaug.errors import ConfigError
from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig

__all__ = ["CALLBACKS", "Callback", "build_callbacks", "get_callback_class"]

#: name -> "module:Class" (imported on first use) or the class itself (registered at run time), in
#: the order the trainer calls them (clipping before anything reads the gradients' effect, the
#: average before the evaluation hooks of the loggers)
CALLBACKS: dict[str, Any] = {
    "clip_grad_norm": "batchaug.train.callbacks.clip:ClipGradNorm",
    "drop_path": "batchaug.train.callbacks.drop_path:DropPathSchedule",
    "ema": "batchaug.train.callbacks.ema:EMA",
    "ntasgd": "batchaug.train.callbacks.ntasgd:NTASGD",
    "step_log": "batchaug.train.callbacks.step_log:StepLog",
    "compile_watch": "batchaug.train.callbacks.compile_watch:CompileWatch",
    "tensorboard": "batchaug.train.callbacks.loggers:TensorBoardLogger",
    "csv": "batchaug.train.callbacks.loggers:CSVLogger",
    "wandb": "batchaug.train.callbacks.loggers:WandbLogger",
}


def get_callback_class(name: str) -> type[Callback]:
    """The Callback subclass registered under ``name``; ConfigError listing the names otherwise."""
    target = CALLBACKS.get(name)
    if target is None:
        raise ConfigError(f"train.callbacks: unknown callback {name!r}; registered: {', '.join(CALLBACKS)}")
    if isinstance(target, type):
        return target
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def build_callbacks(cfg: RunConfig, out_dir: str | Path | None) -> list[Callback]:
    """The callbacks ``cfg`` asks for, in registry order; a name in ``train.callbacks`` that no
    registered callback answers to (or that is switched on by its own option) is an error."""
    listed = list(cfg.train.callbacks)
    for name in listed:
        cls = get_callback_class(name)
        if not cls.listable:
            raise ConfigError(f"train.callbacks: {name!r} is switched on by {cls.option}, not by listing it")
    out = Path(out_dir) if out_dir is not None else None
    callbacks = []
    for name in CALLBACKS:
        callback = get_callback_class(name).from_config(cfg, out)
        if callback is not None:
            callbacks.append(callback)
    return callbacks
