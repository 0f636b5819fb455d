"""Auxiliary heads enter every method's objective: baseline, BA, SBA (layer after and before the head),
split BN (both halves) and PGD split BN, each checked against a hand computation from the logits the
model produced (captured by a forward hook), on a reduced DARTS network with its auxiliary head."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from batchaug.methods import MethodContext, build_method
from batchaug.methods.sba import soft_label_kl
from batchaug.models import GENOTYPES, DartsNetwork
from batchaug.nn.outputs import ModelOutput, split_output

pytestmark = pytest.mark.usefixtures("one_thread")

W = 0.4  # the DARTS recipe's auxiliary weight
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _context(weight: float = W, **kw) -> MethodContext:
    return MethodContext(num_classes=10, image_size=(32, 32), mean=MEAN, std=STD, aux_weight=weight,
                         model_name="darts_v2", **kw)


def _net(auxiliary: bool = True) -> DartsNetwork:
    torch.manual_seed(0)
    return DartsNetwork(GENOTYPES["darts_v2"], channels=4, layers=3, num_classes=10, auxiliary=auxiliary).train()


def _batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def _captured_loss(method, net, images, targets, passes: int = 1):
    """The method's loss and what the model returned for it in its last forward pass (logits and
    auxiliary logits, detached); ``passes``: the forward passes the method makes (PGD attacks first)."""
    seen = []
    handle = net.register_forward_hook(lambda m, i, out: seen.append(split_output(out)))
    batch = method.make_batch(images, targets, torch.Generator().manual_seed(2))
    out = method.loss(net, batch)
    handle.remove()
    assert len(seen) == passes
    logits, aux = seen[-1]
    return out, logits.detach(), {k: v.detach() for k, v in aux.items()}


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y)


@pytest.mark.parametrize("section", [{"name": "baseline"}, {"name": "ba", "m": 3}], ids=["baseline", "ba"])
def test_views_methods_add_the_weighted_aux_cross_entropy(section: dict) -> None:
    images, y = _batch()
    method = build_method({**section, "policy": "standard"}, _context())
    out, logits, aux = _captured_loss(method, _net(), images, y)
    m = section.get("m", 1)
    y_views = y.repeat_interleave(m)
    expected_aux = _ce(aux["auxiliary"], y_views)
    torch.testing.assert_close(out.loss, _ce(logits, y_views) + W * expected_aux)
    torch.testing.assert_close(out.metrics["aux_head_loss"], expected_aux)
    assert out.logits.shape == (4 * m, 10)  # the trainer's accuracy uses the main logits


def test_ba_average_outputs_averages_the_aux_logits_too() -> None:
    images, y = _batch()
    method = build_method({"name": "ba", "m": 2, "average_outputs": True}, _context())
    out, logits, aux = _captured_loss(method, _net(), images, y)
    expected = _ce(logits.view(4, 2, 10).mean(1), y) + W * _ce(aux["auxiliary"].view(4, 2, 10).mean(1), y)
    torch.testing.assert_close(out.loss, expected)


def test_ba_gradient_probe_includes_the_aux_heads() -> None:
    images, y = _batch()
    method = build_method({"name": "ba", "m": 2, "adapt_grad_norm": True, "adapt_every": 1}, _context())
    method.begin_step(0, 0)
    out = method.loss(_net(), method.make_batch(images, y, torch.Generator().manual_seed(2)))
    assert 0 < out.metrics["grad_scale"] < 1.5 and "aux_head_loss" in out.metrics


def test_mixed_views_train_the_aux_head_on_soft_targets() -> None:
    images, y = _batch()
    method = build_method({"name": "baseline", "mix": "mixup"}, _context())
    batch = method.make_batch(images, y, torch.Generator().manual_seed(2))
    seen = []
    net = _net()
    net.register_forward_hook(lambda m, i, o: seen.append(o))
    out = method.loss(net, batch)
    soft = batch["soft_targets"]
    torch.testing.assert_close(out.loss, F.cross_entropy(seen[0].logits, soft) + W * F.cross_entropy(
        seen[0].aux["auxiliary"], soft))


@pytest.mark.parametrize("layer", ["features_out", "stem"])
def test_sba_trains_the_aux_head_on_the_raw_rows(layer: str) -> None:
    """At ``features_out`` (after the head) the head sees the B raw rows; at ``stem`` (before it) it
    sees B·(1+M) rows, raw first: either way its loss is the cross-entropy of the raw rows."""
    images, y = _batch()
    section = {"name": "sba", "m": 2, "p": 1.0, "eta": 0.5, "layer_choice": "fixed", "seed": 0}
    if layer != "features_out":  # features_out is darts_v2's registry default (the context names the model)
        section["layers"] = [layer]
    method = build_method(section, _context())
    net = _net()
    method.prepare_model(net)
    method.begin_step(0, 0)
    assert method.augmented and method.layer == layer
    out, logits, aux = _captured_loss(method, net, images, y)
    head = aux["auxiliary"]
    assert logits.shape[0] == 4 * 3 and head.shape[0] == (4 if layer == "features_out" else 12)
    raw, virtual = logits[:4], logits[4:].view(2, 4, 10).transpose(0, 1)
    expected = _ce(raw, y) + 0.5 * soft_label_kl(raw, virtual) + W * _ce(head[:4], y)
    torch.testing.assert_close(out.loss, expected)
    assert out.logits.shape == (4, 10)
    # a plain (not augmented) step: CE + the weighted head
    method.augmented = False
    out, logits, aux = _captured_loss(method, net, images, y)
    torch.testing.assert_close(out.loss, _ce(logits, y) + W * _ce(aux["auxiliary"], y))


@pytest.mark.parametrize("strong", ["randaugment", "pgd"])
def test_splitbn_averages_the_aux_head_over_both_halves(strong: str) -> None:
    images, y = _batch()
    section = {"name": "splitbn", "weak": "standard", "strong": strong, "pgd_steps": 1}
    method = build_method(section, _context())
    net = method.prepare_model(_net())
    out, logits, aux = _captured_loss(method, net, images, y, passes=2 if strong == "pgd" else 1)
    assert logits.shape == aux["auxiliary"].shape == (8, 10)  # cat([weak, strong])
    head = aux["auxiliary"]
    expected = 0.5 * (_ce(logits[:4], y) + _ce(logits[4:], y)) + W * 0.5 * (_ce(head[:4], y) + _ce(head[4:], y))
    torch.testing.assert_close(out.loss, expected)
    assert out.metrics["loss_aux"] == pytest.approx(float(_ce(logits[4:], y)))  # the auxiliary *BN* branch


def test_the_aux_term_scales_with_the_weight_and_reaches_the_head() -> None:
    images, y = _batch()
    losses, grads = {}, {}
    for weight in (0.0, W, 1.0):
        method = build_method({"name": "baseline"}, _context(weight))
        net = _net()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out, _, aux = _captured_loss(method, net, images, y)
        out.loss.backward()
        losses[weight] = (out.loss.item(), _ce(aux["auxiliary"], y).item())
        grads[weight] = net.auxiliary_head.classifier.weight.grad.abs().sum().item()
    (base, head), (mid, _), (full, _) = losses[0.0], losses[W], losses[1.0]
    assert mid - base == pytest.approx(W * head, rel=1e-5) and full - base == pytest.approx(head, rel=1e-5)
    assert grads[0.0] == 0.0 and grads[W] > 0 and grads[1.0] == pytest.approx(grads[W] / W, rel=1e-4)


def test_mismatched_weight_and_heads_warn_once() -> None:
    images, y = _batch()
    method = build_method({"name": "baseline"}, _context(0.0))
    with pytest.warns(UserWarning, match="model.aux_weight is 0"):
        _captured_loss(method, _net(), images, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per method
        _captured_loss(method, _net(), images, y)
    method = build_method({"name": "baseline"}, _context(W))
    with pytest.warns(UserWarning, match="model.kwargs.auxiliary=true"):
        out = method.loss(_net(auxiliary=False), method.make_batch(images, y))
    assert "aux_head_loss" not in out.metrics


def test_eval_paths_see_plain_logits() -> None:
    images, _ = _batch()
    net = _net().eval()
    for section in ({"name": "baseline"}, {"name": "splitbn", "eval_branch": "blend"}):
        method = build_method(section, _context())
        model = method.prepare_model(net)
        with torch.no_grad():
            assert method.predict(model, images).shape == (4, 10)
    assert not isinstance(net(torch.zeros(1, 3, 32, 32)), ModelOutput)
