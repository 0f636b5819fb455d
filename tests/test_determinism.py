"""``train.deterministic``: strict deterministic kernels, cuBLAS's fixed workspace, no cuDNN benchmarking,
and two runs on the real data that agree bit for bit (on the CPU: the training path of BA with
RandAugment and of split BN runs under strict mode, no op lacks a deterministic kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from batchaug.config import load_config
from batchaug.train.determinism import CUBLAS_WORKSPACE, configure_determinism
from batchaug.train.metrics_log import read_metrics
from batchaug.train.run import prepare_run

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick" / "cifar10_resnet20.yaml")


@pytest.fixture
def restore_determinism(monkeypatch):
    """The settings are process-wide: put them back after the test."""
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def test_configure_determinism_is_strict_and_fixes_the_cublas_workspace(restore_determinism) -> None:
    configure_determinism(False)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # off: nothing touched
    torch.backends.cudnn.benchmark = True
    configure_determinism(True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic


def test_a_set_cublas_workspace_is_kept(restore_determinism, monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    configure_determinism(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.integration
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("method", [["method.name=ba", "method.m=2", "method.policy=randaugment"],
                                    ["method.name=splitbn"]])
def test_deterministic_runs_agree_bit_for_bit(method, cifar_zip, tmp_path, restore_determinism) -> None:
    overrides = [f"data.root={cifar_zip}", "data.subset=128", "data.val_subset=64", "train.batch_size=32",
                 "train.max_steps=3", "train.eval_every=3", "train.progress=false", "train.tensorboard=false",
                 "train.device=cpu", "train.deterministic=true", *method]
    cfg = load_config(QUICK, overrides)
    runs = []
    for name in ("a", "b"):
        run = prepare_run(cfg, tmp_path / name)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        run.trainer.fit()
        runs.append(run)
    ra, rb = (read_metrics(tmp_path / n) for n in ("a", "b"))
    assert [dict(r, wall_time=0, views_per_s=0) for r in ra] == [dict(r, wall_time=0, views_per_s=0) for r in rb]
    for (key, x), (_, y) in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().items(), strict=True):
        assert torch.equal(x, y), key
