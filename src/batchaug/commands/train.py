"""Train a model from a YAML config, with dotted key=value overrides.

  batchaug train configs/quick/cifar10_resnet20.yaml method.name=ba method.m=4 --out runs/ba
  batchaug train --resume runs/ba                      continue an interrupted run from last.pt
  batchaug train --resume runs/ba train.max_steps=2000 continue it further (what may change: docs/reliability.md)
  batchaug train CONFIG --out runs/ba --restart        start over a run killed before its first checkpoint
  batchaug train CONFIG --sweep method.eta=0,1e-3,0.1 --out runs/eta
                                                       one run per value, in runs/eta/<key>=<value>/
  batchaug train CONFIG --sweep method.m=2,4 --out runs/m --print
                                                       print each point's command instead (SLURM, torchrun)

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
        for line in sweep_commands(config, overrides, args.sweep, args.out):
            print(line)
        return 0
    if not args.sweep:
        summary = train_run(resolve_config(raw), args.out, restart=args.restart)
        _print_summary(summary)
        return 0
    if args.restart:
        raise ConfigError("--restart applies to one run directory, not to a --sweep")
    return _run_sweep(raw, args.sweep, args.out)


def _is_first_process() -> bool:
    """Whether this is torchrun's rank 0 (or no torchrun): the one process that reports, as it is the one
    that writes the run directory."""
    from batchaug.train.distributed import launch_rank

    return launch_rank() == 0


def _print_summary(summary: dict) -> None:
    if _is_first_process():
        print(json.dumps(summary, indent=2))


def sweep_commands(config: str, overrides: list[str], specs: list[str], out: Path) -> list[str]:
    """One ``batchaug train`` command per sweep point (the run itself without ``--sweep``), each writing
    the directory the sweep would: ``out/<key>=<value>,...``. Every point is validated first."""
    import shlex

    from batchaug.config import apply_overrides, load_yaml, resolve_config

    raw = apply_overrides(load_yaml(config), overrides)
    grid = _sweep_grid(specs) if specs else [[]]
    lines = []
    for combo in grid:
        resolve_config(apply_overrides(raw, combo))
        where = out / ",".join(combo).replace("/", "_") if combo else out
        lines.append(shlex.join(["batchaug", "train", config, *overrides, *combo, "--out", str(where)]))
    return lines


def _sweep_grid(specs: list[str]) -> list[list[str]]:
    grid: list[list[str]] = [[]]
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--sweep {spec!r} must look like key=v1,v2,...")
        key, values = spec.split("=", 1)
        items = [v for v in values.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"--sweep {spec!r} lists no values")
        grid = [g + [f"{key}={v.strip()}"] for g in grid for v in items]
    return grid


def _run_sweep(raw: dict, specs: list[str], out: Path) -> int:
    from batchaug.config import apply_overrides, parse_override, resolve_config
    from batchaug.train.distributed import joined, launch_world_size
    from batchaug.train.run import resolve_device, train_run

    grid = _sweep_grid(specs)
    configs = []
    for combo in grid:  # validate every point before training any
        configs.append((combo, resolve_config(apply_overrides(raw, combo))))
    devices = {str(resolve_device(cfg.train.device)) for _, cfg in configs}
    if len(devices) > 1 and launch_world_size() > 1:  # under torchrun the points share one process group
        raise ConfigError(f"--sweep: the points train on different devices ({', '.join(sorted(devices))}); "
                          "sweep train.device in separate commands")
    results = []
    with joined(resolve_device(configs[0][1].train.device)):  # one process group for every point (torchrun)
        for combo, cfg in configs:
            name = ",".join(combo).replace("/", "_")
            if _is_first_process():
                print(f"== sweep point {name}", flush=True)
            summary = train_run(cfg, out / name)
            results.append({"overrides": {c.split("=", 1)[0]: parse_override(c)[1]
                                          for c in combo}, "run_dir": str(out / name), **summary})
    if not _is_first_process():  # under torchrun: rank 0 writes sweep.json and the table
        return 0
    from batchaug.io import write_json

    write_json(out / "sweep.json", results)
    keys = [c.split("=", 1)[0] for c in grid[0]]
    print("\t".join(keys + ["final_val_acc", "median_last5_val_acc", "best_val_acc"]))
    for r in results:
        vals = [str(r["overrides"][k]) for k in keys]
        print("\t".join(vals + [_fmt(r.get("final_val_acc")), _fmt(r.get("median_last5_val_acc")),
                                _fmt(r.get("best_val_acc"))]))
    return 0


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"
