"""``kill -9`` at random moments of a short run, then resume: the metrics are those of an uninterrupted run.

Two kinds of moment. In the middle of a write: the child process (tests/faults.py) SIGKILLs itself in
one of its writes (half of the bytes of a temporary file or of a ``metrics.jsonl`` line on disk); seed
``s`` picks the kind of file (in the order of :data:`KINDS`, so the first seeds cover a metrics line,
``last.pt``, ``best.pt`` and ``config.yaml``) and, at random, which of the run's writes of that kind.
At a random time: the test kills a plain ``batchaug train`` from outside (tests/kill_resume.py) after a
random number of evaluation lines and a random delay, wherever it then is (a step, an evaluation, a
write). Whatever the moment, the directory is left evaluable and resumable, and the resumed run's lines
equal the uninterrupted run's. ``BATCHAUG_FAULT_SEEDS=N`` runs N seeds of each kind (default 4 in a
write, 2 at a time: each costs a process start, about 5 s).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from faults import temp_files
from kill_resume import train_killed
from tiny_runs import common, finish, make_tree, reference_run, same_metrics, train

from batchaug.cli import main
from batchaug.train.metrics_log import read_metrics

FAULTS = str(Path(__file__).resolve().parent / "faults.py")
SEEDS = int(os.environ.get("BATCHAUG_FAULT_SEEDS", "4"))
TIMED_SEEDS = int(os.environ.get("BATCHAUG_FAULT_SEEDS", "2"))
LONGER = ("train.max_steps=24",)  # 12 evaluation lines: a kill after at most 3 of them (+ 0.2 s) lands mid-run,
#                                   with 9 evaluations and checkpoints still to go even on a fast CPU
KINDS = ("metrics.jsonl", "last.pt", "best.pt", "config.yaml", "summary.json")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(scope="module")
def reference(tree, tmp_path_factory):
    return reference_run(tree, tmp_path_factory.mktemp("ref") / "run")


@pytest.fixture(scope="module")
def longer_reference(tree, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("ref_longer") / "run"
    assert train(*common(tree, *LONGER), "--out", str(out)) == 0
    return read_metrics(out)


@pytest.mark.parametrize("seed", range(SEEDS))
def test_kill_9_in_a_random_write_then_resume_gives_the_uninterrupted_metrics(tree, reference, tmp_path, seed):
    events = reference[2]
    name = KINDS[seed % len(KINDS)]
    at = random.Random(seed).randrange(events.count(name))  # which of the run's writes of that file
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, FAULTS, "--kill-at", str(at), "--name", name, "--", "train",
                           *common(tree), "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, (name, at, proc.stderr[-2000:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metrics line the kill cut short
        done = read_metrics(out)
        if (out / "best.pt").exists():  # evaluable as it was left
            assert main(["eval", str(out), "--device", "cpu"]) == 0
        assert finish(out, tree) == 0, (name, at)
    assert len(done) <= len(reference[1])
    same_metrics(read_metrics(out), reference[1])
    assert temp_files(out) == []  # the killed writer's temporary file was cleaned up


@pytest.mark.parametrize("seed", range(TIMED_SEEDS))
def test_kill_9_at_a_random_time_then_resume_gives_the_uninterrupted_metrics(tree, longer_reference, tmp_path,
                                                                             seed):
    rng = random.Random(1000 + seed)
    lines, delay = rng.randint(1, 3), rng.uniform(0.0, 0.2)
    out = tmp_path / "run"
    partial = train_killed(common(tree, *LONGER), out, lines=lines, delay=delay, poll=0.01)
    assert lines <= len(partial) < len(longer_reference), (lines, delay)
    same_metrics(partial, longer_reference[: len(partial)])  # what the killed run wrote was right too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metrics line the kill cut short
        assert main(["eval", str(out), "--device", "cpu"]) == 0  # evaluable as it was left
        assert train("--resume", str(out)) == 0
    same_metrics(read_metrics(out), longer_reference)
    assert temp_files(out) == []
