"""Typed options on dataclasses: coercion of plain YAML values, declared constraints, one error style.

Every option of batchaug (the run config's sections and each method's ``Options``) is a dataclass
field. Its type says what a value may be (``int``, ``float | None``, ``Literal[...]``, a list, a
nested dataclass), and :func:`option` declares what no type can say: a range or a set of choices.
:func:`build` turns a mapping of plain values into the dataclass, checking both, and every error
names the dotted key and what is allowed, e.g. ``train.batch_size: must be >= 1, got 0``::

    @dataclass
    class MyOptions:
        m: int = option(4, ge=1)
        \"\"\"Views per sample.\"\"\"
        rate: float = option(0.1, ge=0, lt=1)

    build(MyOptions, {"m": "8"}, "method")   # MyOptions(m=8, rate=0.1)

Checks that involve several fields go in a ``validate(self, prefix)`` method, which :func:`build`
calls last. This module imports nothing of batchaug but its errors, so any module may use it.

Hand-rolled rather than pydantic because the error message is the product here (dotted key +
allowed values) and the schema is small.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

from batchaug.errors import ConfigError

__all__ = ["Bounds", "build", "check_bounds", "coerce", "describe", "option", "shown", "to_dict"]

_MISSING: Any = dataclasses.MISSING
SHOWN_CHARS = 80
"""Longest ``repr`` of a value that an error message quotes whole (:func:`shown`)."""


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut in the middle when longer than ``limit`` characters, so
    that a pasted megabyte never ends up in a one-line error."""
    try:
        text = repr(value)
    except RecursionError:  # a self-referencing container
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    keep = max(8, limit - 24)
    return f"{text[:keep]}...<{len(text)} characters>"
_KEY = "batchaug"  # the dataclass field metadata entry that holds the Bounds


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a number must satisfy (``ge``/``gt``/``le``/``lt``) and, for any value, ``choices``.

    For a list the bounds apply to every item; ``None`` (where the type allows it) is always allowed.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        parts = []
        if self.ge is not None:
            parts.append(f">= {_num(self.ge)}")
        if self.gt is not None:
            parts.append(f"> {_num(self.gt)}")
        if self.le is not None:
            parts.append(f"<= {_num(self.le)}")
        if self.lt is not None:
            parts.append(f"< {_num(self.lt)}")
        if len(parts) == 2:
            return f"in {self._interval()}"
        return " and ".join(parts)

    def _interval(self) -> str:
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}"
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})"
        return f"{low}, {high}"

    def check(self, value: Any, key: str) -> None:
        if value is None:
            return
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(item, f"{key}[{i}]")
            return
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key}: {shown(value)} is not allowed; "
                              f"choose one of {', '.join(map(repr, self.choices))}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        if isinstance(value, float) and not math.isfinite(value) and self.describe():
            raise ConfigError(f"{key}: must be a finite number {self.describe()}, got {shown(value)}")
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        if not ok:
            raise ConfigError(f"{key}: must be {self.describe()}, got {shown(value)}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def option(default: Any = _MISSING, *, default_factory: Callable[[], Any] | None = None, ge: float | None = None,
           gt: float | None = None, le: float | None = None, lt: float | None = None,
           choices: Sequence[Any] | None = None) -> Any:
    """A dataclass field with declared bounds (see :class:`Bounds`), checked by :func:`build`."""
    bounds = Bounds(ge, gt, le, lt, tuple(choices) if choices is not None else None)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: bounds})
    return dataclasses.field(default=default, metadata={_KEY: bounds})


def bounds_of(cls: type, name: str) -> Bounds | None:
    """The bounds declared on field ``name`` of dataclass ``cls`` (None when it has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get(_KEY)
    raise KeyError(name)


def check_bounds(value: Any, key: str, *, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None) -> None:
    """Check one number outside a dataclass with the same rule and message as a declared field."""
    Bounds(ge, gt, le, lt).check(value, key)


# ---------------------------------------------------------------------------------------- coercion


def describe(tp: Any) -> str:
    """What values of type ``tp`` look like, for error messages."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is list:
        return f"a list of {describe(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "a mapping"
    if tp is Any:
        return "any value"
    return {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}.get(
        getattr(tp, "__name__", ""), getattr(tp, "__name__", str(tp)))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{key}: {shown(value)} is not allowed; choose {describe(tp)}")
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and (dataclasses.is_dataclass(others[0]) or hasattr(others[0], "from_config")):
            return coerce(value, others[0], key)  # ``Section | None``: the section's own error says what is wrong
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {shown(value)} is not {describe(tp)}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {shown(value)}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            value = [value]
        return [coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key}: expected a list, got {shown(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {shown(value)}")
        return dict(value)
    if tp is bool:
        return _to_bool(value, key)
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        return _to_float(value, key)
    if tp is str:
        # a number is not a name: ``model.name=1e3`` must not become "1000.0"
        if isinstance(value, str):
            return value
        hint = " (quote it to mean the text)" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        raise ConfigError(f"{key}: expected a string, got {shown(value)}{hint}")
    if callable(getattr(tp, "from_config", None)):  # a type that builds itself (e.g. a method spec)
        return tp.from_config(value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - schema bug


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
        return value.lower() in ("true", "yes", "on")
    raise ConfigError(f"{key}: expected true or false, got {shown(value)}")


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {shown(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                as_float = math.nan
            if math.isfinite(as_float) and as_float.is_integer():
                return int(as_float)
    raise ConfigError(f"{key}: expected an integer, got {shown(value)}")


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {shown(value)}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a number, got {shown(value)}")


# -------------------------------------------------------------------------------------- dataclasses


def build(cls: type, values: Mapping[str, Any] | None, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values`` (plain YAML values), with dotted-key errors.

    Unknown keys are rejected with the allowed ones listed; each value is coerced to its field's
    type and checked against the field's :func:`option` bounds; then ``validate(prefix)`` runs.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of keys, got {shown(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        where = f"{prefix}." if prefix else ""
        name = str(unknown[0]) if len(str(unknown[0])) <= SHOWN_CHARS else shown(str(unknown[0]))
        raise ConfigError(f"unknown key {where}{name}; allowed keys{' in ' + prefix if prefix else ''}: "
                          + ", ".join(sorted(fields)))
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = coerce(value, hints[name], key)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{prefix}: {exc}") from exc
    for name, f in fields.items():
        bounds = f.metadata.get(_KEY)
        if bounds is not None:
            bounds.check(getattr(obj, name), f"{prefix}.{name}" if prefix else name)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(prefix)
    return obj


def to_dict(obj: Any) -> Any:
    """Plain (YAML-ready) values of a dataclass, recursively; a field value with its own
    ``to_dict`` (e.g. a method spec) is written with it."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    return _plain(obj)


def _plain(value: Any) -> Any:
    if callable(getattr(value, "to_dict", None)) and not isinstance(value, type):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
