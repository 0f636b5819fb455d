"""Training methods: baseline, Batch Augmentation (ba), regime adaptation (ra), Stochastic Batch
Augmentation (sba) and Split BatchNorms (splitbn). Each is a :class:`~batchaug.methods.base.Method`,
found by name through :data:`METHODS` and imported lazily (:mod:`batchaug.methods.spec`). On token
streams (language models) ``baseline`` and ``ba`` are :mod:`batchaug.methods.sequence`'s
(:data:`TOKEN_METHODS`).

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
    TOKEN_METHODS,
    MethodSpec,
    declared_options,
    get_method_class,
)

__all__ = [
    "METHODS",
    "TOKEN_METHODS",
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


def build_method(spec: MethodSpec | Mapping[str, Any], context: MethodContext, modality: str | None = None) -> Method:
    """The method a ``method`` section describes (a :class:`MethodSpec`, built for its own modality, or
    its plain mapping, for ``modality``: images when None)."""
    if isinstance(spec, MethodSpec) and modality in (None, spec.modality):
        return spec.build(context)
    return MethodSpec.from_config(spec, modality=modality or "images").build(context)


def validate_method_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A ``method`` section validated and completed with defaults, as a plain mapping."""
    return MethodSpec.from_config(raw).to_dict()
