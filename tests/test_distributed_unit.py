"""The distributed pieces that need no second process: device choice from a fake torchrun environment,
process-group setup, per-rank augmentation seeds, views dealt over ranks, SyncBN conversion."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn

from batchaug.config import OptimConfig, resolve_config
from batchaug.data import EpochBatchSampler
from batchaug.errors import ConfigError
from batchaug.methods import MethodContext, build_method
from batchaug.nn import SplitBatchNorm, SyncBatchNorm, convert_split_bn, convert_sync_batchnorm
from batchaug.nn.ghost_bn import convert_ghost_bn
from batchaug.train import distributed as dist_utils
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.run import place_views, resolve_device, wrap_model
from batchaug.train.trainer import Trainer, TrainerSettings, augmentation_seed


def _torchrun_env(monkeypatch, local_rank: int, local_world: int, gpus: int) -> None:
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    monkeypatch.setenv("WORLD_SIZE", str(local_world))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(monkeypatch, name):
    _torchrun_env(monkeypatch, local_rank=1, local_world=2, gpus=2)
    assert resolve_device(name) == torch.device("cuda", 1)
    _torchrun_env(monkeypatch, local_rank=0, local_world=2, gpus=2)
    assert resolve_device(name) == torch.device("cuda", 0)


def test_device_choices_that_cannot_work_are_refused(monkeypatch):
    _torchrun_env(monkeypatch, local_rank=0, local_world=2, gpus=2)
    with pytest.raises(ConfigError, match="would put all 2 processes of this node on one GPU"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)  # its own GPU, said explicitly
    _torchrun_env(monkeypatch, local_rank=2, local_world=4, gpus=2)
    with pytest.raises(ConfigError, match="4 processes on this node but 2 GPU"):
        resolve_device("cuda")
    _torchrun_env(monkeypatch, local_rank=0, local_world=2, gpus=0)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="is not a device"):
        resolve_device("gpu0")
    # one process: cuda:N is N, and plain cuda is indexed (DDP and set_device need the index)
    assert dist_utils.process_device("cuda:1", cuda_count=2) == torch.device("cuda", 1)
    assert dist_utils.process_device("cuda", cuda_count=1) == torch.device("cuda", 0)


def test_process_group_is_joined_on_the_ranks_own_gpu(monkeypatch):
    _torchrun_env(monkeypatch, local_rank=1, local_world=2, gpus=2)
    calls: list = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    device = resolve_device("cuda")
    assert dist_utils.init_from_env(device) is True
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init", {"backend": "nccl", "device_id": torch.device("cuda", 1)})]
    calls.clear()
    assert dist_utils.init_from_env(torch.device("cpu")) is True
    assert calls == [("init", {"backend": "gloo"})]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist_utils.init_from_env(torch.device("cpu")) is False


def test_augmentation_seeds_differ_per_rank_and_rank0_keeps_the_single_process_seed():
    assert augmentation_seed(7, 12, 0) == (7 * 1_000_003 + 12) * 2 + 1
    seeds = {augmentation_seed(seed, step, rank) for seed in range(3) for step in range(50) for rank in range(8)}
    assert len(seeds) == 3 * 50 * 8
    assert all(0 <= s < 2**63 for s in seeds)


def test_repeated_rows_are_dealt_over_the_ranks():
    one = EpochBatchSampler(64, 8, seed=2, repeats=2)
    idx = one.indices(3)
    assert idx.shape == (16,) and torch.equal(idx[::2], idx[1::2])  # each sample twice, adjacent
    ranks = [EpochBatchSampler(64, 8, seed=2, world=2, rank=r, repeats=2) for r in range(2)]
    # M = world = 2: every rank gets one copy of every sample of the step
    assert torch.equal(ranks[0].indices(3), idx[::2]) and torch.equal(ranks[1].indices(3), idx[::2])
    four = [EpochBatchSampler(64, 8, seed=2, world=4, rank=r, repeats=2) for r in range(4)]
    parts = [s.indices(3) for s in four]
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.sort(idx).values)
    assert all(len(set(p.tolist())) == 4 for p in parts)  # 4 rows of 4 distinct samples each
    with pytest.raises(ConfigError, match="6 samples x 2 views = 12 rows is not divisible by the 5 processes"):
        EpochBatchSampler(64, 6, world=5, repeats=2)
    EpochBatchSampler(64, 6, world=4, repeats=2)  # 12 rows: 3 per rank, although 6 samples are not 4 shares
    with pytest.raises(ConfigError, match="batches had repeats=1, this run has 2"):  # a local run resumed spread
        one.check_state(EpochBatchSampler(64, 8, seed=2).state_dict())


def _ba_trainer(placement: str, steps: int = 3) -> Trainer:
    cfg = resolve_config({"method": {"name": "ba", "m": 3},
                          "train": {"view_placement": placement, "sync_bn": True}})
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method(cfg.method, ctx)
    repeats = place_views(cfg, method)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4))
    model = wrap_model(cfg, method, net, torch.device("cpu"))
    ocfg = OptimConfig(lr=0.1)
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (32,), generator=g)
    settings = TrainerSettings(batch_size=8, total_steps=steps, steps_per_epoch=4, eval_every=steps, progress=False,
                               sample_repeats=repeats)
    return Trainer(model, method, build_optimizer(model, ocfg, 0.1), LRSchedule(ocfg, 0.1, 1, steps), settings,
                   images, targets, images[:8], targets[:8], torch.device("cpu"))


def test_spread_views_in_one_process_are_the_local_views():
    """One process holds every copy either way, and the copies draw the same views: the same run."""
    local, spread = _ba_trainer("local"), _ba_trainer("spread")
    assert spread.method.views_per_sample == 1 and spread.s.sample_repeats == 3
    a, b = local.fit(), spread.fit()
    for x, y in zip(local.model.state_dict().values(), spread.model.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)
    assert a[0]["train_loss"] == pytest.approx(b[0]["train_loss"])
    assert a[0]["images_seen"] == b[0]["images_seen"] == 3 * 8


def test_spread_needs_views_that_can_be_made_apart():
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    for section in ({"name": "splitbn"}, {"name": "sba", "layers": ["x"]}):
        with pytest.raises(ConfigError, match="train.view_placement: 'spread' needs a method"):
            build_method(section, ctx).spread_views()
    for key in ("average_outputs", "adapt_grad_norm"):
        with pytest.raises(ConfigError, match=f"method.{key}: needs the M views of a sample on one process"):
            build_method({"name": "ba", "m": 2, key: True}, ctx).spread_views()
    baseline = build_method({"name": "baseline"}, ctx)
    baseline.spread_views()
    assert baseline.views_per_sample == 1


def test_sync_batchnorm_is_a_batchnorm_in_one_process():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None), nn.ReLU(), nn.BatchNorm1d(4))
    model = convert_sync_batchnorm(copy.deepcopy(ref))
    assert isinstance(model[1], SyncBatchNorm) and isinstance(model[3], SyncBatchNorm)
    assert model.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(6, 3, 5, 5)
    torch.testing.assert_close(model[:3](x), ref[:3](x))
    for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    model.eval(), ref.eval()
    torch.testing.assert_close(model[:3](x), ref[:3](x))


def test_a_model_that_trains_on_cuda_gets_pytorchs_own_sync_batchnorm():
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    bn = ref[1]
    model = convert_sync_batchnorm(ref, device="cuda")  # the conversion needs no GPU
    assert type(model[1]) is nn.SyncBatchNorm
    assert model[1].weight is bn.weight and model[1].running_var is bn.running_var  # shared, not copied
    assert model.state_dict().keys() == nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).state_dict().keys()


def test_sync_batchnorm_conversion_keeps_split_bn_and_refuses_what_it_would_break():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    split = convert_sync_batchnorm(convert_split_bn(net))
    assert isinstance(split[1], SplitBatchNorm) and split[1].sync
    with pytest.raises(ConfigError, match="ghost BatchNorm"):
        convert_sync_batchnorm(convert_ghost_bn(nn.Sequential(nn.BatchNorm2d(4)), 8))

    class Fancy(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    with pytest.raises(ConfigError, match="0 is a Fancy, a BatchNorm with its own forward"):
        convert_sync_batchnorm(nn.Sequential(Fancy(4)))
    with pytest.raises(ConfigError, match="train.sync_bn: model 'resnet20' has no BatchNorm layers"):
        cfg = resolve_config({"train": {"sync_bn": True}})
        method = build_method({"name": "baseline"}, MethodContext(num_classes=2, image_size=(4, 4), mean=(0.5,),
                                                                   std=(0.5,)))
        wrap_model(cfg, method, nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.device("cpu"))
    with pytest.raises(ConfigError, match="train.sync_bn: ghost BN"):
        cfg = resolve_config({"train": {"sync_bn": True, "ghost_bn": 8}})
        wrap_model(cfg, method, nn.Sequential(nn.BatchNorm2d(1)), torch.device("cpu"))


def test_language_models_keep_their_copies_on_their_process():
    from pathlib import Path

    from batchaug.config import load_config
    from batchaug.train.lm_run import prepare_lm_run

    quick = Path(__file__).resolve().parents[1] / "configs" / "quick" / "ptb_lstm.yaml"
    cfg = load_config(quick, ["train.view_placement=spread"])
    with pytest.raises(ConfigError, match="train.view_placement: 'spread' deals image views"):
        prepare_lm_run(cfg, None, torch.device("cpu"), False)


def test_a_sweep_keeps_one_process_group_for_all_its_runs(monkeypatch):
    """``joined`` leaves a group it did not join alone (a run inside a sweep), and leaves its own on exit:
    cleanly, or after an error without waiting for ranks that may never come."""
    calls: list = []
    joined_now = {"on": False}
    monkeypatch.setattr(dist, "is_initialized", lambda: joined_now["on"])

    def init(device):
        calls.append("init")
        joined_now["on"] = True
        return True

    def leave(*, wait_for_others=True):
        calls.append(f"shutdown(wait={wait_for_others})")
        joined_now["on"] = False

    monkeypatch.setattr(dist_utils, "init_from_env", init)
    monkeypatch.setattr(dist_utils, "shutdown", leave)
    monkeypatch.setattr(dist_utils, "world_size", lambda: 2)
    cpu = torch.device("cpu")
    with dist_utils.joined(cpu) as outer:
        for _ in range(2):  # two sweep points
            with dist_utils.joined(cpu) as inner:
                assert inner is True
    assert outer is True and calls == ["init", "shutdown(wait=True)"]
    calls.clear()
    with pytest.raises(KeyError), dist_utils.joined(cpu):
        raise KeyError("a rank failed")
    assert calls == ["init", "shutdown(wait=False)"]
