"""Starting a run in a directory — fresh, resumed or restarted — decided and checked before anything is written.

:func:`plan_start` looks at what a run directory holds and what was asked for:

- a fresh run (``batchaug train CONFIG --out DIR``) needs a directory without a run in it;
- ``--resume DIR`` continues from ``DIR/last.pt``. The resumed config (``config.yaml`` plus the command
  line's overrides) is compared with the config stored in ``last.pt``: a change of any key outside
  :data:`MAY_CHANGE` (the model, the data, the method, the seed, the optimizer's state...) is refused
  with the differing keys listed. A directory whose first checkpoint never completed (killed before its
  first evaluation was saved) has nothing to continue: it is started again from step 0, saying so;
- ``--restart`` starts such a directory over on purpose, with the config given; it refuses a directory
  that holds a completed checkpoint (continue that with ``--resume``, or delete it).

Nothing on disk changes here: :meth:`StartPlan.clear` removes the old run's files only once the caller
has built the whole run (data, model, checkpoint) without an error.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchaug.config import RunConfig, apply_overrides, load_yaml, resolve_config
from batchaug.errors import BatchaugError, ConfigError, DataError
from batchaug.io import fsync_dir
from batchaug.schema import shown

__all__ = ["MAY_CHANGE", "RUN_FILES", "StartPlan", "config_changes", "load_resume_config", "plan_start",
           "read_run_config"]

RUN_FILES = ("metrics.jsonl", "metrics.csv", "last.pt", "best.pt", "summary.json", "config.yaml")
"""What a run writes at the top of its directory (besides ``tensorboard/`` and ``eval/``)."""

MAY_CHANGE = (
    "train.max_steps", "train.epochs", "train.eval_every", "train.log_every", "train.device", "train.progress",
    "train.tensorboard", "train.loggers", "train.compile", "train.channels_last", "train.micro_batch",
    "train.deterministic", "train.on_nonfinite",
    "optim.lr", "optim.schedule", "optim.milestones", "optim.gamma", "optim.warmup_epochs", "optim.warmup_start",
    "optim.min_lr", "optim.clip_grad_norm",
    "data.root", "data.num_workers", "data.cache", "data.download", "data.in_memory", "data.max_pixels",
    "eval.", "paper.",
)
"""Keys that ``--resume DIR key=value`` may change (a trailing dot: the whole section). Length, logging,
device and speed options; the learning-rate schedule (a change at the resume step is warned about: the
result is another run); where the data is and how it is read. Everything else is fixed by the checkpoint:
the model and its BatchNorms, the data and its subsets, the method, the seed, the batch size, the
precision, the optimizer's kind and the hyper-parameters its state holds (momentum, weight decay), the
callbacks and their state."""


def _may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and k != "kwargs":
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(saved: dict[str, Any], cfg: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, new value)`` for every key whose value differs between a checkpoint's stored
    config (plain values) and ``cfg``, sorted by key.

    The stored config is resolved through the current schema first, so a key added to batchaug since the
    checkpoint was written takes its default there (it is a change only when ``cfg`` sets another value).
    A stored config this version cannot resolve (a key since removed) is compared as written, on the keys
    both hold: what the old version did not have, or no longer has, cannot tell a change."""
    try:
        old = json.loads(json.dumps(resolve_config(saved).to_dict()))
        shared = None
    except BatchaugError:
        old = saved
        shared = set(_flat(saved))
    new = json.loads(json.dumps(cfg.to_dict()))
    a, b = _flat(old), _flat(new)
    keys = set(a) | set(b) if shared is None else shared & set(b)
    missing = object()
    return [(k, a.get(k), b.get(k)) for k in sorted(keys) if a.get(k, missing) != b.get(k, missing)]


def check_resume_config(run_dir: Path, saved: dict[str, Any] | None, cfg: RunConfig) -> None:
    """Refuse a resume whose config changes a key outside :data:`MAY_CHANGE`, listing every such key."""
    if not saved:
        warnings.warn(f"--resume {run_dir}: last.pt stores no config (written by an old version); the resumed "
                      "config cannot be checked against it", RuntimeWarning, stacklevel=3)
        return
    refused = [(k, a, b) for k, a, b in config_changes(saved, cfg) if not _may_change(k)]
    if any(k == "method.name" for k, _, _ in refused):  # another method: its options are another set
        refused = [(k, a, b) for k, a, b in refused if not k.startswith("method.") or k == "method.name"]
    if refused:
        listed = "; ".join(f"{k}: {shown(a, 40)} -> {shown(b, 40)}" for k, a, b in refused)
        raise ConfigError(f"--resume {run_dir}: the checkpoint was trained with other values of keys a resumed run "
                          f"cannot change ({listed}); start a new run with --out, or resume without these "
                          "overrides (what may change on resume: docs/reliability.md)")


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The raw config a run directory was trained with: ``config.yaml``, or — when that is missing, empty
    or unreadable (a directory damaged by an old version) — the config stored in its ``last.pt`` or
    ``best.pt``, with a warning. An empty ``config.yaml`` is never read as "all defaults".

    Raises:
        ConfigError: neither ``config.yaml`` nor a checkpoint gives a config.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    problem = None
    if path.is_file():
        try:
            raw = load_yaml(path)
        except ConfigError as exc:
            problem = str(exc)
        else:
            if raw:
                return raw
            problem = f"{path} is empty"
    else:
        problem = f"{path} is missing"
    for name in ("last.pt", "best.pt"):
        saved = _stored_config(run_dir / name)
        if saved:
            warnings.warn(f"{problem}; using the config stored in {run_dir / name}", RuntimeWarning, stacklevel=2)
            return saved
    raise ConfigError(f"{run_dir} is not a run directory: {problem}" + (" and it holds no checkpoint"
                                                                        if not (run_dir / "last.pt").exists() else ""))


def _stored_config(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    from batchaug.train.checkpoint import load_checkpoint

    try:
        saved = load_checkpoint(path, mmap=True).get("config")
    except DataError:
        return None
    return saved if isinstance(saved, dict) and saved else None


def load_resume_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """The config of ``--resume run_dir key=value ...``: the run's own (:func:`read_run_config`) with the
    overrides applied. Whether the overrides may change it is checked by :func:`plan_start`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory")
    return resolve_config(apply_overrides(read_run_config(run_dir), overrides))


@dataclass
class StartPlan:
    """How a run starts in ``run_dir``: ``resume`` from ``last.pt`` or from step 0, after removing ``stale``
    (an unfinished earlier attempt's files), announcing ``message``."""

    run_dir: Path
    resume: bool
    stale: list[Path] = field(default_factory=list)
    message: str | None = None

    def clear(self) -> None:
        """Remove the stale files (only once every check of the new start has passed)."""
        for path in self.stale:
            with contextlib.suppress(FileNotFoundError):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        if self.stale:
            fsync_dir(self.run_dir)


def _stale_files(run_dir: Path) -> list[Path]:
    found = [run_dir / n for n in RUN_FILES if (run_dir / n).exists()]
    if (run_dir / "tensorboard").is_dir():
        found.append(run_dir / "tensorboard")
    eval_dir = run_dir / "eval"
    if eval_dir.is_dir():
        found += sorted(eval_dir.glob("*.json"))
    return found


def _describe(run_dir: Path) -> str:
    from batchaug.train.metrics_log import read_metrics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            lines = len(read_metrics(run_dir, kind=None))
        except DataError:
            lines = 0
    held = [n for n in ("metrics.jsonl", "best.pt") if (run_dir / n).exists()]
    return ", ".join(held) + (f" ({lines} metrics lines)" if lines else "") if held else "no results"


def plan_start(run_dir: str | Path, cfg: RunConfig, *, resume: bool = False, restart: bool = False) -> StartPlan:
    """Decide how a run starts in ``run_dir`` (module docstring); raises :class:`ConfigError` for a start that
    would lose or mix up results. Reads, never writes."""
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    if resume and restart:
        raise ConfigError("--resume and --restart: choose one (--restart starts the directory over)")
    if last.exists():
        if restart:
            raise ConfigError(f"--restart {run_dir}: it holds a completed checkpoint (last.pt); continue it with "
                              "--resume, or delete the directory to start over")
        if not resume:
            raise ConfigError(f"--out {run_dir} already holds a run (last.pt); use --resume to continue it or "
                              "choose another directory")
        from batchaug.train.checkpoint import load_checkpoint

        saved = load_checkpoint(last, mmap=True).get("config")  # a damaged last.pt stops here, naming it
        check_resume_config(run_dir, saved if isinstance(saved, dict) else None, cfg)
        return StartPlan(run_dir, resume=True)
    # config.yaml is not removed: it is replaced (atomically) by the new start's
    stale = [p for p in _stale_files(run_dir) if p.name != "config.yaml"]
    unfinished = [p for p in stale if p.name in ("metrics.jsonl", "best.pt")]
    if resume:
        return StartPlan(run_dir, resume=False, stale=stale,
                         message=f"resume: {run_dir} has no completed checkpoint (the run stopped before its first "
                                 f"checkpoint was written; it holds {_describe(run_dir)}): starting it again from "
                                 "step 0 with its config")
    if restart:
        return StartPlan(run_dir, resume=False, stale=stale,
                         message=f"restart: starting {run_dir} over from step 0"
                                 + (f", discarding the unfinished run it held ({_describe(run_dir)})" if unfinished
                                    else ""))
    if unfinished:
        raise ConfigError(f"--out {run_dir} already holds a run that never completed its first checkpoint "
                          f"({_describe(run_dir)}); use --restart to start it over, or choose another directory")
    return StartPlan(run_dir, resume=False)
