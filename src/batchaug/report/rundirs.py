"""Reading run directories for reports: ``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``eval/*.json``.

Only the files of the run-directory contract are read (DESIGN.md), with plain ``json``/``yaml``: a report
never imports the code that wrote them (no torch), and a run that lacks some files is still read, with
what is missing listed in :attr:`RunDir.missing` so the report can say what it skipped.
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from batchaug.errors import ConfigError

__all__ = ["RunDir", "find_run_dirs", "flatten", "load_run", "load_runs"]

# the files whose presence makes a folder a run directory
_MARKERS = ("metrics.jsonl", "config.yaml", "summary.json")
# folders of a run directory, or of a report, that never hold runs
_NOT_RUNS = {"plots", "eval", "tensorboard", "__pycache__"}


@dataclass
class RunDir:
    """What one run directory holds, as read from its files."""

    path: Path
    source: Path
    """The command-line argument it was found under (itself, or the sweep directory holding it)."""
    config: dict[str, Any] | None
    """``config.yaml`` as a mapping (None when missing or unreadable)."""
    evals: list[dict[str, Any]]
    """The evaluation lines of ``metrics.jsonl`` (``"kind": "eval"`` or no kind)."""
    steps: list[dict[str, Any]]
    """The ``train.log_every`` lines (``"kind": "step"``)."""
    summary: dict[str, Any]
    """``summary.json``; when it is missing, the figures :func:`summary_from_lines` reads off the lines."""
    eval_results: dict[str, dict[str, Any]]
    """``{file stem: payload}`` of every ``eval/<suite>.json`` in the suites' format."""
    missing: list[str] = field(default_factory=list)
    """Human-readable notes on files that were absent or unreadable."""
    finished: bool = False
    """Whether ``summary.json`` was there (the run ran to its end)."""

    @property
    def flat(self) -> dict[str, Any]:
        """The config as dotted keys (``{"method.m": 4, ...}``); empty without a config."""
        return flatten(self.config) if self.config else {}

    @property
    def paper(self) -> dict[str, Any] | None:
        """The config's ``paper:`` block (the published row the config reproduces), or None."""
        block = (self.config or {}).get("paper")
        return block if isinstance(block, dict) else None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and the leaves of ``model.kwargs`` stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and key not in ("model.kwargs",):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _is_run(path: Path) -> bool:
    return any((path / name).is_file() for name in _MARKERS)


def find_run_dirs(paths: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """``(run directory, argument)`` pairs: an argument that is a run directory is itself; any other
    folder (a sweep directory) stands for every run directory below it, in sorted order."""
    found: list[tuple[Path, Path]] = []
    for arg in map(Path, paths):
        if not arg.is_dir():
            raise ConfigError(f"{arg}: no such directory (give run directories or sweep directories)")
        if _is_run(arg):
            found.append((arg, arg))
            continue
        inside = sorted(_runs_below(arg))
        if not inside:
            raise ConfigError(f"{arg} is neither a run directory (no {', '.join(_MARKERS)}) nor a folder of them")
        found += [(r, arg) for r in inside]
    seen: set[Path] = set()
    unique = []
    for run, arg in found:
        key = run.resolve()
        if key not in seen:
            seen.add(key)
            unique.append((run, arg))
    return unique


def _runs_below(folder: Path) -> Iterable[Path]:
    for child in folder.iterdir():
        if child.is_dir() and child.name not in _NOT_RUNS:
            if _is_run(child):
                yield child
            else:
                yield from _runs_below(child)


def _read_json_lines(path: Path, missing: list[str]) -> list[dict[str, Any]]:
    records = []
    text = path.read_text()
    lines = text.splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            # a line cut by a kill -9 mid-write: the lines before it are whole (each is fsync'd)
            missing.append(f"metrics.jsonl line {n} is not JSON (cut by an interrupted run?); skipped")
            if n == len(lines) and not text.endswith("\n"):  # warned as the trainer's reader warns
                warnings.warn(f"{path}: ignoring its last line, cut short ({len(line)} bytes without a newline: "
                              "a write interrupted by a kill or a full disk)", RuntimeWarning, stacklevel=2)
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def load_run(path: str | Path, source: str | Path | None = None) -> RunDir:
    """Read one run directory; absent or unreadable files leave their fields empty and a note."""
    path = Path(path)
    missing: list[str] = []
    config = None
    cfg_path = path / "config.yaml"
    if cfg_path.is_file():
        try:
            loaded = yaml.safe_load(cfg_path.read_text())
            config = loaded if isinstance(loaded, dict) else None
        except yaml.YAMLError as exc:
            missing.append(f"config.yaml unreadable ({exc.__class__.__name__}): labelled by folder name")
    else:
        missing.append("config.yaml missing: labelled by folder name, not grouped by its settings")
    records: list[dict[str, Any]] = []
    metrics = path / "metrics.jsonl"
    if metrics.is_file():
        records = _read_json_lines(metrics, missing)
    else:
        missing.append("metrics.jsonl missing: no curves")
    evals = [r for r in records if r.get("kind", "eval") == "eval"]
    steps = [r for r in records if r.get("kind") == "step"]
    summary: dict[str, Any] = {}
    summary_path = path / "summary.json"
    finished = False
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            finished = True
        except json.JSONDecodeError:
            missing.append("summary.json unreadable: numbers read from metrics.jsonl's last line")
    else:
        missing.append("summary.json missing (unfinished run?): numbers read from metrics.jsonl's last line"
                       if evals else "summary.json missing")
    if not summary and evals:
        summary = summary_from_lines(evals)
    eval_results = {}
    for p in sorted((path / "eval").glob("*.json")):
        try:
            payload = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            missing.append(f"eval/{p.name} unreadable: not drawn")
            continue
        if isinstance(payload, dict) and isinstance(payload.get("modes"), dict) and "suite" in payload:
            eval_results[p.stem] = payload
    return RunDir(path, Path(source) if source is not None else path, config, evals, steps, summary,
                  eval_results, missing, finished)


def load_runs(paths: Sequence[str | Path]) -> list[RunDir]:
    """:func:`load_run` of every run directory of :func:`find_run_dirs`."""
    return [load_run(run, arg) for run, arg in find_run_dirs(paths)]


def summary_from_lines(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a summary that the evaluation lines alone give (a run without ``summary.json``):
    final and best validation accuracy, the median over the lines of the last 5 epochs, steps, images
    seen, wall time; for a language model the final and best (lowest) ``val_ppl``. ``test_*`` keys only when
    the lines carry ``test_acc``."""
    last = evals[-1]
    out: dict[str, Any] = {}
    for key in sorted({k for r in evals for k in r if k.startswith(("val_acc", "test_acc"))}):
        vals = [r[key] for r in evals if isinstance(r.get(key), (int, float))]
        tail = [r[key] for r in evals if isinstance(r.get(key), (int, float))
                and r.get("epoch", 0) > last.get("epoch", 0) - 5]
        out[f"final_{key}"] = last.get(key)
        out[f"median_last5_{key}"] = statistics.median(tail) if tail else None
        if key == "val_acc":
            out["best_val_acc"] = max(vals) if vals else None
    ppls = [r["val_ppl"] for r in evals if isinstance(r.get("val_ppl"), (int, float))]
    if ppls:  # a language model: perplexity, lower is better
        out.update(final_val_ppl=last.get("val_ppl"), best_val_ppl=min(ppls))
    out.update(steps=last.get("step"), epochs=last.get("epoch"), images_seen=last.get("images_seen"),
               wall_time=last.get("wall_time"))
    wall = last.get("wall_time")
    out["images_per_s"] = last["images_seen"] / wall if wall and last.get("images_seen") else None
    speeds = [r["views_per_s"] for r in evals if r.get("views_per_s")]
    out["views_per_s"] = statistics.median(speeds) if speeds else None
    return {k: v for k, v in out.items() if not (isinstance(v, float) and not math.isfinite(v))}
