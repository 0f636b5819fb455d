"""Integration: the quick config with a reduced ``darts_v2`` (its auxiliary head, scheduled drop-path and
gradient clipping on) trains for real on a slice of the shared CIFAR-10, with BA (M = 2) and split BN,
through the CLI. Reduced: 4 cells of 4 channels (the 20-cell network is a GPU job; ``test_darts.py``
checks it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchaug.cli import main
from batchaug.train.metrics_log import read_metrics

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick" / "cifar10_resnet20.yaml")
pytestmark = pytest.mark.integration

DARTS_RECIPE = ["model.name=darts_v2", "model.kwargs={channels: 4, layers: 4, auxiliary: true}",
                "model.aux_weight=0.4", "model.drop_path=0.2", "optim.clip_grad_norm=5", "optim.schedule=cosine",
                "optim.warmup_epochs=0", "optim.lr=0.05"]


def _train(cifar_zip: Path, out: Path, *extra: str) -> list[dict]:
    rc = main(["train", QUICK, f"data.root={cifar_zip}", "train.progress=false", "train.tensorboard=false",
               "data.val_subset=500", *DARTS_RECIPE, *extra, "--out", str(out)])
    assert rc == 0
    return read_metrics(out)


def test_reduced_darts_learns_with_batch_augmentation(cifar_zip: Path, tmp_path: Path) -> None:
    out = tmp_path / "ba"
    records = _train(cifar_zip, out, "method.name=ba", "method.m=2", "data.subset=2000", "train.batch_size=32",
                     "train.max_steps=60", "train.eval_every=30")
    assert [r["step"] for r in records] == [30, 60]
    assert records[-1]["val_acc"] > 0.18, records  # chance is 0.10 (sd 0.013 on 500 images); measured 0.27-0.30
    assert all(r["aux_head_loss"] > 0 for r in records)  # the head's loss is in the objective and logged
    assert records[-1]["aux_head_loss"] < records[0]["aux_head_loss"]
    # the run evaluates like any other: eval mode returns plain logits
    assert main(["eval", str(out), "--split", "run"]) == 0  # the run's own validation set, as logged
    clean = json.loads((out / "eval" / "clean.json").read_text())
    assert abs(clean["top1"] - max(r["val_acc"] for r in records)) < 1e-6


def test_reduced_darts_trains_with_split_batchnorms(cifar_zip: Path, tmp_path: Path) -> None:
    records = _train(cifar_zip, tmp_path / "sbn", "method.name=splitbn", "method.weak=standard",
                     "method.strong=randaugment", "data.subset=500", "train.batch_size=16", "train.max_steps=10",
                     "train.eval_every=10")
    (last,) = records
    assert last["step"] == 10 and 0 <= last["val_acc"] <= 1
    for key in ("train_loss", "loss_main", "loss_aux", "aux_head_loss"):  # split-BN branches and the head
        assert 0 < last[key] < 20, (key, last)
    # the objective: the mean of the two BN branches plus 0.4 x the head's mean over both halves (the line
    # holds interval means of each, over the same steps)
    expected = 0.5 * (last["loss_main"] + last["loss_aux"]) + 0.4 * last["aux_head_loss"]
    assert last["train_loss"] == pytest.approx(expected, rel=1e-4)
