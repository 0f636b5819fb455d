"""Evaluate a run directory with evaluation suites, under the evaluation modes its method offers.

  batchaug eval RUN                                   eval/clean.json: top-1, top-5, loss
  batchaug eval RUN --suite corruptions,fourier,lowpass,affinity --limit 500
  batchaug eval RUN --suite clean,corruptions --modes all     every mode of the run's method
  batchaug eval RUN --modes main,aux,alpha=0.5                split BN: branches and blends
  batchaug eval RUN --views 8          shorthand: suite views with 8 test-time views (+ clean.json's test_time_views)
  batchaug eval RUN --sba-vote         shorthand: suite sba (eval/sba.json: plain / mean / vote)
  batchaug eval RUN --alphas 0,0.5,1   shorthand: suite splitbn (eval/splitbn.json) and modes alpha=<a>
  batchaug eval RUN --ema              the weight average of a train.ema_decay run (eval/<suite>_ema.json)

Each suite writes eval/<suite>.json: {"suite", "limit", "split", "seed", "options", "modes": {mode: result}}
(docs/evaluate.md). The model is rebuilt from RUN/config.yaml and RUN/best.pt (or --checkpoint last / a
path). --split is a split of the run's data (default: its eval.split, whole) or "run" (the validation set
the run used, data.val_subset included, so numbers match metrics.jsonl: its val_*, or with
data.val_from_train its test_*, since best.pt was chosen on held-out training images); --limit N takes
a class-balanced draw of N images of it (seeded by --seed; an image's result never depends on the draw or the batch).
Every suite option can be set as --option SUITE.KEY=VALUE; some have their own flags (below).

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
from batchaug.evaluate.registry import SUITES


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a run directory written by batchaug train")
    parser.add_argument("--suite", default=None, metavar="S1,S2",
                        help=f"suites to run (default clean): {', '.join(SUITES)}")
    parser.add_argument("--modes", default="default", metavar="M1,M2|all",
                        help="evaluation modes of the run's method (default: default; all: every mode it offers)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="evaluate a class-balanced draw of N images of the split")
    parser.add_argument("--split", default=None, help="split to evaluate (default: the run's eval.split, whole; "
                        "'run': the validation set the run used)")
    parser.add_argument("--checkpoint", default="best", help="best (default), last, or a checkpoint path")
    parser.add_argument("--ema", action="store_true",
                        help="evaluate the exponential moving average of the weights (runs with train.ema_decay)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default 500); language models: columns of both streams")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw of the evaluation")
    parser.add_argument("--option", action="append", default=[], metavar="SUITE.KEY=VALUE",
                        help="set an option of a suite (repeatable), e.g. fourier.norm=8")
    parser.add_argument("--views", type=int, default=0, metavar="M", help="shorthand: suite views with M views")
    parser.add_argument("--sba-vote", action="store_true", help="shorthand: suite sba")
    seen = set()
    for name, entry in SUITES.items():
        for flag in entry.flags:
            if flag.flag not in seen:
                parser.add_argument(flag.flag, default=None, metavar=flag.metavar, help=f"[{name}] {flag.help}")
                seen.add(flag.flag)


def _flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _suite_options(args: argparse.Namespace) -> tuple[list[str], dict[str, dict[str, Any]], list[str]]:
    """Suites to run, their raw options and extra modes, from --suite, the flags and --option."""
    from batchaug.config import parse_override

    names = [s.strip() for s in args.suite.split(",") if s.strip()] if args.suite else []
    options: dict[str, dict[str, Any]] = {}
    extra_modes: list[str] = []
    if args.views < 0:
        raise ConfigError(f"--views: must be >= 0, got {args.views}")
    if args.views:
        names.append("views")
        options.setdefault("views", {})["m"] = args.views
    if args.sba_vote:
        names.append("sba")
    for name, entry in SUITES.items():
        for flag in entry.flags:
            value = getattr(args, _flag_dest(flag.flag), None)
            if value is None:
                continue
            parsed = [v.strip() for v in value.split(",") if v.strip()] if flag.key in _LIST_KEYS else value
            options.setdefault(name, {})[flag.key] = parsed
    if args.alphas is not None:
        names.append("splitbn")
        alphas = options["splitbn"]["alphas"]
        from batchaug.evaluate.splitbn import alpha_keys

        try:
            keys = [key for key, _ in alpha_keys(alphas)]
        except ConfigError as exc:
            raise ConfigError(f"--{exc}") from None
        extra_modes += [f"alpha={k}" for k in keys]
    for text in args.option:
        path, value = parse_override(text)
        if len(path) != 2:
            raise ConfigError(f"--option {text!r} must look like SUITE.KEY=VALUE, e.g. fourier.norm=8")
        options.setdefault(path[0], {})[path[1]] = value
    if args.suite is None:
        names.insert(0, "clean")  # without --suite, clean.json is written (and the shorthands report beside it)
    unknown = [n for n in [*names, *options] if n not in SUITES]
    if unknown:
        raise ConfigError(f"--suite: unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    ordered = list(dict.fromkeys(names))
    unused = [n for n in options if n not in ordered]
    if unused:
        raise ConfigError(f"--option: options given for suite {unused[0]!r}, which is not run (add it to --suite)")
    return ordered, options, extra_modes


# options given as comma-separated lists on the command line
_LIST_KEYS = {"policies", "ms", "alphas"}


def run(args: argparse.Namespace) -> int:
    import torch

    from batchaug.evaluate.loading import load_eval_data, load_trained
    from batchaug.evaluate.perplexity import evaluates_perplexity
    from batchaug.evaluate.registry import get_suite_class
    from batchaug.evaluate.suite import SuiteContext, run_suites
    from batchaug.schema import build
    from batchaug.train.run import load_run_config

    if evaluates_perplexity(load_run_config(args.run_dir).method.method_class):
        return _run_perplexity(args)
    names, raw_options, extra_modes = _suite_options(args)
    if args.batch_size is None:
        args.batch_size = 500
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: must be >= 1, got {args.limit}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {args.batch_size}")
    classes = {name: get_suite_class(name) for name in names}
    options = {name: build(cls.Options, raw_options.get(name, {}), name) for name, cls in classes.items()}

    tr = load_trained(args.run_dir, args.checkpoint, args.device, ema=args.ema)
    requested = [m.strip() for m in args.modes.split(",") if m.strip()]
    modes = list(tr.method.eval_modes()) if requested == ["all"] else requested
    modes = list(dict.fromkeys(modes + extra_modes))
    for name in modes:
        tr.method.eval_mode(name)  # an unknown mode stops here, before any work
    data = load_eval_data(tr, args.split, args.limit, args.seed)
    ctx = SuiteContext(tr, tr.device, seed=args.seed, batch_size=args.batch_size)
    suites = [cls(options[name], ctx) for name, cls in classes.items()]
    for suite in suites:
        suite.check()
    with torch.no_grad():
        results = run_suites(suites, modes, data, ctx)
    header = {"run_dir": str(args.run_dir), "checkpoint": tr.checkpoint.name, "step": tr.step,
              "weights": "ema" if args.ema else "model"}
    suffix = "_ema" if args.ema else ""  # the average's results beside the weights', not over them
    for suite in suites:
        payload: dict[str, Any] = {"suite": suite.name, "limit": args.limit, "split": data.split, "seed": args.seed,
                                   "options": suite.options_dict(), **header, "modes": results[suite.name]}
        payload.update(suite.top_level(results))
        _write(args.run_dir, f"{suite.name}{suffix}.json", payload)
    return 0


def _write(run_dir: Path, name: str, payload: dict[str, Any]) -> None:
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    (out / name).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"== {out / name}")
    summary = {k: v for k, v in payload.items() if k != "modes"} if len(json.dumps(payload)) > 4000 else payload
    print(json.dumps(summary, indent=2))


def _run_perplexity(args: argparse.Namespace) -> int:
    """``eval/perplexity.json`` of a language-model run (the image options do not apply)."""
    from batchaug.evaluate.perplexity import evaluate_run_perplexity

    image_only = [flag for flag, used in (("--suite", args.suite is not None), ("--views", args.views),
                                          ("--sba-vote", args.sba_vote), ("--alphas", args.alphas is not None),
                                          ("--ema", args.ema), ("--policy", args.policy is not None),
                                          ("--limit", args.limit is not None), ("--option", args.option)) if used]
    if image_only:
        raise ConfigError(f"{', '.join(image_only)}: options of image runs; {args.run_dir} is a language-model run "
                          "(its evaluation is perplexity)")
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be >= 1, got {args.batch_size}")
    sizes = {"valid": args.batch_size, "test": args.batch_size} if args.batch_size else None
    _write(args.run_dir, "perplexity.json", evaluate_run_perplexity(args.run_dir, args.checkpoint, args.device,
                                                                    batch_sizes=sizes))
    return 0
