"""Host synchronizations of a Batch Augmentation training step, by policy and number of views.

  batchaug bench syncs [--device cpu|cuda] [--batch 8] [--m 1 4 16] [--json]

Counts the device→host synchronizations (``batchaug.runtime.count_syncs``) of one BA training step
through the trainer (ResNet-20 on random CIFAR-sized images: batch indexing, the augmentation engine,
forward, backward, optimizer step), after two warm-up steps, for each policy and M. On CUDA the count
is the driver's (``torch.cuda.set_sync_debug_mode``); on the CPU it is what would synchronize if the
tensors lived on an accelerator (an upper bound: a read of a tensor that is on the host by design
counts too). A count that grows with M, or more than one per augmentation chunk, is a regression.
--json prints {"device", "batch", "counts": {policy: {M: syncs}}, "uploads": {...}, "where": {...}}.
"""

from __future__ import annotations

import argparse
import json

import torch

POLICIES = ("cutout", "randaugment", "autoaugment", "trivialaugment", "augmix", "colorjitter")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    parser.add_argument("--batch", type=int, default=8, help="samples per step B (default: 8)")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 4, 16], help="views per sample (default: 1 4 16)")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated policies")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: B=2, M in {1, 2}, cutout and randaugment")


def run(args: argparse.Namespace) -> int:
    from batchaug.bench.step import _trainer
    from batchaug.errors import ConfigError
    from batchaug.runtime import count_syncs

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench syncs: --device cuda asked for, but CUDA is not available here")
    batch, ms, policies = args.batch, args.m, [p.strip() for p in args.policies.split(",") if p.strip()]
    if args.quick:
        batch, ms, policies = 2, [1, 2], ["cutout", "randaugment"]
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4 * batch, 3, 32, 32), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (4 * batch,), generator=g)
    counts: dict[str, dict[str, int]] = {}
    uploads: dict[str, dict[str, int]] = {}
    where: dict[str, list[str]] = {}
    for policy in policies:
        for m in ms:
            trainer = _trainer("resnet20", "ba", m, batch, None, device, images, targets, policy)
            trainer.train_step(0)
            trainer.train_step(1)  # warm-up: per-device constants, tables, cuDNN's algorithm choice
            with count_syncs(device) as syncs:
                trainer.train_step(2)
            counts.setdefault(policy, {})[str(m)] = syncs.total
            uploads.setdefault(policy, {})[str(m)] = syncs.uploads
            where[f"{policy} M={m}"] = syncs.where
    result = {"device": str(device), "batch": batch, "counts": counts, "uploads": uploads, "where": where,
              "torch": torch.__version__,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"host synchronizations per BA step: resnet20, B={batch}, {device}"
          + (" (counted as if on an accelerator)" if device.type != "cuda" else " (the CUDA driver's count)"))
    print(f"{'policy':<16}" + "".join(f"{'M=' + str(m):>8}" for m in ms))
    for policy in policies:
        print(f"{policy:<16}" + "".join(f"{counts[policy][str(m)]:>8}" for m in ms))
    return 0
