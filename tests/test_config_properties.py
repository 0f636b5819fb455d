"""Property tests (hypothesis) of config parsing: whatever the text, the answer is a config or a ConfigError
(never another exception, never a silently out-of-range value), a config survives its own ``config.yaml``,
and an error message stays short whatever the value it quotes."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from batchaug.config import (  # noqa: E402
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    dump_config,
    load_config,
    parse_override,
    parse_yaml,
    resolve_config,
)
from batchaug.errors import ConfigError  # noqa: E402
from batchaug.schema import bounds_of  # noqa: E402

SECTIONS = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "train": TrainConfig,
            "eval": EvalConfig}


def _numeric_keys() -> list[tuple[str, type, object]]:
    """(dotted key, section class, field name) of every int or float option."""
    out = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = set(typing.get_args(hint)) | {hint}
            if typing.get_origin(hint) is not list and args & {int, float}:
                out.append((f"{section}.{f.name}", cls, f.name))
    out.append(("seed", RunConfig, "seed"))
    return out


NUMERIC = _numeric_keys()
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

values = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["null", "true", "[1, 2]", "{a: 1}", "1e30", "-0", "0x10", "nan", ".inf", "1_000", "~"]),
)


def _value_of(cfg: RunConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


@FAST
@given(st.sampled_from(NUMERIC), values)
def test_a_numeric_override_is_a_valid_config_or_a_config_error(entry, value):
    key, cls, name = entry
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as exc:
        assert key in str(exc) or "override" in str(exc), str(exc)
        assert len(str(exc)) < 1000
        return
    got = _value_of(cfg, key)
    bounds = bounds_of(cls, name)
    if got is not None:
        assert isinstance(got, (int, float)) and not isinstance(got, bool)
        assert math.isfinite(got) or bounds is None or not bounds.describe()
        if bounds is not None:
            bounds.check(got, key)  # never a silently out-of-range value
    again = resolve_config(yaml.safe_load(dump_config(cfg)))  # config.yaml round trip
    assert again.to_dict() == cfg.to_dict()


@FAST
@given(st.text(max_size=200))
def test_any_override_text_parses_or_is_a_config_error(text):
    try:
        path, value = parse_override(text)
    except ConfigError:
        return
    assert path and all(path)


@FAST
@given(st.text(max_size=300))
def test_any_yaml_text_parses_or_is_a_config_error(text):
    try:
        parse_yaml(text, "test")
    except ConfigError as exc:
        assert "\n" not in str(exc) or len(str(exc)) < 3000


@FAST
@given(st.sampled_from(NUMERIC + [("model.name", None, None), ("data.kind", None, None), ("method.name", None, None)]),
       st.text(min_size=500, max_size=5000))
def test_error_messages_stay_short_whatever_the_value(entry, text):
    key = entry[0]
    try:
        load_config(None, [f"{key}={text}"])
    except ConfigError as exc:
        assert len(str(exc)) < 1200, (key, len(str(exc)))


@FAST
@given(st.dictionaries(st.sampled_from(["train", "optim", "data", "eval", "model", "seed", "zzz"]),
                       st.one_of(st.integers(), st.text(max_size=10), st.none(),
                                 st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=5),
                                                 max_size=3)),
                       max_size=4))
def test_any_mapping_resolves_or_is_a_config_error(raw):
    try:
        cfg = resolve_config(raw)
    except ConfigError:
        return
    assert resolve_config(yaml.safe_load(dump_config(cfg))).to_dict() == cfg.to_dict()


def _leaves(d: dict, prefix: str = "") -> list[str]:
    return [key for k, v in d.items()
            for key in (_leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v and k != "kwargs"
                        else [f"{prefix}{k}"])]


DEFAULTS = load_config(None)
LEAVES = _leaves(DEFAULTS.to_dict())


@settings(max_examples=25, deadline=None)
@given(st.sets(st.sampled_from(LEAVES), max_size=12))
def test_a_stored_config_without_keys_added_since_is_no_change_on_resume(missing):
    """A checkpoint written before some keys existed (they are absent from its stored config) compares equal
    to the config with those keys at their defaults: resuming it is never refused for them."""
    from batchaug.train.resume import config_changes

    stored = json.loads(json.dumps(DEFAULTS.to_dict()))
    for key in missing:
        *parents, leaf = key.split(".")
        node = stored
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    assert config_changes(stored, DEFAULTS) == []
