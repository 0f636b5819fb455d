"""What a model's forward may return: logits, or in training the logits plus named auxiliary logits.

Every batchaug model maps images to ``(N, K)`` logits. A model with auxiliary classifier heads (the
DARTS network's head after its second reduction cell, Inception's and GoogLeNet's towers) returns,
*in training mode only*, a :class:`ModelOutput` carrying the main logits and a mapping of named
auxiliary logits; in eval mode it returns plain logits, so evaluation code never sees the heads.
The training methods turn either form into their objective through one helper
(:meth:`batchaug.methods.base.Method.split_auxiliary`), so the trainer and the evaluation code need
not know which models have heads.

:func:`split_output` also reads the named tuples torchvision's Inception v3 and GoogLeNet return in
training (``InceptionOutputs(logits, aux_logits)``, ``GoogLeNetOutputs(logits, aux_logits2,
aux_logits1)``): the first field is the main logits, every other non-``None`` field an auxiliary head.

A named tuple rather than a dataclass because DDP, ``torch.compile`` and autocast all traverse tuples
and dicts of tensors without being told about a new type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["ModelOutput", "split_output"]


class ModelOutput(NamedTuple):
    """A training-mode forward result: main ``logits`` ``(N, K)`` and auxiliary logits by head name.

    Each auxiliary tensor has the same rows as the input that reached its head, normally ``N``; under
    Stochastic Batch Augmentation with a layer *before* the head it has the raw rows first, then the
    virtual copies (the row order of :mod:`batchaug.nn.latent`).
    """

    logits: Tensor
    aux: Mapping[str, Tensor]


def split_output(output: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """``(main logits, {head name: auxiliary logits})`` of any model output.

    Accepts a tensor (no auxiliary heads), a :class:`ModelOutput`, or a tuple whose first element is the
    logits and whose other elements are auxiliary logits or ``None`` (torchvision's named tuples: the
    heads are named by their fields, a plain tuple's by position, ``aux1``, ``aux2``...).

    Raises:
        TypeError: ``output`` is none of these (the message says what the model returned).
    """
    if isinstance(output, Tensor):
        return output, {}
    if isinstance(output, ModelOutput):
        return output.logits, dict(output.aux)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        fields = getattr(output, "_fields", None) or [f"aux{i}" for i in range(len(output))]
        aux = {}
        for name, value in zip(fields[1:], output[1:], strict=True):
            if value is None:
                continue
            if not isinstance(value, Tensor):
                raise TypeError(f"model output field {name!r} is {type(value).__name__}, expected a tensor of "
                                "auxiliary logits or None")
            aux[str(name)] = value
        return output[0], aux
    raise TypeError(f"a model must return logits (a tensor) or ModelOutput(logits, aux); got {type(output).__name__}")
