"""MixUp and CutMix as batch transforms of the views methods: per view, against a per-view loop."""

from __future__ import annotations

import math

import pytest
import torch

from batchaug.config import load_config
from batchaug.errors import ConfigError
from batchaug.methods import MethodContext, build_method
from batchaug.methods.mixing import (
    CutMix,
    MixUp,
    _cyclic_partners,
    build_batch_transform,
    mixing_generator,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _views(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 10, generator=g), torch.randint(0, 5, (n,), generator=g)


def _draws(transform, n: int, m: int, seed: int):
    g = mixing_generator(torch.Generator().manual_seed(seed))
    lam, partner = transform.draw(n, m, g, torch.device("cpu"))
    return lam, partner, g


@pytest.mark.parametrize("m", [1, 3])
def test_mixup_is_the_per_view_convex_combination(m: int) -> None:
    x, y = _views()
    mix = MixUp(alpha=0.4)
    out, soft = mix(x, y, 5, m, torch.Generator().manual_seed(7))
    lam, partner, _ = _draws(mix, x.shape[0], m, 7)  # the same draws, replayed
    for i in range(x.shape[0]):
        j = int(partner[i])
        torch.testing.assert_close(out[i], lam[i] * x[i] + (1 - lam[i]) * x[j])
        expected = torch.zeros(5)
        expected[y[i]] += lam[i]
        expected[y[j]] += 1 - lam[i]
        torch.testing.assert_close(soft[i], expected)
        assert j % m == i % m and (j // m != i // m), "the same view slot of another sample"


def test_cutmix_pastes_one_clipped_box_and_weights_by_its_area() -> None:
    x, y = _views(n=40)
    cut = CutMix(alpha=1.0)
    out, soft = cut(x, y, 5, 2, torch.Generator().manual_seed(3))
    _, partner, _ = _draws(cut, x.shape[0], 2, 3)
    h, w = x.shape[-2:]
    for i in range(x.shape[0]):
        from_partner = (out[i] == x[partner[i]]).all(0) & (out[i] != x[i]).any(0)
        rows, cols = from_partner.any(1).nonzero(), from_partner.any(0).nonzero()
        area = int(from_partner.sum())
        if area:  # one axis-aligned box, filled
            y1, y2, x1, x2 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
            assert area == (y2 - y1) * (x2 - x1)
            torch.testing.assert_close(out[i, :, y1:y2, x1:x2], x[partner[i], :, y1:y2, x1:x2])
        kept = 1 - area / (h * w)
        assert float(soft[i, y[i]]) + (float(soft[i, y[partner[i]]]) if y[i] != y[partner[i]] else 0) == \
            pytest.approx(1.0)
        if y[i] != y[partner[i]]:
            assert float(soft[i, y[i]]) == pytest.approx(kept, abs=1e-6)


def test_lambda_follows_beta_and_prob_zero_is_identity() -> None:
    alpha = 0.5
    lam, _, _ = _draws(MixUp(alpha), 20000, 1, 0)
    assert float(lam.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(lam.var()) == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.05)
    x, y = _views()
    out, soft = MixUp(alpha, prob=0.0)(x, y, 5, 1, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and torch.equal(soft, torch.nn.functional.one_hot(y, 5).float())


def test_draws_are_reproducible_and_differ_between_steps() -> None:
    x, y = _views()
    a = CutMix()(x, y, 5, 1, torch.Generator().manual_seed(1))
    b = CutMix()(x, y, 5, 1, torch.Generator().manual_seed(1))
    c = CutMix()(x, y, 5, 1, torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_partners_form_a_derangement() -> None:
    g = torch.Generator().manual_seed(0)
    for samples in (2, 3, 17):
        p = _cyclic_partners(samples, 4, g)
        assert (p != torch.arange(samples)[:, None]).all()
        assert all(sorted(p[:, j].tolist()) == list(range(samples)) for j in range(4))


def test_bad_transform_options_name_them() -> None:
    with pytest.raises(ConfigError, match="method.mix: 'mixdown' is not allowed"):
        build_batch_transform("mixdown")
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        MixUp(alpha=0)
    with pytest.raises(ConfigError, match="method.mix: 'blend' is not allowed; choose one of 'none', 'mixup'"):
        load_config("configs/quick/cifar10_resnet20.yaml", ["method.mix=blend"])
    with pytest.raises(ConfigError, match=r"method.mix_prob: must be in \[0, 1\]"):
        load_config("configs/quick/cifar10_resnet20.yaml", ["method.mix_prob=2"])


@pytest.mark.parametrize("name, extra", [("baseline", []), ("ba", ["method.m=3"]), ("ra", ["method.m=2"])])
@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_every_views_method_mixes_without_a_class_of_its_own(name: str, extra: list[str], mix: str) -> None:
    cfg = load_config("configs/quick/cifar10_resnet20.yaml", [f"method.name={name}", f"method.mix={mix}", *extra])
    ctx = MethodContext(num_classes=10, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method(cfg.method, ctx)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = method.make_batch(images, torch.arange(6), torch.Generator().manual_seed(0))
    views = method.views_per_sample
    assert batch["inputs"].shape[0] == 6 * views and batch["soft_targets"].shape == (6 * views, 10)
    torch.testing.assert_close(batch["soft_targets"].sum(1), torch.ones(6 * views))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    out = method.loss(model, batch)
    out.loss.backward()
    assert math.isfinite(float(out.loss.detach())) and out.targets is not None and out.targets.shape == (6 * views,)
