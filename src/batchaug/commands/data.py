"""Inspect, check and cache datasets.

  batchaug data info [PATH] [--kind K] [--check none|quick|full] [--json]
      splits, image counts, classes and image shape. The default --check quick decodes every
      image of datasets up to 5,000 images and, above that, checks the start/end markers of every
      JPEG/PNG file (truncated or garbage files fail; suspects are decoded to confirm).
  batchaug data verify [PATH] [--kind K] [--split S]
      decode every image; reports the first corrupt one (file, or zip and member).
  batchaug data cache [PATH] [--kind K] [--split S ...] [--image-size N] [--grayscale-to-rgb]
      decode every split once and store the tensors in the cache ($BATCHAUG_CACHE).

PATH is a folder or zip (ImageFolder layout, e.g. cifar10-jpeg.zip), a CIFAR pickle folder or
archive, or a folder holding one. Without PATH, $BATCHAUG_DATA and then the cache directory are
searched for the kind's default name (e.g. cifar10-jpeg.zip). Errors exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import time

# The choices of batchaug.data's KINDS, CHECKS and RESIZE_MODES, spelled out because importing
# batchaug.data loads torch and torchvision, and building the parser must not (``batchaug --help``
# stays fast); tests/test_cli.py checks that they agree with the originals.
KINDS = ("auto", "cifar10_jpeg", "imagefolder", "cifar10", "cifar100", "imagenet")
CHECKS = ("none", "quick", "full")
RESIZE_MODES = ("center_crop", "stretch", "crop")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", nargs="?", default=None,
                       help="dataset file or folder (default: search $BATCHAUG_DATA, then the cache)")
        p.add_argument("--kind", choices=KINDS, default="auto", help="dataset kind (default: auto)")
        p.add_argument("--workers", type=int, default=None, metavar="N",
                       help="decoding threads (default: the CPUs available)")

    info = sub.add_parser("info", help="splits, counts, classes, shape (and a corruption check)")
    common(info)
    info.add_argument("--check", choices=CHECKS, default="quick",
                      help="corruption check: none, quick (default; see above) or full decode")
    info.add_argument("--json", action="store_true", help="print one JSON object")

    verify = sub.add_parser("verify", help="decode every image; report the first corrupt one")
    common(verify)
    verify.add_argument("--split", default=None, help="only this split (default: all)")

    cache = sub.add_parser("cache", help="pre-decode splits into the tensor cache")
    common(cache)
    cache.add_argument("--split", action="append", default=None, dest="splits", metavar="SPLIT",
                       help="split to cache (repeatable; default: every split)")
    cache.add_argument("--image-size", type=int, default=None, metavar="N",
                       help="bring images to N x N (default: native size)")
    cache.add_argument("--resize-mode", choices=RESIZE_MODES, default="center_crop",
                       help="how --image-size is reached (default: center_crop)")
    cache.add_argument("--grayscale-to-rgb", action="store_true",
                       help="load grayscale datasets with 3 channels")


def run(args: argparse.Namespace) -> int:
    return {"info": _info, "verify": _verify, "cache": _cache}[args.action](args)


def _info(args: argparse.Namespace) -> int:
    from batchaug.data.sources import dataset_info

    info = dataset_info(args.path, args.kind, check=args.check, num_workers=args.workers)
    if args.json:
        print(json.dumps(info))
        return 0
    classes = info["classes"]
    shown = ", ".join(classes if len(classes) <= 12 else [*classes[:5], "...", *classes[-5:]])
    c, h, w = info["shape"]
    print(f"{info['path']}  ({info['kind']})")
    print("  splits:   " + " | ".join(f"{k} {v:,}" for k, v in info["splits"].items()))
    print(f"  classes:  {info['num_classes']} ({shown})")
    print(f"  shape:    {c} x {h} x {w} (C x H x W, first image)")
    print(f"  checked:  {info['check']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from batchaug.data.sources import verify_source

    start = time.perf_counter()
    counts = verify_source(args.path, args.kind, split=args.split, num_workers=args.workers)
    took = time.perf_counter() - start
    total = sum(counts.values())
    detail = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    print(f"ok: all {total:,} images decode ({detail}) in {took:.1f} s")
    return 0


def _cache(args: argparse.Namespace) -> int:
    from batchaug.data.sources import cache_split, dataset_info

    splits = args.splits or list(dataset_info(args.path, args.kind, check="none")["splits"])
    for split in splits:
        start = time.perf_counter()
        data, file = cache_split(args.path, split, kind=args.kind, image_size=args.image_size,
                                 resize_mode=args.resize_mode, grayscale_to_rgb=args.grayscale_to_rgb,
                                 num_workers=args.workers)
        took = time.perf_counter() - start
        where = str(file) if file is not None else "not cached (this kind loads directly)"
        c, h, w = data.shape
        print(f"{split}: {len(data):,} images {c}x{h}x{w} in {took:.2f} s -> {where}")
    return 0
