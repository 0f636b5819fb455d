"""Integration: the extension points on a real run — MixUp/CutMix inside BA, the weight average,
clipping and step lines through a kill and a resume, and compiled runs that evaluate and resume."""

from __future__ import annotations

import json

import pytest
import torch
from kill_resume import resume, train_killed, train_to_end

from batchaug.cli import main
from batchaug.train.metrics_log import read_metrics

pytestmark = pytest.mark.integration
QUICK = "configs/quick/cifar10_resnet20.yaml"


def test_cutmix_ba_with_ema_clipping_and_step_lines_resumes_exactly(cifar_zip, tmp_path):
    # on the CPU: bit-for-bit resumption needs run-to-run deterministic kernels, which CUDA's defaults
    # (cuDNN's algorithm choice, atomics) do not promise; and a GPU could finish the run between two polls
    common = [QUICK, f"data.root={cifar_zip}", "method.name=ba", "method.m=4", "method.mix=cutmix",
              "train.ema_decay=0.999", "optim.clip_grad_norm=5", "train.log_every=10", "train.progress=false",
              "train.tensorboard=false", "train.max_steps=24", "train.eval_every=6", "data.subset=640",
              "data.val_subset=300", "train.batch_size=32", "train.loggers=[csv]", "train.device=cpu"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    train_to_end(common, full)
    assert 2 <= len(train_killed(common, killed, lines=2)) < 4, "the run should have been killed mid-way"
    resume(killed)

    a, b = read_metrics(full, kind=None), read_metrics(killed, kind=None)
    assert [(r["kind"], r["step"]) for r in a] == [(r["kind"], r["step"]) for r in b]
    assert [r["step"] for r in a if r["kind"] == "step"] == [10, 20]
    assert [r["step"] for r in a if r["kind"] == "eval"] == [6, 12, 18, 24]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss", "val_acc", "val_acc_ema", "val_loss_ema", "grad_norm", "lr"):
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-5, abs=1e-7), (key, ra, rb)
    csv_rows = (killed / "metrics.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(b), "metrics.csv is rebuilt on resume: one row per metrics.jsonl line"
    sa = torch.load(full / "last.pt", weights_only=True)["callbacks"]["ema"]["weights"]
    sb = torch.load(killed / "last.pt", weights_only=True)["callbacks"]["ema"]["weights"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)

    assert main(["eval", str(killed), "--ema", "--checkpoint", "last", "--batch-size", "300", "--split", "run"]) == 0
    ema = json.loads((killed / "eval" / "clean_ema.json").read_text())
    assert ema["weights"] == "ema" and ema["top1"] == pytest.approx(b[-1]["val_acc_ema"], abs=1e-6)
    assert main(["eval", str(killed), "--checkpoint", "last", "--batch-size", "300", "--split", "run"]) == 0
    plain = json.loads((killed / "eval" / "clean.json").read_text())
    assert plain["weights"] == "model" and plain["top1"] == pytest.approx(b[-1]["val_acc"], abs=1e-6)


def test_compiled_run_evaluates_and_resumes(cifar_zip, tmp_path):
    """torch.compile wraps the model (``_orig_mod``); checkpoints must hold the plain model's keys.
    The ``eager`` backend builds the same wrapper without minutes of kernel compilation."""
    out = tmp_path / "compiled"
    args = [QUICK, f"data.root={cifar_zip}", "train.compile=eager", "train.progress=false", "train.tensorboard=false",
            "train.max_steps=4", "train.eval_every=2", "data.subset=256", "data.val_subset=100"]
    assert main(["train", *args, "--out", str(out)]) == 0
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state)
    assert main(["eval", str(out), "--batch-size", "100", "--split", "run"]) == 0
    clean = json.loads((out / "eval" / "clean.json").read_text())
    assert clean["top1"] == pytest.approx(max(r["val_acc"] for r in read_metrics(out)), abs=1e-6)
    with pytest.warns(UserWarning, match="schedule changes at step 4 .train.max_steps changed"):
        assert main(["train", "--resume", str(out), "train.max_steps=6"]) == 0
    assert [r["step"] for r in read_metrics(out)] == [2, 4, 6]
