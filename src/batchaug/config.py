"""Typed run configuration: YAML sections + dotted ``key=value`` overrides, validated strictly.

A config file has the sections ``data``, ``model``, ``method``, ``optim``, ``train``, ``eval``, a
top-level ``seed`` and, for paper configs, a ``paper`` block (:class:`batchaug.papers.PaperRef`: the
published row the file reproduces; kept in ``config.yaml``, read by no run).
Every key is declared below with its type, default and (for numbers) its range
(:func:`batchaug.schema.option`); an unknown key, a value of the wrong type or outside its range raises
:class:`~batchaug.errors.ConfigError` that names the dotted key and what is allowed. The ``method``
section is declared by the ``Options`` dataclass of the method named in ``method.name`` and becomes a
typed :class:`~batchaug.methods.MethodSpec`, so each method declares its own options without the config
knowing any method.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from batchaug.errors import ConfigError
from batchaug.methods.spec import MethodSpec, declared_options
from batchaug.modality import IMAGES, modality_of
from batchaug.papers import PaperRef
from batchaug.schema import build, option, to_dict

build_dataclass = build  # the name this module exported before the schema had its own module

#: Names of the optional loggers of ``train.loggers`` (``metrics.jsonl`` is always written).
LOGGERS = ("tensorboard", "csv", "wandb")


@dataclass
class DataConfig:
    """Where the images (or the text) come from and how much of them to use."""

    kind: Literal["auto", "cifar10_jpeg", "imagefolder", "cifar10", "cifar100", "imagenet", "ptb", "text"] = "auto"
    """Source type; ``auto`` detects it from ``root``. ``ptb`` and ``text``: a word-level corpus folder
    (``{train,valid,test}.txt`` or ``ptb.*.txt``) for language models."""
    root: str | None = None
    """File or folder; when unset, ``$BATCHAUG_DATA`` then the cache directory are searched."""
    subset: int | None = option(None, ge=1)
    """Number of training images used (class-balanced, drawn with the run's seed); all when unset.
    Text: the first this many training tokens."""
    val_subset: int | None = option(None, ge=1)
    """Number of images of the ``eval.split`` split used (drawn with the run's seed); all when unset.
    Text: the first this many validation tokens."""
    val_from_train: int | None = option(None, ge=1)
    """Hold out this many training images (class-balanced, drawn with the run's seed) as the validation
    set that selects ``best.pt``; they are removed from the training split, and the ``eval.split`` split
    is evaluated beside it as the test set (``test_acc`` in ``metrics.jsonl``). Unset: the ``eval.split``
    split is the validation set."""
    image_size: int | None = option(None, ge=1)
    """Resize + center-crop every image to this size at load time; native size when unset."""
    in_memory: bool = True
    """Hold each split as one uint8 tensor on the training device (fast path). When false, a folder/zip
    training split is streamed through DataLoader workers (needs ``image_size``); the rest stays on the host."""
    num_workers: int = option(4, ge=0)
    """DataLoader workers when ``in_memory`` is false."""
    cache: bool = True
    """Cache decoded tensors on disk (``$BATCHAUG_CACHE`` or ``~/.cache/batchaug``)."""
    download: bool = False
    """Let torchvision download CIFAR when the data is missing (needs internet)."""
    bptt: int = option(70, ge=1)
    """Text: the base length of a truncated-BPTT window (AWD-LSTM: 70); also the evaluation windows' length."""
    variable_bptt: bool = True
    """Text: AWD-LSTM's random window lengths (``bptt`` or ``bptt/2``, ± N(0, 5), at least 5) with the
    learning rate scaled by length / ``bptt``; false: every window is ``bptt`` long."""


@dataclass
class ModelConfig:
    """Which network to train."""

    name: str = "resnet20"
    """A registry name (``batchaug models``), ``tv:<name>`` or ``timm:<name>``."""
    num_classes: int | None = option(None, ge=1)
    """Taken from the data when unset."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the model builder."""
    aux_weight: float = option(0.0, ge=0)
    """Weight of the cross-entropy of the model's auxiliary heads in every method's objective, for models
    that return auxiliary logits in training (``darts_v2`` with ``kwargs.auxiliary: true``; DARTS: 0.4)."""
    drop_path: float | None = option(None, ge=0, lt=1)
    """Drop-path probability reached at the end of training, rising linearly from 0 over the run's steps,
    for models with a ``drop_path_prob`` attribute (``darts_v2``; DARTS: 0.2); unset: no drop-path."""


@dataclass
class OptimConfig:
    """Optimizer and learning-rate regime."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = option(0.1, ge=0)
    momentum: float = option(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = option(5e-4, ge=0)
    no_wd_bn_bias: bool = False
    """Exclude BatchNorm parameters and biases from weight decay."""
    label_smoothing: float = option(0.0, ge=0, lt=1)
    schedule: Literal["step", "cosine", "constant"] = "step"
    milestones: list[float] = option(default_factory=list, ge=0)
    """Epochs at which the step schedule multiplies the learning rate by ``gamma``."""
    gamma: float = option(0.1, gt=0)
    warmup_epochs: float = option(0.0, ge=0)
    """Linear warm-up from ``lr * warmup_start`` to ``lr`` over this many epochs."""
    warmup_start: float = option(0.1, ge=0, le=1)
    min_lr: float = option(0.0, ge=0)
    """Floor of the cosine schedule."""
    clip_grad_norm: float | None = option(None, gt=0)
    """Clip the global gradient L2 norm to this value before each step (``grad_norm`` is logged before
    clipping); unset: no clipping."""
    ntasgd_nonmono: int | None = option(None, ge=1)
    """NT-ASGD (Merity et al. 2017): from the first evaluation whose selection metric is worse than the
    best of all but the last ``ntasgd_nonmono`` evaluations, average the weights of every later step and
    validate (and keep in ``best.pt``) the average; unset: plain SGD to the end."""


@dataclass
class TrainConfig:
    """Length of the run, device, precision, logging."""

    batch_size: int = option(128, ge=1)
    """Samples per step (B). The number of views per step is B times the method's views per sample."""
    epochs: float | None = option(1.0, gt=0)
    """Length of the run and of the learning-rate regime, in epochs."""
    max_steps: int | None = option(None, ge=1)
    """Stop after this many optimizer steps. The learning-rate regime (milestones, warm-up, cosine) is
    then compressed into these steps: step ``s`` is at epoch ``s / max_steps * epochs`` of the regime
    (``docs/configs.md``). Without ``epochs`` the regime's epochs are ``max_steps / steps_per_epoch``."""
    eval_every: int | None = option(None, ge=1)
    """Evaluate (and write a metrics line and ``last.pt``) every this many steps; once per epoch when unset."""
    log_every: int | None = option(None, ge=1)
    """Write a ``"kind": "step"`` line (train loss, lr, grad norm) to ``metrics.jsonl`` every this many
    steps, independently of evaluation; unset: evaluation lines only."""
    ema_decay: float | None = option(None, ge=0, lt=1)
    """Keep an exponential moving average of the weights with this decay per step (e.g. 0.999); it is
    checkpointed, validated (``val_acc_ema``) and evaluated by ``batchaug eval --ema``."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``..."""
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool | str = False
    """``torch.compile`` the model: ``true`` (the default backend, inductor) or a backend name
    (``aot_eager``, ``cudagraphs``, ... as ``torch._dynamo.list_backends()`` lists); every method, no
    recompiles after warm-up (``batchaug.train.compiling``)."""
    micro_batch: int | None = option(None, ge=1)
    """Largest number of views per forward/backward; a step is split into chunks above it. Unset:
    the whole step at once, retried in twice as many chunks (from the step's starting state) after
    an out-of-memory error."""
    ghost_bn: int | None = option(None, ge=1)
    """Replace every BatchNorm with GhostBatchNorm over virtual batches of this many views."""
    progress: bool = True
    tensorboard: bool = True
    """Write TensorBoard events when tensorboard is installed (false drops it from ``loggers``)."""
    loggers: list[str] = option(default_factory=lambda: ["tensorboard"], choices=LOGGERS)
    """Where metrics go besides ``metrics.jsonl``: ``tensorboard`` (when installed), ``csv``
    (``metrics.csv``), ``wandb`` (needs ``pip install 'batchaug[wandb]'``; off unless listed)."""
    callbacks: list[str] = field(default_factory=list)
    """Extra trainer callbacks by registry name (:data:`batchaug.train.callbacks.CALLBACKS`)."""
    deterministic: bool = False
    """Bitwise-reproducible runs on the same machine and software: deterministic kernels or an error
    naming the op that has none, a fixed cuBLAS workspace, no cuDNN benchmarking (slower on CUDA;
    ``batchaug.train.determinism`` says what is and is not promised)."""


@dataclass
class EvalConfig:
    """How validation runs during training."""

    batch_size: int = option(500, ge=1)
    """Images per evaluation forward pass; text: columns of the validation stream (AWD-LSTM: 10)."""
    split: str = "test"
    """The test split: the validation set during training, unless ``data.val_from_train`` holds a
    validation set out of the training images (then this split is evaluated beside it as the test set).
    Text: ``valid``."""
    test_batch_size: int = option(1, ge=1)
    """Text: columns of the test stream for the test perplexity at the end of training and in
    ``batchaug eval`` (AWD-LSTM: 1)."""


@dataclass
class RunConfig:
    """A whole run. ``method`` is the typed spec of the method named in ``method.name``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodSpec = field(default_factory=MethodSpec.default)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = option(0, ge=0, lt=2**32)
    paper: PaperRef | None = None
    """The published row this config reproduces (``configs/paper/``); changes nothing in a run."""

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as written to ``config.yaml``."""
        return to_dict(self)

    @property
    def modality(self) -> str:
        """``images`` or ``tokens``, from ``data.kind`` (:mod:`batchaug.modality`)."""
        return modality_of(self.data.kind)

    def validate(self, prefix: str) -> None:
        if self.method.modality != self.modality:
            raise ConfigError(f"method: {self.method.name!r} was resolved as a method for {self.method.modality}, "
                              f"but data.kind {self.data.kind!r} holds {self.modality}")


SECTIONS = ("data", "model", "method", "optim", "train", "eval")


# ---------------------------------------------------------------------------------------------
# Loading, overriding, resolving.


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'method.m=4'`` -> (['method', 'm'], 4). Values are parsed as YAML (``[1,2]``, ``null``, ``1e-3``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. method.m=4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-3" as a string
    return key.split("."), value


def _looks_like_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "infinity")


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of the raw config mapping with dotted overrides set.

    Switching methods (``method.name=baseline`` on a file written for ``ba``) keeps the file's method
    options that the new method also declares (e.g. ``policy``) and drops the others (e.g. ``m``), so
    one config serves every method; options given on the command line are always validated.
    """
    out = copy.deepcopy(raw)
    parsed = [parse_override(text) for text in overrides]
    kind = _raw_kind(out)
    for path, value in parsed:
        if path == ["data", "kind"]:
            kind = value
    for path, value in parsed:
        if path == ["method", "name"] and isinstance(out.get("method"), dict) and out["method"].get("name") != value:
            out["method"] = _keep_declared_options(out["method"], value, modality_of(kind))
    for text, (path, value) in zip(overrides, parsed):
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return out


def _raw_kind(raw: Mapping[str, Any]) -> Any:
    data = raw.get("data")
    return data.get("kind", "auto") if isinstance(data, Mapping) else "auto"


def _keep_declared_options(section: dict[str, Any], new_name: Any, modality: str = IMAGES) -> dict[str, Any]:
    declared = declared_options(new_name, modality)
    if declared is None:
        return section  # validation reports the unknown name later
    return {k: v for k, v in section.items() if k in declared}


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections ({', '.join(SECTIONS)})")
    base = data.pop("base", None)
    if base is not None:  # ``base: other.yaml`` — shallow-per-section inheritance, relative to this file
        parent = load_yaml(p.parent / base)
        parent.pop("paper", None)  # the base's published row is the base's, not this file's
        child, inherited = data.get("method"), parent.get("method")
        if (isinstance(child, dict) and isinstance(inherited, dict) and "name" in child
                and child["name"] != inherited.get("name", "baseline")):
            # another method: keep the base's options it also declares, as method.name=X on the command line
            parent["method"] = _keep_declared_options(inherited, child["name"])
        data = merge(parent, data)
    return data


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a raw mapping into a RunConfig; the method section is validated by its method (the one
    of that name for the modality of ``data.kind``: images, or token streams for ``ptb``/``text``)."""
    raw = dict(raw)
    if raw.get("method") is None:
        raw.pop("method", None)
    modality = modality_of(_raw_kind(raw))
    if modality != IMAGES:
        raw["method"] = MethodSpec.from_config(raw.get("method"), "method", modality=modality)
    return build(RunConfig, raw, "")


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML config file (or defaults when ``path`` is None) and apply ``key=value`` overrides."""
    raw = load_yaml(path) if path is not None else {}
    return resolve_config(apply_overrides(raw, overrides))


def dump_config(cfg: RunConfig) -> str:
    """The YAML text of ``config.yaml``."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
