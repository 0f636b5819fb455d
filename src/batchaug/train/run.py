"""From a resolved config to a finished run directory: data, model, method, optimizer, trainer.

Image runs are assembled here; language-model runs (``data.kind`` ``ptb``/``text``) in
:mod:`batchaug.train.lm_run`. Both end in the same :class:`~batchaug.train.trainer.Trainer` and the
same run directory.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from batchaug.config import RunConfig, dump_config, load_yaml, resolve_config
from batchaug.errors import ConfigError
from batchaug.methods import Method, MethodContext, Regime, build_method
from batchaug.modality import IMAGES
from batchaug.nn.wrappers import unwrap
from batchaug.train import distributed as dist_utils
from batchaug.train.callbacks import build_callbacks
from batchaug.train.determinism import configure_determinism
from batchaug.train.metrics_log import read_metrics
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available (this rank's GPU under torchrun), else CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank() % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available; use cpu or auto")
    return device


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
    kwargs: dict[str, Any] = {"kind": d.kind, "image_size": d.image_size, "cache": d.cache, "download": d.download}
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
    source = ImageFolderSource(root, "train", image_size=d.image_size)
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


def plan_run(cfg: RunConfig, regime: Regime, num_train: int, world: int = 1) -> RunPlan:
    """Batch size, steps and schedule of ``cfg`` for a method's ``regime`` on ``num_train`` images."""
    t = cfg.train
    batch_size = t.batch_size * regime.batch_multiplier
    if batch_size > num_train:
        raise ConfigError(f"train.batch_size: a batch of {batch_size} samples is larger than the "
                          f"{num_train} training images (data.subset)")
    if batch_size % world:
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


def schedule_of(cfg: RunConfig, plan: RunPlan) -> LRSchedule:
    """The learning rate of every step of a planned run."""
    return LRSchedule(cfg.optim, plan.lr, plan.epochs, plan.total_steps, plan.milestones)


def wrap_model(cfg: RunConfig, method: Method, model: nn.Module, device: torch.device, *,
               distributed: bool = False) -> nn.Module:
    """The method's layer swaps, ghost BN, device and memory format, then DDP and ``torch.compile``."""
    t = cfg.train
    model = method.prepare_model(model)
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
    model = build_run_model(cfg, context.num_classes, int(data.val_images.shape[1]))
    model = wrap_model(cfg, method, model, device, distributed=distributed)
    plan = plan_run(cfg, method.regime(), len(data.train_images), dist_utils.world_size())
    optimizer = build_optimizer(model, cfg.optim, plan.lr)
    settings = TrainerSettings(batch_size=plan.batch_size, total_steps=plan.total_steps,
                               steps_per_epoch=plan.steps_per_epoch, eval_every=plan.eval_every, seed=cfg.seed,
                               micro_batch=t.micro_batch, amp=t.amp, eval_batch_size=cfg.eval.batch_size,
                               progress=t.progress)
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


def train_run(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``out_dir`` following the run-directory contract; returns the run summary."""
    out = Path(out_dir)
    dist_utils.init_from_env(resolve_device(cfg.train.device))  # before any rank decides it is the main one
    if dist_utils.is_main():
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            stale = [p for p in ("metrics.jsonl", "last.pt", "best.pt") if (out / p).exists()]
            if stale:
                raise ConfigError(f"--out {out} already holds a run ({', '.join(stale)}); "
                                  "use --resume to continue it or choose another directory")
        (out / "config.yaml").write_text(dump_config(cfg))
    try:
        run = prepare_run(cfg, out, resume=resume)
        if dist_utils.is_main():
            print(describe_run(run), flush=True)
        run.trainer.fit()
        if run.finish is not None and dist_utils.is_main():
            run.finish(out)
        summary = summarize(out)
        if dist_utils.is_main():
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    except BaseException:
        dist_utils.shutdown(wait_for_others=False)
        raise
    del run  # release the DDP reducer (and its gloo/NCCL work) before the process group goes
    dist_utils.shutdown()
    return summary


def describe_run(run: PreparedRun) -> str:
    """The start-up header: what is about to be trained, on what, for how long."""
    from batchaug.models import count_params

    if run.describe is not None:
        return run.describe()
    cfg, plan, method, data = run.cfg, run.plan, run.method, run.data
    assert plan is not None
    views = method.views_per_sample
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
        f"batch    B={plan.batch_size} samples x {views} view{'s' if views != 1 else ''} = {per_step} views per step",
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


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved configuration a run directory was trained with."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run directory: {path} is missing")
    return resolve_config(load_yaml(path))


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
