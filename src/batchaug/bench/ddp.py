"""Data-parallel scaling: training images/s and views/s of 1 and N processes, baseline and BA, in one run.

  batchaug bench ddp [--procs 2] [--m 4] [--model resnet20] [--batch 64] [--steps 8] [--device cpu|cuda] [--json]

Strong scaling, the way Batch Augmentation uses more hardware: the global step is fixed (B samples,
B·M views for BA) and split over the processes (DDP; gloo on the CPU, NCCL on GPUs, one GPU per process).
One launch of N processes measures both: process 0 first trains alone (the others have not joined the
process group yet, so they take no CPU), then all N together. Each figure is the median step time over
``--steps`` timed steps of the trainer (batch indexing, augmentation, forward, backward, gradient
all-reduce, optimizer step) after two warm-up steps.

- ``images_per_s``: samples of the global batch per second; ``views_per_s``: network inputs per second.
- ``scaling_efficiency``: N-process images/s over N times the 1-process images/s (1.0 is perfect).

On a CPU the processes share the machine's cores: give each ``--threads`` (default 1) and compare
N·threads with the cores there are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from batchaug.bench.timing import synchronize


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--procs", type=int, default=2, help="processes of the parallel run (N)")
    parser.add_argument("--methods", default="baseline,ba", help="comma-separated: baseline, ba")
    parser.add_argument("--m", type=int, default=4, help="BA's views per sample")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64, help="global samples per step (B)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--policy", default="standard", help="augmentation policy")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (B=8, M=2, 2 timed steps)")


def _section(method: str, m: int, policy: str) -> dict[str, Any]:
    return {"name": method, "policy": policy, **({"m": m} if method == "ba" else {})}


def _measure(args: argparse.Namespace, method: str, device: torch.device, world: int) -> dict[str, Any]:
    """Median step time of ``method`` in this process, sharing the global batch with ``world - 1`` others."""
    from batchaug.bench.step import _images
    from batchaug.config import OptimConfig, resolve_config
    from batchaug.data import CIFAR_STATS
    from batchaug.methods import MethodContext, build_method
    from batchaug.models import build_model
    from batchaug.train.optim import LRSchedule, build_optimizer
    from batchaug.train.run import wrap_model
    from batchaug.train.trainer import Trainer, TrainerSettings

    mean, std = CIFAR_STATS["cifar10"]
    ctx = MethodContext(num_classes=10, image_size=(32, 32), mean=mean, std=std, device=device)
    cfg = resolve_config({"method": _section(method, args.m, args.policy), "train": {"device": str(device)}})
    bench_method = build_method(cfg.method, ctx)
    torch.manual_seed(0)
    model = wrap_model(cfg, bench_method, build_model(args.model, num_classes=10), device, distributed=world > 1)
    images, targets = _images(args.batch * 4)
    ocfg = OptimConfig()
    total = args.steps + 2
    settings = TrainerSettings(batch_size=args.batch, total_steps=total, steps_per_epoch=4, eval_every=total,
                               progress=False)
    trainer = Trainer(model, bench_method, build_optimizer(model, ocfg, 0.1), LRSchedule(ocfg, 0.1, 1, total),
                      settings, images.to(device), targets.to(device), images[:world].to(device),
                      targets[:world].to(device), device)
    times = []
    for step in range(total):
        synchronize(device)
        start = time.perf_counter()
        trainer.train_step(step)
        synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[2:])
    views = bench_method.views_per_sample
    return {"method": method, "processes": world, "views_per_sample": views, "step_s": step_s,
            "images_per_s": args.batch / step_s, "views_per_s": args.batch * views / step_s}


def _worker(rank: int, args: argparse.Namespace, folder: str) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device(args.device)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = []
    if rank == 0:  # alone first: the other processes wait in init_process_group, taking no CPU
        rows += [_measure(args, method, device, 1) for method in methods]
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=f"file://{folder}/pg", rank=rank, world_size=args.procs,
                                device_id=device)
    else:
        dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=args.procs)
    try:
        rows += [_measure(args, method, device, args.procs) for method in methods]
        if rank == 0:
            Path(folder, "rows.json").write_text(json.dumps(rows))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with each N-process row's scaling efficiency against its method's 1-process row."""
    single = {r["method"]: r["images_per_s"] for r in rows if r["processes"] == 1}
    for r in rows:
        r["scaling_efficiency"] = r["images_per_s"] / (r["processes"] * single[r["method"]])
    return rows


def run(args: argparse.Namespace) -> int:
    import torch.multiprocessing as mp

    from batchaug.errors import ConfigError

    if args.quick:
        args.batch, args.m, args.steps = 8, 2, 2
    if args.procs < 2:
        raise ConfigError(f"--procs: the parallel run needs at least 2 processes, got {args.procs}")
    if args.batch % args.procs:
        raise ConfigError(f"--batch: {args.batch} samples do not split over {args.procs} processes")
    if args.device == "cuda" and torch.cuda.device_count() < args.procs:
        raise ConfigError(f"--device cuda: {args.procs} processes need {args.procs} GPUs (one each), "
                          f"this machine has {torch.cuda.device_count()}")
    options = argparse.Namespace(**{k: v for k, v in vars(args).items() if not k.startswith("_")})  # picklable
    with tempfile.TemporaryDirectory(prefix="batchaug-bench-ddp-") as folder:
        mp.spawn(_worker, args=(options, folder), nprocs=args.procs, join=True)
        rows = _table(json.loads(Path(folder, "rows.json").read_text()))
    result = {"device": args.device, "backend": "nccl" if args.device == "cuda" else "gloo", "model": args.model,
              "batch": args.batch, "m": args.m, "policy": args.policy, "threads_per_process": args.threads,
              "torch": torch.__version__, "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.model}, global B={args.batch}, {args.device} ({result['backend']}), {args.threads} thread(s) per "
          f"process, policy {args.policy}")
    print(f"{'method':<10} {'procs':>5} {'step ms':>9} {'images/s':>9} {'views/s':>9} {'efficiency':>10}")
    for r in rows:
        name = r["method"] + (f" M={r['views_per_sample']}" if r["method"] == "ba" else "")
        print(f"{name:<10} {r['processes']:>5} {r['step_s'] * 1e3:>9.1f} {r['images_per_s']:>9.1f} "
              f"{r['views_per_s']:>9.1f} {r['scaling_efficiency']:>10.2f}")
    return 0
