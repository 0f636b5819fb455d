"""``train.compile`` for every method, measured with dynamo's own counter (a counting backend, so no
kernel is generated): after a warm-up of a few steps and one evaluation nothing recompiles, whatever
SBA's layer and λ, split BN's route or the micro-batch shapes; and a compiled SBA step computes the
eager step's loss (its hooks used to be added per step, invisibly to the compiled graph)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from batchaug.config import OptimConfig
from batchaug.methods import MethodContext, build_method
from batchaug.train.compiling import RECOMPILE_LIMIT, compile_model, recompile_limit_hits
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.trainer import Trainer, TrainerSettings

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _block(c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU())


class Tiny(nn.Module):
    """Two stages that share their code object (as a ResNet's stages do), a (B, F) feature layer."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage1, self.stage2 = _block(8), _block(8)
        self.pool, self.flat = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc1, self.features_out, self.fc = nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)

    def forward(self, x):
        x = self.stage2(self.stage1(self.stem(x)))
        return self.fc(self.features_out(self.fc1(self.flat(self.pool(x)))))


def _trainer(section: dict, backend, micro_batch: int | None = None, seed: int = 0) -> Trainer:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 4, (60,), generator=g)
    ctx = MethodContext(num_classes=4, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method({"policy": "standard", **section}, ctx)
    torch.manual_seed(seed)
    model = method.prepare_model(Tiny())
    if backend is not None:
        model = compile_model(model, backend)
    cfg = OptimConfig(lr=0.05)
    settings = TrainerSettings(batch_size=10, total_steps=100, steps_per_epoch=6, eval_every=100, seed=seed,
                               micro_batch=micro_batch, progress=False, eval_batch_size=16)  # 60 = 3 x 16 + 12
    return Trainer(model, method, build_optimizer(model, cfg, 0.05), LRSchedule(cfg, 0.05, 1, 100), settings,
                   images, targets, images, targets, torch.device("cpu"))


SBA = {"name": "sba", "m": 2, "p": 0.5, "layers": ["stage1", "features_out"], "seed": 3}
METHODS = {
    "baseline": ({"name": "baseline"}, None),
    "ba": ({"name": "ba", "m": 2}, None),
    "ba_micro_batched": ({"name": "ba", "m": 3}, 7),  # 30 views in chunks of 8, 8, 7, 7 rows
    "splitbn": ({"name": "splitbn", "strong": "randaugment"}, None),
    "sba": (SBA, None),
    "sba_micro_batched": (SBA, 4),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_no_recompiles_after_warm_up(name: str) -> None:
    section, micro = METHODS[name]
    dynamo.reset()
    counter = CompileCounter()
    t = _trainer(section, counter, micro)
    for step in range(6):  # SBA: both layers and plain steps occur among the first steps (seed 3)
        t.train_step(step)
    t.evaluate()
    warm = counter.frame_count
    layers = set()
    for step in range(6, 14):
        t.train_step(step)
        layers.add(getattr(t.method, "layer", None) if getattr(t.method, "augmented", True) else None)
    t.evaluate()
    assert counter.frame_count == warm, f"{name}: {counter.frame_count - warm} recompiles after warm-up"
    assert recompile_limit_hits() == 0
    if name.startswith("sba"):
        assert layers == {None, "stage1", "features_out"}  # every kind of SBA step ran after the warm-up


def test_compiled_sba_takes_the_eager_steps() -> None:
    dynamo.reset()
    compiled, eager = _trainer(SBA, "eager", 4), _trainer(SBA, None, 4)
    for step in range(8):
        a, b = compiled.train_step(step), eager.train_step(step)
        torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    for (k, x), (_, y) in zip(compiled.model.state_dict().items(), eager.model.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5, msg=k)


def test_compile_model_raises_the_recompile_limit_and_names_bad_backends() -> None:
    from batchaug.errors import ConfigError

    compile_model(nn.Linear(2, 2), "eager")
    config = torch._dynamo.config
    assert getattr(config, "recompile_limit", getattr(config, "cache_size_limit", 0)) >= RECOMPILE_LIMIT
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        compile_model(nn.Linear(2, 2), "no_such_backend")(torch.zeros(1, 2))
