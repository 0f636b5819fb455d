"""Runs that differ only by seed, as one group; labels that say what differs between groups.

Two runs belong to one group when their ``config.yaml`` agree on every key except the seed and the keys
that change nothing the run measures (where the data file lies, logging, evaluation batch size, how often
it evaluated); a key that only the runs written by a newer batchaug have, all with one value, is not
compared (the older runs ran with its default). A group's numbers are means over its runs with their
standard deviation and count; its label names the method and every setting that differs between the
groups of the report (``BA M=4``, ``SBA M=4 η=0.01``), never a folder name.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchaug.report.rundirs import RunDir

__all__ = ["IGNORED_KEYS", "RunGroup", "format_value", "group_runs", "is_perplexity", "method_p"]

#: Keys that do not change what a run measures: runs differing only in these (and the seed) are one group.
IGNORED_KEYS = frozenset({
    "seed", "method.seed", "data.root", "data.cache", "data.num_workers", "data.download", "train.device",
    "train.progress", "train.tensorboard", "train.loggers", "train.eval_every", "train.log_every",
    "train.micro_batch", "eval.batch_size",
})

#: Short names of settings in labels.
SHORT = {
    "method.m": "M", "method.eta": "η", "method.fixed_layer": "k", "method.p": "p", "method.omega": "ω",
    "method.policy": "policy", "method.weak": "weak", "method.strong": "strong", "method.lr_scaling": "lr rule",
    "method.inference": "inference", "method.layers": "S", "optim.lr": "lr", "train.batch_size": "B",
    "train.max_steps": "steps", "train.epochs": "epochs", "data.subset": "train images", "model.name": "model",
    "method.dropout_copies": "q", "method.sigma": "σ",
}
#: Display names of methods.
METHOD_NAMES = {"baseline": "baseline", "ba": "BA", "ra": "RA", "sba": "SBA", "splitbn": "split BN"}
# settings shown first, in this order, when they differ
_ORDER = ("model.name", "method.m", "method.eta", "method.fixed_layer", "method.p", "method.omega",
          "method.policy", "method.weak", "method.strong")


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith("paper.") or key == "paper"


def method_p(flat: dict[str, Any]) -> float | None:
    """SBA's probability of an augmented step from its options (``p``, else cos ``omega``, else 0.5)."""
    if flat.get("method.name") != "sba":
        return None
    if flat.get("method.p") is not None:
        return float(flat["method.p"])
    if flat.get("method.omega") is not None:
        return math.cos(float(flat["method.omega"]))
    return 0.5


def is_perplexity(key: str) -> bool:
    """Whether a summary key is a perplexity (a plain number, lower is better) rather than an accuracy
    (a fraction shown in %, higher is better)."""
    return key.endswith("_ppl")


def format_value(v: Any) -> str:
    """A config value as a label shows it: ``0.001``, ``standard+randaugment(3,4)+cutout``."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return "+".join(format_value(x) for x in v)
    if isinstance(v, dict):
        name = v.get("name", "")
        args = ",".join(format_value(x) for k, x in v.items() if k != "name")
        return f"{name}({args})" if args else str(name)
    return str(v)


@dataclass
class RunGroup:
    """Runs of one configuration (differing only by seed)."""

    runs: list[RunDir]
    settings: dict[str, Any]
    """The group's config as dotted keys, without the ignored ones."""
    label: str = ""
    differs: dict[str, Any] = field(default_factory=dict)
    """The settings that differ between this report's groups, with this group's values."""

    @property
    def method(self) -> str | None:
        return self.settings.get("method.name")

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[Any]:
        return [(r.config or {}).get("seed") for r in self.runs]

    @property
    def paper(self) -> dict[str, Any] | None:
        """The ``paper:`` block of the group's runs (the first run that has one)."""
        return next((r.paper for r in self.runs if r.paper), None)

    def acc_key(self) -> str:
        """The summary key of the group's headline number: the paper block's ``compare`` key when the runs
        have it, else the final test accuracy, else the final validation accuracy; for a language model
        (no accuracy) the test perplexity, else the final validation perplexity (see :func:`is_perplexity`)."""
        compare = (self.paper or {}).get("compare")
        for key in (compare, "final_test_acc", "final_val_acc", "test_ppl", "final_val_ppl"):
            if key and self.values(key):
                return key
        return "final_val_acc"

    def values(self, key: str) -> list[float]:
        """``summary.json``'s ``key`` of every run that has it as a number."""
        return [float(r.summary[key]) for r in self.runs
                if isinstance(r.summary.get(key), (int, float)) and not isinstance(r.summary.get(key), bool)]

    def stat(self, key: str) -> tuple[float | None, float | None, int]:
        """(mean, sample standard deviation or None below 2 runs, number of runs) of a summary key."""
        vals = self.values(key)
        if not vals:
            return None, None, 0
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)

    def curve(self, metric: str, x: str = "step", lines: str = "evals") -> list[tuple[float, float, float, int]]:
        """``(x, mean, std, n)`` of ``metric`` over the runs, aligned on the step (``lines``: ``evals`` or
        ``steps``); x is the mean of the runs' ``x`` at that step (epochs agree between seeds)."""
        by_step: dict[int, list[tuple[float, float]]] = {}
        for run in self.runs:
            for rec in getattr(run, lines):
                v, xv, s = rec.get(metric), rec.get(x), rec.get("step")
                if isinstance(v, (int, float)) and isinstance(xv, (int, float)) and s is not None:
                    by_step.setdefault(int(s), []).append((float(xv), float(v)))
        out = []
        for s in sorted(by_step):
            pts = by_step[s]
            ys = [p[1] for p in pts]
            out.append((statistics.fmean(p[0] for p in pts), statistics.fmean(ys),
                        statistics.stdev(ys) if len(ys) > 1 else 0.0, len(ys)))
        return out


def _settings(runs: Sequence[RunDir]) -> dict[int, dict[str, Any]]:
    """Every run's config as dotted keys without the ignored ones, and without the keys that only some of
    the runs' configs write while those that write them agree: such a key came into batchaug's schema
    after the other runs were written (they ran with its default), so it tells nothing apart. Method
    options are compared among the runs of the same method (each method has its own)."""
    flats = {id(r): {k: v for k, v in r.flat.items() if not _ignored(k)} for r in runs if r.config is not None}
    scopes: dict[str, list[dict[str, Any]]] = {}
    for flat in flats.values():
        scopes.setdefault(str(flat.get("method.name")), []).append(flat)
    everyone = list(flats.values())
    keys = {k for flat in everyone for k in flat}
    for key in keys:
        scope_lists = list(scopes.values()) if key.startswith("method.") and key != "method.name" else [everyone]
        for scope in scope_lists:
            present = [f[key] for f in scope if key in f]
            if 0 < len(present) < len(scope) and len({json.dumps(v, sort_keys=True, default=str)
                                                      for v in present}) == 1:
                for f in scope:
                    f.pop(key, None)
    return flats


def _key_of(run: RunDir, flats: dict[int, dict[str, Any]]) -> str:
    if run.config is None:
        return f"dir:{run.path.resolve()}"
    return json.dumps(flats[id(run)], sort_keys=True, default=str)


def group_runs(runs: Sequence[RunDir], labels: dict[Path, str] | None = None) -> list[RunGroup]:
    """Group ``runs`` by configuration (seed aside) in first-seen order and label every group.

    ``labels`` maps a command-line argument (:attr:`RunDir.source`) to the label the user gave it: a
    group whose runs all come from that argument takes it (followed by the automatic label when the
    argument holds several groups).
    """
    order: list[str] = []
    members: dict[str, list[RunDir]] = {}
    flats = _settings(runs)
    for run in runs:
        key = _key_of(run, flats)
        if key not in members:
            order.append(key)
            members[key] = []
        members[key].append(run)
    groups = [RunGroup(members[k], dict(flats.get(id(members[k][0]), {}))) for k in order]
    _label(groups)
    if labels:
        for src, text in labels.items():
            mine = [g for g in groups if all(r.source == src for r in g.runs)]
            for g in mine:
                g.label = text if len(mine) == 1 else f"{text} {g.label}"
    _disambiguate(groups)
    return groups


def _label(groups: list[RunGroup]) -> None:
    keys = sorted({k for g in groups for k in g.settings})
    known = [g for g in groups if g.settings]  # a run without config.yaml tells nothing about settings
    varying = [k for k in keys if _varies(k, known)]
    first = [k for k in _ORDER if k in varying]
    rest = [k for k in varying if k not in first and k not in ("method.name",)]
    for g in groups:
        g.differs = {k: g.settings.get(k) for k in varying}
        if not g.settings:  # no config.yaml: the folder is all there is
            g.label = g.runs[0].path.name
            continue
        name = g.method or "run"
        parts = [METHOD_NAMES.get(name, name)]
        if "method.m" in g.settings and g.settings["method.m"] is not None:
            parts.append(f"M={g.settings['method.m']}")
            if name == "ba" and g.settings["method.m"] == 1:
                parts.append("(baseline)")
        for k in first + [k for k in rest if k not in first]:
            if k == "method.m":
                continue
            v = g.settings.get(k)
            if v is None:
                continue
            if k == "method.layer_choice":  # fixed: the layer k says it; uniform: say so
                if v == "uniform":
                    parts.append("k~U(S)")
                continue
            short = SHORT.get(k, k.split(".")[-1] if k.startswith("method.") else k)
            parts.append(f"{short}={format_value(v)}")
        g.label = " ".join(parts)


def _varies(key: str, groups: Sequence[RunGroup]) -> bool:
    """Whether ``key`` tells groups apart: two values where it is set, or (outside the method section,
    whose options come and go with the method) set in some groups only."""
    present = [g.settings[key] for g in groups if key in g.settings]
    distinct = {json.dumps(v, sort_keys=True, default=str) for v in present}
    return len(distinct) > 1 or (not key.startswith("method.") and 0 < len(present) < len(groups))


def _disambiguate(groups: list[RunGroup]) -> None:
    seen: dict[str, int] = {}
    for g in groups:
        seen[g.label] = seen.get(g.label, 0) + 1
    for g in groups:
        if seen[g.label] > 1:
            g.label = f"{g.label} ({g.runs[0].path.name})"
