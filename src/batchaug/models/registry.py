"""The model registry: names -> :class:`ModelSpec`, and :func:`build_model` to turn a name into a module.

Three kinds of names resolve here:

* registered names (``resnet20``, ``wrn28_10``, ``vgg16_bn``, ``resnet50`` ...; see ``batchaug models``);
* ``wrn<depth>_<widen>`` for any valid Wide ResNet (``wrn16_8``, ``wrn40_4``), beyond the registered two;
* ``tv:<name>`` for any torchvision classification model and ``timm:<name>`` for any timm model
  (resolved by :mod:`batchaug.models.external`).

Image models (families ``cifar`` and ``imagenet``) map images to logits; language models (family
``text``, e.g. ``awd_lstm``) map token ids to next-token logits and are built with ``num_classes`` =
the vocabulary size (:mod:`batchaug.models.awd_lstm`).

Nothing here ever downloads weights: the zoo builds randomly initialised networks only.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from batchaug.errors import ConfigError
from batchaug.models.wide_resnet import check_wrn_depth, wrn

FAMILIES = ("cifar", "imagenet", "text")
"""``text``: language models over a vocabulary (``num_classes`` is its size)."""
IMAGE_FAMILIES = ("cifar", "imagenet")
_WRN_NAME = re.compile(r"wrn(\d+)_(\d+)")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of batchaug needs to know about a model before (and without) building it.

    Attributes:
        name: registry name, e.g. ``"resnet20"``.
        builder: called as ``builder(num_classes=..., **kwargs)``; returns an ``nn.Module`` whose forward
            maps float ``(B, C, H, W)`` images to ``(B, num_classes)`` logits (image families), or
            ``(N, L)`` token ids to an :class:`~batchaug.models.awd_lstm.LMOutput` (``text``).
        family: ``"cifar"`` (designed for 32x32 inputs), ``"imagenet"`` (designed for 224x224) or
            ``"text"`` (a language model; ``num_classes`` is the vocabulary size).
        input_size: the side length the architecture was designed for (32 or 224; 299 for Inception);
            None for language models.
        description: one line for ``batchaug models``.
        published_params: the parameter count the source publishes, for the family's usual number of
            classes (10 for ``cifar``, 1000 for ``imagenet``, a 10,000-word vocabulary (Penn Treebank's) for
            ``text``); ``None`` when there is no published figure.
        sba_layers: default layers where Stochastic Batch Augmentation may inject virtual samples: keys of
            ``model.named_modules()`` whose output is a ``(B, Q)`` feature vector.
        citation: where the architecture (and the parameter count) comes from.
    """

    name: str
    builder: Callable[..., nn.Module]
    family: str
    input_size: int | None
    description: str
    published_params: int | None
    sba_layers: tuple[str, ...]
    citation: str

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigError(f"model name must be a non-empty string, got {self.name!r}")
        if self.family not in FAMILIES:
            raise ConfigError(f"model {self.name!r}: family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "text":
            if self.input_size is not None:
                raise ConfigError(f"model {self.name!r}: a language model has no input_size (None), "
                                  f"got {self.input_size!r}")
        elif isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
            raise ConfigError(f"model {self.name!r}: input_size must be a positive int, got {self.input_size!r}")
        if self.published_params is not None and self.published_params < 1:
            raise ConfigError(f"model {self.name!r}: published_params must be positive or None")
        if not isinstance(self.sba_layers, tuple):
            raise ConfigError(f"model {self.name!r}: sba_layers must be a tuple of module paths")


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add ``spec`` to the registry so that :func:`build_model` and ``batchaug models`` know it.

    Raises:
        ConfigError: the name is taken, or contains ``:`` (reserved for ``tv:``/``timm:`` names).
    """
    if ":" in spec.name:
        raise ConfigError(f"model name {spec.name!r} may not contain ':' (reserved for 'tv:' and 'timm:' names)")
    if spec.name in _REGISTRY:
        raise ConfigError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def _wrn_spec(name: str, depth: int, widen: int) -> ModelSpec:
    check_wrn_depth(depth)
    if widen < 1:
        raise ConfigError(f"model {name!r}: the widening factor must be >= 1")

    def builder(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
        return wrn(depth, widen, dropout, num_classes=num_classes, in_channels=in_channels)

    return ModelSpec(
        name=name, builder=builder, family="cifar", input_size=32,
        description=f"Wide ResNet-{depth}-{widen} (pre-activation, 1x1-conv projection shortcuts)",
        published_params=None, sba_layers=("features_out",),
        citation="Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016",
    )


def _unknown(name: str) -> ConfigError:
    known = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"unknown model {name!r}.{hint} Known models: {', '.join(known)}; also wrn<depth>_<widen>, "
        "tv:<torchvision classification model> and timm:<timm model>"
    )


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for ``name`` (registered, ``wrn<d>_<k>``, ``tv:<name>`` or ``timm:<name>``).

    Raises:
        ConfigError: unknown name (the message lists the known ones); ``timm:`` without timm installed.
    """
    if not isinstance(name, str):
        raise ConfigError(f"model name must be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(("tv:", "timm:")):
        from batchaug.models import external

        return external.torchvision_spec(name[3:]) if name.startswith("tv:") else external.timm_spec(name[5:])
    match = _WRN_NAME.fullmatch(name)
    if match:
        return _wrn_spec(name, int(match.group(1)), int(match.group(2)))
    raise _unknown(name)


def _check_kwargs(spec: ModelSpec, kwargs: dict[str, object]) -> None:
    params = inspect.signature(spec.builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # passes everything on (torchvision / timm); they report their own bad keywords
    allowed = [p for p in params if p != "num_classes"]
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise ConfigError(
            f"model {spec.name!r} does not take {', '.join(map(repr, bad))}; "
            f"allowed keyword arguments: {', '.join(allowed) or 'none'}"
        )


def build_model(name: str, num_classes: int = 10, **kwargs: object) -> nn.Module:
    """Build a randomly initialised model by name (never downloads weights).

    Args:
        name: a registry name (``batchaug models``), ``wrn<depth>_<widen>``, ``tv:<torchvision name>``
            or ``timm:<timm name>``.
        num_classes: size of the logits.
        **kwargs: passed to the builder, e.g. ``in_channels=1`` or ``dropout=0.3``; unknown keywords are
            a :class:`ConfigError` naming the allowed ones.

    Returns:
        A module mapping float ``(B, C, H, W)`` to ``(B, num_classes)`` logits, on the current default
        device (build under ``with torch.device("meta"):`` to count parameters without allocating).
    """
    spec = get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    _check_kwargs(spec, kwargs)
    return spec.builder(num_classes=num_classes, **kwargs)


def list_models(include_timm: bool = False) -> list[ModelSpec]:
    """The registered models (image and language models), in registration order; with ``include_timm``
    also every ``timm:<name>``.

    ``tv:<name>`` models are not listed (any torchvision classification model is accepted).

    Raises:
        ConfigError: ``include_timm`` is set but timm is not installed.
    """
    specs = list(_REGISTRY.values())
    if include_timm:
        from batchaug.models import external

        specs += [external.timm_spec(n) for n in external.timm_model_names()]
    return specs


def count_params(model: nn.Module) -> int:
    """Number of parameters of ``model`` (shared parameters counted once; works on the meta device)."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "FAMILIES", "IMAGE_FAMILIES", "ModelSpec", "build_model", "count_params", "get_spec", "list_models",
    "register_model",
]
