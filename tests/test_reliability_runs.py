"""A run directory that nothing corrupts: full disks, interrupts, resumes that would change the run, two
trainers, diverging runs (docs/reliability.md). Every data-loss case of issue 15 is a test here.

Runs are tiny (ResNet-20 on a 64-image, 8x8 two-class folder, a handful of steps) and in-process; the
``kill -9`` loop is in test_reliability_kill.py.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from faults import Faults, temp_files
from tiny_runs import QUICK, common, finish, make_tree, reference_run, same_metrics, snapshot, train

from batchaug.cli import main
from batchaug.lock import LOCK_NAME, DirLock
from batchaug.train.metrics_log import read_metrics


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory) -> tuple[Path, list[dict], list[str]]:
    return reference_run(tree, tmp_path_factory.mktemp("ref") / "run")


def interrupted(tree: Path, out: Path, keep: int = 2) -> None:
    """The reference run, interrupted while writing its ``keep + 1``-th metrics line: ``last.pt`` holds the
    ``keep``-th evaluation (a resume of it must then give the reference's lines)."""
    with Faults(at=keep, name="metrics.jsonl", action="interrupt").installed():
        assert train(*common(tree), "--out", str(out)) == 130
    assert [r["step"] for r in read_metrics(out)] == [2 * (i + 1) for i in range(keep)]


def test_reference_writes_every_kind_of_file(reference):
    out, records, events = reference
    assert [r["step"] for r in records] == [2, 4, 6]
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "summary.json"} <= set(events)
    assert events.index("best.pt") < events.index("last.pt")  # best before the last.pt that records it
    assert temp_files(out) == []


@pytest.mark.parametrize("name,at,extra", [("config.yaml", 0, ()), ("metrics.jsonl", 1, ()), ("best.pt", 0, ()),
                                           ("last.pt", 1, ()), ("summary.json", 0, ()),
                                           ("metrics.csv", 2, ("train.loggers=[csv]",))])  # an appended row
def test_full_disk_during_each_write_leaves_a_directory_that_evaluates_and_resumes(tree, reference, tmp_path,
                                                                                    capsys, name, at, extra):
    out = tmp_path / "run"
    with Faults(at=at, name=name).installed() as faults:
        assert train(*common(tree, *extra), "--out", str(out)) == 2
    assert faults.fired == name
    err = capsys.readouterr().err.strip()
    assert err.startswith("batchaug train: error: cannot write ") and "No space left on device" in err
    assert "\n" not in err and temp_files(out) == []
    if (out / "last.pt").exists() or (out / "best.pt").exists():
        assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert finish(out, tree) == 0
    same_metrics(read_metrics(out), reference[1])
    assert (out / "summary.json").is_file() and temp_files(out) == []
    if extra:  # the CSV is rebuilt from metrics.jsonl on resume: one row per line
        assert len((out / "metrics.csv").read_text().splitlines()) == 1 + len(read_metrics(out, kind=None))


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.yaml", "last.pt"])
def test_full_disk_during_a_resume_leaves_a_directory_that_evaluates_and_resumes(tree, reference, tmp_path,
                                                                                  capsys, name):
    """The resume's own writes (the atomic truncation of metrics.jsonl, config.yaml, its first checkpoint)."""
    out = tmp_path / "run"
    interrupted(tree, out)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "eval", "step": 6, "val_')  # and a line cut short (a kill -9 mid-write)
    capsys.readouterr()
    with Faults(at=0, name=name).installed() as faults, pytest.warns(RuntimeWarning, match="cut short"):
        assert train("--resume", str(out)) == 2
    assert faults.fired == name and "No space left on device" in capsys.readouterr().err
    assert temp_files(out) == []
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the cut-off line is still there: the truncation failed
        assert train("--resume", str(out)) == 0
    same_metrics(read_metrics(out), reference[1])


def test_full_disk_during_eval_keeps_the_previous_result(tree, reference, tmp_path, capsys):
    out = reference[0]
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    before = (out / "eval" / "clean.json").read_bytes()
    with Faults(at=0, name="clean.json").installed():
        assert main(["eval", str(out), "--device", "cpu", "--seed", "1"]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert (out / "eval" / "clean.json").read_bytes() == before and temp_files(out) == []


def test_interrupt_between_best_and_last_keeps_the_best_model(tree, reference, tmp_path):
    """Data-loss case: a kill between the two saves of an evaluation lost the best model for good."""
    out = tmp_path / "run"
    # the 2nd evaluation's last.pt (best.pt of that evaluation is already on disk when this fires)
    with Faults(at=1, name="last.pt", action="interrupt").installed():
        assert train(*common(tree), "--out", str(out)) == 130
    assert train("--resume", str(out)) == 0
    same_metrics(read_metrics(out), reference[1])
    best = torch.load(out / "best.pt", weights_only=True)
    records = read_metrics(out)
    top = max(records, key=lambda r: r["val_acc"])
    assert best["step"] == top["step"] and best["best"] == pytest.approx(top["val_acc"])
    assert torch.load(out / "last.pt", weights_only=True)["best"] == pytest.approx(top["val_acc"])


def test_kill_during_the_first_checkpoint_restarts(tree, reference, tmp_path, capsys):
    """Data-loss case: a directory whose first checkpoint never completed could be neither resumed nor retrained."""
    out = tmp_path / "run"
    with Faults(at=0, name="last.pt", action="interrupt").installed():
        assert train(*common(tree), "--out", str(out)) == 130
    assert (out / "metrics.jsonl").exists() and not (out / "last.pt").exists()
    capsys.readouterr()
    assert train(*common(tree), "--out", str(out)) == 2  # never silently over an unfinished run...
    assert "--restart" in capsys.readouterr().err
    assert train("--resume", str(out)) == 0  # ...but --resume starts it again, saying so
    assert "no completed checkpoint" in capsys.readouterr().out
    same_metrics(read_metrics(out), reference[1])
    assert train(*common(tree), "--out", str(out), "--restart") == 2  # a completed run is never restarted
    assert "holds a completed checkpoint" in capsys.readouterr().err


def test_restart_starts_an_unfinished_directory_over_with_a_new_config(tree, tmp_path, capsys):
    out = tmp_path / "run"
    with Faults(at=0, name="last.pt", action="interrupt").installed():
        assert train(*common(tree), "--out", str(out)) == 130
    assert train(*common(tree, "train.max_steps=2", "seed=1"), "--out", str(out), "--restart") == 0
    assert "restart: starting" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(out)] == [2]


def test_resume_refuses_model_data_and_method_changes_before_writing_anything(tree, tmp_path, capsys):
    """Data-loss case: a failed --resume with overrides had already rewritten config.yaml."""
    out = tmp_path / "run"
    assert train(*common(tree, "train.max_steps=2"), "--out", str(out)) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert train("--resume", str(out), "model.name=resnet32", "method.name=ba", "data.image_size=16",
                 "seed=3", "train.max_steps=4") == 2
    err = capsys.readouterr().err
    for key in ("model.name: 'resnet20' -> 'resnet32'", "method.name: 'baseline' -> 'ba'", "data.image_size",
                "seed: 0 -> 3", "docs/reliability.md"):
        assert key in err, err
    assert "train.max_steps" not in err  # a change a resume may make
    assert snapshot(out) == before
    assert train("--resume", str(out), "train.max_steps=4", "eval.batch_size=7") == 0
    assert [r["step"] for r in read_metrics(out)] == [2, 4]


def _without(d: dict, keys: tuple[str, ...]) -> dict:
    """A copy of the nested config ``d`` without the dotted ``keys`` (a run an older version wrote)."""
    d = copy.deepcopy(d)
    for key in keys:
        *parents, leaf = key.split(".")
        node = d
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return d


# keys as if batchaug had gained them after such a run was written: two that a resume may change, and two
# that it may not (a raw comparison would refuse those)
NEWER_KEYS = ("train.on_nonfinite", "data.max_pixels", "optim.label_smoothing", "train.ema_decay")


def test_a_run_written_before_keys_were_added_resumes(tree, tmp_path, capsys):
    """The stored config is resolved through the current schema (new keys take their defaults) before it is
    compared: a raw comparison would refuse every run written before a key was added."""
    out = tmp_path / "run"
    assert train(*common(tree, "train.max_steps=2"), "--out", str(out)) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["config"] = _without(ckpt["config"], NEWER_KEYS)
    torch.save(ckpt, out / "last.pt")
    raw = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump(_without(raw, NEWER_KEYS), sort_keys=False))
    assert train("--resume", str(out), "train.max_steps=4") == 0, capsys.readouterr().err
    assert [r["step"] for r in read_metrics(out)] == [2, 4]
    capsys.readouterr()
    # a new key set to something other than its default is a change like any other
    assert train("--resume", str(out), "train.max_steps=6", "data.max_pixels=4096") == 0  # may change
    ckpt = torch.load(out / "last.pt", weights_only=True)
    ckpt["config"] = _without(ckpt["config"], ("train.ghost_bn",))
    torch.save(ckpt, out / "last.pt")
    assert train("--resume", str(out), "train.max_steps=8", "train.ghost_bn=8") == 2
    assert "train.ghost_bn: None -> 8" in capsys.readouterr().err


def test_config_changes_resolve_the_stored_config_through_the_current_schema():
    from batchaug.config import load_config
    from batchaug.train.resume import config_changes

    cfg = load_config(QUICK)
    stored = json.loads(json.dumps(cfg.to_dict()))
    assert config_changes(_without(stored, NEWER_KEYS), cfg) == []
    # a key since removed: resolution fails, and only the keys both configs hold are compared
    stored["train"]["a_removed_option"] = 1
    assert config_changes(_without(stored, NEWER_KEYS), cfg) == []
    stored["seed"] = 5
    assert config_changes(stored, cfg) == [("seed", 5, 0)]


def test_empty_config_yaml_is_never_read_as_all_defaults(tree, tmp_path):
    """Data-loss case: an empty config.yaml (an old version's full disk) was read as "all defaults"."""
    out = tmp_path / "run"
    assert train(*common(tree, "train.max_steps=2"), "--out", str(out)) == 0
    (out / "config.yaml").write_text("")
    with pytest.warns(RuntimeWarning, match="config.yaml is empty; using the config stored in"):
        assert train("--resume", str(out), "train.max_steps=4") == 0
    from batchaug.train.run import load_run_config

    assert load_run_config(out).data.root == str(tree)  # the run's own config, written back whole


def test_two_trainers_on_one_directory(tree, tmp_path, capsys):
    """Data-loss case: two trainers into one --out interleaved their metrics and both exited 0."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([sys.executable, "-m", "batchaug", "train", *common(tree, "train.max_steps=12"),
                              "--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lock, deadline = out / LOCK_NAME, time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text()):  # the first holds the lock
        assert first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    try:
        assert train(*common(tree), "--out", str(out)) == 2
        assert f"in use by another batchaug process (PID {first.pid}" in capsys.readouterr().err
        assert train("--resume", str(out)) == 2  # a resume is refused alike
    finally:
        assert first.wait(timeout=300) == 0, first.stderr.read()
    assert [r["step"] for r in read_metrics(out)] == [2, 4, 6, 8, 10, 12]
    with DirLock(out):  # released at the end of the run
        pass


def test_diverging_run_stops_with_the_last_good_checkpoint_intact(tree, tmp_path, capsys):
    """Data-loss case: optim.lr=1e6 trained to the end, wrote all-NaN best.pt/last.pt and exited 0."""
    out = tmp_path / "run"
    assert train(*common(tree, "train.max_steps=2"), "--out", str(out)) == 0
    good = snapshot(out)
    capsys.readouterr()
    assert train("--resume", str(out), "train.max_steps=12", "optim.lr=1e6") == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("batchaug train: error: ") and ("NaN or Inf" in err or "non-finite" in err), err
    assert "step " in err and "\n" not in err
    for name in ("last.pt", "best.pt"):
        assert snapshot(out)[name] == good[name]  # the last good checkpoints, untouched
        state = torch.load(out / name, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert [r["step"] for r in read_metrics(out)] == [2]
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    # from scratch, too: a non-zero exit, and whatever checkpoint exists is finite
    fresh = tmp_path / "fresh"
    assert train(*common(tree, "optim.lr=1e6", "train.max_steps=12"), "--out", str(fresh)) == 3
    for name in ("last.pt", "best.pt"):
        if (fresh / name).exists():
            state = torch.load(fresh / name, weights_only=True)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_diverging_run_with_skip_counts_the_skipped_steps(tree, tmp_path):
    out = tmp_path / "run"
    assert train(*common(tree, "optim.lr=1e6", "train.on_nonfinite=skip"), "--out", str(out)) in (0, 3)
    records = read_metrics(out)
    assert records and all("skipped_steps" in r for r in records)
    assert records[-1]["skipped_steps"] >= 1
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            state = torch.load(out / name, weights_only=True)["model"]
            assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_summary_and_report_survive_a_cut_off_metrics_line(tree, reference, tmp_path):
    """Data-loss case: a metrics line cut off by a full disk made the run unresumable and broke report."""
    out = tmp_path / "run"
    interrupted(tree, out)
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "eval", "epoch": 1.5, "step": 6, "images_')
    with pytest.warns(RuntimeWarning, match="cut short"):
        assert main(["report", str(out)]) == 0
    with pytest.warns(RuntimeWarning, match="cut short"):
        assert train("--resume", str(out)) == 0
    same_metrics(read_metrics(out), reference[1])
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
