"""``batchaug sweep``: the grid, its directory names and command lines, and, training for real on a slice
of the shared CIFAR-10, that a second invocation skips finished runs and resumes one killed mid-run."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from batchaug.cli import main
from batchaug.config import apply_overrides, load_yaml, resolve_config
from batchaug.errors import ConfigError
from batchaug.train.sweep import Sweep, point_state, split_values

REPO = Path(__file__).resolve().parents[1]
QUICK = "configs/quick/cifar10_resnet20.yaml"


def test_values_split_on_commas_outside_brackets_and_quotes():
    assert split_values("1,2,4") == ["1", "2", "4"]
    assert split_values("[3,4],[5, 6]") == ["[3,4]", "[5, 6]"]
    assert split_values("{name: ba, m: 2},{name: baseline}") == ["{name: ba, m: 2}", "{name: baseline}"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]
    assert split_values("0.1") == ["0.1"]


def test_axes_are_the_keys_with_several_values_and_name_the_run_directories(tmp_path):
    sweep = Sweep.from_tokens(QUICK, ["method.name=ba", "method.m=1,2", "optim.milestones=[3,4]"], tmp_path,
                              seeds="0,1")
    assert sweep.fixed == ["method.name=ba", "optim.milestones=[3,4]"]
    assert [p.name for p in sweep.points] == ["method.m=1,seed=0", "method.m=1,seed=1", "method.m=2,seed=0",
                                              "method.m=2,seed=1"]
    assert sweep.run_dir(sweep.points[3]) == tmp_path / "method.m=2,seed=1"
    assert sweep.overrides(sweep.points[3]) == ["method.name=ba", "optim.milestones=[3,4]", "method.m=2", "seed=1"]
    # without axes the sweep is one run, in OUT itself
    single = Sweep.from_tokens(QUICK, ["method.m=4"], tmp_path)
    assert [single.run_dir(p) for p in single.points] == [tmp_path]
    with pytest.raises(ConfigError, match="seeds once"):
        Sweep.from_tokens(QUICK, ["seed=0,1"], tmp_path, seeds="2")


def test_train_sweep_shorthand_names_every_swept_key():
    # `train --sweep k=v` (one value) has always put the run in OUT/k=v/
    sweep = Sweep.from_specs(QUICK, ["method.name=ba"], ["method.m=4", "seed=0,1"], "runs/x")
    assert [p.name for p in sweep.points] == ["method.m=4,seed=0", "method.m=4,seed=1"]
    with pytest.raises(ConfigError, match="lists no values"):
        Sweep.from_specs(QUICK, [], ["method.m="], "runs/x")


def test_print_writes_plain_and_torchrun_command_lines_that_resolve(capsys, tmp_path):
    out = tmp_path / "grid"
    assert main(["sweep", QUICK, "method.name=ba", "--out", str(out), "method.m=2,4", "--print",
                 "--nproc-per-node", "4"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln and not ln.startswith("#")]
    plain, torchrun = lines[:2], lines[2:]
    assert len(torchrun) == 2 and all(ln.startswith("torchrun --standalone --nproc_per_node=4 -m batchaug train ")
                                      for ln in torchrun)
    raw = load_yaml(REPO / QUICK)
    for line, m in zip(plain, (2, 4), strict=True):
        tokens = shlex.split(line)
        assert tokens[:3] == ["batchaug", "train", QUICK] and tokens[-2:] == ["--out", str(out / f"method.m={m}")]
        cfg = resolve_config(apply_overrides(raw, tokens[3:-2]))
        assert cfg.method.name == "ba" and cfg.method.options.m == m
    assert not out.exists()  # printing trains nothing


def test_a_point_directory_of_another_run_stops_the_sweep_before_training(tmp_path, capsys):
    out = tmp_path / "grid"
    (out / "method.m=2").mkdir(parents=True)
    (out / "method.m=2" / "config.yaml").write_text("method: {name: ba, m: 3}\n")
    (out / "method.m=2" / "summary.json").write_text("{}")
    assert point_state(out / "method.m=2") == "done"
    assert main(["sweep", QUICK, "method.name=ba", "method.m=1,2", "--out", str(out)]) == 2
    assert "holds a run of another configuration" in capsys.readouterr().err
    assert not (out / "method.m=1").exists()


def test_a_saved_config_lacking_keys_added_since_is_the_same_configuration(tmp_path, capsys):
    """A run written before a key existed had that key's default behaviour: its config.yaml, resolved by
    today's schema, is the point's configuration, not 'another configuration'."""
    out = tmp_path / "grid"
    for m in (1, 2):
        run = out / f"method.m={m}"
        run.mkdir(parents=True)
        saved = resolve_config(apply_overrides(load_yaml(REPO / QUICK), ["method.name=ba", f"method.m={m}"])).to_dict()
        for key in ("deterministic", "compile"):  # train keys that came after the first sweeps
            del saved["train"][key]
        (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
        (run / "summary.json").write_text('{"final_val_acc": 0.5}')
    assert main(["sweep", QUICK, "method.name=ba", "method.m=1,2", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 2
    # a saved value that differs from the point's is still another configuration
    (out / "method.m=2" / "config.yaml").write_text(
        (out / "method.m=2" / "config.yaml").read_text().replace("lr: 0.1", "lr: 0.2"))
    assert main(["sweep", QUICK, "method.name=ba", "method.m=1,2", "--out", str(out)]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_point_states(tmp_path):
    assert point_state(tmp_path / "none") == "new"
    (tmp_path / "metrics.jsonl").write_text('{"kind": "step", "step": 5}\n')
    assert point_state(tmp_path) == "restart"
    (tmp_path / "last.pt").write_bytes(b"")
    assert point_state(tmp_path) == "resume"
    (tmp_path / "summary.json").write_text('{"final_val_acc": 0.5')  # cut by a kill while written
    assert point_state(tmp_path) == "resume"
    (tmp_path / "summary.json").write_text('{"final_val_acc": 0.5}')
    assert point_state(tmp_path) == "done"


def _documented_sweeps() -> list[list[str]]:
    """``batchaug sweep`` commands of the ```bash blocks of the docs and README."""
    paths = [REPO / "docs" / n for n in ("configs.md", "ba.md", "sba.md", "report.md")] + [REPO / "README.md"]
    commands = []
    for path in paths:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if line.startswith("batchaug sweep "):
                    commands.append(shlex.split(line.split("  #")[0])[2:])
    return commands


def test_documented_sweep_commands_resolve_at_every_point():
    commands = _documented_sweeps()
    assert commands, "no batchaug sweep command in the docs"
    for tokens in commands:
        config = tokens[0]
        rest, seeds, out = [], None, "runs/x"
        it = iter(tokens[1:])
        for tok in it:
            if tok == "--seeds":
                seeds = next(it)
            elif tok == "--out":
                out = next(it)
            elif not tok.startswith("--"):
                rest.append(tok)
        sweep = Sweep.from_tokens(config, rest, out, seeds)
        raw = load_yaml(REPO / config)
        for point in sweep.points:
            resolve_config(apply_overrides(raw, sweep.overrides(point)))


# ------------------------------------------------------------------------------ real runs, killed

def _sweep_cmd(cifar_zip: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "batchaug", "sweep", QUICK, "method.name=ba", "method.m=1,2", "--out", str(out),
            f"data.root={cifar_zip}", "train.max_steps=16", "train.eval_every=4", "train.log_every=2",
            "data.subset=512", "data.val_subset=200", "train.device=cpu", "train.progress=false",
            "train.tensorboard=false"]


@pytest.mark.integration
def test_sweep_skips_finished_runs_and_resumes_one_killed_mid_run(cifar_zip, tmp_path):
    out = tmp_path / "grid"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO / "src")}
    first, second = out / "method.m=1", out / "method.m=2"
    proc = subprocess.Popen(_sweep_cmd(cifar_zip, out), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    lines: list[str] = []
    while time.time() < deadline and proc.poll() is None:
        if (second / "last.pt").exists() and (second / "metrics.jsonl").exists():
            lines = (second / "metrics.jsonl").read_text().splitlines()
            if any('"kind": "eval"' in ln for ln in lines):
                break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (first / "summary.json").is_file(), "the first point should have finished before the kill"
    assert not (second / "summary.json").exists(), "the second point should have been killed mid-run"
    done_before = {p.name: p.stat().st_mtime_ns for p in first.iterdir() if p.is_file()}
    kept = [json.loads(ln) for ln in (second / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    checkpoint_step = max(r["step"] for r in kept if r.get("kind") == "eval")

    rerun = subprocess.run(_sweep_cmd(cifar_zip, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "method.m=1: finished, skipped" in rerun.stdout
    assert "method.m=2: resuming from last.pt" in rerun.stdout
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir() if p.is_file()} == done_before
    final = [json.loads(ln) for ln in (second / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    # resumed, not restarted: the lines up to the checkpoint are the ones written before the kill
    assert final[:len([r for r in kept if r["step"] <= checkpoint_step])] == \
        [r for r in kept if r["step"] <= checkpoint_step]
    assert [r["step"] for r in final if r.get("kind") == "eval"] == [4, 8, 12, 16]
    assert [r["step"] for r in final if r.get("kind") == "step"] == list(range(2, 17, 2))
    summary = json.loads((second / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["images_seen"] == 16 * 64
    grid = json.loads((out / "sweep.json").read_text())
    assert [(g["overrides"]["method.m"], g["run_dir"]) for g in grid] == [(1, str(first)), (2, str(second))]

    # a third invocation redoes nothing
    again = subprocess.run(_sweep_cmd(cifar_zip, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("finished, skipped") == 2
    assert json.loads((second / "summary.json").read_text()) == summary
