"""The DARTS network: genotype and parameter count against the published ones, structure, forward /
backward in train and eval mode, drop-path (the function, the cells, the schedule callback).

The full 20-cell network is built for its parameter count (on the meta device) and runs one tiny
forward/backward; everything that trains uses a reduced network (fewer cells and channels)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from batchaug.errors import ConfigError
from batchaug.models import GENOTYPES, DartsNetwork, Genotype, build_model, count_params, get_spec
from batchaug.nn.drop_path import drop_path, drop_path_modules, set_drop_path_prob
from batchaug.nn.outputs import ModelOutput, split_output
from batchaug.train.callbacks.drop_path import DropPathSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

# DARTS_V2 as printed in the reference implementation, github.com/quark0/darts cnn/genotypes.py
# (Genotype(normal=[...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])).
REFERENCE_DARTS_V2 = {
    "normal": [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
               ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
               ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    "reduce_concat": [2, 3, 4, 5],
}
# DARTS paper (Liu et al., ICLR 2019) and its repository's README: "3.3M model params" for the CIFAR-10
# model, counted without the auxiliary head (the reference's utils.count_parameters_in_MB skips it)
PUBLISHED_PARAMS = 3_300_000


def _tiny(auxiliary: bool = False, layers: int = 3, channels: int = 4, num_classes: int = 10) -> DartsNetwork:
    torch.manual_seed(0)
    return DartsNetwork(GENOTYPES["darts_v2"], channels=channels, layers=layers, num_classes=num_classes,
                        auxiliary=auxiliary)


# ------------------------------------------------------------------------------------------ published facts


def test_darts_v2_genotype_is_the_published_one() -> None:
    g = GENOTYPES["darts_v2"]
    assert [list(e) for e in g.normal] == [list(e) for e in REFERENCE_DARTS_V2["normal"]]
    assert [list(e) for e in g.reduce] == [list(e) for e in REFERENCE_DARTS_V2["reduce"]]
    assert list(g.normal_concat) == REFERENCE_DARTS_V2["normal_concat"]
    assert list(g.reduce_concat) == REFERENCE_DARTS_V2["reduce_concat"]


def test_darts_v2_parameter_count_is_the_published_one() -> None:
    assert get_spec("darts_v2").published_params == PUBLISHED_PARAMS
    with torch.device("meta"):
        plain = count_params(build_model("darts_v2", num_classes=10))
        with_head = build_model("darts_v2", num_classes=10, auxiliary=True)
    assert abs(plain - PUBLISHED_PARAMS) <= 0.03 * PUBLISHED_PARAMS, plain
    # the auxiliary head on the 4·4·36 = 576-channel output of the second reduction cell, by hand:
    # conv1x1 576->128 + BN(128) + conv2x2 128->768 + BN(768) + linear 768->10
    head = 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10
    assert count_params(with_head) - plain == head == count_params(with_head.auxiliary_head)


def test_network_structure_follows_the_reference() -> None:
    with torch.device("meta"):
        net = build_model("darts_v2", num_classes=10, auxiliary=True)
    assert len(net.cells) == 20
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [6, 13]  # layers // 3 and 2·layers // 3
    assert net.aux_after == 13
    assert net.stem[0].out_channels == 3 * 36
    # channels per node: 36, doubled at each reduction; 4 concatenated nodes per cell output
    assert [c.out_channels for c in net.cells[5:8]] == [4 * 36, 4 * 72, 4 * 72]
    assert net.classifier.in_features == 4 * 144
    # the cell after a reduction cell reads the one before it through a factorized reduce
    assert type(net.cells[7].preprocess0).__name__ == "FactorizedReduce"
    assert type(net.cells[8].preprocess0).__name__ == "Sequential"
    # the edges that read a reduction cell's inputs have stride 2; those reading its nodes (skips here) stride 1
    normal, reduce = net.cells[0], net.cells[6]
    assert [type(op).__name__ for op in normal.ops].count("Identity") == 2
    assert [type(op).__name__ for op in reduce.ops] == ["MaxPool2d", "MaxPool2d", "Identity", "MaxPool2d",
                                                         "MaxPool2d", "Identity", "Identity", "MaxPool2d"]
    assert [op.stride for op in reduce.ops if isinstance(op, nn.MaxPool2d)] == [2] * 5


def test_full_network_forward_backward_in_train_and_eval_mode() -> None:
    torch.manual_seed(0)
    net = build_model("darts_v2", num_classes=10, auxiliary=True)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    out = net.train()(x)
    assert isinstance(out, ModelOutput) and set(out.aux) == {"auxiliary"}
    assert out.logits.shape == out.aux["auxiliary"].shape == (2, 10)
    loss = nn.functional.cross_entropy(out.logits, y) + 0.4 * nn.functional.cross_entropy(out.aux["auxiliary"], y)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        logits = net.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10) and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------ genotypes as data


def test_another_genotype_is_a_table_entry() -> None:
    # every GENOTYPES entry is a registered model, built by the same code; a new genotype is one more entry
    assert {"darts_v1", "darts_v2"} <= set(GENOTYPES)
    assert all(get_spec(name).sba_layers == ("features_out",) for name in GENOTYPES)
    custom = Genotype(normal=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_5x5", 2), ("none", 0)],
                      normal_concat=[2, 3], reduce=[("skip_connect", 0), ("conv_7x1_1x7", 1)], reduce_concat=[2])
    net = DartsNetwork(custom, channels=4, layers=3, num_classes=3).eval()
    assert net.cells[0].out_channels == 2 * 4 and net.cells[1].out_channels == 8  # 1 node, doubled channels
    with torch.no_grad():
        assert net(torch.randn(2, 3, 16, 16)).shape == (2, 3)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"normal": [("conv_9x9", 0), ("skip_connect", 1)]}, "unknown operation 'conv_9x9'"),
    ({"normal": [("skip_connect", 0), ("skip_connect", 2)]}, "reads state 2, which does not exist"),
    ({"normal": [("skip_connect", 0)]}, "two edges per node"),
    ({"normal_concat": [2, 7]}, "normal_concat"),
])
def test_bad_genotypes_are_config_errors(kwargs: dict, match: str) -> None:
    base = dict(normal=[("skip_connect", 0), ("skip_connect", 1)], normal_concat=[2],
                reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1)], reduce_concat=[2])
    with pytest.raises(ConfigError, match=match):
        Genotype(**{**base, **kwargs})


def test_bad_builder_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="layers must be an int >= 3"):
        build_model("darts_v2", layers=2)
    with pytest.raises(ConfigError, match="channels"):
        build_model("darts_v2", channels=0)
    with pytest.raises(ConfigError, match="'drop_path'.*allowed.*auxiliary"):
        build_model("darts_v2", drop_path=0.2)
    with pytest.raises(ValueError, match="8x8"):  # the CIFAR head needs 32x32 inputs
        _tiny(auxiliary=True).train()(torch.randn(2, 3, 16, 16))


# ------------------------------------------------------------------------------------------ outputs


def test_split_output_reads_every_output_form() -> None:
    from collections import namedtuple

    a, b, c = torch.zeros(2, 3), torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert split_output(a) == (a, {})
    logits, aux = split_output(ModelOutput(a, {"auxiliary": b}))
    assert logits is a and aux == {"auxiliary": b}
    inception = namedtuple("InceptionOutputs", ["logits", "aux_logits"])  # torchvision's training output
    assert split_output(inception(a, b))[1] == {"aux_logits": b}
    assert split_output(inception(a, None))[1] == {}
    assert split_output((a, b, c))[1] == {"aux1": b, "aux2": c}
    with pytest.raises(TypeError, match="ModelOutput"):
        split_output({"logits": a})


# ------------------------------------------------------------------------------------------ drop-path


def test_drop_path_zeroes_whole_samples_and_scales_the_rest() -> None:
    x = torch.randn(400, 3, 4, 4) + 5.0  # no zeros of its own
    out = drop_path(x, 0.25, generator=torch.Generator().manual_seed(0))
    for i in range(x.shape[0]):  # per-sample reference: each sample is either dropped or scaled by 1/keep
        if torch.all(out[i] == 0):
            continue
        torch.testing.assert_close(out[i], x[i] / 0.75)
    dropped = sum(bool(torch.all(out[i] == 0)) for i in range(x.shape[0]))
    assert 60 <= dropped <= 140  # Binomial(400, 0.25): mean 100, sd 8.7
    torch.testing.assert_close(drop_path(x, torch.tensor(0.0)), x)  # p = 0 (as a tensor): unchanged


def _edge_outputs(cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor, prob: float | None) -> tuple:
    """The cell's output and every edge operation's output (before drop-path), in one forward pass."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [op.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.detach()))
             for k, op in enumerate(cell.ops)]
    with torch.no_grad():
        out = cell(s0, s1, None if prob is None else torch.tensor(prob))
    for h in hooks:
        h.remove()
    return out, seen


def test_cell_drops_non_identity_edges_per_sample_in_training_only() -> None:
    net = _tiny(channels=4)
    cell = net.cells[0]  # a normal cell: sep convs, a dilated conv and two identity (skip) edges
    s = torch.randn(8, 12, 16, 16)
    torch.manual_seed(3)
    out, h = _edge_outputs(cell.train(), s, s, 0.5)
    nodes = out.view(8, 4, 4, 16, 16).unbind(1)  # concat of nodes 2..5, 4 channels each
    kept = dropped = 0
    for j, node in enumerate(nodes):
        a, b = 2 * j, 2 * j + 1
        for i in range(8):  # per sample: node = ca·h_a + cb·h_b, c ∈ {0, 1/keep} (identity edges: always 1)
            choices = [(ca, cb) for ca in ((1.0,) if not cell.droppable[a] else (0.0, 2.0))
                       for cb in ((1.0,) if not cell.droppable[b] else (0.0, 2.0))
                       if torch.allclose(node[i], ca * h[a][i] + cb * h[b][i], rtol=1e-5, atol=1e-5)]
            assert len(choices) == 1, (j, i, choices)
            kept += sum(c == 2.0 for c in choices[0])
            dropped += sum(c == 0.0 for c in choices[0])
    assert cell.droppable.count(False) == 2 and kept > 0 and dropped > 0
    out, h = _edge_outputs(cell.eval(), s, s, None)
    for j, node in enumerate(out.view(8, 4, 4, 16, 16).unbind(1)):
        torch.testing.assert_close(node, h[2 * j] + h[2 * j + 1])


def test_network_drop_path_acts_in_training_and_never_in_eval() -> None:
    net = _tiny()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.0  # training passes leave the running statistics (the eval reference) unchanged
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference_eval = net.eval()(x)
        reference_train = net.train()(x)
        net.drop_path_prob = 0.5
        assert net.drop_path_prob == 0.5 and float(net._drop_prob) == 0.5
        torch.testing.assert_close(net.eval()(x), reference_eval, rtol=0, atol=0)
        assert not torch.allclose(net.train()(x), reference_train)
        net.drop_path_prob = 0.0
        torch.testing.assert_close(net.train()(x), reference_train)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        net.drop_path_prob = 1.0
    assert "_drop_prob" not in net.state_dict()  # checkpoints do not depend on the schedule


def test_set_drop_path_prob_reaches_through_wrappers() -> None:
    net = _tiny()
    assert drop_path_modules(nn.Linear(2, 2)) == []
    assert set_drop_path_prob(nn.DataParallel(net), 0.1) == 1 and net.drop_path_prob == pytest.approx(0.1)
    assert set_drop_path_prob(torch.compile(net, backend="eager"), 0.2) == 1 and net.drop_path_prob == 0.2


def test_schedule_rises_linearly_from_zero() -> None:
    sched = DropPathSchedule(0.2)
    assert [sched.prob_at(s, 600) for s in (0, 300, 600)] == pytest.approx([0.0, 0.1, 0.2])
    with pytest.raises(ConfigError, match="model.drop_path: must be in \\[0, 1\\)"):
        DropPathSchedule(1.0)
    net = _tiny()
    trainer = SimpleNamespace(model=nn.DataParallel(net), state=SimpleNamespace(step=5),
                              s=SimpleNamespace(total_steps=10))
    sched.on_fit_start(trainer)  # a resumed run starts where its step is
    assert net.drop_path_prob == pytest.approx(0.1)
    sched.on_step_end(trainer, 9, {})  # after the last step
    assert net.drop_path_prob == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="model.drop_path: the model has no drop-path"):
        sched.on_fit_start(SimpleNamespace(model=nn.Linear(2, 2), state=trainer.state, s=trainer.s))


def test_trainer_steps_see_the_scheduled_probability() -> None:
    from batchaug.config import OptimConfig
    from batchaug.methods import MethodContext, build_method
    from batchaug.train.optim import LRSchedule, build_optimizer
    from batchaug.train.trainer import Trainer, TrainerSettings

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=g)
    targets = torch.randint(0, 10, (32,), generator=g)
    ctx = MethodContext(num_classes=10, image_size=(16, 16), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method({"name": "baseline", "policy": "flip"}, ctx)
    net = _tiny()
    seen: list[float] = []
    net.register_forward_pre_hook(lambda m, args: seen.append(m.drop_path_prob) if m.training else None)
    cfg = OptimConfig(lr=0.01)
    settings = TrainerSettings(batch_size=8, total_steps=8, steps_per_epoch=4, eval_every=8, progress=False)
    trainer = Trainer(net, method, build_optimizer(net, cfg, 0.01), LRSchedule(cfg, 0.01, 2, 8), settings, images,
                      targets, images[:8], targets[:8], torch.device("cpu"), callbacks=[DropPathSchedule(0.2)])
    trainer.fit()
    assert seen == pytest.approx([0.2 * s / 8 for s in range(8)])
    assert net.drop_path_prob == pytest.approx(0.2)
