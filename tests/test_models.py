"""The model zoo: parameter counts against the papers, forward/backward of every registered model,
SBA layer contracts, registry errors, and a few training steps on real CIFAR-10 images."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from batchaug.errors import ConfigError
from batchaug.models import (
    ModelSpec,
    build_model,
    count_params,
    get_spec,
    list_models,
    register_model,
    registry,
)
from batchaug.models.resnet_cifar import ShortcutA
from batchaug.models.vgg_cifar import VGG16_CFG

SPECS = [s for s in list_models() if s.family in ("cifar", "imagenet")]  # image models (text: test_lstm.py)
NAMES = [s.name for s in SPECS]
REQUIRED = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn28_10", "wrn28_2", "vgg16_bn",
            "alexnet_cifar", "densenet_bc_100_12", "mobilenet_cifar", "resnet50", "alexnet",
            "vgg16_bn_imagenet", "mobilenet_v2"]
# ImageNet models run at a reduced size to stay fast (torchvision's AlexNet needs at least 63 pixels).
SMALL_IMAGENET = 64


def _input_size(spec: ModelSpec) -> int:
    return spec.input_size if spec.family == "cifar" else SMALL_IMAGENET


def _meta_count(name: str, num_classes: int, **kwargs: object) -> int:
    with torch.device("meta"):
        return count_params(build_model(name, num_classes=num_classes, **kwargs))


def _within_published(count: int, published: int) -> bool:
    """Within 2%, or equal to ``published`` at the precision it is printed with.

    Papers print rounded figures: "0.8M" (DenseNet-BC-100-12) means anything in [0.75M, 0.85M), and
    1.5M for WRN-28-2 covers its 1.47M. The precision is read off the trailing zeros.
    """
    unit = 1
    while published % (unit * 10) == 0:
        unit *= 10
    return abs(count - published) <= max(0.02 * published, unit / 2)


def test_registry_has_every_required_name() -> None:
    assert set(REQUIRED) <= set(NAMES)
    assert len(NAMES) == len(set(NAMES))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.published_params], ids=lambda s: s.name)
def test_param_count_matches_published(spec: ModelSpec) -> None:
    num_classes = 10 if spec.family == "cifar" else 1000
    count = _meta_count(spec.name, num_classes)
    assert _within_published(count, spec.published_params), (spec.name, count, spec.published_params)


@pytest.mark.parametrize(("name", "published"), [("wrn16_8", 11_000_000), ("wrn40_4", 8_900_000)])
def test_generic_wrn_names_match_the_wrn_paper(name: str, published: int) -> None:
    assert _within_published(_meta_count(name, 10), published)


def test_within_published_is_strict_where_the_figure_is_precise() -> None:
    assert _within_published(769_162, 800_000)
    assert not _within_published(700_000, 800_000)
    assert not _within_published(25_000_000, 25_557_032)  # 2.2% off an exact figure


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_cifar_resnet_count_is_option_a(depth: int) -> None:
    # Option A shortcuts have no parameters: only the 3x3 convs, their BNs and the classifier count.
    n = (depth - 2) // 6
    convs = 3 * 16 * 9 + 2 * 16
    for i, w in enumerate((16, 32, 64)):
        w_in = 16 if i == 0 else w // 2
        convs += w_in * w * 9 + (2 * n - 1) * w * w * 9 + 2 * n * 2 * w
    assert _meta_count(f"resnet{depth}", 10) == convs + 64 * 10 + 10


def test_architectures_without_published_count_match_their_documented_layout() -> None:
    def bn(c: int) -> int:
        return 2 * c

    def head(q: int, hidden: int, classes: int) -> int:
        return q * hidden + bn(hidden) + hidden * hidden + bn(hidden) + hidden * classes + classes

    widths = [c for c in VGG16_CFG if c != "M"]
    vgg = sum(a * b * 9 + bn(b) for a, b in zip([3, *widths[:-1]], widths)) + head(512, 512, 10)
    assert _meta_count("vgg16_bn", 10) == vgg

    alex_convs = [(3, 64, 5), (64, 192, 5), (192, 384, 3), (384, 256, 3), (256, 256, 3)]
    alex = sum(a * b * k * k + bn(b) for a, b, k in alex_convs) + head(256 * 4 * 4, 1024, 10)
    assert _meta_count("alexnet_cifar", 10) == alex

    blocks = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    mobile = 3 * 32 * 9 + bn(32)
    for a, b in zip([32, *blocks[:-1]], blocks):
        mobile += a * 9 + bn(a) + a * b + bn(b)
    assert _meta_count("mobilenet_cifar", 10) == mobile + 1024 * 10 + 10


@pytest.fixture(scope="module", params=NAMES)
def built(request: pytest.FixtureRequest) -> tuple[ModelSpec, nn.Module]:
    """One 5-class model per registry name, shared by the tests below (pytest groups them by name)."""
    torch.manual_seed(0)
    return get_spec(request.param), build_model(request.param, num_classes=5)


def test_forward_backward(built: tuple[ModelSpec, nn.Module]) -> None:
    spec, model = built
    model.train()
    size = _input_size(spec)
    logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    model.zero_grad(set_to_none=True)
    assert not missing, f"{spec.name}: no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_one_channel_input(name: str) -> None:
    size = _input_size(get_spec(name))
    with torch.device("meta"):  # shapes only
        model = build_model(name, num_classes=3, in_channels=1).eval()
        assert model(torch.empty(2, 1, size, size)).shape == (2, 3)


def _leaf_order(model: nn.Module, x: torch.Tensor, watch: tuple[str, ...]) -> list[str]:
    """Names of modules in the order their forward finished (leaves, plus the watched layers)."""
    order: list[str] = []
    handles = []
    for path, module in model.named_modules():
        if path in watch or not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(lambda m, i, o, p=path: order.append(p)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return order


def test_sba_layers_output_features_and_accept_a_larger_batch(built: tuple[ModelSpec, nn.Module]) -> None:
    """Each SBA layer outputs (B, Q); a hook may replace that output by a bigger batch (the raw
    features plus virtual samples) and the rest of the network must follow it, row for row."""
    spec, model = built
    name = spec.name
    assert spec.sba_layers, f"{name} has no default SBA layer"
    model.eval()
    modules = dict(model.named_modules())
    size = _input_size(spec)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        reference = model(x)
    order = _leaf_order(model, x, spec.sba_layers)
    for layer in spec.sba_layers:
        assert layer in modules, f"{name}: {layer!r} is not in named_modules()"
        seen: list[torch.Size] = []

        def triple(module: nn.Module, inputs: object, out: torch.Tensor) -> torch.Tensor:
            seen.append(out.shape)  # noqa: B023 - called before the loop moves on
            return torch.cat([out, out * 0.5, out])

        handle = modules[layer].register_forward_hook(triple)
        with torch.no_grad():
            logits = model(x)
        handle.remove()
        assert len(seen) == 1 and len(seen[0]) == 2 and seen[0][0] == 3, (layer, seen)
        assert logits.shape == (9, 5)
        torch.testing.assert_close(logits[:3], reference, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logits[6:], reference, rtol=1e-4, atol=1e-5)
        # the hook replaces the output: nothing right after it may write into it in place
        after = order[order.index(layer) + 1]
        assert not getattr(modules[after], "inplace", False), f"{name}: {after} runs in place after {layer}"


def test_unknown_name_lists_known_models_and_suggests() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("resnet21")
    msg = str(info.value)
    assert "resnet21" in msg and "Did you mean" in msg and "resnet20" in msg and "wrn28_10" in msg
    assert "tv:" in msg and "timm:" in msg
    with pytest.raises(ConfigError):
        get_spec("wrn27_2")  # 27 is not 6n+4
    with pytest.raises(ConfigError):
        get_spec("resnet")


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"'widht'.*allowed.*in_channels"):
        build_model("wrn28_2", widht=3)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("resnet20", num_classes=0)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("wrn28_2", dropout=1.5)
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("densenet_bc_100_12", in_channels=0)
    with pytest.raises(ConfigError, match="6n\\+2"):
        from batchaug.models import cifar_resnet

        cifar_resnet(21)


def test_builder_options_take_effect() -> None:
    wrn = build_model("wrn16_4", dropout=0.3)
    assert [m.p for m in wrn.modules() if isinstance(m, nn.Dropout)] == [0.3] * 6
    half = _meta_count("mobilenet_cifar", 10, width_mult=0.5)
    assert half < _meta_count("mobilenet_cifar", 10) / 3
    assert _meta_count("vgg16_bn", 10, hidden=256) < _meta_count("vgg16_bn", 10)


def test_register_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def tiny(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                             nn.Linear(4, num_classes))

    spec = ModelSpec(name="tiny", builder=tiny, family="cifar", input_size=32, description="test",
                     published_params=None, sba_layers=("2",), citation="-")
    register_model(spec)
    assert get_spec("tiny") is spec and spec in list_models()
    assert build_model("tiny", num_classes=4)(torch.zeros(1, 3, 8, 8)).shape == (1, 4)
    with pytest.raises(ConfigError, match="already registered"):
        register_model(spec)
    with pytest.raises(ConfigError, match="':'"):
        register_model(ModelSpec("my:tiny", tiny, "cifar", 32, "", None, (), ""))
    with pytest.raises(ConfigError, match="family"):
        ModelSpec("x", tiny, "mnist", 28, "", None, (), "")


def test_count_params_counts_shared_parameters_once() -> None:
    lin = nn.Linear(4, 4)
    assert count_params(nn.Sequential(lin, lin)) == 20


def test_init_is_kaiming_fan_out_and_unit_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_model("resnet56")
    conv = model.layer3[4].conv1
    expected = math.sqrt(2.0 / (conv.out_channels * 9))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_shortcut_a_subsamples_and_pads_with_zeros() -> None:
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(stride=2, extra=16)(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert torch.all(out[:, 16:] == 0)


def test_models_take_other_input_sizes() -> None:
    # global pooling lets the CIFAR models run on e.g. 64x64 (Tiny ImageNet) or 28x28 (MNIST) inputs;
    # VGG's five 2x2 pools need at least 32 pixels
    for name, sizes in [("resnet20", (28, 64)), ("vgg16_bn", (64,)), ("alexnet_cifar", (28, 64)),
                        ("mobilenet_cifar", (28, 64)), ("densenet_bc_100_12", (28,))]:
        model = build_model(name).eval()
        with torch.no_grad():
            for size in sizes:
                assert model(torch.randn(1, 3, size, size)).shape == (1, 10), (name, size)


# ------------------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def cifar_batch(cifar_zip: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """8 real CIFAR-10 training images (the first of each of eight classes), normalised floats."""
    from PIL import Image

    with zipfile.ZipFile(cifar_zip) as zf:
        names = sorted(n for n in zf.namelist() if "/train/" in n and n.endswith(".jpg"))
        classes = sorted({n.split("/")[-2] for n in names})
        images, labels = [], []
        for label, cls in enumerate(classes[:8]):
            first = next(n for n in names if n.split("/")[-2] == cls)
            img = Image.open(io.BytesIO(zf.read(first))).convert("RGB")
            images.append(torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(32, 32, 3))
            labels.append(label)
    x = torch.stack(images).permute(0, 3, 1, 2).float() / 255
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    return x, torch.tensor(labels)


@pytest.mark.parametrize("name", ["resnet20", "alexnet_cifar", "mobilenet_cifar"])
def test_cifar_models_fit_a_small_real_batch(name: str, cifar_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = cifar_batch
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, **({"dropout": 0.0} if name == "alexnet_cifar" else {}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # accuracy with batch statistics: 12 steps are too few for the BN running averages to settle
    acc = (logits.argmax(1) == y).float().mean().item()
    assert losses[-1] < 0.2 * losses[0], (name, losses)
    assert acc >= 0.9, (name, acc)

