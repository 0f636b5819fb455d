"""DARTS evaluation networks for CIFAR (Liu, Simonyan & Yang, "DARTS: Differentiable Architecture
Search", ICLR 2019), built from a genotype given as data.

A genotype names, for the normal and the reduction cell, two incoming edges per intermediate node as
``(operation, input state)`` pairs (states 0 and 1 are the outputs of the two previous cells, state
``2 + j`` is node ``j``) and the states concatenated into the cell's output. :data:`GENOTYPES` holds
the published ones; every entry is registered in the model zoo under its key (``darts_v2``), so
another genotype is another table entry, not new code.

The network (facts from the reference implementation, github.com/quark0/darts, ``cnn/model.py`` and
``cnn/operations.py``; the code here is written from scratch):

* stem: 3x3 conv to ``3·C`` channels + BatchNorm (no ReLU: every cell input starts with one);
* ``layers`` cells (20 for CIFAR, ``C`` = 36 initial channels); cells ``layers // 3`` and
  ``2·layers // 3`` are reduction cells, which double the channels and halve the map (stride 2 on the
  edges that read the two cell inputs);
* each cell preprocesses its two inputs to ``C`` channels: ReLU-conv1x1-BN, or a factorized reduce
  (ReLU, two stride-2 1x1 convs on the map and on the map shifted by one pixel, concatenated, BN) for
  the input that comes from before a reduction cell; then ``node_j = op(h_a) + op(h_b)``, and the
  output concatenates the ``*_concat`` states (4 nodes x ``C`` channels for DARTS);
* operations: separable convs (ReLU-dw-pw-BN twice), dilated convs (ReLU-dw(dilation 2)-pw-BN),
  3x3 max/avg pooling (average excluding the padding), skip (identity, or a factorized reduce at
  stride 2), ``none`` (zero), 1x7-7x1 conv;
* drop-path on every edge whose operation is not the identity, in training (``drop_path_prob``);
* an auxiliary head on the output of the second reduction cell (cell ``2·layers // 3``), in training
  only: ReLU, 5x5 average pool stride 3 (8x8 -> 2x2), conv1x1 to 128 + BN + ReLU, 2x2 conv to 768 + BN
  + ReLU, linear;
* global average pooling, ``features_out`` (the pooled ``(B, 4·4C)`` features: SBA's default layer),
  linear classifier.

The parameter count the DARTS paper publishes (3.3M for DARTS-V2 on CIFAR-10) excludes the auxiliary
head, as the reference's ``utils.count_parameters_in_MB`` does; build with ``auxiliary=False`` (the
default, as the reference's ``--auxiliary`` flag) to count it. Weights keep PyTorch's default
initialization, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.models.common import check_positive
from batchaug.nn.drop_path import drop_path
from batchaug.nn.outputs import ModelOutput

__all__ = ["GENOTYPES", "OPS", "AuxiliaryHeadCIFAR", "Cell", "DartsNetwork", "Genotype", "darts_builder"]


# ------------------------------------------------------------------------------------------ operations

def _relu_conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm2d(c_out))


def _dw_pw_bn(c: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> list[nn.Module]:
    """ReLU, depthwise ``kernel`` conv, pointwise conv, BN: the unit of the separable and dilated convs."""
    return [nn.ReLU(), nn.Conv2d(c, c, kernel, stride, padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]


def sep_conv(c: int, kernel: int, stride: int) -> nn.Sequential:
    """Separable conv: the ReLU-depthwise-pointwise-BN unit twice, the stride in the first."""
    pad = kernel // 2
    return nn.Sequential(*_dw_pw_bn(c, kernel, stride, pad), *_dw_pw_bn(c, kernel, 1, pad))


def dil_conv(c: int, kernel: int, stride: int) -> nn.Sequential:
    """Dilated separable conv: one ReLU-depthwise(dilation 2)-pointwise-BN unit."""
    return nn.Sequential(*_dw_pw_bn(c, kernel, stride, kernel - 1, dilation=2))


class FactorizedReduce(nn.Module):
    """Halve the map with two stride-2 1x1 convs, one on the map and one on it shifted by a pixel, so
    that every input position is read; their outputs are concatenated (``c_out / 2`` channels each)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out % 2:
            raise ConfigError(f"darts: a factorized reduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """The ``none`` operation: zeros of the (strided) input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


def _conv_7x1_1x7(c: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c, c, (1, 7), stride=(1, stride), padding=(0, 3), bias=False),
                         nn.Conv2d(c, c, (7, 1), stride=(stride, 1), padding=(3, 0), bias=False), nn.BatchNorm2d(c))


#: operation name -> builder(channels, stride); the primitives of the DARTS search space and the two
#: extra operations of the NASNet/AmoebaNet genotypes (sep_conv_7x7, conv_7x1_1x7)
OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda c, stride: Zero(stride),
    "avg_pool_3x3": lambda c, stride: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
    "max_pool_3x3": lambda c, stride: nn.MaxPool2d(3, stride=stride, padding=1),
    "skip_connect": lambda c, stride: nn.Identity() if stride == 1 else FactorizedReduce(c, c),
    "sep_conv_3x3": lambda c, stride: sep_conv(c, 3, stride),
    "sep_conv_5x5": lambda c, stride: sep_conv(c, 5, stride),
    "sep_conv_7x7": lambda c, stride: sep_conv(c, 7, stride),
    "dil_conv_3x3": lambda c, stride: dil_conv(c, 3, stride),
    "dil_conv_5x5": lambda c, stride: dil_conv(c, 5, stride),
    "conv_7x1_1x7": _conv_7x1_1x7,
}


# ------------------------------------------------------------------------------------------ genotypes

Edge = tuple[str, int]


@dataclass(frozen=True)
class Genotype:
    """The two cells of a DARTS-space network: edges ``(operation, input state)``, two per node, and the
    states concatenated into each cell's output (states 0, 1: the cell inputs; ``2 + j``: node ``j``)."""

    normal: tuple[Edge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[Edge, ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for kind in ("normal", "reduce"):
            edges = tuple((str(op), int(i)) for op, i in getattr(self, kind))
            concat = tuple(int(i) for i in getattr(self, f"{kind}_concat"))
            object.__setattr__(self, kind, edges)
            object.__setattr__(self, f"{kind}_concat", concat)
            _check_cell(kind, edges, concat)


def _check_cell(kind: str, edges: Sequence[Edge], concat: Sequence[int]) -> None:
    if not edges or len(edges) % 2:
        raise ConfigError(f"genotype {kind}: needs two edges per node (an even, non-zero number), got {len(edges)}")
    for k, (op, index) in enumerate(edges):
        if op not in OPS:
            raise ConfigError(f"genotype {kind}: unknown operation {op!r}; known: {', '.join(OPS)}")
        if not 0 <= index < 2 + k // 2:  # node j reads the cell inputs or the nodes before it
            raise ConfigError(f"genotype {kind}: edge {k} of node {k // 2} reads state {index}, which does not "
                              f"exist yet (states 0..{1 + k // 2})")
    states = 2 + len(edges) // 2
    if not concat or any(not 0 <= i < states for i in concat):
        raise ConfigError(f"genotype {kind}_concat: {list(concat)} must name states in 0..{states - 1}")


#: Published genotypes, from the reference implementation's ``cnn/genotypes.py`` (github.com/quark0/darts):
#: ``DARTS_V1`` (first-order search) and ``DARTS_V2`` (second-order search, the paper's CIFAR-10 model
#: and the reference's default ``DARTS = DARTS_V2``).
GENOTYPES: dict[str, Genotype] = {
    "darts_v1": Genotype(
        normal=(("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
                ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)),
        reduce_concat=(2, 3, 4, 5),
    ),
    "darts_v2": Genotype(
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
        normal_concat=(2, 3, 4, 5),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)),
        reduce_concat=(2, 3, 4, 5),
    ),
}


# ------------------------------------------------------------------------------------------ network

class Cell(nn.Module):
    """One normal or reduction cell of ``genotype`` with ``c`` channels per node.

    ``forward(s0, s1, drop_prob)``: ``s0``/``s1`` are the outputs of the cells two and one back;
    ``drop_prob`` (``None``: no drop-path) is applied to every edge whose operation is not the identity.
    """

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        # the cell two back has twice the map size when the previous cell reduced
        self.preprocess0 = FactorizedReduce(c_prev_prev, c) if reduction_prev else _relu_conv_bn(c_prev_prev, c, 1)
        self.preprocess1 = _relu_conv_bn(c_prev, c, 1)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        # in a reduction cell the edges reading the cell inputs reduce the map; nodes are already reduced
        self.ops = nn.ModuleList(OPS[op](c, 2 if reduction and index < 2 else 1) for op, index in edges)
        self.inputs = tuple(index for _, index in edges)
        self.droppable = tuple(not isinstance(op, nn.Identity) for op in self.ops)
        self.out_channels = len(self.concat) * c

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: Tensor | float | None = None) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for first in range(0, len(self.ops), 2):
            node: Tensor | None = None
            for k in (first, first + 1):
                h = self.ops[k](states[self.inputs[k]])
                if drop_prob is not None and self.droppable[k]:
                    h = drop_path(h, drop_prob)
                node = h if node is None else node + h
            assert node is not None
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """The auxiliary classifier on the 8x8 output of the second reduction cell (32x32 inputs)."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(),  # out of place: its input is also the next cells' input
            nn.AvgPool2d(5, stride=3, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(c_in, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (8, 8):
            raise ValueError(f"darts auxiliary head: expects 8x8 maps after the second reduction cell (32x32 "
                             f"inputs), got {tuple(x.shape[-2:])}; build the model with auxiliary=False")
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """A DARTS-space CIFAR network: stem, ``layers`` cells of ``genotype``, optional auxiliary head.

    In training mode with ``auxiliary=True`` the forward returns
    ``ModelOutput(logits, {"auxiliary": aux_logits})`` (:mod:`batchaug.nn.outputs`); otherwise, and
    always in eval mode, the ``(B, num_classes)`` logits.

    ``drop_path_prob`` (default 0) is the drop-path probability of the cells' edges in training; set it
    between steps (the ``model.drop_path`` schedule does). It lives in a 0-d buffer so that changing
    it does not recompile a ``torch.compile``-d model.
    """

    def __init__(self, genotype: Genotype, channels: int = 36, layers: int = 20, num_classes: int = 10,
                 auxiliary: bool = False, in_channels: int = 3, stem_multiplier: int = 3) -> None:
        super().__init__()
        if not isinstance(genotype, Genotype):
            raise ConfigError(f"darts: genotype must be a Genotype, got {type(genotype).__name__}")
        for what, value in (("channels", channels), ("num_classes", num_classes), ("in_channels", in_channels),
                            ("stem_multiplier", stem_multiplier)):
            check_positive("darts", what, value)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 3:
            raise ConfigError(f"darts: layers must be an int >= 3 (two of them are reduction cells), got {layers!r}")
        if not isinstance(auxiliary, bool):
            raise ConfigError(f"darts: auxiliary must be true or false, got {auxiliary!r}")
        self.genotype = genotype
        self.reduction_cells = (layers // 3, 2 * layers // 3)
        self.aux_after = 2 * layers // 3  # the auxiliary head reads the second reduction cell's output
        c_stem = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        c_prev_prev, c_prev, c = c_stem, c_stem, channels
        cells, reduction_prev, c_aux = [], False, c_stem
        for i in range(layers):
            reduction = i in self.reduction_cells
            if reduction:
                c *= 2
            cell = Cell(genotype, c_prev_prev, c_prev, c, reduction, reduction_prev)
            cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.out_channels
            if i == self.aux_after:
                c_aux = c_prev
        self.cells = nn.ModuleList(cells)
        self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.features_out = nn.Flatten(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.register_buffer("_drop_prob", torch.zeros(()), persistent=False)
        self._drop_value = 0.0
        self._drop_on = False  # what forward reads: a bool, so a compiled graph is guarded on it, not on the float

    @property
    def drop_path_prob(self) -> float:
        """Drop-path probability of the cells' non-identity edges in training, in [0, 1)."""
        return self._drop_value

    @drop_path_prob.setter
    def drop_path_prob(self, prob: float) -> None:
        prob = float(prob)
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"drop_path_prob must be in [0, 1), got {prob!r}")
        self._drop_prob.fill_(prob)
        self._drop_value = prob
        self._drop_on = prob > 0

    def forward(self, x: Tensor) -> Tensor | ModelOutput:
        # the buffer, not the float, reaches the cells: a compiled graph reads its current value
        drop = self._drop_prob if self.training and self._drop_on else None
        s0 = s1 = self.stem(x)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if i == self.aux_after and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.features_out(self.global_pooling(s1)))
        if aux is None:
            return logits
        return ModelOutput(logits, {"auxiliary": aux})


def darts_builder(name: str) -> Callable[..., DartsNetwork]:
    """The model-zoo builder of genotype ``GENOTYPES[name]``: ``builder(num_classes=10, in_channels=3,
    channels=36, layers=20, auxiliary=False)`` (the CIFAR evaluation network's defaults)."""
    genotype = GENOTYPES[name]

    def build(num_classes: int = 10, in_channels: int = 3, channels: int = 36, layers: int = 20,
              auxiliary: bool = False) -> DartsNetwork:
        return DartsNetwork(genotype, channels=channels, layers=layers, num_classes=num_classes,
                            auxiliary=auxiliary, in_channels=in_channels)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"The {name} genotype's CIFAR network (36 channels, 20 cells; auxiliary head on request)."
    return build
