"""The ``batchaug`` command line: one subcommand per job, each in ``batchaug.commands.<name>``.

Building the parser imports every subcommand module, so each keeps its top level light: no torch,
torchvision, numpy or matplotlib until its ``run()``. That keeps ``batchaug --help`` and every
``batchaug COMMAND --help`` fast, and a broken optional dependency of one subcommand does not take
the others down (tests/test_cli.py checks that building the parser and each ``--help`` leave torch
unimported).

``key=value`` overrides may stand before or after options (``batchaug train CONFIG --out DIR
key=value``): :func:`main` hands those argparse leaves over to the subcommand's ``overrides``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from batchaug import __version__
from batchaug.errors import BatchaugError

# name -> (module, one-line help). Each module defines ``register(parser)`` and ``run(args) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("batchaug.commands.train", "train a model from a YAML config (+ key=value overrides)"),
    "sweep": ("batchaug.commands.sweep", "run a grid of configs one after another; rerun to resume after a kill"),
    "eval": ("batchaug.commands.eval", "evaluate a run directory; writes RUN/eval/*.json"),
    "report": ("batchaug.commands.report", "draw figures and tables from run directories"),
    "models": ("batchaug.commands.models", "list the model zoo with parameter counts"),
    "configs": ("batchaug.commands.configs", "list the paper configs: published rows, numbers and commands"),
    "data": ("batchaug.commands.data", "inspect and cache datasets"),
    "bench": ("batchaug.commands.bench", "throughput and memory benchmarks"),
    "demo": ("batchaug.commands.demo", "the main job: baseline vs Batch Augmentation on CIFAR-10"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``batchaug`` parser with one subparser per written module of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="batchaug",
        description="Train and evaluate networks with Batch Augmentation (BA), Stochastic Batch "
        "Augmentation (SBA) and Split BatchNorms, and report what they bring.",
    )
    parser.add_argument("--version", action="version", version=f"batchaug {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # not written yet: the subcommand simply does not appear
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.register(p)
        p.set_defaults(_module=module)
    return parser


def is_override(token: str) -> bool:
    """Whether a command-line token is a ``key=value`` override (an option never is)."""
    return "=" in token and not token.startswith("-")


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that ``key=value`` overrides may also follow options.

    argparse fills a ``nargs="*"`` positional from one run of positionals only, so in ``batchaug
    train CONFIG --out DIR key=value`` the override after ``--out DIR`` is left over (and
    ``parse_intermixed_args`` does not support subparsers). Leftover overrides are appended, in
    command-line order, to ``args.overrides`` where the subcommand has one; any other leftover,
    or an override for a subcommand without overrides, stops with argparse's usual
    "unrecognized arguments" error (exit status 2).
    """
    args, extras = parser.parse_known_args(argv)
    if extras and hasattr(args, "overrides"):
        args.overrides = list(args.overrides or []) + [t for t in extras if is_override(t)]
        extras = [t for t in extras if not is_override(t)]
    if extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


MAX_MESSAGE_CHARS = 2000
"""Longest error message printed whole; a longer one is cut in the middle."""


def one_line(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """An error message as one line of at most ``limit`` characters (YAML errors span lines; a message
    quoting a huge value would flood the terminal)."""
    text = " ".join(message.split())
    if len(text) <= limit:
        return text
    half = limit // 2 - 10
    return f"{text[:half]} [...] {text[-half:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``batchaug`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors that batchaug raises on purpose (:class:`~batchaug.errors.BatchaugError`) print one line
    naming the subcommand and exit with the error's ``exit_code``: 2 (bad input, unwritable directory,
    a busy run directory) or 3 (training diverged: NaN/Inf); a bad command line exits with 2 from argparse.
    """
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except BatchaugError as exc:
        print(f"batchaug {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"batchaug {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
