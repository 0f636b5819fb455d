"""Draw figures and a summary table from one or more run directories.

  batchaug report runs/baseline runs/ba --out runs/report
  batchaug report runs/ba                      (figures go to runs/ba/plots/)

Writes plots/val_acc.png (or val_ppl.png for language models), val_loss.png, train_loss.png,
grad_norm.png (curves of all runs against the optimizer step; a metric no run measured is skipped), the
figures of what `batchaug eval` wrote in each run's eval/ (corruption errors, the split-BN alpha
trade-off, Fourier heatmaps, low-pass curves, gradient norms against M) and report.md (a table:
validation accuracy or perplexity, steps, images seen, images/s, wall time, then the figures).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchaug.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="run directories")
    parser.add_argument("--out", type=Path, help="output folder (default: the single run's directory)")
    parser.add_argument("--labels", help="comma-separated labels, one per run (default: folder names)")
    parser.add_argument("--x", default="step", choices=["step", "epoch", "images_seen", "wall_time"],
                        help="x axis of the curves")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")


def run(args: argparse.Namespace) -> int:
    from batchaug.report.curves import format_table, plot_runs, runs_table
    from batchaug.report.suites import plot_eval_results

    for r in args.runs:
        if not (r / "metrics.jsonl").is_file():
            raise ConfigError(f"{r} is not a run directory: {r / 'metrics.jsonl'} is missing")
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise ConfigError(f"--labels: {len(labels)} labels for {len(args.runs)} runs")
    if args.out is None and len(args.runs) > 1:
        raise ConfigError("--out DIR is required when reporting several runs")
    out = args.out or args.runs[0]
    written = plot_runs(args.runs, out / "plots", labels, x=args.x)
    written += plot_eval_results(args.runs, out / "plots", labels)
    rows = runs_table(args.runs, labels)
    table = format_table(rows)
    (out / "report.md").write_text("# batchaug report\n\n" + table + "\n\n"
                                   + "\n".join(f"![{p.stem}](plots/{p.name})" for p in written) + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table)
        for p in written:
            print(f"wrote {p}")
    return 0
