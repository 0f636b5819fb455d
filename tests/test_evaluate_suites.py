"""The evaluation suites and their loop: the Fourier basis and the low-pass filter against their
definitions, suites under several modes against the routes evaluated by hand, joint predictors
against the single ones, and bad input named before any work."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from batchaug.cli import main
from batchaug.errors import ConfigError
from batchaug.evaluate.clean import CleanSuite
from batchaug.evaluate.fourier import FourierOptions, FourierSuite, fourier_basis, frequency_pairs, perturbation_signs
from batchaug.evaluate.lowpass import LowPassOptions, LowPassSuite, low_pass
from batchaug.evaluate.suite import EvalData, NoOptions, SuiteContext, run_suites
from batchaug.methods import MethodContext, build_method
from batchaug.nn import route, split_batchnorms

pytestmark = pytest.mark.usefixtures("one_thread")
CTX = MethodContext(num_classes=10, image_size=(8, 8), mean=(0.5,) * 3, std=(0.25,) * 3)


# ------------------------------------------------------------------------------------------- fourier


@pytest.mark.parametrize("h, w", [(8, 8), (6, 10), (7, 7)])
def test_fourier_basis_is_real_unit_norm_and_symmetric(h, w):
    basis = fourier_basis(h, w).double()
    assert basis.shape == (h * w, h, w) and basis.dtype == torch.float64
    torch.testing.assert_close(basis.flatten(1).norm(dim=1), torch.ones(h * w, dtype=torch.float64))
    reps, rep_of = frequency_pairs(h, w)
    torch.testing.assert_close(basis, basis[rep_of])  # U_ij = U_-i-j: each frequency equals its representative
    # the centre is the lowest frequency: a constant image
    centre = basis[(h // 2) * w + w // 2]
    torch.testing.assert_close(centre, torch.full((h, w), 1 / math.sqrt(h * w), dtype=torch.float64))
    # each basis image holds only its own frequency (and the conjugate)
    spectrum = torch.fft.fftshift(torch.fft.fft2(basis), dim=(-2, -1)).abs().flatten(1)
    own = spectrum.argmax(1)
    assert torch.equal(torch.minimum(own, rep_of[own]), rep_of)
    self_conjugate = int((rep_of == torch.arange(h * w)).sum()) - (h * w - int((rep_of == torch.arange(h * w)).sum()))
    assert reps.numel() == (h * w + self_conjugate) // 2  # half the grid, plus the self-conjugate ones


def test_the_32px_grid_evaluates_514_frequencies():
    reps, _ = frequency_pairs(32, 32)
    assert reps.numel() == 514  # (1024 - 4) / 2 + 4 self-conjugate frequencies


def test_perturbation_signs_depend_on_the_image_index_only():
    index = torch.tensor([3, 11, 12, 40])
    whole = perturbation_signs(index, 3, 17, seed=5)
    parts = torch.cat([perturbation_signs(index[:1], 3, 17, seed=5), perturbation_signs(index[1:], 3, 17, seed=5)])
    assert torch.equal(whole, parts) and set(whole.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(whole, perturbation_signs(index, 3, 17, seed=6))


# ------------------------------------------------------------------------------------------- low pass


def test_low_pass_keeps_the_centred_square_of_the_spectrum():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    torch.testing.assert_close(low_pass(x, 8), x)  # the full width: the identity
    torch.testing.assert_close(low_pass(x, 1), x.mean((-2, -1), keepdim=True).expand_as(x))  # the DC only
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    low = 0.5 + 0.2 * torch.cos(2 * math.pi * 1 * xx / 8)  # frequency 1 along x
    high = 0.2 * torch.cos(2 * math.pi * 3 * yy / 8)  # frequency 3 along y
    img = (low + high).expand(1, 1, 8, 8)
    torch.testing.assert_close(low_pass(img, 3), low.expand(1, 1, 8, 8), atol=1e-6, rtol=0)  # |k| <= 1 kept
    torch.testing.assert_close(low_pass(img, 7), img, atol=1e-6, rtol=0)  # |k| <= 3 kept


# ---------------------------------------------------------------------------- suites x modes, by hand


def _split_bn_run():
    torch.manual_seed(0)
    method = build_method({"name": "splitbn", "weak": "flip", "strong": "randaugment"}, CTX)
    model = method.prepare_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (48, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (48,), generator=g)
    model.train()
    for _ in range(3):  # give the two BNs different statistics
        batch = method.make_batch(images, targets, torch.Generator().manual_seed(2))
        method.loss(model, batch).loss.backward()
    with torch.no_grad():  # and clearly different affine transforms, so that main and aux disagree
        for layer in split_batchnorms(model):
            layer.bias_of(1).add_(torch.randn(layer.bias_of(1).shape, generator=g))
    model.eval()
    run = SimpleNamespace(model=model, method=method, data=SimpleNamespace(image_size=(8, 8)))
    ctx = SuiteContext(run, torch.device("cpu"), seed=0, batch_size=20)  # type: ignore[arg-type]
    return method, model, EvalData(images, targets, torch.arange(48), "test"), ctx


def test_a_suite_under_two_modes_matches_the_routes_evaluated_by_hand():
    method, model, data, ctx = _split_bn_run()
    results = run_suites([CleanSuite(NoOptions(), ctx)], ["main", "aux", "alpha=0.5"], data, ctx)["clean"]
    with torch.no_grad():
        x = method.normalize(data.images)
        with route(model, "main"):
            main_logits = model(x)
        with route(model, "aux"):
            aux_logits = model(x)
    for mode, logits in (("main", main_logits), ("aux", aux_logits)):
        top1 = float((logits.argmax(-1) == data.targets).float().mean())
        assert abs(results[mode]["top1"] - top1) < 1.5 / len(data)
        loss = float(nn.functional.cross_entropy(logits, data.targets))
        assert results[mode]["loss"] == pytest.approx(loss, rel=1e-4)
    blend = (0.5 * main_logits.softmax(-1) + 0.5 * aux_logits.softmax(-1)).log()
    assert results["alpha=0.5"]["loss"] == pytest.approx(float(nn.functional.nll_loss(blend, data.targets)), rel=1e-4)
    assert not math.isclose(results["main"]["loss"], results["aux"]["loss"], rel_tol=1e-3)


@pytest.mark.parametrize("method_spec, modes", [
    ({"name": "splitbn", "weak": "flip", "strong": "randaugment"},
     ["default", "main", "aux", "alpha=0.3", "single_pass=0.5", "single_pass_affine=0.25"]),
    ({"name": "sba", "m": 4, "layers": ["4"], "inference": "vote"}, ["default", "plain", "mean", "vote"]),
    ({"name": "ba", "m": 2}, ["default"]),
])
def test_joint_predictors_equal_the_single_ones(method_spec, modes):
    torch.manual_seed(0)
    method = build_method(method_spec, CTX)
    model = method.prepare_model(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))).eval()
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        joint = method.joint_predictor(modes)(model, images)
        assert list(joint) == modes
        for mode in modes:
            torch.testing.assert_close(joint[mode], method.eval_mode(mode)(model, images), rtol=1e-4, atol=1e-5)


def test_fourier_and_lowpass_results_have_the_documented_shape():
    method, model, data, ctx = _split_bn_run()
    small = EvalData(data.images[:6], data.targets[:6], data.index[:6], "test")
    suites = [FourierSuite(FourierOptions(norm=4.0), ctx), LowPassSuite(LowPassOptions(bandwidths=[1, 4, 8]), ctx)]
    out = run_suites(suites, ["main", "aux"], small, ctx)
    grid = torch.tensor(out["fourier"]["main"]["grid"])
    assert grid.shape == (8, 8) and ((grid >= 0) & (grid <= 1)).all()
    _, rep_of = frequency_pairs(8, 8)
    assert torch.equal(grid.flatten(), grid.flatten()[rep_of])  # mirrored
    lp = out["lowpass"]["aux"]
    assert lp["bandwidth"] == [1, 4, 8] and len(lp["accuracy"]) == 3 and lp["num_images"] == 6


# ------------------------------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def quick_run(cifar_zip, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ba"
    assert main(["train", "configs/quick/cifar10_resnet20.yaml", f"data.root={cifar_zip}", "method.name=ba",
                 "method.m=2", "train.max_steps=2", "train.eval_every=2", "data.subset=128", "data.val_subset=50",
                 "train.progress=false", "train.tensorboard=false", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("args, message", [
    (["--suite", "clean,bogus"], "--suite: unknown suite 'bogus'; choose from clean, views"),
    (["--modes", "main"], "--modes: 'main' is not a mode of method 'ba'; its modes: default"),
    (["--limit", "0"], "--limit: must be >= 1, got 0"),
    (["--suite", "fourier", "--fourier-norm", "-1"], "fourier.norm: must be > 0, got -1.0"),
    (["--fourier-norm", "8"], "options given for suite 'fourier', which is not run"),
    (["--option", "clean.x=1"], "unknown key clean.x"),
    (["--suite", "sba"], "suite sba (--sba-vote) needs an SBA run"),
    (["--suite", "splitbn"], "suite splitbn (--alphas) needs a split-BN run"),
    (["--suite", "affinity", "--policies", "cutout,nope"], "affinity.policies: "),
])
def test_bad_input_is_named_before_any_work(quick_run, capsys, args, message):
    assert main(["eval", str(quick_run), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (quick_run / "eval").exists() or not any((quick_run / "eval").iterdir())


def test_suites_write_the_contract_and_limit_draws_balanced_images(quick_run):
    import json

    assert main(["eval", str(quick_run), "--suite", "clean,views", "--views-m", "2", "--limit", "30",
                 "--split", "test"]) == 0
    clean = json.loads((quick_run / "eval" / "clean.json").read_text())
    assert clean["suite"] == "clean" and clean["limit"] == 30 and set(clean["modes"]) == {"default"}
    assert clean["modes"]["default"]["num_images"] == 30 and clean["top1"] == clean["modes"]["default"]["top1"]
    views = json.loads((quick_run / "eval" / "views.json").read_text())
    assert views["modes"]["default"]["views"] == 2
    with pytest.raises(ConfigError):
        from batchaug.evaluate.registry import get_suite_class

        get_suite_class("nope")


# ---------------------------------------------------------------------------------------- corruptions


def _corruption_suite(ctx, **options):
    from batchaug.evaluate.corruption_suite import CorruptionOptions, CorruptionSuite

    suite = CorruptionSuite(CorruptionOptions(**options), ctx)
    ctx.run.data.val_images = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    ctx.run.data.image_size = (8, 8)
    suite.check()
    return suite


def test_corruption_errors_per_mode_match_a_hand_evaluation():
    from batchaug.evaluate.corruptions import corrupt

    method, model, data, ctx = _split_bn_run()
    suite = _corruption_suite(ctx, names=["brightness", "gaussian_noise"], severities=[1, 5])
    out = run_suites([suite], ["main", "aux"], data, ctx)["corruptions"]
    for mode in ("main", "aux"):
        result = out[mode]
        assert set(result["error"]) == {"brightness", "gaussian_noise"} and result["uCE"] is None  # not all 15 x 5
        assert result["CE"]["brightness"] is None  # 8 px images: no AlexNet reference applies
        with torch.no_grad(), route(model, mode):
            x = corrupt(data.images, "gaussian_noise", 5, seed=0, index=data.index)
            wrong = float((model(method.normalize(x)).argmax(-1) != data.targets).float().mean())
        assert abs(result["error"]["gaussian_noise"]["5"] - wrong) < 1.5 / len(data)
        assert 0 <= result["clean_error"] <= 1 and result["num_images"] == len(data)


def test_corruptions_read_from_a_directory_equal_the_generated_ones(tmp_path):
    import numpy as np

    from batchaug.evaluate.corruptions import BENCHMARK_CORRUPTIONS, corrupt

    method, model, data, ctx = _split_bn_run()
    for name in BENCHMARK_CORRUPTIONS:  # the reader wants every benchmark file; the suite reads the ones asked
        kind = "contrast" if name == "contrast" else "brightness"
        stacks = [corrupt(data.images, kind, s, seed=0, index=data.index) for s in range(1, 6)]
        np.save(tmp_path / f"{name}.npy", torch.cat(stacks).permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "labels.npy", data.targets.repeat(5).numpy())
    from_dir = _corruption_suite(ctx, names=["brightness", "contrast"], severities=[2, 4], source=str(tmp_path))
    generated = _corruption_suite(ctx, names=["brightness", "contrast"], severities=[2, 4])
    a = run_suites([from_dir], ["main"], data, ctx)["corruptions"]["main"]
    b = run_suites([generated], ["main"], data, ctx)["corruptions"]["main"]
    for name in ("brightness", "contrast"):
        for s in ("2", "4"):
            assert abs(a["error"][name][s] - b["error"][name][s]) < 1.5 / len(data)
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(Exception, match="labels"):
        _corruption_suite(ctx, source=str(bad))
