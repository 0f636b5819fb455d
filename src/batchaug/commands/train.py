"""Train a model from a YAML config, with dotted key=value overrides.

  batchaug train configs/quick/cifar10_resnet20.yaml method.name=ba method.m=4 --out runs/ba
  batchaug train --resume runs/ba                      continue an interrupted run from last.pt
  batchaug train --resume runs/ba train.max_steps=2000 continue it further (what may change: docs/reliability.md)
  batchaug train CONFIG --out runs/ba --restart        start over a run killed before its first checkpoint
  batchaug train CONFIG --sweep method.eta=0,1e-3,0.1 --out runs/eta
                                                       one run per value, in runs/eta/<key>=<value>/
  batchaug train CONFIG --sweep method.m=2,4 --out runs/m --print
                                                       print each point's command instead (SLURM, torchrun)
                                                       (--sweep is shorthand for batchaug sweep: reruns skip
                                                       finished points and resume interrupted ones)

Overrides may stand before or after the options (CONFIG --out DIR key=value works); later ones win.

One process at a time writes a run directory (a second is refused, naming the first's PID); every file
in it is replaced atomically, so a kill, a full disk or a crash never leaves a directory that cannot be
evaluated or resumed. A NaN/Inf loss or gradient stops the run with exit status 3 (train.on_nonfinite).

The run directory receives config.yaml (the fully resolved config), metrics.jsonl (one JSON object per
evaluation), last.pt and best.pt (checkpoints), summary.json and, with tensorboard installed, events.
Multi-GPU / multi-process: torchrun --nproc_per_node N -m batchaug train CONFIG --out DIR
(docs/distributed.md: several nodes, SLURM, SyncBN, where the views live).
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
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the run in DIR from DIR/last.pt (from step 0 if it never wrote one)")
    parser.add_argument("--restart", action="store_true",
                        help="start the --out directory over when its run never completed a first checkpoint")
    parser.add_argument("--sweep", action="append", default=[], metavar="key=v1,v2,...",
                        help="train once per value (repeatable: the grid of all combinations)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--print", dest="print_commands", action="store_true",
                        help="print the command of every run (one line per --sweep point) instead of training: "
                             "prefix them with torchrun/srun to launch them elsewhere")


def _split_positionals(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        overrides.insert(0, config)
        config = None
    return config, overrides


def run(args: argparse.Namespace) -> int:
    from batchaug.config import apply_overrides, dump_config, load_yaml, resolve_config
    from batchaug.train.resume import load_resume_config
    from batchaug.train.run import train_run

    config, overrides = _split_positionals(args)
    if args.resume is not None:
        if config is not None:
            raise ConfigError(f"--resume {args.resume}: a resumed run keeps its own config; give key=value "
                              f"overrides only, not {config}")
        if args.restart or args.out is not None or args.sweep:
            raise ConfigError("--resume continues one run in its own directory; --out, --restart and --sweep "
                              "do not apply")
        cfg = load_resume_config(args.resume, overrides)
        summary = train_run(cfg, args.resume, resume=True)
        _print_summary(summary)
        return 0
    if config is None:
        raise ConfigError("give a config file (e.g. configs/quick/cifar10_resnet20.yaml) or --resume DIR")
    raw = apply_overrides(load_yaml(config), overrides)
    if args.print_config:
        print(dump_config(resolve_config(raw)), end="")
        return 0
    if args.out is None:
        raise ConfigError("--out DIR is required: where the run directory is written")
    if args.print_commands:
        for line in _sweep_of(config, overrides, args.sweep, args.out).command_lines():
            print(line)
        return 0
    if not args.sweep:
        summary = train_run(resolve_config(raw), args.out, restart=args.restart)
        _print_summary(summary)
        return 0
    if args.restart:
        raise ConfigError("--restart applies to one run directory, not to a --sweep (a sweep restarts the "
                          "points killed before their first checkpoint by itself)")
    return _run_sweep(config, overrides, args.sweep, args.out)


def _is_first_process() -> bool:
    """Whether this is torchrun's rank 0 (or no torchrun): the one process that reports, as it is the one
    that writes the run directory."""
    from batchaug.train.distributed import launch_rank

    return launch_rank() == 0


def _print_summary(summary: dict) -> None:
    if _is_first_process():
        print(json.dumps(summary, indent=2))


def _sweep_of(config: str, overrides: list[str], specs: list[str], out: Path):
    """The :class:`~batchaug.train.sweep.Sweep` of ``train --sweep`` (no ``--sweep``: the one run ``out``)."""
    from batchaug.train.sweep import Sweep

    return Sweep.from_specs(config, overrides, specs, out)
    return 0


def _run_sweep(config: str, overrides: list[str], specs: list[str], out: Path) -> int:
    """``--sweep key=v1,v2`` is ``batchaug sweep CONFIG overrides key=v1,v2 --out OUT``, except that every
    ``--sweep`` key names the point directories, even with one value."""
    from batchaug.train.sweep import format_records, run_sweep

    sweep = _sweep_of(config, overrides, specs, out)
    records = run_sweep(sweep)
    if _is_first_process():
        print(format_records(sweep, records))
    return 0
