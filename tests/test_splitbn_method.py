"""method.name=splitbn: options, batches, the two-branch objective (incl. PGD), prediction and evaluation."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from batchaug.config import load_config
from batchaug.errors import ConfigError
from batchaug.methods import MethodContext, build_method, validate_method_options
from batchaug.methods.splitbn import SplitBNMethod, blend_log_probs
from batchaug.nn import route, split_batchnorms

REPO = Path(__file__).resolve().parents[1]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CONTEXT = MethodContext(num_classes=10, image_size=(32, 32), mean=MEAN, std=STD)


def _method(**options) -> SplitBNMethod:
    section = validate_method_options({"name": "splitbn", **options})
    method = build_method(section, CONTEXT)
    assert isinstance(method, SplitBNMethod)
    return method


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def _read_cifar(zip_path: Path, split: str, per_class: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` real CIFAR-10 images of every class, straight from the JPEG archive."""
    from batchaug.data import decode_image

    images, labels = [], []
    with zipfile.ZipFile(zip_path) as z:
        by_class: dict[str, list[str]] = {}
        for n in z.namelist():
            parts = n.split("/")
            if len(parts) == 4 and parts[1] == split and n.endswith(".jpg"):
                by_class.setdefault(parts[2], []).append(n)
        for label, cls in enumerate(sorted(by_class)):
            for name in sorted(by_class[cls])[offset:offset + per_class]:
                images.append(decode_image(z.read(name), name=name))
                labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def cifar(cifar_zip):
    train = _read_cifar(cifar_zip, "train", per_class=24)
    test = _read_cifar(cifar_zip, "test", per_class=10)
    return train, test


def _train(method: SplitBNMethod, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
           steps: int, batch: int = 32) -> list[dict[str, float]]:
    """The trainer's contract, by hand: prepare, make_batch, loss, backward, step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    history = []
    model.train()
    for step in range(steps):
        idx = torch.randperm(images.shape[0], generator=gen)[:batch]
        method.begin_step(step, 0)
        out = method.loss(model, method.make_batch(images[idx], targets[idx], gen))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        history.append({"loss": float(out.loss.detach()), **{k: float(v) for k, v in out.metrics.items()}})
    return history


@pytest.fixture(scope="module")
def trained(cifar):
    """A small split-BN CNN after 30 steps on real images: cutout (main) vs Gaussian σ=0.3 noise (aux)."""
    (images, targets), _ = cifar
    method = _method(weak="cutout", strong="gaussian", strong_options={"sigma": 0.3})
    model = method.prepare_model(_net())
    history = _train(method, model, images, targets, steps=30)
    return method, model, history


# ------------------------------------------------------------------------------------------ options


def test_defaults_and_the_policy_alias():
    section = validate_method_options({"name": "splitbn"})
    assert section["strong"] == "randaugment" and section["weak"] is None and section["policy"] == "standard"
    assert section["split_bn"] is True and section["shared_affine"] is False and section["eval_branch"] == "main"
    # A config written for another method (method.policy=standard) runs with method.name=splitbn.
    cfg = load_config(REPO / "configs/quick/cifar10_resnet20.yaml",
                      ["method.name=splitbn", "method.weak=cutout", "method.strong=randaugment"])
    assert cfg.method["weak"] == "cutout" and cfg.method["policy"] == "standard"


@pytest.mark.parametrize("options, match", [
    ({"weak": "pgd"}, r"method.weak: 'pgd' is only available for method.strong"),
    ({"strong": "blur"}, r"method.strong: .*unknown name 'blur'"),
    ({"policy": "blur"}, r"method.policy: .*unknown name 'blur'"),
    ({"strong": "randaugment", "strong_options": {"sigma": 0.1}}, r"method.strong: .*unknown option 'sigma'"),
    ({"strong": "pgd", "strong_options": {"eps": 0.1}}, r"method.strong_options: strong=pgd takes"),
    ({"strong": "pgd", "pgd_eps": 8}, r"method.pgd_eps: 8.0 is in \[0, 1\] pixel units"),
    ({"strong": "pgd", "pgd_steps": 0}, r"method.pgd_steps: must be >= 1"),
    ({"split_bn": False, "shared_affine": True}, r"method.shared_affine: needs method.split_bn=true"),
    ({"split_bn": False, "eval_branch": "aux"}, r"method.eval_branch: needs method.split_bn=true"),
    ({"eval_alpha": 1.5}, r"method.eval_alpha: must be in \[0, 1\]"),
    ({"eval_branch": "both"}, r"method.eval_branch: 'both' is not allowed"),
    ({"alpha": 0.5}, r"unknown key method.alpha; allowed keys in method: eval_alpha, eval_branch"),
])
def test_bad_options_name_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        validate_method_options({"name": "splitbn", **options})


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "paper").glob("splitbn_*.yaml")), ids=lambda p: p.stem)
def test_paper_configs_resolve(path):
    cfg = load_config(path)
    # Table 3's rows 1-2 are single-BN baselines on the split-BN regime
    baselines = ("splitbn_ablation_baseline", "splitbn_ablation_randaugment")
    assert cfg.method["name"] == ("baseline" if path.stem in baselines else "splitbn")
    assert cfg.optim.schedule == "cosine"


def test_paper_configs_cover_the_tables():
    names = {p.stem for p in (REPO / "configs" / "paper").glob("splitbn_*.yaml")}
    for model in ("wrn28_2", "wrn28_10"):
        for data in ("cifar10", "cifar100"):
            assert f"splitbn_{data}_{model}" in names
    assert "splitbn_imagenet_resnet50" in names
    assert sum(n.startswith("splitbn_ablation_") for n in names) == 7  # Table 3's seven rows
    assert sum(n.startswith("splitbn_weak_") for n in names) == 5  # Table 1's main-BN augmentations without a main row


# ------------------------------------------------------------------------------------------ batches and loss


def test_make_batch_gives_two_views_of_the_same_samples():
    method = _method(weak="flip", strong="gaussian", strong_options={"sigma": 0.2})
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    targets = torch.arange(6)
    batch = method.make_batch(images, targets, torch.Generator().manual_seed(0))
    assert batch.num_samples == 6 and batch.num_views == 6 and method.views_per_sample == 2
    weak, strong = batch["weak"], batch["strong"]
    assert weak.shape == strong.shape == (6, 3, 32, 32) and weak.dtype == torch.float32
    assert not torch.allclose(weak, strong)
    # Flip-only main views are the normalized images, mirrored or not.
    x = method.normalize(images)
    assert all(torch.allclose(weak[i], x[i], atol=1e-5) or torch.allclose(weak[i], x[i].flip(-1), atol=1e-5)
               for i in range(6))
    again = method.make_batch(images, targets, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["strong"], strong)
    halves = list(batch.chunks(2))
    assert [c.num_samples for c in halves] == [3, 3] and halves[1]["strong"].shape[0] == 3


def test_training_on_real_images_splits_the_statistics(trained):
    _, model, history = trained
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    assert {"loss_main", "loss_aux", "acc_aux"} <= set(history[0])
    first = sum(h["loss"] for h in history[:5]) / 5
    last = sum(h["loss"] for h in history[-5:]) / 5
    assert last < first - 0.05
    # Cutout views and noisy views have different feature statistics: the splits track them apart.
    first_bn = split_batchnorms(model)[0]
    log_ratio = (first_bn.aux1_running_var / first_bn.running_var).log().abs()
    assert log_ratio.mean() > 0.1
    assert int(first_bn.num_batches_tracked) == int(first_bn.aux1_num_batches_tracked) == 30
    assert not torch.allclose(first_bn.weight, first_bn.aux1_weight)


def test_loss_is_the_mean_of_the_two_branch_losses():
    method = _method(weak="none", strong="gaussian", strong_options={"sigma": 0.2})
    model = method.prepare_model(_net()).train()
    batch = method.make_batch(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 10,
                              torch.Generator().manual_seed(1))
    out = method.loss(model, batch)
    torch.testing.assert_close(out.loss, (out.metrics["loss_main"] + out.metrics["loss_aux"]) / 2)
    assert out.logits.shape == (8, 10)


def test_pgd_strong_branch_attacks_through_aux_without_touching_statistics_or_grads(cifar):
    (images, targets), _ = cifar
    method = _method(weak="flip", strong="pgd", pgd_eps=4 / 255, pgd_steps=3, pgd_step_size=2 / 255)
    model = method.prepare_model(_net()).train()
    batch = method.make_batch(images[:16], targets[:16], torch.Generator().manual_seed(2))
    assert set(batch.tensors) == {"weak", "targets", "pgd_init"}
    assert batch["pgd_init"].abs().max() <= 1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = method.adversarial_views(model, batch["weak"], batch["targets"], batch["pgd_init"])
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    assert all(p.grad is None for p in model.parameters())
    std = torch.tensor(STD).view(1, 3, 1, 1)
    assert ((adv - batch["weak"]) * std).abs().max() <= 4 / 255 + 1e-5
    # The attack raises the auxiliary branch's loss over the random start alone.
    with torch.no_grad(), route(model, "aux"):
        from batchaug.nn import frozen_bn_stats

        with frozen_bn_stats(model):
            start = batch["weak"] + batch["pgd_init"] * (4 / 255) / std
            ce = nn.functional.cross_entropy
            assert ce(model(adv), batch["targets"]) > ce(model(start), batch["targets"])
    out = method.loss(model, batch)
    out.loss.backward()
    layer = split_batchnorms(model)[0]
    assert int(layer.num_batches_tracked) == 1 and int(layer.aux1_num_batches_tracked) == 1


def test_without_split_bn_both_views_share_one_batchnorm():
    method = _method(weak="flip", strong="randaugment", split_bn=False)
    model = method.prepare_model(_net())
    assert not split_batchnorms(model)
    batch = method.make_batch(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.arange(4),
                              torch.Generator().manual_seed(3))
    out = method.loss(model.train(), batch)
    assert int(model[1].num_batches_tracked) == 1 and torch.isfinite(out.loss)
    assert method.predict(model.eval(), torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 10)
    assert set(method.eval_modes()) == {"default"}  # one set of BatchNorms: no branches to choose


def test_shared_affine_option_reaches_the_layers():
    model = _method(shared_affine=True).prepare_model(_net())
    assert all(layer.shared_affine for layer in split_batchnorms(model))


# ------------------------------------------------------------------------------------------ prediction / evaluation


def test_predict_honours_eval_branch(trained, cifar):
    method, model, _ = trained
    _, (images, _) = cifar
    model.eval()
    x = method.normalize(images[:50])
    with torch.no_grad():
        with route(model, "main"):
            main = model(x)
        with route(model, "aux"):
            aux = model(x)
        torch.testing.assert_close(method.predict(model, images[:50]), main)
        for name, expected in (("main", main), ("aux", aux)):
            torch.testing.assert_close(method.predict_branch(model, images[:50], name), expected)
        blend = method.predict_branch(model, images[:50], "blend", 0.3)
        probs = 0.7 * main.softmax(-1) + 0.3 * aux.softmax(-1)
        torch.testing.assert_close(blend.exp(), probs, rtol=1e-4, atol=1e-6)
        modes = method.eval_modes()
        assert set(modes) == {"default", "main", "aux", "alpha=0.25", "alpha=0.5", "alpha=0.75"}
        torch.testing.assert_close(modes["aux"](model, images[:50]), aux)
        torch.testing.assert_close(modes["default"](model, images[:50]), main)
        torch.testing.assert_close(method.eval_mode("alpha=0.3")(model, images[:50]), blend)


def test_blend_log_probs_endpoints():
    a, b = torch.randn(4, 10), torch.randn(4, 10)
    torch.testing.assert_close(blend_log_probs(a, b, 0.0), a.log_softmax(-1))
    torch.testing.assert_close(blend_log_probs(a, b, 1.0), b.log_softmax(-1))
    torch.testing.assert_close(blend_log_probs(a, b, 0.5).exp().sum(-1), torch.ones(4))


def _within_one_image(a: float, b: float, n: int) -> bool:
    """Two accuracies (or agreements) over ``n`` images of predictions that are the same up to
    float32: computed by other kernels (another batch shape, the folded BN transform), the logits
    differ by ~1e-7 relative, which flips an argmax only where two classes are that close, so one
    image may differ on another CPU; a wrong branch or blend changes many (the branches agree on
    about half)."""
    return abs(a - b) < 1.5 / n  # multiples of 1 / n (a float32 mean is a little off one)


def test_evaluate_splitbn_on_real_images(trained, cifar):
    from batchaug.evaluate.splitbn import evaluate_splitbn

    method, model, _ = trained
    _, (images, targets) = cifar
    model.train()
    result = evaluate_splitbn(model, method, images, targets, ["0", "0.5", "1"], batch_size=64)
    assert model.training  # mode restored
    n = result["num_images"]
    assert n == 100
    assert list(result["alphas"]) == ["0", "0.5", "1"]
    # α = 0 and 1 blend nothing: the argmax of the very same logits (log-softmax is monotone)
    assert result["alphas"]["0"] == result["main"] and result["alphas"]["1"] == result["aux"]
    assert _within_one_image(result["single_pass"]["0"], result["main"], n)
    assert _within_one_image(result["single_pass"]["1"], result["aux"], n)
    assert _within_one_image(result["single_pass_agreement"]["0"], 1.0, n)
    assert _within_one_image(result["single_pass_affine_agreement"]["1"], 1.0, n)
    assert result["single_pass_max_prob_diff"]["0"] < 1e-5
    for key in ("alphas", "single_pass", "single_pass_affine", "single_pass_agreement"):
        assert all(0.0 <= v <= 1.0 for v in result[key].values())
    with route(model, "aux"):
        model.eval()
        with torch.no_grad():
            aux_acc = float((model(method.normalize(images)).argmax(-1) == targets).float().mean())
    assert _within_one_image(result["aux"], aux_acc, n)  # batches of 64 (twice, split route) vs one of 100
    numeric = evaluate_splitbn(model, method, images[:10], targets[:10], [0.25])
    assert list(numeric["alphas"]) == ["0.25"]
    with pytest.raises(ConfigError, match="outside"):
        evaluate_splitbn(model, method, images, targets, [2.0])


def test_evaluate_splitbn_rejects_a_run_without_split_bn():
    from batchaug.evaluate.splitbn import evaluate_splitbn

    method = _method(split_bn=False)
    with pytest.raises(ConfigError, match="no split BatchNorms"):
        evaluate_splitbn(_net(), method, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2).long(), [0.5])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("strong", ["randaugment", "pgd"])
def test_cuda_step_with_bf16_autocast(strong):
    dev = torch.device("cuda")
    context = MethodContext(num_classes=10, image_size=(32, 32), mean=MEAN, std=STD, device=dev, channels_last=True)
    method = build_method(validate_method_options({"name": "splitbn", "weak": "cutout", "strong": strong,
                                                   "pgd_steps": 2}), context)
    model = method.prepare_model(_net()).to(dev).to(memory_format=torch.channels_last).train()
    gen = torch.Generator(device=dev).manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, device=dev)
    batch = method.make_batch(images, torch.arange(16, device=dev) % 10, gen)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = method.loss(model, batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    layer = split_batchnorms(model)[0]
    assert int(layer.num_batches_tracked) == int(layer.aux1_num_batches_tracked) == 1
    with torch.no_grad():
        assert method.predict_branch(model.eval(), images, "blend", 0.5).shape == (16, 10)
