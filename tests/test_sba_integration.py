"""Integration: SBA through the command line on a slice of the real CIFAR-10 — train, resume, eval --sba-vote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from batchaug.cli import main
from batchaug.config import load_config
from batchaug.evaluate.loading import load_trained
from batchaug.train.metrics_log import read_metrics
from batchaug.train.run import prepare_run

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick" / "cifar10_resnet20.yaml")
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _overrides(cifar_zip: Path) -> list[str]:
    # on the CPU: a resumed run equals the uninterrupted one bit for bit only where every kernel is
    # run-to-run deterministic, which CUDA's defaults (cuDNN's algorithm choice, atomics) do not promise
    return [f"data.root={cifar_zip}", "data.subset=640", "data.val_subset=200", "train.progress=false",
            "train.tensorboard=false", "train.eval_every=4", "train.max_steps=12", "method.name=sba", "method.m=4",
            "method.layers=[layer3,features_out]", "train.device=cpu"]


def test_sba_run_records_its_metrics_resumes_exactly_and_votes(cifar_zip, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", QUICK, *_overrides(cifar_zip), "--out", str(full)]) == 0
    records = read_metrics(full)
    assert [r["step"] for r in records] == [4, 8, 12]
    for r in records:
        assert 0.0 <= r["sba_augmented"] <= 1.0 and r["sba_ce"] > 0 and r["sba_reg"] >= 0
        assert ("sba_kl" in r) == (r["sba_augmented"] > 0)  # averaged over augmented steps only
    assert 0 < sum(r["sba_augmented"] for r in records) < 3  # p = 0.5 over 12 steps: some of each

    # the same run stopped after step 8 (its last.pt) and resumed: the same draws, noise and numbers
    cfg = load_config(QUICK, _overrides(cifar_zip))
    run = prepare_run(cfg, cut)
    run.trainer.s.total_steps = 8  # an interruption right after the step-8 checkpoint
    run.trainer.fit()
    prepare_run(cfg, cut, resume=True).trainer.fit()
    resumed = read_metrics(cut)
    assert [r["sba_augmented"] for r in resumed] == [r["sba_augmented"] for r in records]
    for a, b in zip(resumed, records):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=1e-9)

    # a run directory written on CUDA loads on the CPU: its checkpoint once held the CUDA generator's
    # 16-byte state, which a CPU generator refused (simulated by writing one into a copy of last.pt)
    ckpt = torch.load(full / "last.pt", weights_only=True)
    assert not any(isinstance(v, torch.Tensor) for v in ckpt["method"].values())
    ckpt["method"]["noise_rng"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(ckpt, tmp_path / "from_cuda.pt")
    assert load_trained(full, str(tmp_path / "from_cuda.pt"), device="cpu").method.layer is not None

    assert main(["eval", str(full), "--sba-vote", "--batch-size", "100", "--split", "run"]) == 0
    sba = json.loads((full / "eval" / "sba.json").read_text())
    clean = json.loads((full / "eval" / "clean.json").read_text())
    assert sba["m"] == 4 and sba["layer"] == "features_out" and sba["num_images"] == 200
    for key in ("plain_acc", "mean_acc", "vote_acc", "virtual_acc"):
        assert 0.0 <= sba[key] <= 1.0
    # the raw rows of the augmented pass are the plain model's prediction up to float32: after the layer
    # they are rows of a (1 + M)x bigger matrix product, whose rounding an argmax feels only at a
    # near-tie, so one of the 200 images may differ on another CPU
    assert abs(sba["plain_acc"] - clean["top1"]) < 1.5 / sba["num_images"]
