"""A grid of runs, one after another, that survives being killed: ``batchaug sweep``.

    batchaug sweep configs/quick/cifar10_resnet20.yaml method.name=ba method.m=1,2,4 --seeds 0,1 --out runs/m

Every ``key=v1,v2,...`` with more than one value is an axis of the grid (a single value is a plain
override for every point); ``--seeds`` adds the axis ``seed``. Each point is a run directory named by its
axis values, ``runs/m/method.m=2,seed=1/``. Running the sweep again skips finished points (their
``summary.json`` is there), resumes interrupted ones from their ``last.pt``, and starts afresh a point
killed before its first checkpoint, so a second invocation after a ``kill -9`` finishes the grid and
redoes nothing. A point directory that holds a run of another configuration stops the sweep before any
training (choose another ``--out``).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from batchaug.errors import ConfigError

__all__ = ["Sweep", "SweepPoint", "point_state", "run_sweep", "split_values"]

_OPEN, _CLOSE = "[{(", "]})"


def split_values(text: str) -> list[str]:
    """``"1,2,[3,4]"`` -> ``["1", "2", "[3,4]"]``: commas inside brackets, braces or quotes do not split,
    so a value may be a YAML list or mapping (``method={name: ba, m: 2},{name: baseline}``)."""
    items, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            items.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    items.append("".join(cur).strip())
    return [i for i in items if i]


@dataclass(frozen=True)
class SweepPoint:
    """One run of the grid: its axis values as overrides, and its directory name."""

    overrides: tuple[str, ...]
    name: str


def _dir_name(overrides: Sequence[str]) -> str:
    # "/" would nest folders; spaces (from YAML mappings) make names awkward to type
    return ",".join(overrides).replace("/", "_").replace(" ", "")


@dataclass
class Sweep:
    """A config file, overrides shared by every point, and the axes of the grid."""

    config: Path
    fixed: list[str]
    axes: list[tuple[str, list[str]]]
    out: Path
    points: list[SweepPoint] = field(init=False)

    def __post_init__(self) -> None:
        grid: list[list[str]] = [[]]
        for key, values in self.axes:
            if not values:
                raise ConfigError(f"sweep: {key}= lists no values")
            grid = [g + [f"{key}={v}"] for g in grid for v in values]
        self.points = [SweepPoint(tuple(g), _dir_name(g)) for g in grid]
        names = [p.name for p in self.points]
        if len(set(names)) != len(names):
            raise ConfigError("sweep: two points would share a directory name; give distinct values")

    @classmethod
    def from_tokens(cls, config: str | Path, tokens: Sequence[str], out: str | Path,
                    seeds: str | None = None) -> Sweep:
        """``key=v1,v2`` tokens with several values become axes (in order), the others plain overrides."""
        fixed, axes = [], []
        for tok in tokens:
            if "=" not in tok:
                raise ConfigError(f"sweep: {tok!r} must look like key=value or key=v1,v2,...")
            key, raw = tok.split("=", 1)
            values = split_values(raw)
            if len(values) > 1:
                axes.append((key.strip(), values))
            else:
                fixed.append(tok)
        if seeds is not None:
            if any(k == "seed" for k, _ in axes) or any(t.split("=", 1)[0].strip() == "seed" for t in fixed):
                raise ConfigError("sweep: give the seeds once, either --seeds or seed=...")
            axes.append(("seed", split_values(seeds)))
        return cls(Path(config), fixed, axes, Path(out))

    @classmethod
    def from_specs(cls, config: str | Path, fixed: Sequence[str], specs: Sequence[str], out: str | Path) -> Sweep:
        """``train --sweep`` style: every ``key=v1,v2`` spec is an axis (one that names the point
        directories even with a single value); ``fixed`` overrides apply to every point."""
        axes = []
        for spec in specs:
            if "=" not in spec:
                raise ConfigError(f"--sweep {spec!r} must look like key=v1,v2,...")
            key, values = spec.split("=", 1)
            items = split_values(values)
            if not items:
                raise ConfigError(f"--sweep {spec!r} lists no values")
            axes.append((key.strip(), items))
        return cls(Path(config), list(fixed), axes, Path(out))

    def run_dir(self, point: SweepPoint) -> Path:
        """``OUT/<axis values>``; a grid without axes is the single run ``OUT`` itself."""
        return self.out / point.name if point.name else self.out

    def overrides(self, point: SweepPoint) -> list[str]:
        return [*self.fixed, *point.overrides]

    def configs(self) -> list[Any]:
        """Every point's resolved :class:`~batchaug.config.RunConfig` (a bad value fails here, naming it)."""
        from batchaug.config import apply_overrides, load_yaml, resolve_config

        raw = load_yaml(self.config)
        return [resolve_config(apply_overrides(raw, self.overrides(p))) for p in self.points]

    def command_lines(self, nproc_per_node: int | None = None) -> list[str]:
        """One ``batchaug train`` command per point (``torchrun`` ones with ``nproc_per_node``); every point
        is validated first, so no printed line fails on a bad value."""
        self.configs()
        prefix = (["torchrun", "--standalone", f"--nproc_per_node={nproc_per_node}", "-m", "batchaug"]
                  if nproc_per_node else ["batchaug"])
        return [shlex.join([*prefix, "train", str(self.config), *self.overrides(p), "--out", str(self.run_dir(p))])
                for p in self.points]


def point_state(run_dir: Path) -> str:
    """``done`` (a readable ``summary.json``), ``resume`` (a ``last.pt``), ``restart`` (files of a run
    killed before its first checkpoint) or ``new``."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            json.loads(summary.read_text())
            return "done"
        except json.JSONDecodeError:
            pass  # cut by a kill while written: last.pt is there, resuming rewrites it
    if (run_dir / "last.pt").is_file():
        return "resume"
    if any((run_dir / f).exists() for f in ("metrics.jsonl", "best.pt", "config.yaml")):
        return "restart"
    return "new"


def _config_differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(saved) | set(wanted), key=str):
        a, b = saved.get(k), wanted.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _config_differences(a, b, f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def _saved_config(path: Path, resolve_config: Callable, dump_config: Callable) -> dict[str, Any]:
    """A point's saved config.yaml as the current schema resolves it: keys added to batchaug after the run
    was written take their defaults instead of reading as differences (they did not exist, so the run
    had their default behaviour)."""
    saved = yaml.safe_load(path.read_text()) or {}
    try:
        return yaml.safe_load(dump_config(resolve_config(saved)))
    except ConfigError:  # no longer valid: compared as written, so every differing key is named
        return saved


def _silent(_line: str) -> None:
    pass


def _say(line: str) -> None:
    print(line, flush=True)  # flushed: a sweep's log is often a file, read while the sweep runs


def run_sweep(sweep: Sweep, *, log: Callable[[str], None] = _say) -> list[dict[str, Any]]:
    """Train every point not finished yet; returns one record per point (overrides, run_dir, summary).

    Every point's config is resolved, and every existing point directory checked against it, before
    anything trains, so a bad value or a foreign run directory fails at once.
    """
    from batchaug.config import dump_config, parse_override, resolve_config
    from batchaug.io import make_dirs, write_json
    from batchaug.train import distributed as dist_utils
    from batchaug.train.run import resolve_device, train_run

    configs = sweep.configs()
    if dist_utils.launch_rank() != 0:  # under torchrun, rank 0 tells the sweep's progress
        log = _silent
    devices = {str(resolve_device(cfg.train.device)) for cfg in configs}
    if len(devices) > 1 and dist_utils.launch_world_size() > 1:  # under torchrun the points share one group
        raise ConfigError(f"sweep: the points train on different devices ({', '.join(sorted(devices))}); "
                          "sweep train.device in separate commands")
    plan = []
    for point, cfg in zip(sweep.points, configs, strict=True):
        run_dir = sweep.run_dir(point)
        state = point_state(run_dir)
        if state in ("done", "resume") and (run_dir / "config.yaml").is_file():
            saved = _saved_config(run_dir / "config.yaml", resolve_config, dump_config)
            diff = _config_differences(saved, yaml.safe_load(dump_config(cfg)))
            if diff:
                raise ConfigError(f"sweep: {run_dir} holds a run of another configuration ({', '.join(diff[:5])}"
                                  f"{' ...' if len(diff) > 5 else ''} differ); choose another --out or remove it")
        plan.append((point, cfg, run_dir, state))
    records = []
    total = len(plan)
    # One process group for every point under torchrun: a group joined again on the same torchrun store
    # can find the previous group's stale addresses there.
    with dist_utils.joined(resolve_device(configs[0].train.device)):
        for i, (point, cfg, run_dir, state) in enumerate(plan, 1):
            name = point.name or str(run_dir)
            if state == "done":
                log(f"== sweep point {i}/{total} {name}: finished, skipped")
                summary = json.loads((run_dir / "summary.json").read_text())
            else:
                how = {"new": "training", "restart": "restarting (killed before its first checkpoint)",
                       "resume": "resuming from last.pt"}[state]
                log(f"== sweep point {i}/{total} {name}: {how} -> {run_dir}")
                summary = train_run(cfg, run_dir, resume=state == "resume", restart=state == "restart")
            records.append({"overrides": {o.split("=", 1)[0]: parse_override(o)[1] for o in point.overrides},
                            "run_dir": str(run_dir), **summary})
    if sweep.axes and dist_utils.launch_rank() == 0:  # under torchrun, rank 0 writes the sweep's files
        make_dirs(sweep.out)
        write_json(sweep.out / "sweep.json", records)
    return records


def format_records(sweep: Sweep, records: Sequence[dict[str, Any]]) -> str:
    """A tab-separated table of the points' axis values and accuracies."""
    keys = [k for k, _ in sweep.axes]

    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["\t".join(keys + ["final_val_acc", "median_last5_val_acc", "best_val_acc", "wall_time"])]
    for r in records:
        lines.append("\t".join([fmt(r["overrides"].get(k)) for k in keys]
                               + [fmt(r.get(k)) for k in ("final_val_acc", "median_last5_val_acc", "best_val_acc")]
                               + [fmt(r.get("wall_time"))]))
    return "\n".join(lines)
