"""Stochastic Batch Augmentation: options, scheduler, loss, gradients, every model, resume, inference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from batchaug.config import build_dataclass, load_config
from batchaug.errors import ConfigError
from batchaug.evaluate.clean import majority_vote
from batchaug.methods import MethodContext, build_method
from batchaug.methods.base import MethodBatch
from batchaug.methods.sba import SBAOptions, StochasticBatchAugmentation, aggregate_predictions, soft_label_kl
from batchaug.models import build_model, get_spec, list_models

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


CONTEXT = MethodContext(num_classes=10, image_size=(32, 32), mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))


def make(model: nn.Module | None = None, **options) -> tuple[StochasticBatchAugmentation, nn.Module]:
    """An SBA method prepared on ``model`` (a ResNet-20 by default), options validated like a config."""
    options.setdefault("layers", ["features_out"])
    options.setdefault("policy", "none")
    options.setdefault("seed", 0)
    method = build_method({"name": "sba", **options}, CONTEXT)
    if model is None:
        torch.manual_seed(0)
        model = build_model("resnet20")
    method.prepare_model(model)
    return method, model


def batch(n: int = 4, size: int = 32, seed: int = 0) -> MethodBatch:
    g = torch.Generator().manual_seed(seed)
    return MethodBatch({"inputs": torch.randn(n, 3, size, size, generator=g),
                        "targets": torch.randint(10, (n,), generator=g)}, n)


# -- options ---------------------------------------------------------------------------------------

def test_options_defaults_and_derived_values():
    o = build_dataclass(SBAOptions, {"m": 9}, "method")
    assert (o.num_gauss, o.num_dropout, o.clip, o.probability()) == (5, 4, 0.2, 0.5)
    o = build_dataclass(SBAOptions, {"omega": math.pi / 3, "dropout_copies": 0, "sigma": 0.3}, "method")
    assert o.probability() == pytest.approx(0.5) and o.num_gauss == 8 and o.clip == pytest.approx(0.6)


@pytest.mark.parametrize("values, message", [
    ({"p": 0.5, "omega": 1.0}, "set one of them"),
    ({"omega": 2.0}, r"method.omega: must be in \[0, π/2\]"),
    ({"p": 1.5}, "method.p: must be a probability"),
    ({"m": 0}, "method.m: must be >= 1"),
    ({"m": 4, "dropout_copies": 5}, r"method.dropout_copies: must be in \[0, m=4\]"),
    ({"tau": 0.0}, "method.tau: must be > 0"),
    ({"sigma": 0.0}, "set tau when sigma is 0"),
    ({"dropout_p": 1.0}, r"method.dropout_p: must be in \[0, 1\)"),
    ({"layers": []}, "method.layers: give at least one"),
    ({"layers": ["a", "a"]}, "names a layer twice"),
    ({"fixed_layer": "a"}, "only used with method.layer_choice=fixed"),
    ({"layers": ["a"], "layer_choice": "fixed", "fixed_layer": "b"}, "'b' is not one of method.layers"),
    ({"granularity": "batch"}, "method.granularity: 'batch' is not allowed; choose one of 'step', 'epoch'"),
    ({"inference": "max"}, "method.inference"),
    ({"mm": 3}, "unknown key method.mm; allowed keys in method: detach_teacher, dropout_copies"),
    ({"policy": "no-such-policy"}, "method.policy"),
])
def test_bad_options_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        build_dataclass(SBAOptions, values, "method")


def test_layers_must_exist_and_unknown_models_ask_for_layers():
    with pytest.raises(ConfigError, match="'feature_out'.*did you mean 'features_out'"):
        make(layers=["feature_out"])
    with pytest.raises(ConfigError, match="method.layers: no default SBA layers are known for Sequential"):
        make(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), layers=None)
    with pytest.raises(ConfigError, match="cannot add virtual samples at layer 'layer3.0.conv1'"):
        make(layers=["layer3.0.conv1"])  # inside a residual block: the shortcut keeps B rows


# -- scheduler -------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts, p", [({"p": 0.3}, 0.3), ({"omega": math.pi / 3}, 0.5), ({"p": 0.9}, 0.9)])
def test_scheduler_frequency_matches_p(opts, p):
    method, _ = make(**opts)
    n = 4000
    hits = 0
    for step in range(n):
        method.begin_step(step, step // 100)
        hits += method.augmented
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_scheduler_extremes_and_epoch_granularity():
    for p, expected in ((0.0, 0), (1.0, 50)):
        method, _ = make(p=p)
        count = 0
        for step in range(50):
            method.begin_step(step, 0)
            count += method.augmented
        assert count == expected
    method, _ = make(p=0.5, granularity="epoch")
    per_epoch = []
    for epoch in range(400):
        draws = set()
        for step in range(epoch * 5, epoch * 5 + 5):
            method.begin_step(step, epoch)
            draws.add(method.augmented)
        assert len(draws) == 1  # one λ for the whole epoch
        per_epoch.append(draws.pop())
    assert abs(sum(per_epoch) / 400 - 0.5) < 4 * math.sqrt(0.25 / 400)


def test_layer_choice_uniform_and_fixed():
    layers = ["layer2", "layer3", "features_out"]
    method, _ = make(layers=layers, p=1.0)
    counts = dict.fromkeys(layers, 0)
    for step in range(1500):
        method.begin_step(step, 0)
        counts[method.layer] += 1
    assert all(abs(c / 1500 - 1 / 3) < 0.05 for c in counts.values()), counts
    method, _ = make(layers=layers, layer_choice="fixed", fixed_layer="layer3")
    for step in range(20):
        method.begin_step(step, 0)
        assert method.layer == "layer3"
    method, _ = make(layers=layers, layer_choice="fixed")
    method.begin_step(0, 0)
    assert method.layer == "features_out" == method.eval_layer  # unset: the last layer


# -- loss ------------------------------------------------------------------------------------------

def test_kl_is_zero_when_virtual_equals_raw():
    raw = torch.randn(5, 10)
    assert soft_label_kl(raw, raw[:, None].expand(5, 3, 10)).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_label_kl(raw, torch.randn(5, 3, 10)).item() > 0.01
    # through the whole method: no noise (σ = 0) and no dropout (rate 0) -> virtual == raw
    method, model = make(p=1.0, sigma=0.0, tau=0.1, dropout_p=0.0, m=4)
    model.eval()  # BN in eval mode: rows are independent, so copies equal the raw rows exactly
    method.begin_step(0, 0)
    out = method.loss(model, batch())
    assert out.metrics["sba_kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert out.loss.item() == pytest.approx(out.metrics["sba_ce"].item(), abs=1e-6)


def test_kl_matches_the_definition_and_eq11_weighting():
    raw, virtual = torch.randn(3, 5), torch.randn(3, 4, 5)
    p = raw.softmax(-1)
    reference = sum(
        (p[i] * (p[i].log() - virtual[i, j].log_softmax(-1))).sum() for i in range(3) for j in range(4)
    ) / (3 * 4)
    torch.testing.assert_close(soft_label_kl(raw, virtual), reference)
    method, model = make(p=1.0, eta=0.5, m=4)
    method.begin_step(0, 0)
    out = method.loss(model, batch(6))
    m = out.metrics
    assert m["sba_augmented"] == 1.0 and out.logits.shape == (6, 10)
    torch.testing.assert_close(out.loss.detach(), m["sba_ce"] + 0.5 * m["sba_kl"])
    torch.testing.assert_close(m["sba_reg"], 0.5 * m["sba_kl"])


def test_plain_steps_are_ordinary_cross_entropy():
    method, model = make(p=0.0)
    method.begin_step(0, 0)
    b = batch()
    out = method.loss(model, b)
    assert out.metrics == {"sba_augmented": 0.0, "sba_reg": 0.0, "sba_ce": out.loss.detach()}
    assert "sba_kl" not in out.metrics  # sba_kl is averaged over augmented steps only
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(out.logits, b["targets"]))


@pytest.mark.parametrize("detach", [True, False])
def test_kl_gradient_reaches_layers_before_k(detach):
    grads = {}
    for eta in (0.0, 1.0):
        method, model = make(p=1.0, eta=eta, detach_teacher=detach, m=4)
        method.begin_step(0, 0)
        method.loss(model, batch()).loss.backward()
        grads[eta] = model.stem[0].weight.grad.clone()  # the first convolution, far before k
    assert (grads[1.0] - grads[0.0]).abs().max() > 1e-6


def test_detached_teacher_gets_no_kl_gradient():
    # the KL term alone: with a detached teacher the raw rows' logits get no gradient from it
    method, model = make(p=1.0, m=2, detach_teacher=True)
    x = batch()["inputs"].requires_grad_()
    with method.latent.active("features_out", torch.Generator().manual_seed(0)):
        out = model(x)
    raw, virtual = out[:4], out[4:].unflatten(0, (2, 4)).transpose(0, 1)
    (g_raw,) = torch.autograd.grad(soft_label_kl(raw, virtual, detach_teacher=True), raw, retain_graph=True,
                                   allow_unused=True)
    assert g_raw is None  # the raw rows are not even in the KL term's graph
    (g_raw,) = torch.autograd.grad(soft_label_kl(raw, virtual, detach_teacher=False), raw)
    assert g_raw.abs().max() > 0


# -- models ----------------------------------------------------------------------------------------

def _check_model(model: nn.Module, layers: list[str], size: int = 32) -> None:
    """Prepare SBA on ``model``; one augmented training pass per layer; a voting prediction."""
    context = MethodContext(**{**CONTEXT.__dict__, "image_size": (size, size)})
    method = build_method({"name": "sba", "layers": layers, "p": 1.0, "m": 2, "policy": "none", "seed": 0}, context)
    method.prepare_model(model)
    assert set(method.layer_shapes) == set(layers)
    model.train()
    method.begin_step(0, 0)
    assert method.augmented
    for layer in layers:  # every eligible layer, not just the one drawn
        method.layer = layer
        out = method.loss(model, batch(2, size))
        out.loss.backward()
        assert torch.isfinite(out.loss) and out.logits.shape == (2, 10)
        assert out.metrics["sba_kl"] > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    method.options.inference = "vote"
    with torch.no_grad():
        images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
        assert method.predict(model.eval(), images).shape == (2, 10)


@pytest.mark.parametrize("name", [s.name for s in list_models() if s.family == "cifar"])
def test_every_registry_cifar_model(name):
    torch.manual_seed(0)
    _check_model(build_model(name), list(get_spec(name).sba_layers))


@pytest.mark.parametrize("name, size", [("tv:resnet18", 32), ("alexnet", 64)])
def test_torchvision_models(name, size):
    """torchvision models with their registry layers (``alexnet``'s are in-place ReLUs)."""
    torch.manual_seed(0)
    _check_model(build_model(name, num_classes=10), list(get_spec(name).sba_layers), size)


def test_default_layers_come_from_the_model_named_in_the_context():
    context = MethodContext(**{**CONTEXT.__dict__, "model_name": "vgg16_bn"})  # what the trainer provides
    method = build_method({"name": "sba", "policy": "none"}, context)
    method.prepare_model(build_model("vgg16_bn"))
    assert method.layers == ("classifier.relu1", "classifier.relu2")


# -- state and inference ---------------------------------------------------------------------------

def test_state_dict_resumes_the_same_draws():
    method, model = make(p=0.5, layers=["layer3", "features_out"])
    for step in range(10):
        method.begin_step(step, 0)
    state = method.state_dict()

    def future(m: StochasticBatchAugmentation) -> list:
        draws = []
        for step in range(10, 30):
            m.begin_step(step, 0)
            draws.append((m.augmented, m.layer))
        m.augmented, m.layer = True, "features_out"
        draws.append(m.loss(model.eval(), batch()).loss.item())  # same noise stream too
        return draws

    expected = future(method)
    resumed, _ = make(model, p=0.5, layers=["layer3", "features_out"], seed=123)  # seed overridden by the state
    resumed.load_state_dict(state)
    assert future(resumed) == expected


def test_aggregate_predictions():
    raw, virtual = torch.randn(50, 10), torch.randn(50, 4, 10)
    every = torch.cat([raw[:, None], virtual], 1)
    vote = aggregate_predictions(raw, virtual, "vote")
    assert torch.equal(vote.argmax(-1), majority_vote(every))
    assert torch.isfinite(vote).all()
    torch.testing.assert_close(vote.exp().sum(-1), torch.ones(50))
    mean = aggregate_predictions(raw, virtual, "mean")
    torch.testing.assert_close(mean.exp(), every.softmax(-1).mean(1))
    with pytest.raises(ValueError, match="mode"):
        aggregate_predictions(raw, virtual, "max")


def test_predict_is_deterministic_and_plain_rows_match():
    method, model = make(m=4, inference="vote")
    model.eval()
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a, b = method.predict(model, images), method.predict(model, images)
        assert torch.equal(a, b)
        raw, virtual = method.virtual_predictions(model, method.normalize(images))
        torch.testing.assert_close(raw, model(method.normalize(images)))
        assert virtual.shape == (6, 4, 10)


# -- configs ---------------------------------------------------------------------------------------

PAPER = sorted((Path(__file__).resolve().parents[1] / "configs" / "paper").glob("sba_*.yaml"))
TABLE1_M = {"cifar10_resnet44": 40, "cifar10_vgg16": 32, "cifar10_alexnet": 32, "cifar100_resnet44": 40,
            "cifar100_vgg16": 32, "cifar100_alexnet": 32, "imagenet_resnet50": 4, "imagenet_vgg16": 4,
            "imagenet_alexnet": 8}


def test_paper_configs_are_table1_rows_and_their_layers_exist():
    assert sorted(p.stem[4:] for p in PAPER) == sorted(TABLE1_M)
    for path in PAPER:
        cfg = load_config(path)
        method = cfg.method
        assert method["name"] == "sba" and method["m"] == TABLE1_M[path.stem[4:]], path.name
        assert SBAOptions(**{k: v for k, v in method.items() if k != "name"}).probability() == pytest.approx(0.5)
        with torch.device("meta"):  # names only: no memory for the ImageNet models
            model = build_model(cfg.model.name, num_classes=10)
        modules = dict(model.named_modules())
        assert all(layer in modules for layer in method["layers"]), (path.name, method["layers"])
        assert tuple(method["layers"]) == get_spec(cfg.model.name).sba_layers  # the registry defaults, spelled out
