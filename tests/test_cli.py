"""The command line itself: building the parser and every ``--help`` import no torch, the choices
spelled out for that agree with the real ones, and ``key=value`` overrides may follow options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import batchaug
from batchaug.cli import SUBCOMMANDS, build_parser, main, parse_args

REPO = Path(__file__).resolve().parents[1]
QUICK = "configs/quick/cifar10_resnet20.yaml"
HEAVY = ("torch", "torchvision", "numpy", "matplotlib")

# Runs a batchaug command line in a fresh interpreter and prints its exit status and which heavy
# modules it imported, as JSON (one process per command: sys.modules of this one already has torch).
_PROBE = """
import json, runpy, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["batchaug", *json.loads(sys.argv[1])]
try:
    runpy.run_module("batchaug", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def _fresh_python(*args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` importing the batchaug under test (this checkout's, whatever is installed)."""
    env = dict(os.environ, PYTHONPATH=str(Path(batchaug.__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)


def test_building_the_parser_imports_no_torch() -> None:
    code = ("import sys; from batchaug.cli import build_parser; build_parser(); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    proc = _fresh_python("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [[], *([name] for name in SUBCOMMANDS),
                                     ["data", "info"], ["data", "verify"], ["data", "cache"]],
                         ids=lambda c: " ".join(c) or "batchaug")
def test_every_help_exits_0_without_importing_torch(command: list[str]) -> None:
    proc = _fresh_python("-c", _PROBE, json.dumps([*command, "--help"]), json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.strip().splitlines()
    result = json.loads(last)
    assert result == {"code": 0, "heavy": []}, proc.stderr
    assert printed[0].startswith("usage: batchaug")


def test_bench_parsers_load_their_module_when_used(capsys: pytest.CaptureFixture[str]) -> None:
    # the deferred benchmark parser still declares the module's arguments before parsing them
    args = parse_args(build_parser(), ["bench", "augment", "--quick", "--m", "1", "2"])
    assert args.quick and args.m == [1, 2] and args._bench.__name__ == "batchaug.bench.augment"
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["bench", "step", "--no-such-option"])
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


# ------------------------------------------------------------------ choices spelled out for speed


def test_spelled_out_choices_agree_with_the_real_ones() -> None:
    from batchaug.commands import data as data_cmd
    from batchaug.commands import models as models_cmd
    from batchaug.data.decode import RESIZE_MODES
    from batchaug.data.sources import CHECKS, KINDS
    from batchaug.models import FAMILIES

    assert models_cmd.FAMILIES == FAMILIES
    assert (data_cmd.KINDS, data_cmd.CHECKS, data_cmd.RESIZE_MODES) == (KINDS, CHECKS, RESIZE_MODES)


def test_benchmark_help_lines_are_their_docstrings_first_lines() -> None:
    import importlib

    from batchaug.commands.bench import BENCHMARKS

    for name, (module_name, help_text) in BENCHMARKS.items():
        doc = importlib.import_module(module_name).__doc__ or ""
        assert doc.strip().splitlines()[0] == help_text, name


# ------------------------------------------------------------------------ overrides after options


@pytest.mark.parametrize("argv, config, out, overrides", [
    (["train", QUICK, "--out", "runs/x", "a.b=1"], QUICK, "runs/x", ["a.b=1"]),
    (["train", QUICK, "a.b=1", "--out", "runs/x", "c.d=2"], QUICK, "runs/x", ["a.b=1", "c.d=2"]),
    (["train", QUICK, "a.b=1", "--out", "runs/x", "c.d=2", "--print-config", "e.f=3"], QUICK, "runs/x",
     ["a.b=1", "c.d=2", "e.f=3"]),
    (["train", "--out", "runs/x", QUICK, "a.b=1"], QUICK, "runs/x", ["a.b=1"]),
    (["train", QUICK, "--out", "runs/x"], QUICK, "runs/x", []),
])
def test_train_overrides_before_and_after_options(argv: list[str], config: str, out: str,
                                                   overrides: list[str]) -> None:
    from batchaug.commands.train import _split_positionals

    args = parse_args(build_parser(), argv)
    assert args.config == config and args.out == Path(out)
    assert _split_positionals(args) == (config, overrides)


@pytest.mark.parametrize("argv, overrides", [
    (["train", "--resume", "runs/x", "a.b=1"], ["a.b=1"]),
    (["train", "--resume", "runs/x", "a.b=1", "c.d=2"], ["a.b=1", "c.d=2"]),
    (["train", "a.b=1", "--resume", "runs/x", "c.d=2"], ["a.b=1", "c.d=2"]),
])
def test_resume_with_overrides_has_no_config(argv: list[str], overrides: list[str]) -> None:
    from batchaug.commands.train import _split_positionals

    args = parse_args(build_parser(), argv)
    assert args.resume == Path("runs/x")
    # the first positional is an override, not a config file, when no config is given
    assert _split_positionals(args) == (None, overrides)


@pytest.mark.parametrize("argv, overrides", [
    (["demo", "--out", "runs/d", "a.b=1"], ["a.b=1"]),
    (["demo", "a.b=1", "--out", "runs/d", "c.d=2"], ["a.b=1", "c.d=2"]),
    (["demo", "--m", "2", "a.b=1", "--out", "runs/d", "c.d=2"], ["a.b=1", "c.d=2"]),
])
def test_demo_overrides_before_and_after_options(argv: list[str], overrides: list[str]) -> None:
    args = parse_args(build_parser(), argv)
    assert args.out == Path("runs/d") and args.overrides == overrides


@pytest.mark.parametrize("argv, leftover", [
    (["train", QUICK, "--out", "runs/x", "other.yaml"], "other.yaml"),  # not an override
    (["train", QUICK, "--out", "runs/x", "a.b=1", "--no-such=1"], "--no-such=1"),  # an option, never one
    (["eval", "runs/x", "a.b=1"], "a.b=1"),  # eval takes no overrides
])
def test_other_leftovers_are_still_unrecognized(argv: list[str], leftover: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    # only what is truly unrecognized is named; overrides of train went to args.overrides
    assert capsys.readouterr().err.splitlines()[-1] == f"batchaug: error: unrecognized arguments: {leftover}"


def test_print_config_applies_an_override_after_an_option(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert main(["train", QUICK, "--print-config", "train.max_steps=7"]) == 0
    printed = capsys.readouterr().out
    train_section = printed[printed.index("\ntrain:"):]
    assert "\n  max_steps: 7\n" in train_section


def test_train_print_gives_one_command_per_sweep_point_and_trains_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    out = tmp_path / "m"
    assert main(["train", QUICK, "method.name=ba", "--sweep", "method.m=2,4", "--out", str(out), "--print"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"batchaug train {QUICK} method.name=ba method.m={m} --out {out}/method.m={m}" for m in (2, 4)]
    assert not out.exists()
    assert main(["train", QUICK, "--sweep", "method.m=2,x", "--out", str(out), "--print"]) == 2  # checked first
