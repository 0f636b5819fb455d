"""Train a model from a YAML config, with dotted key=value overrides.

  batchaug train configs/quick/cifar10_resnet20.yaml method.name=ba method.m=4 --out runs/ba
  batchaug train --resume runs/ba                      continue an interrupted run from last.pt
  batchaug train CONFIG --sweep method.eta=0,1e-3,0.1 --out runs/eta
                                                       one run per value, in runs/eta/<key>=<value>/
                                                       (shorthand for batchaug sweep: reruns skip finished
                                                       points and resume interrupted ones)

Overrides may stand before or after the options (CONFIG --out DIR key=value works); later ones win.

The run directory receives config.yaml (the fully resolved config), metrics.jsonl (one JSON object per
evaluation), last.pt and best.pt (checkpoints), summary.json and, with tensorboard installed, events.
Multi-GPU / multi-process: torchrun --nproc_per_node N -m batchaug train CONFIG --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from batchaug.errors import ConfigError

# batchaug.config (and everything that does training) is imported inside the functions below:
# it loads torch, and building the parser for ``batchaug --help`` must not.


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config file (optional with --resume)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. method.m=4 train.max_steps=200 data.subset=10000")
    parser.add_argument("--out", type=Path, help="run directory to create (required unless --resume)")
    parser.add_argument("--resume", type=Path, metavar="DIR", help="continue the run in DIR from DIR/last.pt")
    parser.add_argument("--sweep", action="append", default=[], metavar="key=v1,v2,...",
                        help="train once per value (repeatable: the grid of all combinations)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def _split_positionals(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def run(args: argparse.Namespace) -> int:
    from batchaug.config import apply_overrides, dump_config, load_yaml, resolve_config
    from batchaug.train.run import train_run

    config, overrides = _split_positionals(args)
    if args.resume is not None:
        run_dir = args.resume
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it a run directory?")
        if not (run_dir / "last.pt").is_file():
            raise ConfigError(f"--resume {run_dir}: no last.pt there (the run never reached its first evaluation)")
        raw = apply_overrides(load_yaml(run_dir / "config.yaml"), overrides)
        cfg = resolve_config(raw)
        summary = train_run(cfg, run_dir, resume=True)
        print(json.dumps(summary, indent=2))
        return 0
    if config is None:
        raise ConfigError("give a config file (e.g. configs/quick/cifar10_resnet20.yaml) or --resume DIR")
    raw = apply_overrides(load_yaml(config), overrides)
    if args.print_config:
        print(dump_config(resolve_config(raw)), end="")
        return 0
    if args.out is None:
        raise ConfigError("--out DIR is required: where the run directory is written")
    if args.sweep:
        return _run_sweep(config, overrides, args.sweep, args.out)
    summary = train_run(resolve_config(raw), args.out)
    print(json.dumps(summary, indent=2))
    return 0


def _run_sweep(config: str, overrides: list[str], specs: list[str], out: Path) -> int:
    """``--sweep key=v1,v2`` is ``batchaug sweep CONFIG overrides key=v1,v2 --out OUT``, except that every
    ``--sweep`` key names the point directories, even with one value."""
    from batchaug.train.sweep import Sweep, format_records, run_sweep

    sweep = Sweep.from_specs(config, overrides, specs, out)
    records = run_sweep(sweep)
    print(format_records(sweep, records))
    return 0
