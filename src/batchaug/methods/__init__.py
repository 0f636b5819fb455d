"""Training methods: baseline, Batch Augmentation (ba), regime adaptation (ra), Stochastic Batch
Augmentation (sba) and Split BatchNorms (splitbn). Each is a :class:`~batchaug.methods.base.Method`,
found by name through :data:`METHODS` and imported lazily (:mod:`batchaug.methods.spec`).

Methods are built from parts: :class:`~batchaug.methods.views.ViewsMethod` (M augmented views per
sample, cross-entropy over them, an optional batch transform such as MixUp/CutMix) is what baseline,
BA and RA are; a new method subclasses it or :class:`Method` directly (``docs/extending.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchaug.methods.base import LossOutput, Method, MethodBatch, MethodContext, Regime, SplitOutput
from batchaug.methods.spec import (
    METHODS,
    MethodSpec,
    declared_options,
    get_method_class,
)

__all__ = [
    "METHODS",
    "LossOutput",
    "Method",
    "MethodBatch",
    "MethodContext",
    "MethodSpec",
    "Regime",
    "SplitOutput",
    "build_method",
    "declared_options",
    "get_method_class",
    "validate_method_options",
]


def build_method(spec: MethodSpec | Mapping[str, Any], context: MethodContext) -> Method:
    """The method a ``method`` section describes (a :class:`MethodSpec` or its plain mapping)."""
    return MethodSpec.from_config(spec).build(context)


def validate_method_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A ``method`` section validated and completed with defaults, as a plain mapping."""
    return MethodSpec.from_config(raw).to_dict()
