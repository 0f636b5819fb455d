"""Kill a training subprocess at a moment chosen by what it has written, then resume it: the loop the
resume-after-kill tests share.

:func:`train_to_end` runs the uninterrupted reference; :func:`train_killed` starts ``batchaug train ...
--out DIR`` in a subprocess, polls ``DIR/metrics.jsonl`` until it holds ``lines`` evaluation lines and
``DIR/last.pt`` exists, optionally waits a little longer, and ``SIGKILL``\\ s it; :func:`resume` runs
``batchaug train --resume DIR`` to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from batchaug.train.metrics_log import read_metrics

__all__ = ["cli", "resume", "train_killed", "train_to_end"]


def cli(*args: str) -> list[str]:
    """The command line of ``batchaug ARGS`` in a fresh interpreter."""
    return [sys.executable, "-m", "batchaug", *args]


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    # two threads, as in CI; the interpreter finds the sources under test as this one does
    return {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}


def train_to_end(train_args: Sequence[str], out: Path, *, env: Mapping[str, str] | None = None) -> None:
    """``batchaug train TRAIN_ARGS --out OUT`` in a subprocess (the uninterrupted reference), which must
    succeed."""
    proc = subprocess.run(cli("train", *train_args, "--out", str(out)), env=_env(env), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def train_killed(train_args: Sequence[str], out: Path, *, lines: int, delay: float = 0.0, poll: float = 0.05,
                 timeout: float = 300.0, env: Mapping[str, str] | None = None) -> list[dict]:
    """Run ``batchaug train TRAIN_ARGS --out OUT`` and ``kill -9`` it once ``OUT`` holds ``lines`` evaluation
    lines and a ``last.pt`` (then ``delay`` seconds more). Returns the evaluation lines the killed run left.

    Raises AssertionError when the run exited on its own (it finished, or failed) before it was killed.
    """
    log = tempfile.TemporaryFile()  # not a pipe: a child blocked on a full pipe would never reach a line
    proc = subprocess.Popen(cli("train", *train_args, "--out", str(out)), env=_env(env),
                            stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + timeout
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a line being written reads as cut short
            while time.monotonic() < deadline and proc.poll() is None:
                if len(read_metrics(out)) >= lines and (out / "last.pt").exists():
                    break
                time.sleep(poll)
        if delay > 0:
            time.sleep(delay)
        exited = proc.poll()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:  # an exception in the loop: never leave the child behind
            proc.kill()
            proc.wait()
    with log:
        log.seek(0)
        stderr = log.read().decode(errors="replace")
    assert exited is None, f"the run exited ({exited}) before it was killed: {stderr[-2000:]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the kill may have cut the last line short
        return read_metrics(out)


def resume(out: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
    """``batchaug train --resume OUT EXTRA`` in a subprocess, which must succeed."""
    proc = subprocess.run(cli("train", "--resume", str(out), *extra), env=_env(env), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
