"""From a resolved config to a finished run directory: data, model, method, optimizer, trainer.

Image runs are assembled here; language-model runs (``data.kind`` ``ptb``/``text``) in
:mod:`batchaug.train.lm_run`. Both end in the same :class:`~batchaug.train.trainer.Trainer` and the
same run directory.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from batchaug.config import RunConfig, dump_config, resolve_config
from batchaug.errors import ConfigError, DataError
from batchaug.io import make_dirs, remove_orphans, write_json, write_text
from batchaug.lock import DirLock
from batchaug.methods import Method, MethodContext, Regime, build_method
from batchaug.modality import IMAGES
from batchaug.nn.wrappers import unwrap
from batchaug.train import distributed as dist_utils
from batchaug.train.callbacks import build_callbacks
from batchaug.train.determinism import configure_determinism
from batchaug.train.metrics_log import read_metrics
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.resume import plan_start, read_run_config
from batchaug.train.trainer import Trainer, TrainerSettings


def resolve_device(name: str) -> torch.device:
    """This process's device for ``train.device`` ``name``: ``auto`` -> CUDA when available, else CPU;
    under torchrun ``auto`` and ``cuda`` take GPU ``LOCAL_RANK`` (:func:`.distributed.process_device`)."""
    cuda_count = torch.cuda.device_count() if name != "cpu" and torch.cuda.is_available() else 0
    return dist_utils.process_device(name, cuda_count=cuda_count, local_rank=dist_utils.local_rank(),
                                     local_world=dist_utils.local_world_size())


@dataclass
class RunData:
    """The run's splits as uint8 tensors plus what the method needs to know about them.

    ``val_*`` is the validation set that selects ``best.pt``: the ``eval.split`` split, or with
    ``data.val_from_train`` the held-out training images, in which case ``test_*`` is the ``eval.split``
    split (evaluated beside it, never used for selection); otherwise ``test_*`` is None.
    """

    train_images: Any  # uint8 tensor (N, C, H, W), or a Dataset of (uint8 (C, H, W), target) when streaming
    train_targets: torch.Tensor | None
    val_images: torch.Tensor
    val_targets: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str
    test_images: torch.Tensor | None = None
    test_targets: torch.Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.val_images.shape[-2]), int(self.val_images.shape[-1])


# generator seeds of the draws, offset from the run's seed so that each draw is its own
_VAL_SUBSET_SEED, _HOLD_OUT_SEED = 7, 11


def load_run_data(cfg: RunConfig, device: torch.device, *, train: bool = True) -> RunData:
    """Load the configured train and validation splits (subsets drawn with the run's seed).

    With ``train=False`` (evaluating a finished run) only the ``eval.split`` split is loaded, as the
    validation set, whatever ``data.val_from_train`` says: what a trained model is evaluated on.
    """
    from batchaug.data import load_split, resolve_source, stats_for

    d = cfg.data
    kwargs: dict[str, Any] = {"kind": d.kind, "image_size": d.image_size, "cache": d.cache, "download": d.download,
                              "grayscale_to_rgb": d.grayscale_to_rgb, "max_pixels": d.max_pixels}
    test = load_split(d.root, cfg.eval.split, **kwargs)
    if d.val_subset is not None and d.val_subset < len(test):
        test = test.subset(d.val_subset, generator=torch.Generator().manual_seed(cfg.seed + _VAL_SUBSET_SEED))
    held = None  # the validation set held out of the training split (data.val_from_train)
    stream = None
    if train and not d.in_memory and _streamable(d):
        stream, held = _streaming_train_set(cfg)
        tr = test
    elif train:
        tr = load_split(d.root, "train", **kwargs)
        if d.val_from_train is not None:
            if d.val_from_train >= len(tr):
                raise ConfigError(f"data.val_from_train: {d.val_from_train} held-out images leave nothing of the "
                                  f"{len(tr)} training images to train on")
            held, tr = tr.hold_out(d.val_from_train, generator=torch.Generator().manual_seed(cfg.seed
                                                                                             + _HOLD_OUT_SEED))
        if d.subset is not None and d.subset < len(tr):
            tr = tr.subset(d.subset, generator=torch.Generator().manual_seed(cfg.seed))
    else:
        tr = test
    _check_splits(cfg, stream if stream is not None else tr, test, train)
    kind = d.kind if d.kind != "auto" else resolve_source(d.root, "auto")[0]
    known = stats_for(kind)
    if known is not None:
        mean, std = known
    else:  # user data: measure the training images (a strided sample is plenty)
        if stream is not None:
            step = max(1, len(stream) // 2000)
            sample = torch.stack([stream[i][0] for i in range(0, len(stream), step)]).float().div_(255)
        else:
            sample = tr.images[:: max(1, len(tr) // 2000)].float().div_(255)
        mean = tuple(sample.mean(dim=(0, 2, 3)).tolist())
        std = tuple(sample.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    where = device if d.in_memory else torch.device("cpu")
    val, test_set = (test, None) if held is None else (held, test)
    extra: dict[str, Any] = {}
    if test_set is not None:
        extra = {"test_images": test_set.images.to(where), "test_targets": test_set.targets.to(where)}
    if stream is not None:
        return RunData(stream, None, val.images.to(where), val.targets.to(where), list(stream.classes), tuple(mean),
                       tuple(std), kind, **extra)
    return RunData(tr.images.to(where), tr.targets.to(where), val.images.to(where), val.targets.to(where),
                   list(tr.classes), tuple(mean), tuple(std), kind, **extra)


def _check_splits(cfg: RunConfig, train_set: Any, test: Any, training: bool) -> None:
    """What no run can learn from: fewer than two classes, or splits whose images differ in channels."""
    classes = list(train_set.classes)
    if training and len(classes) < 2:
        raise DataError(f"data.root: {cfg.data.root or 'the dataset'} has {len(classes)} class"
                        f"{'es' if len(classes) != 1 else ''} ({', '.join(classes) or 'none'}); a classifier needs "
                        "at least 2 (one folder per class)")
    if not training:
        return
    train_c = int(train_set[0][0].shape[0]) if not hasattr(train_set, "images") else int(train_set.images.shape[1])
    test_c = int(test.images.shape[1])
    if train_c != test_c:
        raise DataError(f"data: the train split's images have {train_c} channel(s) but the {cfg.eval.split} split's "
                        f"have {test_c}; set data.grayscale_to_rgb=true to load both with 3 channels")


def _streamable(d) -> bool:
    """Folder/zip sources can be read image by image; pickle-format CIFAR always fits in memory."""
    return d.kind in ("imagefolder", "imagenet") or (d.kind == "auto" and d.root is not None
                                                     and not str(d.root).endswith(("cifar-10-batches-py",
                                                                                   "cifar-100-python")))


def _streaming_train_set(cfg: RunConfig):
    """The training split as a lazily decoding Dataset (``data.in_memory: false``), subset if asked, and
    the held-out validation images of ``data.val_from_train`` decoded into memory (None when unset)."""
    from batchaug.data import DEFAULT_NAMES, ImageFolderSource, resolve_data_path, stratified_indices

    d = cfg.data
    if d.image_size is None:
        raise ConfigError("data.image_size: streaming (data.in_memory: false) needs a fixed image size, e.g. 224")
    if d.root is None and d.kind != "imagenet":
        raise ConfigError("data.root: streaming an image folder needs its path")
    root = resolve_data_path(d.root, DEFAULT_NAMES["imagenet"] if d.kind == "imagenet" else ())
    source = ImageFolderSource(root, "train", image_size=d.image_size, grayscale_to_rgb=d.grayscale_to_rgb,
                               max_pixels=d.max_pixels)
    targets = torch.as_tensor(source.targets)
    keep = torch.arange(len(source))
    held = None
    if d.val_from_train is not None:
        if d.val_from_train >= len(source):
            raise ConfigError(f"data.val_from_train: {d.val_from_train} held-out images leave nothing of the "
                              f"{len(source)} training images to train on")
        # the same class-balanced draw as TensorSplit.hold_out, decoded once into a uint8 tensor
        held_idx = stratified_indices(targets, d.val_from_train,
                                      torch.Generator().manual_seed(cfg.seed + _HOLD_OUT_SEED),
                                      num_classes=len(source.classes))
        held = source.load(num_workers=d.num_workers or None, indices=held_idx.tolist())
        mask = torch.ones(len(source), dtype=torch.bool)
        mask[held_idx] = False
        keep = mask.nonzero().flatten()
    if d.subset is not None and d.subset < len(keep):
        # class-balanced like TensorSplit.subset, so streaming and in-memory subsets agree in kind
        keep = keep[stratified_indices(targets[keep], d.subset, torch.Generator().manual_seed(cfg.seed),
                                       num_classes=len(source.classes))]
    if len(keep) == len(source):
        return source, held
    subset = torch.utils.data.Subset(source, keep.tolist())
    subset.classes = source.classes  # type: ignore[attr-defined]
    return subset, held


def build_run_model(cfg: RunConfig, num_classes: int, in_channels: int) -> nn.Module:
    from batchaug.models import build_model

    kwargs = dict(cfg.model.kwargs)
    if in_channels != 3:
        kwargs.setdefault("in_channels", in_channels)
    return build_model(cfg.model.name, num_classes=cfg.model.num_classes or num_classes, **kwargs)


@dataclass
class PreparedRun:
    cfg: RunConfig
    trainer: Trainer
    method: Method
    model: nn.Module
    data: Any
    """:class:`RunData` for image runs; the corpus (:class:`~batchaug.data.ptb.Corpus`) for language models."""
    device: torch.device
    plan: RunPlan | None = None
    describe: Callable[[], str] | None = None
    """The start-up header, where :func:`describe_run`'s image header does not fit."""
    finish: Callable[[Path], None] | None = None
    """Run after training on the main process, before ``summary.json`` (e.g. a language model's test perplexity)."""


@dataclass(frozen=True)
class RunPlan:
    """The run's regime arithmetic: batch, steps and the learning-rate schedule's time axis
    (``docs/configs.md``, "Run length and the learning-rate schedule")."""

    batch_size: int
    """Samples per step over all processes (``train.batch_size`` × the method's batch multiplier)."""
    steps_per_epoch: int
    total_steps: int
    epochs: float
    """Length of the learning-rate regime in epochs (compressed into ``total_steps``)."""
    milestones: tuple[float, ...]
    lr: float
    eval_every: int | None
    """None: evaluate at the end of every epoch (language models, whose epochs vary in steps)."""
    sample_repeats: int = 1
    """Rows per sample dealt over the processes (``train.view_placement: spread``: the method's M)."""


def plan_run(cfg: RunConfig, regime: Regime, num_train: int, world: int = 1) -> RunPlan:
    """Batch size, steps and schedule of ``cfg`` for a method's ``regime`` on ``num_train`` images."""
    t = cfg.train
    batch_size = t.batch_size * regime.batch_multiplier
    if batch_size > num_train:
        raise ConfigError(f"train.batch_size: a batch of {batch_size} samples is larger than the "
                          f"{num_train} training images (data.subset)")
    if batch_size % world and t.view_placement == "local":  # spread: the sampler checks B·M rows
        raise ConfigError(f"train.batch_size: {batch_size} is not divisible by the {world} processes")
    steps_per_epoch = num_train // batch_size
    epochs = (t.epochs if t.epochs is not None else 0.0) * regime.epoch_multiplier
    if t.max_steps is not None:
        total_steps = t.max_steps
        if t.epochs is None:
            epochs = total_steps / steps_per_epoch
    elif t.epochs is not None:
        total_steps = max(1, math.ceil(epochs * steps_per_epoch))
    else:
        raise ConfigError("train: set train.epochs or train.max_steps")
    milestones = tuple(m * regime.epoch_multiplier for m in cfg.optim.milestones)
    eval_every = max(1, min(t.eval_every or steps_per_epoch, total_steps))
    return RunPlan(batch_size, steps_per_epoch, total_steps, epochs, milestones, cfg.optim.lr * regime.lr_multiplier,
                   eval_every)


def device_memory(device: torch.device) -> int | None:
    """Bytes of memory of ``device``: a GPU's total, or the host's RAM (capped by a cgroup limit); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    if device.type != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_step_fits(plan: RunPlan, views_per_sample: int, image_shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse a step whose input views alone cannot fit in the device's memory (e.g. ``method.m=100000``):
    a method makes all the views of a step at once, so micro-batching (which splits the forward and backward
    passes) does not help there; it would end in an allocator error after the data was loaded."""
    samples = plan.batch_size // max(1, dist_utils.world_size())
    views = samples * views_per_sample
    # float32 views, and as much again while they are augmented (measured: 1.5x at the peak on the CPU)
    need = 2 * views * math.prod(int(x) for x in image_shape) * 4
    total = device_memory(device)
    if total is not None and need > total:
        shape = "x".join(str(int(x)) for x in image_shape)
        raise ConfigError(f"method: a step of {samples} samples x {views_per_sample} views of {shape} images needs "
                          f"{need / 2**30:.1f} GiB for its input views and their augmentation alone, more than the "
                          f"{total / 2**30:.1f} GiB of {device}; lower method.m or train.batch_size")


def schedule_of(cfg: RunConfig, plan: RunPlan) -> LRSchedule:
    """The learning rate of every step of a planned run."""
    return LRSchedule(cfg.optim, plan.lr, plan.epochs, plan.total_steps, plan.milestones)


def wrap_model(cfg: RunConfig, method: Method, model: nn.Module, device: torch.device, *,
               distributed: bool = False) -> nn.Module:
    """The method's layer swaps, ghost BN or SyncBN, device and memory format, then DDP and ``torch.compile``."""
    t = cfg.train
    model = method.prepare_model(model)
    if t.sync_bn:
        model = _sync_batchnorms(cfg, model, device)
    if t.ghost_bn:
        from batchaug.nn.bn_utils import is_batchaug_norm
        from batchaug.nn.ghost_bn import convert_ghost_bn

        if any(is_batchaug_norm(m) for m in model.modules()):
            raise ConfigError(f"train.ghost_bn: method {cfg.method.name!r} already replaced the model's "
                              "BatchNorms (e.g. split BN); ghost BN cannot be stacked on them — unset train.ghost_bn")
        model = convert_ghost_bn(model, t.ghost_bn)
    model = model.to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if t.compile:
        from batchaug.train.compiling import compile_model

        model = compile_model(model, t.compile)
    return model


def _sync_batchnorms(cfg: RunConfig, model: nn.Module, device: torch.device) -> nn.Module:
    """``train.sync_bn``: every BatchNorm computes the global batch's statistics (split BNs: per split)."""
    from batchaug.nn import convert_sync_batchnorm, count_batchnorms

    if cfg.train.ghost_bn:
        raise ConfigError("train.sync_bn: ghost BN (train.ghost_bn) computes statistics per virtual batch of one "
                          "process; synchronizing them is not defined: set one of the two")
    if not count_batchnorms(model):
        raise ConfigError(f"train.sync_bn: model {cfg.model.name!r} has no BatchNorm layers to synchronize; "
                          "unset train.sync_bn")
    try:
        return convert_sync_batchnorm(model, device=device)
    except ConfigError as exc:
        raise ConfigError(f"train.sync_bn: {exc}") from exc


def place_views(cfg: RunConfig, method: Method) -> int:
    """``train.view_placement``: with ``spread``, tell the method to make one view per row and return the
    rows per sample the batch source deals over the processes (the method's M); 1 for ``local``."""
    if cfg.train.view_placement == "local":
        return 1
    repeats = method.views_per_sample
    method.spread_views()
    return repeats


def prepare_run(cfg: RunConfig, out_dir: str | Path | None, *, resume: bool = False) -> PreparedRun:
    """Build data, model, method, optimizer and trainer for ``cfg``; restore ``last.pt`` when resuming."""
    t = cfg.train
    device = resolve_device(t.device)
    distributed = dist_utils.init_from_env(device)
    configure_determinism(t.deterministic)
    torch.manual_seed(cfg.seed)
    if cfg.modality != IMAGES:
        from batchaug.train.lm_run import prepare_lm_run

        return prepare_lm_run(cfg, out_dir, device, distributed, resume=resume)
    data = load_run_data(cfg, device)
    context = MethodContext(num_classes=cfg.model.num_classes or len(data.classes), image_size=data.image_size,
                            mean=data.mean, std=data.std, device=device,
                            label_smoothing=cfg.optim.label_smoothing, channels_last=t.channels_last,
                            model_name=cfg.model.name, aux_weight=cfg.model.aux_weight)
    method = build_method(cfg.method, context)
    repeats = place_views(cfg, method)
    model = build_run_model(cfg, context.num_classes, int(data.val_images.shape[1]))
    model = wrap_model(cfg, method, model, device, distributed=distributed)
    plan = replace(plan_run(cfg, method.regime(), len(data.train_images), dist_utils.world_size()),
                   sample_repeats=repeats)
    check_step_fits(plan, method.views_per_sample, tuple(data.val_images.shape[1:]), device)
    optimizer = build_optimizer(model, cfg.optim, plan.lr)
    settings = TrainerSettings(batch_size=plan.batch_size, total_steps=plan.total_steps,
                               steps_per_epoch=plan.steps_per_epoch, eval_every=plan.eval_every, seed=cfg.seed,
                               micro_batch=t.micro_batch, amp=t.amp, eval_batch_size=cfg.eval.batch_size,
                               progress=t.progress, sample_repeats=repeats, on_nonfinite=t.on_nonfinite)
    trainer = Trainer(model, method, optimizer, schedule_of(cfg, plan), settings, data.train_images,
                      data.train_targets, data.val_images, data.val_targets, device, out_dir,
                      extra_checkpoint={"config": json.loads(json.dumps(cfg.to_dict())),
                                        "data_stats": {"mean": list(data.mean), "std": list(data.std),
                                                       "classes": list(data.classes), "kind": data.kind}},
                      callbacks=build_callbacks(cfg, out_dir),
                      num_workers=0 if cfg.data.in_memory else cfg.data.num_workers,
                      test_images=data.test_images, test_targets=data.test_targets)
    if resume:
        ckpt = trainer.load_state(Path(out_dir) / "last.pt")
        num_train, world = len(data.train_images), dist_utils.world_size()
        warn_if_schedule_changed(ckpt.get("config"), cfg, plan, trainer.state.step,
                                 lambda c: plan_run(c, build_method_regime(c), num_train, world))
    return PreparedRun(cfg, trainer, method, model, data, device, plan)


_SCHEDULE_KEYS = ("train.epochs", "train.max_steps", "train.batch_size", "optim", "method")


def warn_if_schedule_changed(saved: dict[str, Any] | None, cfg: RunConfig, plan: RunPlan, step: int,
                             replan: Callable[[RunConfig], RunPlan]) -> None:
    """A resume whose config moves the learning rate at the resume step makes a different run: say so.
    ``replan`` plans a config on this run's data (to compare the saved config's plan with ``plan``)."""
    if not saved:
        return
    try:
        old_cfg = resolve_config(saved)
        old_plan = replan(old_cfg)
    except ConfigError:
        return  # a config this version cannot read; the resume itself reports real problems
    old_lr, new_lr = schedule_of(old_cfg, old_plan)(step), schedule_of(cfg, plan)(step)
    old_d, new_d = old_cfg.to_dict(), cfg.to_dict()
    changed = [key for key in _flat_keys(new_d) if key.startswith(_SCHEDULE_KEYS)
               and _get(old_d, key) != _get(new_d, key)]
    same_axis = (old_plan.total_steps, old_plan.epochs, old_plan.milestones) == (plan.total_steps, plan.epochs,
                                                                                   plan.milestones)
    if not same_axis or not math.isclose(old_lr, new_lr, rel_tol=1e-12):
        warnings.warn(f"resume: the learning-rate schedule changes at step {step} ({', '.join(changed) or 'regime'} "
                      f"changed): lr {old_lr:.6g} -> {new_lr:.6g}, {old_plan.total_steps} -> {plan.total_steps} "
                      "steps; the result is a different run than the one this directory started", stacklevel=2)


def build_method_regime(cfg: RunConfig) -> Regime:
    """The regime the method of ``cfg`` asks for, without building the method."""
    return cfg.method.method_class.regime_of(cfg.method.options)


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        keys += _flat_keys(v, key + ".") if isinstance(v, dict) and k != "kwargs" else [key]
    return keys


def _get(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, restart: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` following the run-directory contract; returns the run summary.

    ``resume``: continue from ``out_dir/last.pt`` (``cfg`` may differ from the checkpoint's only in
    :data:`~batchaug.train.resume.MAY_CHANGE`; without a completed checkpoint the run starts again from
    step 0). ``restart``: start over a directory whose first checkpoint never completed.

    The directory is locked for the whole run (a second trainer is refused, :mod:`batchaug.lock`); temporary
    files a killed writer left are removed; every check (config, data, model, checkpoint) passes before
    anything in the directory changes; every file is written atomically (:mod:`batchaug.io`). The
    guarantees and how they are tested: ``docs/reliability.md``.
    """
    out = Path(out_dir)
    with dist_utils.joined(resolve_device(cfg.train.device)):  # before any rank decides it is the main one
        main = dist_utils.is_main()
        lock = DirLock(out)
        created = main and not out.exists()
        try:
            start, failure = None, None
            if main:  # one process decides how the run starts; the others follow (or stop with it)
                try:
                    make_dirs(out)
                    lock.acquire()
                    for folder in (out, out / "eval"):
                        remove_orphans(folder)
                    start = plan_start(out, cfg, resume=resume, restart=restart)
                except Exception as exc:
                    failure = exc
            resume_from, refused = dist_utils.broadcast_object(
                (start.resume, None) if start is not None else (False, f"{type(failure).__name__}: {failure}"))
            if failure is not None:
                raise failure
            if refused is not None:
                raise ConfigError(f"the main process did not start the run: {refused}")
            if start is not None and start.message:
                print(start.message, flush=True)
            run = prepare_run(cfg, out, resume=resume_from)
            if main:
                start.clear()
                write_text(out / "config.yaml", dump_config(cfg))
                print(describe_run(run), flush=True)
            run.trainer.fit()
            if run.finish is not None and main:
                run.finish(out)
            summary = None
            if main:  # the one writer reads its own finished files; the others get its summary
                summary = summarize(out)
                write_json(out / "summary.json", summary)
            summary = dist_utils.broadcast_object(summary)
            del run  # release the DDP reducer (and its gloo/NCCL work) before the process group goes
        except BaseException:
            if created:
                _remove_if_unused(out, lock)
            raise
        finally:
            lock.release()
    return summary


def _remove_if_unused(out: Path, lock: DirLock) -> None:
    """Take back a run directory this start created when the run stopped before writing anything into it
    (bad data, a config error found late): a failed start leaves no empty directory behind."""
    try:
        if lock.held and {p.name for p in out.iterdir()} <= {lock.path.name}:
            lock.path.unlink(missing_ok=True)
            out.rmdir()
    except OSError:  # a directory we cannot tidy is left as it is; the original error is what matters
        pass


def describe_run(run: PreparedRun) -> str:
    """The start-up header: what is about to be trained, on what, for how long."""
    from batchaug.models import count_params

    if run.describe is not None:
        return run.describe()
    cfg, plan, method, data = run.cfg, run.plan, run.method, run.data
    assert plan is not None
    views = method.views_per_sample * plan.sample_repeats  # the method's M, wherever its views are made
    per_step = plan.batch_size * views
    where = str(run.device) + (f", {torch.get_num_threads()} CPU threads" if run.device.type == "cpu" else "")
    world = dist_utils.world_size()
    n_train = len(data.train_images)
    lines = [
        f"model    {cfg.model.name}: {count_params(unwrap(run.model)) / 1e6:.2f}M parameters, "
        f"{len(data.classes)} classes",
        f"device   {where}" + (f", {world} processes" if world > 1 else "")
        + (f", amp {cfg.train.amp}" if cfg.train.amp != "none" else "") + (", compiled" if cfg.train.compile else ""),
        f"method   {method.describe()}",
        f"batch    B={plan.batch_size} samples x {views} view{'s' if views != 1 else ''} = {per_step} views per step"
        + _per_process(cfg, plan.batch_size, views, world),
        f"length   {plan.total_steps} steps = {plan.total_steps / plan.steps_per_epoch:.2f} epochs of "
        f"{plan.steps_per_epoch} steps (regime: {plan.epochs:g} epochs), evaluation every {plan.eval_every} steps",
        f"data     {data.kind}: {n_train} training images"
        + (" (streamed)" if not isinstance(data.train_images, torch.Tensor) else "")
        + f", {data.val_images.shape[0]} validation images "
        + (f"(held out of train; {data.test_images.shape[0]} test images ({cfg.eval.split}) evaluated beside)"
           if data.test_images is not None else f"({cfg.eval.split})")
        + ", " + "x".join(str(d) for d in data.val_images.shape[1:]),
    ]
    return "\n".join(lines)


def _per_process(cfg: RunConfig, batch: int, views: int, world: int) -> str:
    """What each process holds of a step, for the header (nothing in one process)."""
    if world == 1:
        return ""
    t = cfg.train
    bn = "BN statistics " + ("of the global batch (sync_bn)" if t.sync_bn else "per process")
    if t.view_placement == "spread" and views > 1:
        rows = batch * views // world
        return (f"; {world} processes x {rows} views of up to {min(batch, rows)} distinct samples (views spread), "
                f"{bn}")
    return f"; {world} processes x {batch // world} samples x {views} views (views local), {bn}"


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved configuration a run directory was trained with (``config.yaml``; the config stored in
    its checkpoint when that file is missing or damaged: :func:`~batchaug.train.resume.read_run_config`)."""
    return resolve_config(read_run_config(run_dir))


_ACC_KEY = re.compile(r"^(val|test)_acc(_\w+)?$")


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """What a run measured, from its ``metrics.jsonl``: for every accuracy key of the evaluation lines
    (``val_acc``, a method's ``val_acc_<name>``, ``test_acc``...) the final value (``final_<key>``) and
    the paper-style median over the evaluations of the last 5 epochs (``median_last5_<key>``); the best
    ``val_acc``; throughput.

    ``test_*`` always means the ``eval.split`` split: when it was also the validation set (no
    ``data.val_from_train``), the ``val`` figures are copied under ``test`` names, and ``selected_on``
    says that ``best.pt`` (``best_val_acc``) was chosen on it. With a held-out validation set,
    ``test_acc_at_best_val`` is the test accuracy of the evaluation that ``best.pt`` saved.

    Language models (evaluation lines with ``val_ppl``) also get the final and best (lowest) ``val_ppl``
    and the test perplexity that ``eval/perplexity.json`` holds; their accuracy keys are None.
    """
    records = read_metrics(run_dir)
    if not records:
        return {}
    extra: dict[str, Any] = {}
    ppls = [r["val_ppl"] for r in records if r.get("val_ppl") is not None]
    if ppls:
        extra = {"final_val_ppl": records[-1].get("val_ppl"), "best_val_ppl": min(ppls)}
        extra.update(_test_perplexity(Path(run_dir)))
    last = records[-1]
    final_epoch = last["epoch"]
    keys = sorted({k for r in records for k in r if _ACC_KEY.match(k)}, key=lambda k: (not k.startswith("val"), k))
    accs = [r["val_acc"] for r in records if r.get("val_acc") is not None]
    summary: dict[str, Any] = {
        "final_val_acc": last.get("val_acc"),
        "best_val_acc": max(accs) if accs else None,
    }
    for key in keys:
        # "median of the final 5 epochs" (SBA paper, §4.1): the evaluation lines of the last 5 epochs
        tail = [r[key] for r in records if r.get(key) is not None and r["epoch"] > final_epoch - 5]
        summary[f"final_{key}"] = last.get(key)
        summary[f"median_last5_{key}"] = statistics.median(tail) if tail else None
    held_out = _held_out(run_dir)
    if ppls:
        summary["selected_on"] = "the valid split (a language model reports its test split in test_ppl)"
    elif held_out:
        summary["selected_on"] = f"{held_out} training images held out (data.val_from_train)"
        best = max((r for r in records if r.get("val_acc") is not None), key=lambda r: r["val_acc"], default=None)
        summary["test_acc_at_best_val"] = best.get("test_acc") if best else None
    else:
        summary["selected_on"] = "the test split (eval.split): set data.val_from_train to select without it"
        for key in [k for k in keys if k.startswith("val_")]:
            for stat in ("final", "median_last5"):
                summary[f"{stat}_test{key[3:]}"] = summary[f"{stat}_{key}"]
    speeds = [r["views_per_s"] for r in records if r.get("views_per_s")]
    summary.update({
        "final_val_loss": last.get("val_loss"),
        "steps": last.get("step"),
        "epochs": last.get("epoch"),
        "images_seen": last.get("images_seen"),
        "wall_time": last.get("wall_time"),
        "views_per_s": statistics.median(speeds) if speeds else None,
        "images_per_s": (last["images_seen"] / last["wall_time"]) if last.get("wall_time") else None,
        **extra,
    })
    return summary


def _held_out(run_dir: str | Path) -> int | None:
    """``data.val_from_train`` of the run's ``config.yaml`` (None when unset or unreadable)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return None
    data = raw.get("data") if isinstance(raw, dict) else None
    return data.get("val_from_train") if isinstance(data, dict) else None


def _test_perplexity(run_dir: Path) -> dict[str, Any]:
    """``test_ppl``/``test_loss`` from ``eval/perplexity.json`` (None when it was not computed)."""
    path = run_dir / "eval" / "perplexity.json"
    try:
        test = json.loads(path.read_text())["modes"]["plain"]["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"test_ppl": None, "test_loss": None}
    return {"test_ppl": test.get("ppl"), "test_loss": test.get("loss")}
