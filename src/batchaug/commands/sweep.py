"""Run a grid of configurations one after another; run it again to finish what a kill interrupted.

  batchaug sweep configs/quick/cifar10_resnet20.yaml method.name=ba method.m=1,2,4 --seeds 0,1 --out runs/m
  batchaug sweep CONFIG method.eta=0,0.01,0.1 train.max_steps=500 --out runs/eta --print

Every key=v1,v2,... with several values is an axis of the grid (commas inside [...] or {...} do not
split: method={name: baseline},{name: ba, m: 4} sweeps whole sections); a single value applies to every
point. --seeds 0,1,2 adds the axis seed. key=value may stand before or after the options. Each point
is a run directory named by its axis values (runs/m/method.m=2,seed=1/). A second invocation skips
finished points (summary.json), resumes interrupted ones from last.pt and restarts points killed
before their first checkpoint: after a kill -9 it finishes the grid and redoes nothing. At the end
OUT/sweep.json lists every point's overrides, run directory and summary.
--print writes the command lines instead (batchaug train ones, and torchrun ones for a cluster).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from batchaug.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("overrides", nargs="*", metavar="key=v1,v2,...",
                        help="overrides; several comma-separated values make an axis of the grid")
    parser.add_argument("--seeds", metavar="S1,S2,...", help="seeds to run every point with (an axis 'seed')")
    parser.add_argument("--out", type=Path, required=True, help="sweep directory: one run directory per point")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the command lines of the points instead of running them")
    parser.add_argument("--nproc-per-node", type=int, default=8, metavar="N",
                        help="processes per run in the printed torchrun lines (default 8)")


def run(args: argparse.Namespace) -> int:
    from batchaug.train.distributed import launch_rank
    from batchaug.train.sweep import Sweep, format_records, run_sweep

    if "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        raise ConfigError(f"sweep: the first argument must be the config file, got {args.config!r}")
    sweep = Sweep.from_tokens(args.config, args.overrides, args.out, args.seeds)
    if args.print_only:
        if args.nproc_per_node < 1:
            raise ConfigError(f"--nproc-per-node: must be >= 1, got {args.nproc_per_node}")
        print(f"# {len(sweep.points)} runs, one process each")
        print("\n".join(sweep.command_lines()))
        print(f"# the same runs with torchrun, {args.nproc_per_node} processes each (resume one with "
              "batchaug train --resume DIR)")
        print("\n".join(sweep.command_lines(args.nproc_per_node)))
        return 0
    records = run_sweep(sweep)
    if sweep.axes and launch_rank() == 0:  # under torchrun, one table
        print(format_records(sweep, records))
    return 0
