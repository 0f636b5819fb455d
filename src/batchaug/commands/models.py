"""List the model zoo: every registered model with its parameter count for --num-classes classes.

Models are built on PyTorch's meta device to count their parameters, so nothing is allocated (the
whole list takes about 4 s on a 2-core CPU, mostly importing torch and torchvision). Besides the
names listed, any torchvision classification model is available as tv:<name> (e.g. tv:resnet18),
any timm model as timm:<name> (pip install batchaug[timm]), and any Wide ResNet as
wrn<depth>_<widen> (e.g. wrn16_8).

  batchaug models
  batchaug models --family cifar --num-classes 100
  batchaug models --json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchaug.errors import ConfigError

# batchaug.models.FAMILIES, spelled out so that building the parser does not import torch (and
# ``batchaug --help`` stays fast); tests/test_cli.py checks that the two agree.
FAMILIES = ("cifar", "imagenet")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects instead of a table")
    parser.add_argument("--num-classes", type=int, default=10, metavar="N",
                        help="count parameters for N output classes (default: 10)")
    parser.add_argument("--family", choices=FAMILIES, default=None,
                        help="only models designed for CIFAR-size (32x32) or ImageNet-size (224x224) inputs")


def model_rows(num_classes: int = 10, family: str | None = None) -> list[dict[str, Any]]:
    """One dict per registered model (optionally of one family), with ``params`` for ``num_classes``."""
    import torch

    from batchaug.models import build_model, count_params, list_models

    if num_classes < 1:
        raise ConfigError(f"--num-classes must be a positive int, got {num_classes}")
    rows = []
    for spec in list_models():
        if family is not None and spec.family != family:
            continue
        with torch.device("meta"):
            params = count_params(build_model(spec.name, num_classes=num_classes))
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


def run(args: argparse.Namespace) -> int:
    rows = model_rows(args.num_classes, args.family)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "family", "input", f"params@{args.num_classes}", "published", "description")
    table = [(r["name"], r["family"], str(r["input_size"]), _millions(r["params"]),
              _millions(r["published_params"]), r["description"]) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(header)]
    for line in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print("\npublished: the source's count for 10 (cifar) or 1000 (imagenet) classes. Also: tv:<torchvision "
          "name>, timm:<timm name>, wrn<depth>_<widen>.")
    return 0
