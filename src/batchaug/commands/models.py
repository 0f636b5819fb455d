"""List the model zoo: every registered model with its parameter count for --num-classes classes
(language models: for a --vocab-word vocabulary, Penn Treebank's 10,000 by default).

Models are built on PyTorch's meta device to count their parameters, so nothing is allocated (the
whole list takes about 4 s on a 2-core CPU, mostly importing torch and torchvision). Besides the
names listed, any torchvision classification model is available as tv:<name> (e.g. tv:resnet18),
any timm model as timm:<name> (pip install batchaug[timm]), and any Wide ResNet as
wrn<depth>_<widen> (e.g. wrn16_8).

  batchaug models
  batchaug models --family cifar --num-classes 100
  batchaug models --family text
  batchaug models --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchaug.errors import ConfigError

# batchaug.models.FAMILIES, spelled out so that building the parser does not import torch (and
# ``batchaug --help`` stays fast); tests/test_cli.py checks that the two agree.
FAMILIES = ("cifar", "imagenet", "text")
PTB_VOCAB = 10_000


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.add_argument("--num-classes", type=int, default=10, metavar="N",
                        help="count parameters for N output classes (default: 10)")
    parser.add_argument("--vocab", type=int, default=PTB_VOCAB, metavar="V",
                        help=f"count language-model parameters for a V-word vocabulary (default: {PTB_VOCAB}, PTB)")
    parser.add_argument("--family", choices=FAMILIES, default=None,
                        help="only models designed for CIFAR-size (32x32) or ImageNet-size (224x224) inputs, "
                        "or language models (text)")


def model_rows(num_classes: int = 10, family: str | None = None, vocab: int = PTB_VOCAB) -> list[dict[str, Any]]:
    """One dict per registered model (optionally of one family), with ``params`` for ``num_classes``
    (image models) or a ``vocab``-word vocabulary (language models)."""
    import torch

    from batchaug.models import build_model, count_params, list_models

    if num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive int, got {num_classes}")
    if vocab < 1:
        raise ConfigError(f"--vocab must be a positive int, got {vocab}")
    rows = []
    for spec in list_models():
        if family is not None and spec.family != family:
            continue
        with torch.device("meta"):
            params = count_params(build_model(spec.name, num_classes=vocab if spec.family == "text" else num_classes))
        rows.append({
            "name": spec.name,
            "params": params,
            "family": spec.family,
            "input_size": spec.input_size,
            "published_params": spec.published_params,
            "sba_layers": list(spec.sba_layers),
            "description": spec.description,
            "citation": spec.citation,
        })
    return rows


def _millions(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _print_table(header: tuple[str, ...], table: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(header)]
    for line in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    rows = model_rows(args.num_classes, args.family, args.vocab)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    images = [r for r in rows if r["family"] != "text"]
    texts = [r for r in rows if r["family"] == "text"]
    if images:
        _print_table(("name", "family", "input", f"params@{args.num_classes}", "published", "description"),
                     [(r["name"], r["family"], str(r["input_size"]), _millions(r["params"]),
                       _millions(r["published_params"]), r["description"]) for r in images])
    if texts:
        if images:
            print()
        _print_table(("language model", f"params@{args.vocab} words", "published", "description"),
                     [(r["name"], _millions(r["params"]), _millions(r["published_params"]), r["description"])
                      for r in texts])
    print("\npublished: the source's count for 10 (cifar) or 1000 (imagenet) classes, or a 10,000-word "
          "vocabulary (text). Also: tv:<torchvision name>, timm:<timm name>, wrn<depth>_<widen>.")
    return 0
