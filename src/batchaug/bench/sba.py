"""SBA step cost per eligible layer vs BA and the baseline (the SBA paper's Fig. 3 cost view).

For every eligible layer k this times one training step (forward, backward, SGD update) of

  * SBA, augmented (λ = 1: M virtual copies at k, soft-label KL) and not augmented (λ = 0),
  * their expectation at the scheduler's p: p·augmented + (1 - p)·plain,
  * BA with the same M (the model on B·M inputs) and the baseline (B inputs),

and sets the measured cost beside the analytical one, 1 + p·M·cost(g_k+1)/cost(f) baseline steps,
where cost(g_k+1)/cost(f) is the share of the forward FLOPs spent after layer k (counted with
torch.utils.flop_counter on this model). BA costs about M baseline steps, so SBA/BA ≈ (1 + p·M·r)/M.
Input augmentation is left out of every step: this is the network's cost (BA would also augment M
times the images SBA and the baseline augment, so leaving it out understates BA's cost, never SBA's).
For CIFAR ResNets the stage outputs (layer1..layer3, convolutional maps, structured noise) are added in
front of the registry's layers so the curve spans the depth.

  batchaug bench sba                              ResNet-20, M = 16, p = 0.5, batch 64
  batchaug bench sba --model vgg16_bn --m 32 --batch-size 32 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from batchaug.bench.timing import synchronize
from batchaug.errors import ConfigError

TARGET_SBA_OVER_BA = 0.2  # issue 5: ResNet-20, deepest layer, p = 0.5, M = 16


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet20", help="registry model name (default resnet20)")
    parser.add_argument("--m", type=int, default=16, help="virtual copies (SBA) and views (BA) per sample")
    parser.add_argument("--p", type=float, default=0.5, help="probability of an augmented SBA step")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step B")
    parser.add_argument("--layers", default=None, help="comma-separated eligible layers (default: see above)")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the model's)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median), after 1 warm-up round")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); default: PyTorch's choice")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def default_layers(model: nn.Module, spec_layers: tuple[str, ...]) -> list[str]:
    """The registry's SBA layers, preceded by the stage outputs of a CIFAR ResNet."""
    from batchaug.models.resnet_cifar import CifarResNet

    stages = ["layer1", "layer2", "layer3"] if isinstance(model, CifarResNet) else []
    return stages + [name for name in spec_layers if name not in stages]


def flop_share_after(model: nn.Module, layer: nn.Module, x: Tensor) -> float:
    """cost(g_k+1)/cost(f): the share of the forward FLOPs spent downstream of ``layer``.

    Counted as (FLOPs with the layer's output duplicated - FLOPs of the plain pass) / plain FLOPs,
    which isolates what runs after the layer however the model is written.
    """
    def count() -> int:
        with FlopCounterMode(display=False) as counter:
            model(x)
        return counter.get_total_flops()

    with torch.no_grad():
        plain = count()
        handle = layer.register_forward_hook(lambda mod, args, out: torch.cat([out, out]))
        try:
            doubled = count()
        finally:
            handle.remove()
    return (doubled - plain) / plain if plain else float("nan")


def time_steps(steps: dict[str, Callable[[], None]], repeats: int, device: torch.device,
               warmup: int = 1) -> dict[str, float]:
    """Median seconds of each step over ``repeats`` rounds, after ``warmup`` rounds.

    The steps run round-robin, so a slow spell of a shared machine spreads over all of them instead of
    skewing whichever happened to run then. Within a round each step runs twice back to back and only
    the second run is timed: otherwise a small step that follows a large one (BA) pays for the caches
    and allocator state the large one left behind.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(warmup + repeats):
        for name, step in steps.items():
            step()
            synchronize(device)
            t0 = time.perf_counter()
            step()
            synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available")
    return device


def measure(model_name: str = "resnet20", *, m: int = 16, p: float = 0.5, batch_size: int = 64,
            layers: list[str] | None = None, image_size: int | None = None, num_classes: int = 10,
            repeats: int = 5, device: torch.device | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the settings, the baseline and BA step times and one row per layer."""
    from batchaug.methods import MethodContext
    from batchaug.methods.base import MethodBatch
    from batchaug.methods.sba import SBAOptions, StochasticBatchAugmentation
    from batchaug.models import build_model, get_spec

    if m < 1 or batch_size < 1 or repeats < 1:
        raise ConfigError(f"--m, --batch-size and --repeats must be >= 1, got {m}, {batch_size}, {repeats}")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"--p: must be in [0, 1], got {p}")
    device = device or torch.device("cpu")
    spec = get_spec(model_name)
    size = image_size or spec.input_size
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=num_classes).to(device).train()
    layers = layers or default_layers(model, spec.sba_layers)
    if not layers:
        raise ConfigError(f"model {model_name!r} has no default SBA layers; pass --layers")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch_size, 3, size, size, device=device)
    y = torch.randint(num_classes, (batch_size,), device=device)

    def plain_step(inputs: Tensor, targets: Tensor) -> Callable[[], None]:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), targets).backward()
            opt.step()
        return step

    def sba_step(method: StochasticBatchAugmentation) -> Callable[[], None]:
        def step() -> None:
            method.begin_step(0, 0)
            opt.zero_grad(set_to_none=True)
            method.loss(model, batch).loss.backward()
            opt.step()
        return step

    context = MethodContext(num_classes=num_classes, image_size=(size, size), mean=(0.0,) * 3, std=(1.0,) * 3,
                            device=device)
    batch = MethodBatch({"inputs": x, "targets": y}, batch_size)
    steps = {"baseline": plain_step(x, y), "ba": plain_step(x.repeat_interleave(m, 0), y.repeat_interleave(m, 0))}
    # λ = 0 at every step (a non-augmented SBA step, the same whatever k), then λ = 1 at each layer
    for layer, prob in [(layers[-1], 0.0)] + [(layer, 1.0) for layer in layers]:
        opts = SBAOptions(m=m, p=prob, layers=list(layers), layer_choice="fixed", fixed_layer=layer,
                          policy="none", seed=0)
        method = StochasticBatchAugmentation(opts, context)
        method.prepare_model(model)
        steps[f"aug:{layer}" if prob else "sba_plain"] = sba_step(method)
    times = time_steps(steps, repeats, device)
    baseline_s, ba_s, plain = times["baseline"], times["ba"], times["sba_plain"]
    modules = dict(model.named_modules())
    rows = []
    for layer in layers:
        aug = times[f"aug:{layer}"]
        share = flop_share_after(model, modules[layer], x[:2])
        expected = p * aug + (1 - p) * plain
        analytic = 1 + p * m * share
        rows.append({
            "layer": layer, "flop_share_after": share,
            "sba_aug_s": aug, "sba_plain_s": plain, "sba_expected_s": expected,
            "measured_cost": expected / baseline_s, "analytic_cost": analytic,
            "measured_aug_cost": aug / baseline_s, "analytic_aug_cost": 1 + m * share,
            "sba_over_ba": expected / ba_s, "analytic_sba_over_ba": analytic / m,
        })
    return {"model": model_name, "m": m, "p": p, "batch_size": batch_size, "image_size": size,
            "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "repeats": repeats, "baseline_s": baseline_s, "ba_s": ba_s, "sba_plain_s": plain,
            "ba_cost": ba_s / baseline_s,
            "layers": rows, "deepest_layer": rows[-1]["layer"], "deepest_sba_over_ba": rows[-1]["sba_over_ba"],
            "target_sba_over_ba": TARGET_SBA_OVER_BA}


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    res = measure(args.model, m=args.m, p=args.p, batch_size=args.batch_size, layers=layers,
                  image_size=args.image_size, num_classes=args.num_classes, repeats=args.repeats,
                  device=_device(args.device))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"SBA vs BA step cost: {res['model']}, M={res['m']}, p={res['p']}, B={res['batch_size']}, "
          f"{res['image_size']}px, {res['device']} ({res['threads']} threads), torch {res['torch']}, "
          f"median of {res['repeats']} rounds")
    print(f"baseline step {res['baseline_s'] * 1e3:.1f} ms; BA step (B·M inputs) {res['ba_s'] * 1e3:.1f} ms "
          f"= {res['ba_cost']:.2f}x baseline")
    header = (f"{'layer k':<20} {'r_k':>8} {'aug ms':>9} {'plain ms':>9} {'E[SBA] ms':>10} "
              f"{'cost':>6} {'analytic':>9} {'SBA/BA':>7} {'analytic':>9}")
    print(header)
    print("-" * len(header))
    for r in res["layers"]:
        print(f"{r['layer']:<20} {r['flop_share_after']:>8.2g} {r['sba_aug_s'] * 1e3:>9.1f} "
              f"{r['sba_plain_s'] * 1e3:>9.1f} {r['sba_expected_s'] * 1e3:>10.1f} {r['measured_cost']:>6.2f} "
              f"{r['analytic_cost']:>9.2f} {r['sba_over_ba']:>7.3f} {r['analytic_sba_over_ba']:>9.3f}")
    print("r_k: share of forward FLOPs after k; cost: E[SBA step] / baseline step (analytic 1 + p·M·r_k); "
          "SBA/BA: E[SBA step] / BA step (analytic (1 + p·M·r_k)/M)")
    verdict = "meets" if res["deepest_sba_over_ba"] <= TARGET_SBA_OVER_BA else "misses"
    print(f"deepest layer {res['deepest_layer']}: SBA/BA = {res['deepest_sba_over_ba']:.3f} "
          f"({verdict} the target <= {TARGET_SBA_OVER_BA})")
    return 0
