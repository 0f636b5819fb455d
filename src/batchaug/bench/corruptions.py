"""Corruption generation: all 19 corruptions x 5 severities of the CIFAR-10 test images.

Times ``batchaug.evaluate.corruptions.corrupt`` on the first --limit CIFAR-10 test images (all
10,000 by default), in batches of --batch-size with their dataset indices, every corruption at
every severity, on --device. Beside it, where batchaug.bench.corruptions_reference has one, the
per-image numpy/PIL route of the reference formulas (the way Hendrycks & Dietterich's
``make_cifar_c.py`` loops over the images), timed on --reference-images images per severity and
scaled to 10,000. Reports seconds per corruption (5 severities), the total, both scaled to 10,000
images (``total_seconds_10k``), and the ratio reference / batchaug. --json prints one object:
{"benchmark": "corruptions", "images", "device", "total_seconds", "total_seconds_10k", "target_seconds_10k",
 "corruptions": {name: {"seconds", "seconds_10k", "reference_seconds_10k", "vs_reference"}}, "machine"}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch

from batchaug.bench.timing import synchronize
from batchaug.errors import ConfigError
from batchaug.evaluate.corruptions import CORRUPTIONS, corrupt, corruption_params

from . import corruptions_reference as ref

TARGET_SECONDS_10K = 300.0  # issue 12: all 19 x 5 of the 10,000 test images in under 5 minutes


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=None,
                        help="CIFAR-10 archive or folder (default: cifar10-jpeg.zip from $BATCHAUG_DATA / cache)")
    parser.add_argument("--limit", type=int, default=10_000, metavar="N", help="test images (default: 10000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="images per corrupt() call (default: 1000)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--names", default=None, metavar="C1,C2", help="a subset of the corruptions (default: all)")
    parser.add_argument("--reference-images", type=int, default=100, metavar="N",
                        help="images per severity for the per-image numpy/PIL route (default: 100; 0 skips it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"bench corruptions: --device must be cpu or cuda[:i], got {text!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"bench corruptions: --device must be cpu or cuda[:i], got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench corruptions: --device cuda asked for, but CUDA is not available here")
    return device


def _names(text: str | None) -> list[str]:
    if text is None:
        return list(CORRUPTIONS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ConfigError(f"bench corruptions: --names {text!r}: unknown {', '.join(unknown) or '(none given)'}; "
                          f"known: {', '.join(CORRUPTIONS)}")
    return names


def _reference_seconds(name: str, images: np.ndarray, seed: int) -> float:
    """Seconds of the per-image route for all 5 severities of ``images`` (N, H, W, C)."""
    fn = ref.REFERENCES[name]
    rng = np.random.default_rng(seed)
    h, w = images.shape[1:3]
    start = time.perf_counter()
    for severity in range(1, 6):
        param = corruption_params(name, severity, "cifar")
        for image in images:
            if name == "glass_blur":
                _, d, iters = param
                fn(image, param, rng.integers(-d, d, size=(iters, (h - 2 * d) * (w - 2 * d), 2)))
            elif name == "motion_blur":
                fn(image, param, float(rng.uniform(-45, 45)))
            else:
                fn(image, param)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from batchaug.data.sources import load_split

    if args.limit < 1 or args.batch_size < 1 or args.reference_images < 0:
        raise ConfigError("bench corruptions: --limit and --batch-size must be at least 1, "
                          "--reference-images at least 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    names = _names(args.names)
    images = load_split(args.source, "test").images[:args.limit]
    n = images.shape[0]
    x = images.to(device)
    index = torch.arange(n, device=device)
    def sync() -> None:
        synchronize(device)

    corrupt(x[:8], names[0], 1, seed=args.seed, index=index[:8])  # warm-up: lazy imports, caches
    scale = 10_000 / n
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        sync()
        start = time.perf_counter()
        for severity in range(1, 6):
            for lo in range(0, n, args.batch_size):
                hi = lo + args.batch_size
                corrupt(x[lo:hi], name, severity, seed=args.seed, index=index[lo:hi])
        sync()
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"seconds": round(seconds, 3), "seconds_10k": round(seconds * scale, 2),
                               "reference_seconds_10k": None, "vs_reference": None}
        if args.reference_images and name in ref.REFERENCES:
            k = min(args.reference_images, n)
            sample = images[:k].permute(0, 2, 3, 1).numpy()
            ref_10k = _reference_seconds(name, sample, args.seed) * 10_000 / k
            row["reference_seconds_10k"] = round(ref_10k, 1)
            row["vs_reference"] = round(ref_10k / (seconds * scale), 1)
        rows[name] = row
    total = sum(r["seconds"] for r in rows.values())
    result = {"benchmark": "corruptions", "images": n, "severities": 5, "batch_size": args.batch_size,
              "device": str(device), "total_seconds": round(total, 2), "total_seconds_10k": round(total * scale, 1),
              "target_seconds_10k": TARGET_SECONDS_10K, "corruptions": rows, "machine": _machine(device)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{len(names)} corruptions x 5 severities of {n:,} CIFAR-10 test images on {device}; "
          f"{result['machine']['summary']}")
    print(f"{'corruption':18}  {'s (x5)':>8}  {'s per 10k':>9}  {'ref s/10k':>9}  {'x ref':>6}")
    for name, r in rows.items():
        ref_s = f"{r['reference_seconds_10k']:9.1f}" if r["reference_seconds_10k"] is not None else f"{'-':>9}"
        ratio = f"{r['vs_reference']:5.1f}x" if r["vs_reference"] is not None else f"{'-':>6}"
        print(f"{name:18}  {r['seconds']:8.2f}  {r['seconds_10k']:9.2f}  {ref_s}  {ratio}")
    verdict = "meets" if result["total_seconds_10k"] < TARGET_SECONDS_10K else "misses"
    print(f"total: {total:.1f} s; {result['total_seconds_10k']:.1f} s per 10,000 images "
          f"({verdict} the {TARGET_SECONDS_10K:.0f} s target)")
    return 0


def _machine(device: torch.device) -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    summary = (f"{cpus}-core CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__.split('+')[0]}"
               + (f", {name}" if device.type == "cuda" else "") + (f", load {load:.1f}" if load is not None else ""))
    return {"cpus": cpus, "threads": torch.get_num_threads(), "torch": torch.__version__, "device_name": name,
            "load_average": load, "summary": summary}
