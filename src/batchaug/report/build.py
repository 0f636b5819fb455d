"""``batchaug report`` as a function: run directories in, ``table.md``, ``report.md`` and ``plots/`` out.

    from batchaug.report import build_report
    report = build_report(["runs/m_sweep", "runs/ra"], "runs/report")
    report.figures          # FigureInfo of every PNG written (also in plots/figures.json)
    report.skipped          # what could not be read or drawn, and why

Reads only run directories (``config.yaml``, ``metrics.jsonl``, ``summary.json``, ``eval/*.json``) and the
``paper:`` block of their configs; imports no torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batchaug.errors import ConfigError
from batchaug.report.figures import FIGURES
from batchaug.report.groups import RunGroup, group_runs
from batchaug.report.plotting import FigureInfo
from batchaug.report.rundirs import RunDir, load_runs
from batchaug.report.suites import plot_eval_results
from batchaug.report.tables import Table, build_tables

__all__ = ["Report", "build_report"]

# what each cross-run figure needs, said when the runs do not have it
_NEEDS = {
    "val_error_steps": "val_acc in the evaluation lines of metrics.jsonl",
    "val_error_epochs": "val_acc in the evaluation lines of metrics.jsonl",
    "grad_norm_epochs": "grad_norm in metrics.jsonl",
    "train_val_error": "train_acc and val_acc in the evaluation lines",
    "sba_eta": "SBA runs that differ in method.eta (and nothing else)",
    "sba_layers": "SBA runs with method.layer_choice=fixed at two or more method.fixed_layer values",
    "alpha_tradeoff": "a split-BN run with eval/corruptions.json under two or more of main / alpha=<a> / aux "
                      "(batchaug eval RUN --suite corruptions --modes main,alpha=0.5,aux)",
}

_ACCURACY_FIGURES = ("val_error_steps", "val_error_epochs", "train_val_error")


@dataclass
class Report:
    """What :func:`build_report` read and wrote."""

    out: Path
    runs: list[RunDir]
    groups: list[RunGroup]
    tables: list[Table]
    figures: list[FigureInfo]
    skipped: list[str] = field(default_factory=list)

    @property
    def table_md(self) -> Path:
        return self.out / "table.md"

    @property
    def report_md(self) -> Path:
        return self.out / "report.md"


def build_report(paths: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
                 title: str = "batchaug report", intro: str = "") -> Report:
    """Read the run (or sweep) directories ``paths`` and write ``out/table.md``, ``out/report.md``,
    ``out/plots/*.png`` and ``out/plots/figures.json``.

    ``labels``: one per path, naming the groups found under it instead of the automatic labels.
    """
    out = Path(out)
    if labels is not None and len(labels) != len(paths):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(paths)} run or sweep directories")
    runs = load_runs(paths)
    label_map = {Path(p): text for p, text in zip(paths, labels, strict=True)} if labels else None
    groups = group_runs(runs, label_map)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    skipped = [f"{r.path}: {note}" for r in runs for note in r.missing]
    figures: list[FigureInfo] = []
    # language models measure perplexity, never accuracy: their missing accuracy figures are no omission
    only_lm = any(r.evals for r in runs) and all(
        any(e.get("val_ppl") is not None for e in r.evals) for r in runs if r.evals)
    for name, draw in FIGURES.items():
        made = draw(groups, plots)
        figures += made
        if (not made and name in _NEEDS and name not in ("sba_eta", "sba_layers", "alpha_tradeoff")
                and not (only_lm and name in _ACCURACY_FIGURES)):
            skipped.append(f"{name}.png not drawn: no run has {_NEEDS[name]}")
    per_run = []
    for g in groups:
        for r in g.runs:
            seed = (r.config or {}).get("seed")
            per_run.append((g.label + (f" seed={seed}" if g.n > 1 else ""), r.eval_results))
    suite_figs, suite_notes = plot_eval_results(per_run, plots)
    figures += suite_figs
    skipped += suite_notes
    tables = build_tables(groups, out)
    not_drawn = [f"{name}.png: needs {_NEEDS[name]}" for name in ("sba_eta", "sba_layers", "alpha_tradeoff")
                 if not only_lm and not any(f.file == f"{name}.png" for f in figures)]
    (plots / "figures.json").write_text(json.dumps([f.to_dict() for f in figures], indent=2) + "\n")
    report = Report(out, runs, groups, tables, figures, skipped)
    header = _header(report, paths, title, intro)
    report.table_md.write_text(f"# {title}: tables\n\n" + header + "\n" + "\n".join(t.markdown() for t in tables))
    body = [f"# {title}\n", header, *[t.markdown() for t in tables], "## Figures\n"]
    for f in figures:
        body.append(f"### {f.title}\n\n![{f.title}](plots/{f.file})\n\n{f.caption}\n")
    if not_drawn:
        body.append("Paper figures these runs cannot draw:\n\n" + "\n".join(f"- {n}" for n in not_drawn) + "\n")
    if skipped:
        body.append("## Skipped\n\n" + "\n".join(f"- {s}" for s in skipped) + "\n")
    report.report_md.write_text("\n".join(body))
    return report


def _header(report: Report, paths: Sequence[str | Path], title: str, intro: str) -> str:
    n_runs, n_groups = len(report.runs), len(report.groups)
    lines = [intro + "\n"] if intro else []
    lines.append(f"{n_runs} run{'s' if n_runs != 1 else ''} in {n_groups} group{'s' if n_groups != 1 else ''} "
                 "(runs differing only by seed form a group: mean ± std, n), read from "
                 + ", ".join(f"`{p}`" for p in paths) + ".\n")
    return "\n".join(lines)
