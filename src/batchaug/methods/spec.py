"""The registry of training methods and the typed ``method`` section of a run config.

``METHODS`` maps a name to ``"module:Class"``; the module is imported only when the method is used,
so one method's optional dependencies never burden the others. Adding a method is one module that
defines a :class:`~batchaug.methods.base.Method` subclass with an ``Options`` dataclass, and one line
here (``docs/extending.md``).

A name means one idea on every modality, with one implementation per modality: ``METHODS`` holds the
image methods, ``TOKEN_METHODS`` those of token streams (language models), and a run's ``data.kind``
says which table its ``method.name`` is looked up in (:mod:`batchaug.modality`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchaug.errors import ConfigError
from batchaug.modality import IMAGES, TOKENS
from batchaug.schema import build, to_dict

if TYPE_CHECKING:
    from batchaug.methods.base import Method, MethodContext

#: name -> "module:Class" (imported on first use) or the class itself (registered at run time)
METHODS: dict[str, Any] = {
    "baseline": "batchaug.methods.batch_augmentation:Baseline",
    "ba": "batchaug.methods.batch_augmentation:BatchAugmentation",
    "ra": "batchaug.methods.batch_augmentation:RegimeAdaptation",
    "sba": "batchaug.methods.sba:StochasticBatchAugmentation",
    "splitbn": "batchaug.methods.splitbn:SplitBNMethod",
}
# name -> "module:Class" on token streams (data.kind ptb or text)
TOKEN_METHODS: dict[str, str] = {
    "baseline": "batchaug.methods.sequence:SequenceBaseline",
    "ba": "batchaug.methods.sequence:SequenceBatchAugmentation",
}
REGISTRIES: dict[str, dict[str, str]] = {IMAGES: METHODS, TOKENS: TOKEN_METHODS}

__all__ = ["METHODS", "REGISTRIES", "TOKEN_METHODS", "MethodSpec", "declared_options", "get_method_class"]


def _registry(modality: str) -> dict[str, str]:
    try:
        return REGISTRIES[modality]
    except KeyError:
        raise ConfigError(f"unknown modality {modality!r}; known: {', '.join(REGISTRIES)}") from None


def get_method_class(name: str, modality: str = IMAGES) -> type[Method]:
    """The Method subclass registered under ``name`` for ``modality``; ConfigError listing the names otherwise."""
    registry = _registry(modality)
    target = registry.get(name) if isinstance(name, str) else None
    if target is None:
        where = "" if modality == IMAGES else f" on {modality}"
        others = [m for m, table in REGISTRIES.items() if m != modality and isinstance(name, str) and name in table]
        hint = f" (it is a method for {others[0]}: check data.kind)" if others else ""
        raise ConfigError(f"method.name: unknown method {name!r}{where}{hint}; choose one of {', '.join(registry)}")
    if isinstance(target, type):
        return target
    module_name, cls_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ConfigError(f"method.name: method {name!r} is not available in this build") from exc
        raise
    return getattr(module, cls_name)


def declared_options(name: Any, modality: str = IMAGES) -> set[str] | None:
    """The option names method ``name`` declares on ``modality``; None when there is no such method."""
    if not isinstance(name, str) or name not in REGISTRIES.get(modality, {}):
        return None
    return {f.name for f in dataclasses.fields(get_method_class(name, modality).Options)}


@dataclass(frozen=True, eq=False)
class MethodSpec(Mapping[str, Any]):
    """A validated ``method`` section: the method's registry ``name`` and its typed ``options``
    (an instance of that method's ``Options`` dataclass).

    Build it with :meth:`from_config` (a mapping with ``name`` and options, as in YAML); make the
    method with :meth:`build`. It also reads like the mapping it was written as (``spec["m"]``,
    ``spec == {"name": "ba", ...}``), for scripts that treat config sections as dicts. ``modality``
    (``images`` or ``tokens``) is the table the name was looked up in; it follows from ``data.kind``
    and is not written to ``config.yaml``.
    """

    name: str
    options: Any
    modality: str = IMAGES

    @classmethod
    def from_config(cls, raw: Any, prefix: str = "method", modality: str | None = None) -> MethodSpec:
        """Validate a ``method`` section (``None`` or ``{}``: the baseline with its defaults) as a method
        of ``modality`` (images when None; a spec passed in keeps its own unless another is asked for)."""
        if isinstance(raw, MethodSpec):
            if modality in (None, raw.modality):
                return raw
            raw = raw.to_dict()
        modality = modality or IMAGES
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{prefix}: expected a mapping with a name, got {raw!r}")
        raw = dict(raw)
        name = raw.pop("name", "baseline")
        if not isinstance(name, str):
            raise ConfigError(f"{prefix}.name: expected a string, got {name!r}")
        method_class = get_method_class(name, modality)
        return cls(name, build(method_class.Options, raw, prefix), modality)

    @classmethod
    def default(cls, modality: str = IMAGES) -> MethodSpec:
        return cls.from_config({}, modality=modality)

    @property
    def method_class(self) -> type[Method]:
        return get_method_class(self.name, self.modality)

    def build(self, context: MethodContext) -> Method:
        """The method object for a run with ``context``."""
        return self.method_class(self.options, context)

    def with_options(self, **changes: Any) -> MethodSpec:
        """A copy with some options changed, validated again."""
        return MethodSpec.from_config({**self.to_dict(), **changes}, modality=self.modality)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., **options}`` in plain values, as written to ``config.yaml``."""
        return {"name": self.name, **to_dict(self.options)}

    # read-only mapping view
    def __getitem__(self, key: str) -> Any:
        if key == "name":
            return self.name
        if isinstance(key, str) and key in {f.name for f in dataclasses.fields(self.options)}:
            return getattr(self.options, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield "name"
        yield from (f.name for f in dataclasses.fields(self.options))

    def __len__(self) -> int:
        return 1 + len(dataclasses.fields(self.options))

    def __repr__(self) -> str:
        return f"MethodSpec({self.to_dict()!r})"
