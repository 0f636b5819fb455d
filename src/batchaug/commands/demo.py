"""The main job: baseline vs Batch Augmentation (M=4) on the shared CIFAR-10, same number of SGD steps.

  batchaug demo --out runs/demo

Trains ResNet-20 twice from configs/quick/cifar10_resnet20.yaml (or --config), once with one view
per sample and once with M views per sample, prints a table (validation accuracy, steps, images seen,
images/s, wall time) and writes runs/demo/report.md with both validation curves in runs/demo/plots/.
Extra key=value overrides apply to both runs (e.g. train.max_steps=300 data.subset=5000).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from batchaug.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to both runs")
    parser.add_argument("--config", type=Path, default=Path("configs/quick/cifar10_resnet20.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--m", type=int, default=4, help="views per sample of the BA run")
    parser.add_argument("--force", action="store_true", help="overwrite earlier demo runs in --out")


def run(args: argparse.Namespace) -> int:
    import shutil

    from batchaug.config import apply_overrides, load_yaml, resolve_config
    from batchaug.report.curves import format_table, plot_runs, runs_table
    from batchaug.train.run import train_run

    if not args.config.is_file():
        raise ConfigError(f"--config {args.config} not found (run from the repository root, or pass --config)")
    raw = load_yaml(args.config)
    runs = {"baseline": ["method.name=baseline"], f"ba_m{args.m}": ["method.name=ba", f"method.m={args.m}"]}
    cfgs = {name: resolve_config(apply_overrides(raw, list(args.overrides) + extra)) for name, extra in runs.items()}
    dirs = []
    for name, cfg in cfgs.items():
        d = args.out / name
        if d.exists() and args.force:
            shutil.rmtree(d)
        print(f"== training {name} ({cfg.model.name}, method {cfg.method.name}) -> {d}")
        train_run(cfg, d)
        dirs.append(d)
    rows = runs_table(dirs, list(runs))
    written = plot_runs(dirs, args.out / "plots", list(runs))
    table = format_table(rows)
    (args.out / "report.md").write_text(
        "# Batch Augmentation vs baseline\n\n" + table + "\n\n"
        + "\n".join(f"![{p.stem}](plots/{p.name})" for p in written) + "\n")
    print()
    print(table)
    print(f"\nreport: {args.out / 'report.md'}  plots: {args.out / 'plots'}")
    return 0


