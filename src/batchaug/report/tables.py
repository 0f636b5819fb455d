"""``table.md``: the runs' numbers in each paper's table format, beside the published ones.

- **Runs**: every group (runs differing only by seed) with mean ± std (n) of its headline accuracy,
  steps, images seen, throughput and wall time;
- **BA Table 1**: baseline / BA (M) accuracy per network, the step at which BA first reaches the
  baseline's final validation accuracy, and regime adaptation (RA) beside BA at the same M;
- **SBA Table 1**: top-1 error of baseline, cutout, cutout + BA and SBA, and SBA's relative improvement;
- **Split-BN Table 2** (accuracy of Standard, Cutout, AA, RA, Weak Augment) and **Table 5** (uCE).

A paper table's "paper" columns come from the ``paper:`` block in the runs' ``config.yaml`` (the row the
config reproduces, or one of its ``also`` rows); runs without one get "—" there. Every table says which
summary key its numbers are, and the **Sources** table names each group's run directories.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchaug.report.groups import RunGroup, format_value, is_perplexity, method_p

__all__ = ["PAPER_TABLES", "Table", "build_tables", "fmt_key", "fmt_stat", "paper_row"]


@dataclass
class Table:
    """A Markdown table with a heading and notes."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def fmt_stat(mean: float | None, sd: float | None, n: int, scale: float = 100.0, digits: int = 2,
             error: bool = False) -> str:
    """``93.70 ± 0.12 (n=2)`` from a mean of fractions (``error``: 100 − 100·mean)."""
    if mean is None:
        return "—"
    value = (100.0 - scale * mean) if error else scale * mean
    text = f"{value:.{digits}f}"
    if sd is not None:
        text += f" ± {scale * sd:.{digits}f}"
    return text + (f" (n={n})" if n > 1 else "")


def _num(v: Any, digits: int = 2) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def paper_row(group: RunGroup | None, paper: str, table: str) -> dict[str, Any] | None:
    """The row ``table`` of ``paper`` in the group's ``paper:`` block (its own row or an ``also`` row)."""
    block = group.paper if group is not None else None
    if not block or block.get("paper") != paper:
        return None
    rows = ([] if block.get("extra") else [block]) + [r for r in block.get("also") or [] if isinstance(r, dict)]
    return next((r for r in rows if r.get("table") == table), None)


def _network(g: RunGroup) -> str:
    s = g.settings
    images = s.get("data.subset")
    return (f"{s.get('model.name', '?')}, {s.get('data.kind', '?')}"
            + (f" ({images} train images)" if images else ""))


def _steps(g: RunGroup) -> str:
    mean, _, _ = g.stat("steps")
    unfinished = " (unfinished)" if not all(r.finished for r in g.runs) else ""
    return "—" if mean is None else f"{mean:.0f}{unfinished}"


def _same_training(a: RunGroup, b: RunGroup) -> bool:
    """Same settings outside the method section (model, data, optimizer, length...)."""
    strip = {k: v for k, v in a.settings.items() if not k.startswith("method.")}
    return strip == {k: v for k, v in b.settings.items() if not k.startswith("method.")}


def _policy(g: RunGroup) -> str:
    return format_value(g.settings.get("method.policy", ""))


def _is_baseline(g: RunGroup) -> bool:
    return g.method == "baseline" or (g.method in ("ba", "ra") and g.settings.get("method.m") == 1)


def fmt_key(group: RunGroup | None, key: str) -> str:
    """``fmt_stat`` of a summary key over a group: accuracies in %, perplexities as they are."""
    if group is None:
        return "—"
    return fmt_stat(*group.stat(key), scale=1.0) if is_perplexity(key) else fmt_stat(*group.stat(key))


def _measures(groups: Sequence[RunGroup], keys: Sequence[str]) -> bool:
    return any(g.values(k) for g in groups for k in keys)


def runs_table(groups: Sequence[RunGroup]) -> Table:
    """Every group: headline accuracy (mean ± std, n), best, steps, images seen, throughput, wall time; for
    language models validation and test perplexity (and no accuracy columns when no run measured one)."""
    with_acc = _measures(groups, ("final_val_acc", "final_test_acc", "best_val_acc"))
    with_ppl = _measures(groups, ("final_val_ppl", "best_val_ppl", "test_ppl"))
    if not with_ppl:
        with_acc = True  # runs without numbers at all still show the accuracy columns, as "—"
    rows = []
    keys = set()
    for g in groups:
        row = [g.label, str(g.n)]
        if with_acc:
            key = g.acc_key()
            if is_perplexity(key):
                key = "final_val_acc"  # a language model among image runs: its perplexity has its own columns
            keys.add(key)
            row += [fmt_key(g, key), fmt_key(g, "best_val_acc")]
        if with_ppl:
            row += [fmt_key(g, k) for k in ("final_val_ppl", "best_val_ppl", "test_ppl")]
        wall, wall_sd, _ = g.stat("wall_time")
        row += [_steps(g), _num(g.stat("images_seen")[0], 0) if g.stat("images_seen")[0] is not None else "—",
                _num(g.stat("views_per_s")[0], 0), _num(g.stat("images_per_s")[0], 0),
                "—" if wall is None else f"{wall:.0f}" + (f" ± {wall_sd:.0f}" if wall_sd is not None else ""),
                "yes" if all(r.finished for r in g.runs) else "no"]
        rows.append(row)
    notes = []
    if with_acc:
        notes.append(f"accuracy: summary.json `{'`, `'.join(sorted(keys))}` (%), mean ± sample std over the runs of "
                     "a group (they differ only by seed); best: `best_val_acc`.")
    if with_ppl:
        notes.append("perplexity (lower is better): summary.json `final_val_ppl`, `best_val_ppl` (the lowest "
                     "validation perplexity) and `test_ppl` (best.pt on the test split, eval/perplexity.json), "
                     "mean ± sample std over a group's seeds.")
    notes.append("images seen: samples drawn per step × steps (each seen M times by BA); views/s: median training "
                 "throughput in views; images/s: images seen over wall time; wall time: summary.json `wall_time`, "
                 "the training time (evaluation and data loading not included).")
    if any(not r.finished for g in groups for r in g.runs):
        notes.append("finished = no: a run without summary.json (still running or interrupted); its numbers are "
                     "its last evaluation line.")
    header = ["run", "n"]
    if with_acc:
        header += ["accuracy (%)", "best val acc (%)"]
    if with_ppl:
        header += ["val ppl", "best val ppl", "test ppl"]
    header += ["steps", "images seen", "views/s", "images/s", "wall time (s)", "finished"]
    return Table("Runs", header, rows, notes)


def _first_step_reaching(g: RunGroup, target: float, metric: str = "val_acc") -> float | None:
    """The first evaluation step at which the group's mean ``metric`` is at least as good as ``target``
    (higher accuracy, or lower perplexity)."""
    for step, mean, _, _ in g.curve(metric, "step"):
        if (mean <= target) if is_perplexity(metric) else (mean >= target):
            return step
    return None


def ba_table(groups: Sequence[RunGroup]) -> Table | None:
    """BA Table 1: baseline / BA (M) per network, with the step at which BA reaches the baseline's final
    validation accuracy; RA at the same M beside."""
    bas = [g for g in groups if g.method == "ba" and (g.settings.get("method.m") or 1) > 1]
    if not bas:
        return None
    rows, has_paper, any_ppl = [], False, False
    for ba in bas:
        bases = [b for b in groups if _is_baseline(b) and _same_training(b, ba)]
        base = next((b for b in bases if _policy(b) == _policy(ba)), bases[0] if bases else None)
        ras = [r for r in groups if r.method == "ra" and r.settings.get("method.m") == ba.settings.get("method.m")
               and _same_training(r, ba)]
        paper = paper_row(ba, "ba", "Table 1") or paper_row(base, "ba", "Table 1")
        pv = (paper or {}).get("values", {})
        has_paper = has_paper or bool(paper)
        key = ba.acc_key()
        ppl = is_perplexity(key)
        any_ppl = any_ppl or ppl
        curve_key = "val_ppl" if ppl else "val_acc"
        reach = "—"
        if base is not None:
            target, _, _ = base.stat(f"final_{curve_key}")
            step = _first_step_reaching(ba, target, curve_key) if target is not None else None
            total = ba.stat("steps")[0]
            reach = "not reached" if step is None else f"{step:.0f} of {total:.0f}" if total else f"{step:.0f}"
        b_mean, _, _ = base.stat(key) if base else (None, None, 0)
        a_mean, _, _ = ba.stat(key)
        delta = "—" if b_mean is None or a_mean is None else f"{(1 if ppl else 100) * (a_mean - b_mean):+.2f}"
        rows.append([_network(ba), _policy(ba), _steps(ba), fmt_key(base, key),
                     _num(pv.get("baseline")), str(ba.settings.get("method.m")), fmt_key(ba, key),
                     _num(pv.get("ba")) + (f" (M={format_value(pv['m'])})" if "m" in pv else ""), delta, reach,
                     fmt_key(ras[0], key) if ras else "—", (paper or {}).get("row", "—")])
    notes = ["baseline: one view per sample (the baseline method, or BA with M = 1), trained like the BA run "
             "otherwise; accuracy as in the Runs table (%); Δ: BA − baseline (percentage points).",
             "reaches: the first evaluation step at which BA's mean validation accuracy is at least the "
             "baseline's final one.",
             "RA: regime adaptation at the same M (B·M distinct images per step, the same number of steps)."]
    if any_ppl:
        notes.append("language-model rows: perplexity (lower is better) instead of accuracy, Δ in perplexity, "
                     "and 'reaches' is the first step at which BA's validation perplexity is at most the "
                     "baseline's final one.")
    if has_paper:
        notes.append("paper: the published Table 1 row of the runs' config (`paper:` block); it is the paper's "
                     "network and regime, not necessarily this run's.")
    return Table("BA Table 1: baseline / BA (M)",
                 ["network", "policy", "steps", "baseline", "paper", "M", "BA", "paper", "Δ (pp)",
                  "BA reaches baseline's final at step", "RA (same M)", "paper row"], rows, notes)


def _role(groups: Sequence[RunGroup], main: RunGroup, pick: Callable[[RunGroup], bool]) -> RunGroup | None:
    """The group trained like ``main`` (outside the method) that ``pick`` accepts, one with ``main``'s M first."""
    found = [g for g in groups if g is not main and _same_training(g, main) and pick(g)]
    found.sort(key=lambda g: g.settings.get("method.m") != main.settings.get("method.m"))
    return found[0] if found else None


def _has_policy(g: RunGroup, name: str) -> bool:
    return name in _policy(g)


def sba_table(groups: Sequence[RunGroup]) -> Table | None:
    """SBA Table 1: top-1 error (%) of baseline, cutout, cutout + BA and SBA; SBA's relative improvement."""
    # SBA proper (p < 1; p = 1 is batch augmentation in latent space), and the layer study's fixed-layer
    # runs only when there is no run drawing k from S
    sbas = [g for g in groups if g.method == "sba" and (method_p(g.settings) or 0) < 1]
    uniform = [g for g in sbas if g.settings.get("method.layer_choice") != "fixed"]
    sbas = uniform or sbas
    if not sbas:
        return None
    roles: list[tuple[str, str, Callable[[RunGroup], bool]]] = [
        ("baseline", "baseline", lambda g: _is_baseline(g) and _policy(g) == "standard"),
        ("cutout", "cutout", lambda g: _is_baseline(g) and _policy(g) == "cutout"),
        ("cutout + BA", "cutout_ba", lambda g: g.method == "ba" and _policy(g) == "cutout"
         and (g.settings.get("method.m") or 1) > 1),
        ("BA", "", lambda g: g.method == "ba" and _policy(g) != "cutout" and (g.settings.get("method.m") or 1) > 1),
    ]
    rows = []
    for sba in sbas:
        paper = paper_row(sba, "sba", "Table 1")
        pv = (paper or {}).get("values", {})
        key = sba.acc_key()
        row = [_network(sba), _steps(sba)]
        base_err = None
        for _, pkey, pick in roles:
            g = _role(groups, sba, pick)
            stat = g.stat(g.acc_key()) if g else (None, None, 0)
            if pkey == "baseline" and stat[0] is not None:
                base_err = 100 * (1 - stat[0])
            row += [fmt_stat(*stat, error=True) + (f" [{g.label}]" if g and pkey == "" else ""),
                    _num(pv.get(pkey)) if pkey else "—"]
        mean, sd, n = sba.stat(key)
        row += [fmt_stat(mean, sd, n, error=True), _num(pv.get("sba")) + (f" (M={format_value(pv['m'])})"
                                                                          if "m" in pv else "")]
        rel = "—"
        if base_err and mean is not None:
            rel = f"{100 * (base_err - 100 * (1 - mean)) / base_err:.2f}"
        row += [rel, _num(pv.get("relative_improvement")), sba.label, (paper or {}).get("row", "—")]
        rows.append(row)
    header = ["network", "steps", "baseline", "paper", "cutout", "paper", "cutout + BA", "paper", "BA", "paper",
              "SBA", "paper", "relative improvement (%)", "paper", "SBA run", "paper row"]
    notes = ["top-1 error (%) = 100 − accuracy, accuracy as in the Runs table (the paper's number is the median "
             "over the final 5 epochs, `median_last5_test_acc`, where the config's paper block says so).",
             "relative improvement: (baseline error − SBA error) / baseline error; references are runs trained "
             "like the SBA run apart from the method (blank when there is none)."]
    return Table("SBA Table 1: top-1 error (%)", header, rows, notes)


def _uce(g: RunGroup | None, mode: str) -> tuple[float | None, float | None, int]:
    if g is None:
        return None, None, 0
    vals = []
    for r in g.runs:
        res = (r.eval_results.get("corruptions") or {}).get("modes", {}).get(mode) or {}
        if isinstance(res.get("uCE"), (int, float)):
            vals.append(float(res["uCE"]))
    if not vals:
        return None, None, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None), len(vals)


def splitbn_tables(groups: Sequence[RunGroup]) -> list[Table]:
    """Split-BN Table 2 (accuracy, %) and Table 5 (uCE, %) for every split-BN group."""
    sbns = [g for g in groups if g.method == "splitbn"]
    if not sbns:
        return []
    roles = [("Standard", "standard", lambda g: _is_baseline(g) and _policy(g) == "standard"),
             ("Cutout", "cutout", lambda g: _is_baseline(g) and _policy(g) == "cutout"),
             ("AA", "aa", lambda g: _is_baseline(g) and _has_policy(g, "autoaugment")),
             ("RA", "ra", lambda g: _is_baseline(g) and _has_policy(g, "randaugment"))]
    t2, t5 = [], []
    for sbn in sbns:
        p2, p5 = paper_row(sbn, "splitbn", "Table 2"), paper_row(sbn, "splitbn", "Table 5")
        v2, v5 = (p2 or {}).get("values", {}), (p5 or {}).get("values", {})
        row = [_network(sbn), _steps(sbn)]
        found = {}
        for _, pkey, pick in roles:
            g = _role(groups, sbn, pick)
            found[pkey] = g
            row += [fmt_stat(*g.stat(g.acc_key())) if g else "—", _num(v2.get(pkey), 1)]
        row += [fmt_stat(*sbn.stat(sbn.acc_key())), _num(v2.get("weak_augment"), 1), sbn.label,
                (p2 or {}).get("row", "—")]
        t2.append(row)
        cells = [_uce(found["standard"], "default"), _uce(found["ra"], "default"), _uce(sbn, "main")]
        if any(c[0] is not None for c in cells):
            t5.append([_network(sbn), fmt_stat(*cells[0]), _num(v5.get("standard"), 1), fmt_stat(*cells[1]),
                       _num(v5.get("ra"), 1), fmt_stat(*cells[2]), _num(v5.get("weak_augment_main"), 1), sbn.label,
                       (p5 or {}).get("row", "—")])
    out = [Table("Split-BN Table 2: accuracy (%)",
                 ["network", "steps", "Standard", "paper", "Cutout", "paper", "AA", "paper", "RA", "paper",
                  "Weak Augment (split BN)", "paper", "split-BN run", "paper row"], t2,
                 ["Standard / Cutout / AA / RA: single-BN runs with that policy, trained like the split-BN run; "
                  "Weak Augment: the split-BN run (weak policy on the main BN, strong on the auxiliary BN), "
                  "evaluated with its main BN during training."])]
    if t5:
        out.append(Table("Split-BN Table 5: uCE (%)",
                         ["network", "Standard", "paper", "RA", "paper", "Weak Augment (main BN)", "paper",
                          "split-BN run", "paper row"], t5,
                         ["uCE: the mean error over the 15 benchmark corruptions × 5 severities of "
                          "eval/corruptions.json (mode `default` of the single-BN runs, `main` of the split-BN run), "
                          "as `batchaug eval RUN --suite corruptions` wrote it; the image count is the file's "
                          "`limit`."]))
    return out


def sources_table(groups: Sequence[RunGroup], root: Path | None = None) -> Table:
    """Which run directories every group's numbers come from."""
    def rel(p: Path) -> str:
        if root is not None:
            try:
                return str(p.resolve().relative_to(root.resolve()))
            except ValueError:
                pass
        return str(p)

    rows = [[g.label, str(g.n), ", ".join(str(s) for s in g.seeds), "<br>".join(f"`{rel(r.path)}`" for r in g.runs)]
            for g in groups]
    return Table("Sources", ["run", "n", "seeds", "run directories"], rows)


#: The paper-format tables, in order: function(groups) -> tables (none when the runs hold no such rows).
PAPER_TABLES: list[Callable[[Sequence[RunGroup]], list[Table]]] = [
    lambda g: [t] if (t := ba_table(g)) else [],
    lambda g: [t] if (t := sba_table(g)) else [],
    splitbn_tables,
]


def build_tables(groups: Sequence[RunGroup], root: Path | None = None) -> list[Table]:
    """The Runs table, every paper table the runs fill, and the Sources table."""
    tables = [runs_table(groups)]
    for make in PAPER_TABLES:
        tables += make(groups)
    return tables + [sources_table(groups, root)]
