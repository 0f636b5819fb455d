"""A Batch Augmentation training step against a plain step, in time and in peak memory.

  batchaug bench step [--device cpu|cuda] [--model resnet20] [--batch 64] [--json]

Measures, in one run:
- ``ba_over_plain_m16``: the time of a full BA step at M=16 through the trainer (batch indexing, the
  augmentation engine, forward, backward, optimizer step) over the time of a plain
  forward+backward+step on a pre-made batch of B·M normalized images. 1.0 means augmentation is free.
- ``peak_mem_ratio_m32``: the peak memory of a BA step at M=32 micro-batched into chunks of B views,
  over the peak memory of a baseline step (B views). CUDA: ``torch.cuda.max_memory_allocated``; CPU:
  the peak of live tensor memory recorded by the PyTorch profiler during the step.
Timings alternate the two contenders round by round; the ratio is the median of per-round ratios, so
a disturbance from another process hits both sides of a round alike. On CUDA a round times a stream
of steps with one synchronization at its end (throughput, as in training), on the CPU one step.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F

from batchaug.bench.timing import alternate, synchronize


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=64, help="samples per step (B)")
    parser.add_argument("--policy", default="cutout", help="augmentation policy of the BA step")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (one step of each contender)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (M=2/4, 1 repeat)")


def _images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real CIFAR-10 images when the shared archive is found, else random uint8 images (same cost)."""
    try:
        from batchaug.data import load_split

        split = load_split(None, "test", kind="cifar10_jpeg")
        return split.images[:n].clone(), split.targets[:n].clone()
    except Exception:  # benchmarks must run anywhere; the image content does not change the cost
        g = torch.Generator().manual_seed(0)
        return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                torch.randint(0, 10, (n,), generator=g))


def _trainer(model_name: str, method_name: str, m: int, batch: int, micro: int | None, device: torch.device,
             images: torch.Tensor, targets: torch.Tensor, policy: str):
    from batchaug.config import OptimConfig
    from batchaug.data import CIFAR_STATS
    from batchaug.methods import MethodContext, build_method
    from batchaug.models import build_model
    from batchaug.train.nonfinite import NonFiniteGuard
    from batchaug.train.optim import LRSchedule, build_optimizer
    from batchaug.train.trainer import Trainer, TrainerSettings

    mean, std = CIFAR_STATS["cifar10"]
    ctx = MethodContext(num_classes=10, image_size=(32, 32), mean=mean, std=std, device=device)
    section = {"name": method_name, "policy": policy}
    if method_name == "ba":
        section["m"] = m
    method = build_method(section, ctx)
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10).to(device)
    ocfg = OptimConfig()
    opt = build_optimizer(model, ocfg, 0.1)
    n = images.shape[0]
    settings = TrainerSettings(batch_size=batch, total_steps=10**6, steps_per_epoch=n // batch, eval_every=10**6,
                               micro_batch=micro, progress=False)
    trainer = Trainer(model, method, opt, LRSchedule(ocfg, 0.1, 1, 10**6), settings, images.to(device),
                      targets.to(device), images[:1].to(device), targets[:1].to(device), device)
    # The NaN/Inf check as on an accelerator (its flag read at the next metrics line, never per step): on
    # the CPU, the per-step read the trainer makes there (free on the CPU) would otherwise be counted as a
    # synchronization by `bench syncs`, and timed by `bench step`, though no accelerator run makes it.
    trainer.guard = NonFiniteGuard(settings.on_nonfinite, device, scaled=trainer.scaler.is_enabled(), eager=False)
    return trainer


def _plain_step(model_name: str, views: int, device: torch.device) -> Callable[[], None]:
    from batchaug.models import build_model

    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(views, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (views,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _time_pair(a: Callable[[], None], b: Callable[[], None], repeats: int,
               device: torch.device) -> tuple[float, float, float]:
    """Median times per call of ``a`` and ``b`` and the median of their per-round ratios (steadier than
    the ratio of medians). A round is a stream of calls (4 on CUDA, 1 on the CPU) between two
    synchronizations."""
    ta, tb = alternate((a, b), repeats, device, stream=4 if device.type == "cuda" else 1)
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb, strict=True))


def peak_memory(fn: Callable[[], None], device: torch.device) -> int:
    """Peak bytes of live tensor memory allocated while ``fn`` runs (above what was live before)."""
    fn()  # warm-up so lazily created state (optimizer buffers, grads) counts as "before"
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each op's *self* allocation minus frees, in start order, traces live tensor memory op by op
    # (allocations outside any op appear as "[memory]" events, which carry their own usage).
    events = [(e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()]
    live = peak = 0
    for _, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    return peak


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B = args.batch
    m_time, m_mem, repeats = (4, 4, 1) if args.quick else (16, 32, args.repeats)
    images, targets = _images(max(B * 4, 256))
    ba = _trainer(args.model, "ba", m_time, B, None, device, images, targets, args.policy)
    counter = iter(range(10**9))
    ba_step = lambda: ba.train_step(next(counter))  # noqa: E731
    plain = _plain_step(args.model, B * m_time, device)
    t_ba, t_plain, ratio = _time_pair(ba_step, plain, repeats, device)

    base = _trainer(args.model, "baseline", 1, B, None, device, images, targets, args.policy)
    bcount = iter(range(10**9))
    mem_base = peak_memory(lambda: base.train_step(next(bcount)), device)
    ba_mem = _trainer(args.model, "ba", m_mem, B, B, device, images, targets, args.policy)
    mcount = iter(range(10**9))
    mem_ba = peak_memory(lambda: ba_mem.train_step(next(mcount)), device)

    result = {
        "device": str(device), "model": args.model, "batch": B, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "policy": args.policy,
        f"ba_step_s_m{m_time}": t_ba, f"plain_step_s_m{m_time}": t_plain,
        f"ba_over_plain_m{m_time}": ratio,
        "peak_mem_baseline_bytes": mem_base, f"peak_mem_ba_m{m_mem}_microbatched_bytes": mem_ba,
        f"peak_mem_ratio_m{m_mem}": mem_ba / max(mem_base, 1),
        "micro_batch_views": B,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model}, B={B}, {device}, {torch.get_num_threads()} threads, policy {args.policy}")
        print(f"BA step at M={m_time} (data+augmentation+fwd+bwd+step): {t_ba * 1e3:8.1f} ms")
        print(f"plain fwd+bwd+step on a pre-made batch of {B * m_time}: {t_plain * 1e3:8.1f} ms")
        print(f"  ratio ba_over_plain_m{m_time} = {ratio:.3f}  (median of per-round ratios; target <= 1.05)")
        print(f"peak memory, baseline step (B={B}):              {mem_base / 2**20:8.1f} MiB")
        print(f"peak memory, BA step M={m_mem}, chunks of {B} views: {mem_ba / 2**20:8.1f} MiB")
        print(f"  ratio peak_mem_ratio_m{m_mem} = {mem_ba / max(mem_base, 1):.3f}  (target <= 1.5)")
    return 0
