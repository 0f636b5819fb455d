"""Unit tests of the trainer's parts: schedules, micro-batch splitting, ghost BN, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from batchaug.config import OptimConfig
from batchaug.methods.base import MethodBatch
from batchaug.nn.bn_utils import frozen_bn_stats
from batchaug.nn.ghost_bn import GhostBatchNorm1d, GhostBatchNorm2d, convert_ghost_bn
from batchaug.train.checkpoint import load_checkpoint, save_checkpoint
from batchaug.train.optim import LRSchedule, param_groups


def test_step_schedule_follows_epochs_compressed_into_steps():
    cfg = OptimConfig(lr=0.1, schedule="step", milestones=[2, 3], gamma=0.1)
    s = LRSchedule(cfg, 0.1, epochs=4, total_steps=400)
    assert s(0) == pytest.approx(0.1)
    assert s(199) == pytest.approx(0.1)
    assert s(200) == pytest.approx(0.01)
    assert s(300) == pytest.approx(0.001)


def test_cosine_with_warmup():
    cfg = OptimConfig(lr=1.0, schedule="cosine", warmup_epochs=1, warmup_start=0.0)
    s = LRSchedule(cfg, 1.0, epochs=11, total_steps=110)
    assert s(0) == pytest.approx(0.0)
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5, abs=1e-6)
    assert s(110) == pytest.approx(0.0, abs=1e-9)


def test_no_wd_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    groups = param_groups(model, 5e-4, True)
    decay = {id(p) for p in groups[0]["params"]}
    assert decay == {id(model[0].weight), id(model[3].weight)}
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4


def test_method_batch_chunks_keep_samples_together():
    b = MethodBatch({"inputs": torch.arange(10 * 3).view(30, 1), "targets": torch.arange(10).repeat_interleave(3)}, 10)
    chunks = list(b.chunks(3))
    assert [c.num_samples for c in chunks] == [3, 4, 3]
    assert torch.equal(torch.cat([c["inputs"] for c in chunks]), b["inputs"])
    for c in chunks:
        assert torch.equal(c["inputs"].view(-1) // 3, c["targets"])  # each sample's 3 views in its chunk


def _reference_ghost(x, vbs, weight, bias, eps):
    outs = [F.batch_norm(c, None, None, weight, bias, True, 0.0, eps) for c in x.split(vbs)]
    return torch.cat(outs)


@pytest.mark.parametrize("n, vbs", [(32, 8), (30, 8), (8, 8), (5, 8)])
def test_ghost_bn2d_matches_per_chunk_reference(n, vbs):
    torch.manual_seed(0)
    bn = GhostBatchNorm2d(6, vbs)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(n, 6, 5, 5, requires_grad=True)
    y = bn(x)
    groups = -(-n // vbs)
    chunks = torch.tensor_split(x, groups) if n > vbs else [x]
    ref = torch.cat([F.batch_norm(c, None, None, bn.weight, bn.bias, True, 0.0, bn.eps) for c in chunks])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(y.square().sum(), x)[0]
    g2 = torch.autograd.grad(ref.square().sum(), x)[0]
    torch.testing.assert_close(g1, g2, atol=1e-4, rtol=1e-4)


def test_ghost_bn_running_stats_one_update_of_chunk_means():
    torch.manual_seed(0)
    bn = GhostBatchNorm1d(3, 4, momentum=0.5)
    x = torch.randn(16, 3) * 3 + 2
    bn(x)
    chunk_means = x.view(4, 4, 3).mean(1).mean(0)
    chunk_vars = x.view(4, 4, 3).var(1, unbiased=True).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.5 * chunk_means, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bn.running_var, 0.5 + 0.5 * chunk_vars, atol=1e-5, rtol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    torch.testing.assert_close(bn(x), F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False))


def test_convert_ghost_bn_keeps_state_and_eval_outputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    model.train()(torch.randn(8, 3, 8, 8))
    model.eval()
    x = torch.randn(4, 3, 8, 8)
    before = model(x)
    convert_ghost_bn(model, 2)
    assert isinstance(model[1], GhostBatchNorm2d)
    torch.testing.assert_close(model(x), before)


def test_frozen_bn_stats_restores_buffers():
    bn = torch.nn.BatchNorm1d(3)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with frozen_bn_stats(bn):
        bn(torch.randn(8, 3) + 5)
        assert not torch.equal(bn.running_mean, before["running_mean"])
    for k, v in bn.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_checkpoint_atomic_roundtrip(tmp_path):
    state = {"model": {"w": torch.randn(3)}, "step": 4, "rng": torch.get_rng_state()}
    save_checkpoint(state, tmp_path / "last.pt")
    out = load_checkpoint(tmp_path / "last.pt")
    assert out["step"] == 4 and torch.equal(out["model"]["w"], state["model"]["w"])
    assert list(tmp_path.iterdir()) == [tmp_path / "last.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(OSError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    assert math.isfinite(1.0)


# ------------------------------------------------------------- run length and the schedule's time axis


def _plan(*overrides: str, m: int = 1):
    from batchaug.config import load_config
    from batchaug.methods import Regime
    from batchaug.train.run import plan_run, schedule_of

    cfg = load_config("configs/quick/cifar10_resnet20.yaml", list(overrides))  # 5 epochs, milestones [3, 4]
    plan = plan_run(cfg, Regime(m, float(m)), num_train=640)  # batch 64: 10 steps per epoch
    return plan, schedule_of(cfg, plan)


def _drops(schedule, steps: int) -> list[int]:
    """Steps at which the (post-warm-up) learning rate falls by 10x."""
    lrs = [schedule(s) for s in range(steps)]
    return [s for s in range(1, steps) if lrs[s] < 0.5 * lrs[s - 1]]


def test_epochs_only_runs_the_regime_in_real_epochs():
    plan, schedule = _plan()
    assert (plan.total_steps, plan.steps_per_epoch, plan.epochs) == (50, 10, 5.0)
    assert _drops(schedule, 50) == [30, 40]


def test_max_steps_with_epochs_compresses_the_whole_regime():
    plan, schedule = _plan("train.max_steps=20")
    assert (plan.total_steps, plan.epochs) == (20, 5.0)
    assert _drops(schedule, 20) == [12, 16]  # milestones at 3/5 and 4/5 of the run


def test_max_steps_without_epochs_is_a_regime_of_max_steps_over_steps_per_epoch_epochs():
    plan, schedule = _plan("train.max_steps=45", "train.epochs=null")
    assert (plan.total_steps, plan.epochs) == (45, 4.5)
    assert _drops(schedule, 45) == [30, 40]  # milestones at real epochs 3 and 4


def test_regime_adaptation_multiplies_batch_epochs_and_milestones():
    plan, schedule = _plan(m=2)
    assert (plan.batch_size, plan.steps_per_epoch, plan.total_steps, plan.milestones) == (128, 5, 50, (6.0, 8.0))
    assert _drops(schedule, 50) == [30, 40]
