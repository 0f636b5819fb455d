"""Figures and the papers' tables from run directories and sweep directories.

  batchaug report runs/m_sweep --out runs/report         every run under a sweep directory
  batchaug report runs/base runs/ba runs/ra --out runs/fig5 --labels baseline,BA,RA
  batchaug report runs/ba                                one run (written into runs/ba/)

Runs that differ only by seed are one group (mean ± std, n); groups are labelled by what differs
between them (method, M, η, layer k, ...). Writes DIR/table.md (a Runs table and each paper's table the
runs fill, with the published numbers of the configs' paper: blocks beside), DIR/report.md (the tables,
the figures inline, the run directory of every number, and what was skipped) and DIR/plots/*.png with
DIR/plots/figures.json (what each figure shows): validation error against steps and epochs, gradient
norm against epochs, training and validation error, SBA accuracy against η and cost ratio against the
layer k, the split-BN α trade-off, and the figures of every run's eval/*.json.
Reads only config.yaml, metrics.jsonl, summary.json and eval/*.json; runs lacking some of them are drawn
as far as they go.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchaug.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories or sweep directories")
    parser.add_argument("--out", type=Path, help="output folder (default: the single run's directory)")
    parser.add_argument("--labels", help="comma-separated labels, one per DIR (default: what differs between runs)")
    parser.add_argument("--title", default="batchaug report", help="heading of report.md and table.md")
    parser.add_argument("--json", action="store_true", help="print the groups' numbers as JSON")


def run(args: argparse.Namespace) -> int:
    from batchaug.report import build_report

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if args.out is None:
        if len(args.runs) > 1 or not (args.runs[0] / "metrics.jsonl").is_file():
            raise ConfigError("--out DIR is required unless the report is of one run directory")
    out = args.out or args.runs[0]
    report = build_report(args.runs, out, labels, title=args.title)
    if args.json:
        print(json.dumps([{"label": g.label, "n": g.n, "runs": [str(r.path) for r in g.runs],
                           "settings": g.differs, "summaries": [r.summary for r in g.runs]}
                          for g in report.groups], indent=2, default=str))
        return 0
    print(report.tables[0].markdown())
    for f in report.figures:
        print(f"wrote {out / 'plots' / f.file}")
    for s in report.skipped:
        print(f"skipped: {s}")
    print(f"wrote {report.table_md} and {report.report_md}")
    return 0
