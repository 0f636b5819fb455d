"""Throughput and memory benchmarks. Each benchmark compares batchaug with its peers in the same
run and prints images/s (or time) and ratios; ``--json`` prints one JSON object instead.

  batchaug bench augment   augmentation engine vs torchvision per-sample and kornia
  batchaug bench step      a BA training step vs a plain step; micro-batched peak memory
  batchaug bench data      decoding the CIFAR-10 JPEG archive into uint8 tensors
  batchaug bench sba       SBA step cost per eligible layer vs BA and the baseline
  batchaug bench corruptions  all 19 corruptions x 5 severities of the CIFAR-10 test images
  batchaug bench lstm      language-model step tokens/s, BA M = 1 and 10 vs a plain nn.LSTM step
  batchaug bench syncs     host synchronizations of a BA step, by policy and M
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Sequence
from typing import Any

# name -> (module under batchaug.bench defining ``register(parser)`` and ``run(args) -> int``, the
# first line of its docstring). The help line is spelled out so that ``batchaug bench --help``
# need not import the modules (each loads torch); tests/test_cli.py checks that it matches.
BENCHMARKS: dict[str, tuple[str, str]] = {
    "augment": ("batchaug.bench.augment",
                "Augmentation engine throughput: batchaug's per-view engine vs its peers, in one run."),
    "step": ("batchaug.bench.step",
             "A Batch Augmentation training step against a plain step, in time and in peak memory."),
    "data": ("batchaug.bench.data",
             "Decoding the CIFAR-10 JPEG archive into uint8 tensors: cold decode, cache write, warm load."),
    "sba": ("batchaug.bench.sba",
            "SBA step cost per eligible layer vs BA and the baseline (the SBA paper's Fig. 3 cost view)."),
    "corruptions": ("batchaug.bench.corruptions",
                    "Corruption generation: all 19 corruptions x 5 severities of the CIFAR-10 test images."),
    "lstm": ("batchaug.bench.lstm",
             "Language-model training step: tokens/s of BA with M = 1 and M = 10 against a plain nn.LSTM step."),
    "syncs": ("batchaug.bench.syncs",
              "Host synchronizations of a Batch Augmentation training step, by policy and number of views."),
}


class DeferredParser(argparse.ArgumentParser):
    """The parser of one benchmark, whose arguments its module declares when first needed.

    Benchmark modules import torch at their top level, which takes seconds; deferring the import
    to the moment this parser parses or formats its help keeps ``batchaug --help`` and
    ``batchaug bench --help`` fast, while ``batchaug bench NAME ...`` works as if the module had
    been imported up front (``NAME --help`` then pays for the import).

    Args:
        module_name: the benchmark module (``register(parser)``, ``run(args)``, a docstring).
        *args, **kwargs: as for ``argparse.ArgumentParser``.
    """

    def __init__(self, *args: Any, module_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.module_name = module_name
        self._loaded = False

    def load(self) -> None:
        """Import the module once: its docstring becomes the description, ``register`` adds its
        arguments and ``args._bench`` the module whose ``run`` executes it."""
        if self._loaded:
            return
        self._loaded = True
        module = importlib.import_module(self.module_name)
        self.description = (module.__doc__ or self.description or "").strip()
        module.register(self)
        self.set_defaults(_bench=module)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self.load()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.load()
        return super().format_usage()

    def format_help(self) -> str:
        self.load()
        return super().format_help()


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True,
                                parser_class=DeferredParser)
    for name, (module_name, help_text) in BENCHMARKS.items():
        if importlib.util.find_spec(module_name) is None:
            continue  # a benchmark that is not written yet simply does not appear
        sub.add_parser(name, help=help_text, description=help_text, module_name=module_name,
                       formatter_class=argparse.RawDescriptionHelpFormatter)


def run(args: argparse.Namespace) -> int:
    return int(args._bench.run(args) or 0)
