"""Rebuild a trained model and its method from a run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from batchaug.config import RunConfig
from batchaug.errors import ConfigError
from batchaug.evaluate.suite import EvalData
from batchaug.methods import Method, MethodContext, build_method
from batchaug.nn.wrappers import clean_state_dict
from batchaug.train.callbacks.ema import ema_weights
from batchaug.train.checkpoint import load_checkpoint
from batchaug.train.run import (
    RunData,
    build_run_model,
    load_run_config,
    load_run_data,
    resolve_device,
)


@dataclass
class TrainedRun:
    cfg: RunConfig
    model: nn.Module
    method: Method
    data: RunData
    device: torch.device
    checkpoint: Path
    step: int
    ema: bool = False
    run_dir: Path = Path(".")


def checkpoint_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """The file ``checkpoint`` names in ``run_dir``: ``best`` (``last.pt`` when no ``best.pt`` was
    written), ``last``, or a path; ConfigError when it is not there."""
    run_dir = Path(run_dir)
    path = Path(checkpoint) if checkpoint not in ("best", "last") else run_dir / f"{checkpoint}.pt"
    if not path.is_file() and checkpoint == "best" and (run_dir / "last.pt").is_file():
        path = run_dir / "last.pt"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: checkpoint {path.name} not found (train the run first)")
    return path


def load_trained(run_dir: str | Path, checkpoint: str = "best", device: str = "auto", *,
                 ema: bool = False) -> TrainedRun:
    """Model (eval mode, on ``device``), method and validation data of a finished or running run.

    ``checkpoint`` is ``best``, ``last`` or a path; ``ema`` loads the exponential moving average of
    the weights the run kept (``train.ema_decay``) instead of the weights themselves. The data is the
    run's ``eval.split`` split (``data.val_subset`` drawn with the run's seed), so numbers match
    ``metrics.jsonl``: its ``val_*``, or with ``data.val_from_train`` its ``test_*`` (the held-out
    validation images are not loaded). Runs trained compiled or under DDP load the same way.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    path = checkpoint_path(run_dir, checkpoint)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    ckpt = load_checkpoint(path, map_location=dev)
    data = load_run_data(cfg, dev, train=False)
    stats = ckpt.get("data_stats")
    if stats:  # the normalization the model was trained with, even where the val split alone differs
        data.mean, data.std = tuple(stats["mean"]), tuple(stats["std"])
        data.classes = list(stats["classes"])
    context = MethodContext(num_classes=cfg.model.num_classes or len(data.classes), image_size=data.image_size,
                            mean=data.mean, std=data.std, device=dev, label_smoothing=0.0,
                            channels_last=cfg.train.channels_last, model_name=cfg.model.name)
    method = build_method(cfg.method, context)
    model = method.prepare_model(build_run_model(cfg, context.num_classes, int(data.val_images.shape[1])))
    if cfg.train.ghost_bn:
        from batchaug.nn.ghost_bn import convert_ghost_bn

        model = convert_ghost_bn(model, cfg.train.ghost_bn)
    weights = clean_state_dict(ckpt["model"])
    if ema:
        weights = ema_weights(ckpt)
        if weights is None:
            raise ConfigError(f"{run_dir}: {path.name} holds no weight average; train with train.ema_decay "
                              "(e.g. 0.999) to evaluate one with --ema")
    model.load_state_dict(weights)
    model.to(dev).eval()
    method.load_state_dict(ckpt.get("method", {}))
    return TrainedRun(cfg, model, method, data, dev, path, int(ckpt.get("step", 0)), ema, run_dir)


def load_eval_data(run: TrainedRun, split: str | None = None, limit: int | None = None, seed: int = 0) -> EvalData:
    """The images ``batchaug eval`` measures: ``split`` of the run's data, whole (default: the run's
    ``eval.split``), or ``"run"`` (the validation set the run used, ``data.val_subset`` included); with
    ``limit``, a class-balanced draw of that many of them (seeded by ``seed``), in split order.
    Every image keeps its index in the split."""
    from batchaug.data import load_split, stratified_indices

    cfg = run.cfg
    if split == "run":
        images, targets = run.data.val_images, run.data.val_targets
        name = f"{cfg.eval.split} (the run's validation set)"
    else:
        name = split or cfg.eval.split
        d = cfg.data
        loaded = load_split(d.root, name, kind=d.kind, image_size=d.image_size, cache=d.cache, download=d.download)
        images, targets = loaded.images, loaded.targets
    index = torch.arange(images.shape[0])
    if limit is not None and limit < images.shape[0]:
        index = stratified_indices(targets, limit, torch.Generator().manual_seed(seed))
        images = images.index_select(0, index.to(images.device))
        targets = targets.index_select(0, index.to(targets.device))
    return EvalData(images, targets, index, name, limit)
