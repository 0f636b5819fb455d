"""Tiny real runs for the reliability tests: a 64-image, 8x8 two-class PNG folder and ResNet-20 for a
handful of steps on the CPU (under a second in-process), through the command line."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from faults import Faults

from batchaug.cli import main
from batchaug.train.metrics_log import read_metrics

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick" / "cifar10_resnet20.yaml")
KEYS = ("step", "train_loss", "val_loss", "val_acc", "grad_norm", "lr")


def make_tree(root: Path, n_train: int = 32, n_test: int = 16, size: int = 8, channels: int = 3, seed: int = 0,
              classes: tuple[str, ...] = ("a", "b")) -> Path:
    """An ImageFolder tree of random PNGs; class ``b`` is brighter, so that a model can learn something."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for k, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = torch.randint(0, 160, (size, size, channels), generator=g, dtype=torch.uint8) + 90 * k
                arr = arr.clamp(max=255).numpy()
                Image.fromarray(arr[..., 0] if channels == 1 else arr).save(d / f"{i}.png")
    return root


def common(tree: Path, *extra: str) -> list[str]:
    """``batchaug train`` arguments of a 6-step run (an evaluation and checkpoints every 2 steps) on ``tree``."""
    return [QUICK, f"data.root={tree}", "data.kind=imagefolder", "data.subset=null", "data.val_subset=null",
            "data.cache=false", "train.batch_size=16", "train.eval_every=2", "train.max_steps=6",
            "train.progress=false", "train.tensorboard=false", "train.device=cpu", "optim.warmup_epochs=0", *extra]


THREADS = 2  # the threads of the subprocess runs (tests/kill_resume.py gives them OMP_NUM_THREADS=2)


@contextlib.contextmanager
def threads_of_subprocesses() -> Iterator[None]:
    """In-process runs with the subprocesses' thread count: a run resumed here continues one killed in a
    subprocess, and its lines are compared with a reference from either; a CPU reduction's result depends
    on how many threads split it, and pytest's process has as many as the machine has cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(*args: str) -> int:
    """``batchaug train ARGS`` in this process, with the subprocesses' thread count."""
    with threads_of_subprocesses():
        return main(["train", *args])


def reference_run(tree: Path, out: Path) -> tuple[Path, list[dict], list[str]]:
    """An uninterrupted run of :func:`common`: its directory, evaluation lines and the names of the files it
    wrote, in order."""
    with Faults().installed() as rec:  # records only
        assert train(*common(tree), "--out", str(out)) == 0
    return out, read_metrics(out), list(rec.events)


def same_metrics(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        for key in KEYS:
            assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (key, ra, rb)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finish(out: Path, tree: Path) -> int:
    """What a user does after a failure: resume (or, in a directory without a config, train again)."""
    if (out / "config.yaml").exists():
        return train("--resume", str(out))
    return train(*common(tree), "--out", str(out))
