"""The main job: baseline vs Batch Augmentation (M=4) on the shared CIFAR-10, same number of SGD steps.

  batchaug demo --out runs/demo

Trains ResNet-20 twice from configs/quick/cifar10_resnet20.yaml (or --config), once with one view
per sample and once with M views per sample, prints a table (validation accuracy, steps, images seen,
images/s, wall time) and writes runs/demo/table.md and runs/demo/report.md through batchaug report
(BA Table 1's baseline / BA (M), the step at which BA reaches the baseline's final accuracy, titled
figures of validation error, gradient norm and training error in runs/demo/plots/).
Extra key=value overrides apply to both runs (e.g. train.max_steps=300 data.subset=5000).
The data is the CIFAR-10 JPEG archive at ../shared/data/cifar10-jpeg.zip (relative to the working
directory); elsewhere point at CIFAR-10 with data.root=PATH (the archive, an ImageFolder tree, or
torchvision's cifar-10-batches-py with data.kind=cifar10), or let torchvision download it on a machine
with internet: data.kind=cifar10 data.root=null data.download=true.
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
    from batchaug.errors import DataError
    from batchaug.report import build_report
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
        try:
            train_run(cfg, d)
        except DataError as exc:
            raise DataError(f"{exc}\n{_DATA_HINT}") from None
        dirs.append(d)
    report = build_report(dirs, args.out, title=f"Batch Augmentation (M={args.m}) vs baseline",
                          intro="`batchaug demo`: ResNet-20, the same number of SGD steps of the same batch "
                          "size; BA draws M augmented views of each sample.")
    print()
    for table in report.tables[:2]:
        print(table.markdown())
    print(f"report: {report.report_md}  tables: {report.table_md}  plots: {args.out / 'plots'}")
    return 0


_DATA_HINT = ("Point the demo at CIFAR-10: data.root=PATH (the cifar10-jpeg.zip archive, an ImageFolder tree of "
              "train/ and test/, or torchvision's cifar-10-batches-py with data.kind=cifar10), or data.root=null with "
              "$BATCHAUG_DATA set to the folder holding cifar10-jpeg.zip; with internet, "
              "data.kind=cifar10 data.root=null data.download=true downloads torchvision's copy.")
