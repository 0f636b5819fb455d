"""The schema: declared ranges on every numeric key, one error style, no import cycle with methods."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from dataclasses import dataclass

import pytest

from batchaug.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    dump_config,
    load_config,
    resolve_config,
)
from batchaug.errors import ConfigError
from batchaug.methods import METHODS, MethodSpec, get_method_class
from batchaug.schema import Bounds, bounds_of, build, check_bounds, option

QUICK = "configs/quick/cifar10_resnet20.yaml"


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "train.batch_size: must be >= 1, got 0"),
    ("optim.momentum=1.5", "optim.momentum: must be in [0, 1), got 1.5"),
    ("train.eval_every=0", "train.eval_every: must be >= 1, got 0"),
    ("data.image_size=0", "data.image_size: must be >= 1, got 0"),
    ("model.name=1e3", "model.name: expected a string, got 1000.0 (quote it to mean the text)"),
    ("optim.lr=-0.1", "optim.lr: must be >= 0, got -0.1"),
    ("optim.milestones=[3,-1]", "optim.milestones[1]: must be >= 0, got -1.0"),
    ("train.epochs=0", "train.epochs: must be > 0, got 0.0"),
    ("train.ema_decay=1", "train.ema_decay: must be in [0, 1), got 1.0"),
    ("optim.clip_grad_norm=0", "optim.clip_grad_norm: must be > 0, got 0.0"),
    ("train.loggers=[csv,mlflow]", "train.loggers[1]: 'mlflow' is not allowed; choose one of 'tensorboard', 'csv'"),
    ("seed=-1", "seed: must be in [0, 4294967296), got -1"),
    ("optim.lr=nan", "optim.lr: must be a finite number >= 0, got nan"),
])
def test_bad_values_name_the_key_and_its_range(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(QUICK, [override])
    assert message in str(info.value)


def _numeric(tp: typing.Any) -> bool:
    args = typing.get_args(tp) or (tp,)
    return any(a in (int, float) for a in args) or any(_numeric(a) for a in typing.get_args(tp))


@pytest.mark.parametrize("cls", [DataConfig, ModelConfig, OptimConfig, TrainConfig, EvalConfig, RunConfig]
                         + [get_method_class(name).Options for name in METHODS], ids=lambda c: c.__name__)
def test_every_numeric_key_declares_a_range(cls: type) -> None:
    """A number without bounds is a number nobody thought about (SBA's p/omega check theirs in validate)."""
    hints = typing.get_type_hints(cls)
    unbounded = [f.name for f in dataclasses.fields(cls)
                 if _numeric(hints[f.name]) and hints[f.name] is not bool and bounds_of(cls, f.name) is None
                 and (cls.__name__, f.name) not in {("SBAOptions", "p"), ("SBAOptions", "omega")}]
    assert not unbounded, f"{cls.__name__}: numeric options without a declared range: {unbounded}"


def test_the_method_section_is_a_typed_spec_built_once() -> None:
    cfg = load_config(QUICK, ["method.name=ba", "method.m=3", "method.mix=cutmix"])
    assert isinstance(cfg.method, MethodSpec) and cfg.method.name == "ba"
    assert type(cfg.method.options).__name__ == "BAOptions" and cfg.method.options.m == 3
    assert cfg.method["m"] == 3 and dict(cfg.method)["mix"] == "cutmix"  # also reads as a mapping
    again = resolve_config(__import__("yaml").safe_load(dump_config(cfg)))
    assert again == cfg and again.method == cfg.method.to_dict()
    assert cfg.method.with_options(m=5).options.m == 5 and cfg.method.options.m == 3
    with pytest.raises(ConfigError, match="method.m: must be >= 1"):
        cfg.method.with_options(m=0)


def test_config_and_methods_do_not_import_each_other() -> None:
    """The schema is a leaf; importing the methods must not pull in the run config."""
    code = ("import sys, batchaug.schema as s; assert set(m for m in sys.modules if m.startswith('batchaug')) <= "
            "{'batchaug', 'batchaug.schema', 'batchaug.errors'}, sorted(sys.modules);"
            "import batchaug.methods, batchaug.methods.batch_augmentation, batchaug.methods.sba, "
            "batchaug.methods.splitbn; assert 'batchaug.config' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_option_bounds_on_a_users_dataclass() -> None:
    @dataclass
    class Options:
        m: int = option(4, ge=1)
        rate: float | None = option(None, gt=0, le=1)
        kind: str = option("a", choices=("a", "b"))

    assert build(Options, {"m": "8", "rate": 0.5}, "x") == Options(8, 0.5, "a")
    assert build(Options, {}, "x").rate is None  # None is always allowed where the type allows it
    for values, message in (({"m": 0}, "x.m: must be >= 1, got 0"), ({"rate": 0}, r"x.rate: must be in (0, 1]"),
                            ({"kind": "c"}, "x.kind: 'c' is not allowed; choose one of 'a', 'b'"),
                            ({"q": 1}, "unknown key x.q; allowed keys in x: kind, m, rate")):
        with pytest.raises(ConfigError) as info:
            build(Options, values, "x")
        assert message in str(info.value)


def test_bounds_describe_and_check() -> None:
    assert Bounds(ge=0, lt=1).describe() == "in [0, 1)" and Bounds(gt=0).describe() == "> 0"
    check_bounds(3, "k", ge=1)
    with pytest.raises(ConfigError, match="k: must be >= 1, got 0"):
        check_bounds(0, "k", ge=1)
