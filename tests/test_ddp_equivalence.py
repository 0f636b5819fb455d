"""Two gloo processes train exactly what one process trains on the same global batch.

Every scenario runs through the real pieces (``build_method``, ``place_views``, ``wrap_model`` with DDP
and ``train.sync_bn``, the :class:`Trainer`), in 2 CPU processes and in 1. Under torchrun each rank
draws its own views (:func:`augmentation_seed` of its rank), so the one-process reference makes the
same global batch the slow way: :class:`_Sharded` cuts it into the ranks' shards and augments each
with that rank's generator (per-rank method instances for SBA, whose latent noise is per process),
then trains on their union. Compared: the weights and buffers after training, and every metrics line.

All two-process work happens in two launches (process start-up is the slow part): the first runs the
scenarios and ends killed (SIGKILL) in the middle of a run; the second resumes it (and a run stopped
by an exception) and ends with one rank running out of memory alone, which must stop both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from batchaug.config import OptimConfig, resolve_config
from batchaug.methods import MethodContext, build_method
from batchaug.methods.base import LossOutput, Method, MethodBatch
from batchaug.nn.wrappers import unwrap
from batchaug.train import distributed as dist_utils
from batchaug.train.callbacks.base import Callback
from batchaug.train.metrics_log import read_metrics
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.run import place_views, wrap_model
from batchaug.train.trainer import Trainer, TrainerSettings, augmentation_seed

WORLD = 2
B = 16  # global batch (samples)
CPU = torch.device("cpu")

pytestmark = pytest.mark.skipif(not dist.is_available() or sys.platform == "win32",
                                reason="torch.distributed with gloo is not available")


@dataclass(frozen=True)
class Scenario:
    name: str
    method: dict[str, Any]
    bn: bool = True
    train: dict[str, Any] = field(default_factory=dict)
    micro_batch: int | None = None  # views per chunk on each of the WORLD ranks
    steps: int = 4
    oom_at: int | None = None  # every rank runs out of memory once at this step (whole-batch attempt, after
    # its forward pass: SyncBN's all-reduces done, BN running statistics moved, no backward)
    kill_at: int | None = None  # the run stops after this many steps (last.pt at the last evaluation)


SBA = {"name": "sba", "m": 2, "p": 0.7, "eta": 0.5, "layers": ["4"], "seed": 5}
SCENARIOS = [
    Scenario("baseline", {"name": "baseline"}, train={"sync_bn": True}),
    Scenario("ba_adapt", {"name": "ba", "m": 2, "adapt_grad_norm": True, "adapt_every": 2}, train={"sync_bn": True}),
    Scenario("ba_micro", {"name": "ba", "m": 2}, train={"sync_bn": True}, micro_batch=8),
    Scenario("ba_spread", {"name": "ba", "m": 2}, train={"sync_bn": True, "view_placement": "spread"}),
    Scenario("splitbn", {"name": "splitbn", "weak": "standard", "strong": "gaussian"}, train={"sync_bn": True}),
    Scenario("sba", SBA, bn=False),
    Scenario("oom", {"name": "ba", "m": 2}, train={"sync_bn": True}, oom_at=0),
]
# stopped after 3 steps (last.pt at step 2), resumed in the second launch, compared with 6 uninterrupted steps
SBA_STOPPED = Scenario("sba_resumed", SBA, bn=False, steps=6, kill_at=3)
BA_KILLED = Scenario("ba_resumed", {"name": "ba", "m": 2}, train={"sync_bn": True}, micro_batch=8, steps=6, kill_at=3)
RESUMED = [SBA_STOPPED, BA_KILLED]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 4, (64,), generator=g)


def _model(bn: bool) -> nn.Module:
    torch.manual_seed(0)
    # layer "4" is the (B, 6) feature SBA augments
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6) if bn else nn.Identity(), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))


def _context() -> MethodContext:
    return MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)


class _Stop(Exception):
    pass


class _StopAt(Callback):
    """Ends a run after ``steps`` steps: by SIGKILL (no clean-up at all) or by an exception."""

    name = "stop"

    def __init__(self, steps: int, kill: bool) -> None:
        self.steps, self.kill = steps, kill

    def on_step_end(self, trainer, step, out) -> None:
        if step + 1 == self.steps:
            if self.kill:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            raise _Stop


def _trainer(sc: Scenario, out_dir: Path | None, *, reference: bool = False, stop: Callback | None = None) -> Trainer:
    """The scenario's trainer in this process: a rank of WORLD, or (``reference``) the one-process reference."""
    cfg = resolve_config({"method": sc.method, "train": {"device": "cpu", **sc.train}})
    if reference:
        method: Method = _Sharded(lambda r: _rank_method(cfg.method, r), joint=sc.bn)
    else:
        method = _rank_method(cfg.method, dist_utils.rank())
    repeats = place_views(cfg, method)
    model = wrap_model(cfg, method, _model(sc.bn), CPU, distributed=not reference)
    ocfg = OptimConfig(lr=0.1, momentum=0.9, weight_decay=1e-4)
    opt = build_optimizer(model, ocfg, 0.1)
    micro = sc.micro_batch * (WORLD if reference else 1) if sc.micro_batch else None
    settings = TrainerSettings(batch_size=B, total_steps=sc.steps, steps_per_epoch=64 // B, eval_every=2, seed=3,
                               micro_batch=micro, progress=False, sample_repeats=repeats)
    images, targets = _data()
    trainer = Trainer(model, method, opt, LRSchedule(ocfg, 0.1, 2, sc.steps), settings, images, targets,
                      images[:24], targets[:24], CPU, out_dir, callbacks=[stop] if stop else [])
    if sc.oom_at is not None:
        _inject_oom(trainer, sc.oom_at)
    return trainer


def _rank_method(spec, rank: int) -> Method:
    method = build_method(spec, _context())
    if hasattr(method, "_noise_gen"):  # SBA draws its latent noise per process: rank r's stream
        from batchaug.methods.sba import _stream_seed

        method._noise_gen.manual_seed(_stream_seed(method.seed, 2 + rank))
    return method


def _inject_oom(trainer: Trainer, step: int) -> None:
    loss = trainer.method.loss

    def failing(model, batch):
        out = loss(model, batch)
        if trainer.state.step == step and trainer.n_chunks == 1:
            raise torch.OutOfMemoryError("simulated")
        return out

    trainer.method.loss = failing  # type: ignore[method-assign]


class _ShardedBatch(MethodBatch):
    """The global batch as the ranks' batches; chunk i is the union of the ranks' chunks i."""

    def __init__(self, parts: list[MethodBatch]) -> None:
        super().__init__({}, sum(p.num_samples for p in parts))
        self.parts = parts

    def chunks(self, n: int):
        for pieces in zip(*[list(p.chunks(n)) for p in self.parts], strict=True):
            yield _ShardedBatch(list(pieces))


class _Sharded(Method):
    """One process doing what WORLD ranks do: rank r's rows ``r::WORLD`` augmented with rank r's generator
    and method instance; the loss over the union in one forward (``joint``: BatchNorm sees the global
    batch, as SyncBN makes it) or as the mean of the shards' losses (no BatchNorm: per-rank latent noise)."""

    name = "sharded"

    def __init__(self, make, *, joint: bool) -> None:
        self.inners = [make(r) for r in range(WORLD)]
        super().__init__(self.inners[0].options, self.inners[0].context)
        self.joint = joint
        self.step = 0

    @property
    def views_per_sample(self) -> int:
        return self.inners[0].views_per_sample

    def spread_views(self) -> None:
        for inner in self.inners:
            inner.spread_views()

    def prepare_model(self, model):
        for inner in self.inners:
            model = inner.prepare_model(model)
        return model

    def begin_step(self, step, epoch):
        self.step = step
        for inner in self.inners:
            inner.begin_step(step, epoch)

    def make_batch(self, images, targets, generator=None):
        return _ShardedBatch([inner.make_batch(images[r::WORLD], targets[r::WORLD],
                                               torch.Generator().manual_seed(augmentation_seed(3, self.step, r)))
                              for r, inner in enumerate(self.inners)])

    def loss(self, model, batch):
        if self.joint:
            keys = batch.parts[0].tensors
            union = MethodBatch({k: torch.cat([p.tensors[k] for p in batch.parts]) for k in keys}, batch.num_samples)
            return self.inners[0].loss(model, union)
        outs = [inner.loss(model, part) for inner, part in zip(self.inners, batch.parts, strict=True)]
        weights = [p.num_samples / batch.num_samples for p in batch.parts]
        metrics = {k: sum(w * o.metrics[k] for w, o in zip(weights, outs, strict=True)) for k in outs[0].metrics}
        return LossOutput(sum(w * o.loss for w, o in zip(weights, outs, strict=True)),
                          torch.cat([o.logits for o in outs]), torch.cat([o.targets for o in outs]), metrics)

    def predict(self, model, images):
        return self.inners[0].predict(model, images)

    def extra_val_predictions(self):
        return self.inners[0].extra_val_predictions()


def _result(trainer: Trainer, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {"state": {k: v.clone() for k, v in unwrap(trainer.model).state_dict().items()}, "history": history,
            "n_chunks": trainer.n_chunks}


# ------------------------------------------------------------------------------------------- the workers
def _first_launch(rank: int, out: Path) -> None:
    """Every scenario, the views check, then the runs that stop: SBA by an exception, BA by SIGKILL."""
    for sc in SCENARIOS:
        trainer = _trainer(sc, out / sc.name)
        history = trainer.fit()
        if rank == 0:
            torch.save(_result(trainer, history), out / f"{sc.name}.pt")
        else:
            assert trainer.writer is None  # only rank 0 writes the run directory
    _views_differ_between_ranks(rank, out)
    if rank == 0:
        torch.save(_sharded_evaluation(), out / "evaluation.pt")
    else:
        _sharded_evaluation()
    with pytest.raises(_Stop):
        _trainer(SBA_STOPPED, out / SBA_STOPPED.name, stop=_StopAt(SBA_STOPPED.kill_at, kill=False)).fit()
    dist.barrier()
    _trainer(BA_KILLED, out / BA_KILLED.name, stop=_StopAt(BA_KILLED.kill_at, kill=True)).fit()
    raise AssertionError("the killed run went on")


def _views_differ_between_ranks(rank: int, out: Path) -> None:
    """Every rank holds the same images; the views its step-0 generator makes must differ from the others'."""
    sc = Scenario("views", {"name": "ba", "m": 2, "policy": "standard"})
    trainer = _trainer(sc, None)
    trainer.batches.images[:] = trainer.batches.images[:1]  # every sample is the same image
    seen = []
    make = trainer.method.make_batch
    trainer.method.make_batch = lambda *a, **k: seen.append(make(*a, **k)) or seen[-1]  # type: ignore
    trainer.train_step(0)
    views = seen[0]["inputs"]
    gathered = [torch.empty_like(views) for _ in range(WORLD)]
    dist.all_gather(gathered, views)
    if rank == 0:
        torch.save({"views": gathered}, out / "views.pt")


def _sharded_evaluation() -> dict[str, float]:
    """Validation and test figures of a fixed model on 23 and 9 images: 12 + 11 and 5 + 4 rows over two
    ranks, one row fewer on rank 1 and batches of 5 that end mid-shard; the sums are all-reduced."""
    from batchaug.train.validation import ClassificationValidation

    images, targets = _data()
    model = _model(bn=True).eval()
    method = build_method({"name": "baseline"}, _context())
    validation = ClassificationValidation(images[:23], targets[:23], 5, test_images=images[30:39],
                                          test_targets=targets[30:39])
    return validation(model, method, device=CPU, autocast=contextlib.nullcontext)


def _second_launch(rank: int, out: Path) -> None:
    """Resume both stopped runs, then let rank 1 alone run out of memory: both ranks must stop."""
    for sc in RESUMED:
        trainer = _trainer(sc, out / sc.name)
        trainer.load_state(out / sc.name / "last.pt")
        trainer.fit()
        if rank == 0:  # the whole run's lines: the first launch's up to last.pt, then this one's
            torch.save(_result(trainer, read_metrics(out / sc.name)), out / f"{sc.name}.pt")
    dist.barrier()
    dist_utils.AGREEMENT_TIMEOUT_S = 2.0
    trainer = _trainer(Scenario("oom_alone", {"name": "ba", "m": 2}, bn=False, oom_at=1 if rank == 1 else None),
                       None)
    try:
        trainer.fit()
        outcome = "finished"
    except Exception as exc:  # both ranks must get here: rank 1 from the agreement, rank 0 from its peer's exit
        outcome = f"{type(exc).__name__}: {exc}"
    (out / f"oom_alone_rank{rank}.txt").write_text(outcome)
    sys.stdout.flush()
    os._exit(0)

def _worker(rank: int, fn, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out}/pg_init_{fn.__name__}", rank=rank, world_size=WORLD)
    fn(rank, Path(out))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)  # skip gloo's teardown, which can abort a process whose checks all passed


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        mp.spawn(_worker, args=(_first_launch, str(out)), nprocs=WORLD, join=True)
    mp.spawn(_worker, args=(_second_launch, str(out)), nprocs=WORLD, join=True)
    return out


# ------------------------------------------------------------------------------------------- the checks
def _reference(sc: Scenario) -> dict[str, Any]:
    """The one-process run; for a run that ran out of memory at its first step, the run micro-batched in
    2 chunks from the start (the step guard's promise: the retry is that step, BN running statistics and
    all)."""
    if sc.oom_at is not None:
        assert sc.oom_at == 0 and sc.micro_batch is None
        sc = replace(sc, oom_at=None, micro_batch=B * sc.method["m"] // WORLD // 2)
    trainer = _trainer(sc, None, reference=True)
    history = trainer.fit()
    return _result(trainer, history)


def _assert_same_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["state"].keys() == want["state"].keys()
    for key, value in want["state"].items():
        torch.testing.assert_close(got["state"][key].float(), value.float(), rtol=2e-4, atol=2e-5, msg=key)
    assert [r["step"] for r in got["history"]] == [r["step"] for r in want["history"]]
    for mine, ref in zip(got["history"], want["history"], strict=True):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "lr", "images_seen",
                    "micro_batches", "grad_scale", "loss_aux"):
            if key in ref:
                assert mine[key] == pytest.approx(ref[key], rel=2e-4, abs=2e-5), key


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_two_processes_train_what_one_process_trains(ddp_runs, sc):
    got = torch.load(ddp_runs / f"{sc.name}.pt", weights_only=False)
    _assert_same_run(got, _reference(sc))
    lines = (ddp_runs / sc.name / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == sc.steps // 2  # one writer: rank 0


def test_out_of_memory_on_every_rank_micro_batches_all_of_them(ddp_runs):
    got = torch.load(ddp_runs / "oom.pt", weights_only=False)
    assert got["n_chunks"] == 2
    assert [r["micro_batches"] for r in got["history"]] == [2, 2]


def test_out_of_memory_on_one_rank_stops_every_rank(ddp_runs):
    alone = (ddp_runs / "oom_alone_rank1.txt").read_text()
    assert alone.startswith("OutOfMemoryError: out of memory at step 1 on rank 1 but not on every rank")
    assert "train.micro_batch" in alone
    other = (ddp_runs / "oom_alone_rank0.txt").read_text()  # waiting in the step's all-reduce: fails, not hangs
    assert other != "finished" and other.split(":")[0].endswith("Error")  # gloo: "connection closed by peer"


@pytest.mark.parametrize("sc", RESUMED, ids=[s.name for s in RESUMED])
def test_a_resumed_two_process_run_equals_an_uninterrupted_one(ddp_runs, sc):
    got = torch.load(ddp_runs / f"{sc.name}.pt", weights_only=False)
    _assert_same_run(got, _reference(sc))
    assert [r["step"] for r in got["history"]] == [2, 4, 6]


def test_two_ranks_draw_different_views_of_the_same_images(ddp_runs):
    views = torch.load(ddp_runs / "views.pt", weights_only=False)["views"]
    assert views[0].shape == views[1].shape == (B // WORLD * 2, 3, 8, 8)
    assert not torch.equal(views[0], views[1])
    # and each rank's own rows are different views too (crop/flip/... drawn per view)
    assert not torch.equal(views[0][0], views[0][1])


def test_sharded_evaluation_equals_evaluating_every_image_in_one_process(ddp_runs):
    got = torch.load(ddp_runs / "evaluation.pt", weights_only=False)
    want = _sharded_evaluation()
    assert got.keys() == want.keys() == {"val_loss", "val_acc", "test_loss", "test_acc"}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
