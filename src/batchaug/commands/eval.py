"""Evaluate a run directory; results go to RUN/eval/*.json (and are printed).

  batchaug eval RUN                      eval/clean.json: top-1, top-5, loss on the validation split
  batchaug eval RUN --views 8            + accuracy of averaging 8 augmented views and of their vote
  batchaug eval RUN --sba-vote           eval/sba.json: SBA plain / mean / majority-vote accuracy
  batchaug eval RUN --alphas 0,0.5,1     eval/splitbn.json: split-BN main, aux, alpha-blends, single pass
  batchaug eval RUN --ema                the weight average of a train.ema_decay run (eval/clean_ema.json, ...)

The model is rebuilt from RUN/config.yaml and RUN/best.pt (or --checkpoint last / a path), and evaluated
on the validation split the run used.

Language-model runs (methods that evaluate by perplexity, on data.kind ptb/text) write
eval/perplexity.json instead: the perplexity of the valid and test streams (eval.batch_size and
eval.test_batch_size columns, AWD-LSTM's 10 and 1; --batch-size sets both), with the hidden state
carried across windows, of the weights that stood for the model (NT-ASGD's average once it ran).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from batchaug.errors import ConfigError


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory written by batchaug train")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    parser.add_argument("--ema", action="store_true",
                        help="evaluate the exponential moving average of the weights (runs with train.ema_decay)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default 500); language models: columns of both streams")
    parser.add_argument("--views", type=int, default=0, metavar="M",
                        help="also evaluate M augmented views per image (mean and majority vote)")
    parser.add_argument("--policy", default=None,
                        help="augmentation policy of the test-time views (default: the run's training policy)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test-time views")
    parser.add_argument("--sba-vote", action="store_true", help="SBA runs: voting among raw and virtual predictions")
    parser.add_argument("--alphas", default=None, metavar="A1,A2,...",
                        help="split-BN runs: blend weights alpha of the auxiliary BN's predictions")


def _write(run_dir: Path, name: str, payload: dict[str, Any]) -> None:
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"== {out / name}")
    print(json.dumps(payload, indent=2))


def _parse_alphas(text: str) -> list[str]:
    """Validate ``--alphas`` before the model is loaded, with the split-BN evaluation's own rules."""
    from batchaug.evaluate.splitbn import alpha_keys

    try:
        return [key for key, _ in alpha_keys([a.strip() for a in text.split(",") if a.strip()])]
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None


def _run_perplexity(args: argparse.Namespace) -> int:
    """``eval/perplexity.json`` of a language-model run (the image options do not apply)."""
    from batchaug.evaluate.perplexity import evaluate_run_perplexity

    image_only = [flag for flag, used in (("--views", args.views), ("--sba-vote", args.sba_vote),
                                          ("--alphas", args.alphas is not None), ("--ema", args.ema),
                                          ("--policy", args.policy is not None)) if used]
    if image_only:
        raise ConfigError(f"{', '.join(image_only)}: options of image runs; {args.run_dir} is a language-model run "
                          "(its evaluation is perplexity)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {args.batch_size}")
    sizes = {"valid": args.batch_size, "test": args.batch_size} if args.batch_size else None
    _write(args.run_dir, "perplexity.json", evaluate_run_perplexity(args.run_dir, args.checkpoint, args.device,
                                                                    batch_sizes=sizes))
    return 0


def run(args: argparse.Namespace) -> int:
    import torch

    from batchaug.evaluate.clean import evaluate_clean, evaluate_views
    from batchaug.evaluate.loading import load_trained
    from batchaug.evaluate.perplexity import evaluates_perplexity
    from batchaug.train.run import load_run_config

    if evaluates_perplexity(load_run_config(args.run_dir).method.method_class):
        return _run_perplexity(args)
    alphas = _parse_alphas(args.alphas) if args.alphas is not None else None
    if args.views < 0:
        raise ConfigError(f"--views: must be >= 0, got {args.views}")
    if args.batch_size is None:
        args.batch_size = 500
    tr = load_trained(args.run_dir, args.checkpoint, args.device, ema=args.ema)
    images, targets = tr.data.val_images, tr.data.val_targets
    header = {"run_dir": str(args.run_dir), "checkpoint": tr.checkpoint.name, "step": tr.step,
              "split": tr.cfg.eval.split, "weights": "ema" if args.ema else "model"}
    suffix = "_ema" if args.ema else ""  # the average's results beside the weights', not over them
    with torch.no_grad():
        clean = evaluate_clean(lambda x: tr.method.predict(tr.model, x), images, targets,
                               batch_size=args.batch_size, device=tr.device)
        result: dict[str, Any] = {**header, **clean}
        if args.views:
            from batchaug.augment import ViewAugmenter, build_policy

            policy_spec = args.policy or tr.method.view_policy()
            aug = ViewAugmenter(build_policy(policy_spec, image_size=tr.data.image_size), m=args.views,
                                mean=tr.data.mean, std=tr.data.std)
            gen = torch.Generator(device=tr.device).manual_seed(args.seed)
            result["test_time_views"] = {"policy": policy_spec, **evaluate_views(
                tr.model, aug, args.views, images, targets, batch_size=args.batch_size, generator=gen,
                device=tr.device)}
        _write(args.run_dir, f"clean{suffix}.json", result)
        if args.sba_vote:
            if tr.cfg.method.name != "sba":
                raise ConfigError(f"--sba-vote needs an SBA run; {args.run_dir} used method "
                                  f"{tr.cfg.method.name!r}")
            from batchaug.evaluate.sba import evaluate_sba

            _write(args.run_dir, f"sba{suffix}.json", {**header, **evaluate_sba(tr.model, tr.method, images, targets,
                                                                        batch_size=args.batch_size)})
        if alphas is not None:
            if tr.cfg.method.name != "splitbn":
                raise ConfigError(f"--alphas needs a split-BN run; {args.run_dir} used method "
                                  f"{tr.cfg.method.name!r}")
            from batchaug.evaluate.splitbn import evaluate_splitbn

            _write(args.run_dir, f"splitbn{suffix}.json", {**header, **evaluate_splitbn(
                tr.model, tr.method, images, targets, alphas, batch_size=args.batch_size)})
    return 0
