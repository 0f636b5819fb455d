"""Augmentation engine throughput: batchaug's per-view engine vs its peers, in one run.

Times making B*M augmented, normalized views of B = 64 CIFAR-sized (32x32) images, for
M in {1, 4, 16, 32}, three ways:

  batchaug                ViewAugmenter(policy, M) on the device: every view its own parameters
  torchvision_per_sample  PIL transforms applied M times per sample, ToTensor, Normalize, stacked
                          (the Batch Augmentation authors' route), then moved to the device
  kornia                  kornia.augmentation on the repeated float batch on the device:
                          RandomCrop(padding 4) + RandomHorizontalFlip + RandomErasing of a
                          16x16 square (kornia keeps it inside the image; cutout clips it) +
                          Normalize. Only for standard+cutout: kornia's RandAugment picks its
                          operations once per call, so it is no per-view peer.

Policies: "standard+cutout" (crop with padding 4, flip, cutout 16) and "randaugment" (2 ops,
magnitude 9). Each cell is timed after a warm-up call in 5 rounds, all cells taking turns round
by round, and each keeps its best round (other processes on a shared machine disturb single
rounds; taking turns exposes every cell, peers included, to the same). On CUDA a round times a
stream of calls with one synchronization at its end (throughput: the CPU queues the next call
while the GPU runs this one), not a synchronization after every call (latency). Reports views per
second and the ratios; --json prints
{"batchaug": {policy: {M: views/s}}, "torchvision_per_sample": {...}, "kornia": {...}, "meta": {...}}.
Images: the first CIFAR-10 test images from $BATCHAUG_DATA (or ../shared/data beside the
checkout) when present, else random pixels (said in the output).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from batchaug.augment import CIFAR10_MEAN, CIFAR10_STD, ViewAugmenter
from batchaug.bench.timing import synchronize
from batchaug.errors import ConfigError

_SPECS: dict[str, Any] = {
    "standard+cutout": "standard+cutout",
    "randaugment": {"name": "randaugment", "num_ops": 2, "magnitude": 9},
}
POLICIES = tuple(_SPECS)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run: defaults become B=8, M in {1, 2}, 0.02 s per cell")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch B (default: 64)")
    parser.add_argument("--m", type=int, nargs="+", default=None, help="views per image (default: 1 4 16 32)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="seconds timed per cell after a warm-up call, in 5 rounds taken in turns with "
                             "the other cells, of which the best is reported (default: 0.5)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    parser.add_argument("--routes", default="batchaug,torchvision,kornia",
                        help="comma-separated subset of batchaug,torchvision,kornia")
    parser.add_argument("--seed", type=int, default=0)


def _data_dir() -> Path:
    env = os.environ.get("BATCHAUG_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _load_images(n: int, seed: int) -> tuple[torch.Tensor, str]:
    """``n`` uint8 CIFAR-10 test images (N, 3, 32, 32) and where they came from."""
    from PIL import Image

    archive = _data_dir() / "cifar10-jpeg.zip"
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as zf:
                names = sorted(x for x in zf.namelist() if "/test/" in x and x.endswith(".jpg"))
                step = max(1, len(names) // n)
                picked = names[::step][:n]
                arrays = [np.asarray(Image.open(io.BytesIO(zf.read(name))).convert("RGB")) for name in picked]
            if len(arrays) == n:
                return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), f"CIFAR-10 test ({archive})"
        except (OSError, zipfile.BadZipFile):
            pass  # fall back to synthetic pixels; the output says so
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), "random pixels (no CIFAR-10 archive)"


class _PerSampleCutout:
    """The authors' per-sample cutout on a normalized tensor: a numpy mask, one square clipped at
    the borders."""

    def __init__(self, length: int, rng: np.random.Generator) -> None:
        self.length, self.rng = length, rng

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[1:]
        mask = np.ones((h, w), np.float32)
        y, x = int(self.rng.integers(h)), int(self.rng.integers(w))
        half = self.length // 2
        mask[max(0, y - half):min(h, y + half), max(0, x - half):min(w, x + half)] = 0.0
        return img * torch.from_numpy(mask)


def _torchvision_route(policy: str, images: torch.Tensor, m: int, device: torch.device,
                       seed: int) -> Callable[[], torch.Tensor]:
    import torchvision.transforms as T

    pil = [T.functional.to_pil_image(img) for img in images]
    tail = [T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    if policy == "standard+cutout":
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), *tail,
                        _PerSampleCutout(16, np.random.default_rng(seed))])
    else:
        tf = T.Compose([T.RandAugment(num_ops=2, magnitude=9), *tail])

    def run() -> torch.Tensor:
        return torch.stack([tf(p) for p in pil for _ in range(m)]).to(device)

    return run


def _kornia_route(images: torch.Tensor, m: int, device: torch.device) -> Callable[[], torch.Tensor]:
    import kornia.augmentation as K

    aug = torch.nn.Sequential(
        K.RandomCrop((32, 32), padding=4), K.RandomHorizontalFlip(),
        K.RandomErasing(scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0, p=1.0),
        # on the device: kornia keeps mean/std as plain attributes, which .to(device) does not move, so
        # CPU tensors here would be copied to the GPU at every call
        K.Normalize(torch.tensor(CIFAR10_MEAN, device=device), torch.tensor(CIFAR10_STD, device=device)),
    ).to(device)
    x = images.to(device)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return aug(x.repeat_interleave(m, dim=0).float().div_(255.0))

    return run


def _batchaug_route(policy: str, images: torch.Tensor, m: int, device: torch.device,
                    seed: int) -> Callable[[], torch.Tensor]:
    views = ViewAugmenter(_SPECS[policy], m, CIFAR10_MEAN, CIFAR10_STD)
    x = images.to(device)
    g = torch.Generator(device=device).manual_seed(seed)

    def run() -> torch.Tensor:
        return views(x, g)

    return run


#: calls queued between synchronizations on CUDA (a stream; on the CPU every call is synchronous anyway)
_STREAM = 8


def _round(fn: Callable[[], torch.Tensor], seconds: float, sync: Callable[[], None], stream: int = 1) -> float:
    """Views per second of calling ``fn`` for at least ``seconds``, ``stream`` calls per synchronization."""
    count, start = 0, time.perf_counter()
    while True:
        for _ in range(stream):
            count += fn().shape[0]
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def _time_cells(cells: list[Callable[[], torch.Tensor]], min_time: float, device: torch.device,
                rounds: int = 5) -> list[float]:
    """Views per second of each cell: after one warm-up call each, ``rounds`` rounds of
    ``min_time / rounds`` seconds, the cells taking turns round by round, and the best round of
    each kept (as ``timeit`` reports). Other processes on a shared machine slow down single
    rounds; taking turns exposes every cell, peers included, to the same disturbances, and the
    best round is the least disturbed."""
    def sync() -> None:
        synchronize(device)

    stream = _STREAM if device.type == "cuda" else 1
    for fn in cells:
        fn()
        sync()
    best = [0.0] * len(cells)
    for _ in range(rounds):
        for i, fn in enumerate(cells):
            best[i] = max(best[i], _round(fn, min_time / rounds, sync, stream))
    return best


def run(args: argparse.Namespace) -> int:
    defaults = (8, [1, 2], 0.02) if args.quick else (64, [1, 4, 16, 32], 0.5)
    args.batch_size = defaults[0] if args.batch_size is None else args.batch_size
    args.m = defaults[1] if args.m is None else args.m
    args.min_time = defaults[2] if args.min_time is None else args.min_time
    if args.batch_size < 1 or any(m < 1 for m in args.m) or args.min_time <= 0:
        raise ConfigError("bench augment: --batch-size and --m must be >= 1 and --min-time > 0")
    routes = [r.strip() for r in args.routes.split(",") if r.strip()]
    unknown = [r for r in routes if r not in ("batchaug", "torchvision", "kornia")]
    if unknown:
        raise ConfigError(f"bench augment: unknown route(s) {unknown}; allowed: batchaug, torchvision, kornia")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ConfigError(f"bench augment: --device must be cpu or cuda[:i], got {args.device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bench augment: --device cuda asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"bench augment: --device must be cpu or cuda[:i], got {args.device!r}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    kornia_note = None
    if "kornia" in routes:
        try:
            import kornia  # noqa: F401
        except ImportError:
            routes.remove("kornia")
            kornia_note = "kornia not installed: route skipped"

    images, source = _load_images(args.batch_size, args.seed)
    results: dict[str, Any] = {"batchaug": {}, "torchvision_per_sample": {}, "kornia": {}}
    cells: list[tuple[str, str, int, Callable[[], torch.Tensor]]] = []
    for policy in POLICIES:
        for m in args.m:
            if "batchaug" in routes:
                cells.append(("batchaug", policy, m, _batchaug_route(policy, images, m, device, args.seed)))
            if "torchvision" in routes:
                cells.append(("torchvision_per_sample", policy, m,
                              _torchvision_route(policy, images, m, device, args.seed)))
            if "kornia" in routes and policy == "standard+cutout":
                cells.append(("kornia", policy, m, _kornia_route(images, m, device)))
    speeds = _time_cells([fn for *_, fn in cells], args.min_time, device)
    for (route, policy, m, _), speed in zip(cells, speeds):
        results[route].setdefault(policy, {})[str(m)] = speed
    results["meta"] = {
        "batch_size": args.batch_size, "image_size": [32, 32], "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "images": source,
        "min_time_s": args.min_time, "unit": "views per second",
    }
    if kornia_note:
        results["meta"]["note"] = kornia_note
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(_table(results, args.m))
    return 0


def _table(results: dict[str, Any], ms: list[int]) -> str:
    meta = results["meta"]
    lines = [(f"augmentation throughput, views/s: B={meta['batch_size']}, 32x32, {meta['device']} "
              f"({meta['device_name']}), {meta['threads']} threads, torch {meta['torch']}"),
             f"images: {meta['images']}"]
    header = f"{'policy':<16}{'M':>4}{'batchaug':>12}{'tv/sample':>12}{'kornia':>10}{'x tv':>8}{'x kornia':>10}"
    lines += [header, "-" * len(header)]

    def fmt(v: float | None, width: int, ratio: bool = False) -> str:
        if v is None:
            return f"{'-':>{width}}"
        return f"{v:>{width}.1f}" if ratio else f"{v:>{width},.0f}"

    for policy in POLICIES:
        for m in ms:
            key = str(m)
            ba = results["batchaug"].get(policy, {}).get(key)
            tv = results["torchvision_per_sample"].get(policy, {}).get(key)
            ko = results["kornia"].get(policy, {}).get(key)
            lines.append(f"{policy:<16}{m:>4}{fmt(ba, 12)}{fmt(tv, 12)}{fmt(ko, 10)}"
                         f"{fmt(ba / tv if ba and tv else None, 8, True)}"
                         f"{fmt(ba / ko if ba and ko else None, 10, True)}")
        ba = results["batchaug"].get(policy, {})
        if "16" in ba and "32" in ba:
            lines.append(f"{'':<16}batchaug M=16 -> M=32: {100.0 * (ba['32'] / ba['16'] - 1.0):+.1f}%")
    if "note" in meta:
        lines.append(meta["note"])
    return "\n".join(lines)
