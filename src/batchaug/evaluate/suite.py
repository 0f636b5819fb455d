"""Evaluation suites and the one loop that runs any set of them under any set of modes.

A :class:`Suite` says how it measures a model under the requested *modes* (the method's
:meth:`~batchaug.methods.base.Method.eval_modes`): ``start()`` makes an accumulator per mode,
``update()`` adds a batch of evaluation images (the suite may transform them and call the predictor
as often as it needs; one call returns the logits of every mode, so a method computes what its modes
share once: split BN's branches and blends come from one pass), ``result()`` turns one mode's
accumulator into JSON. :func:`run_suites` iterates the evaluation images once, batch by batch, and
feeds every suite; so "corruption error as α moves" and "Fourier heatmap of main / blend / aux" are
one command. A suite that measures something other than predictions on evaluation images (e.g.
training gradients) overrides :meth:`Suite.run` and runs once.

Suites are registered in :mod:`batchaug.evaluate.registry` (one line each); their options are a
dataclass built with :mod:`batchaug.schema`, set from the command line (``--option suite.key=value``
or a suite's own flag). ``docs/evaluate.md`` and ``docs/extending.md`` describe both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from batchaug.errors import ConfigError

if TYPE_CHECKING:
    from batchaug.evaluate.loading import TrainedRun

__all__ = ["EvalData", "Model", "NoOptions", "Suite", "SuiteContext", "default_result", "run_suites"]

#: What a suite calls: images (uint8, or float in [0, 1]) on the device -> ``{mode: float logits}`` of
#: every mode the suite runs under (the run's model, in eval mode, without gradients).
Model = Callable[[Tensor], dict[str, Tensor]]


@dataclass
class NoOptions:
    """The options of a suite that has none."""


@dataclass
class EvalData:
    """The evaluation images: uint8 ``(N, C, H, W)`` with int64 targets, and each image's index in the
    full split (corruptions and Fourier signs are drawn per index, so a ``--limit`` or another batch
    size changes nothing about an image's result)."""

    images: Tensor
    targets: Tensor
    index: Tensor
    split: str
    limit: int | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.targets.shape != (n,) or self.index.shape != (n,):
            raise ValueError(f"EvalData: {n} images but targets {tuple(self.targets.shape)} and index "
                             f"{tuple(self.index.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(images, targets, index)``, ``batch_size`` at a time, in order: images and targets on
        ``device``, the split indices on the CPU (suites seed per-image draws from them on the host)."""
        for lo in range(0, len(self), batch_size):
            hi = lo + batch_size
            yield (self.images[lo:hi].to(device, non_blocking=True), self.targets[lo:hi].to(device, non_blocking=True),
                   self.index[lo:hi].cpu())


@dataclass
class SuiteContext:
    """What a suite may need besides the images: the trained run (model, method, config, data
    statistics), the device, the evaluation seed and batch size."""

    run: TrainedRun
    device: torch.device
    seed: int = 0
    batch_size: int = 500
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> Any:
        return self.run.method

    @property
    def model(self) -> torch.nn.Module:
        return self.run.model


class Suite(abc.ABC):
    """One evaluation; see the module docstring for the protocol."""

    #: registry name; the file it writes is ``eval/<name>.json``
    name: ClassVar[str] = ""
    #: the options dataclass (fields with :func:`batchaug.schema.option` ranges)
    Options: ClassVar[type] = NoOptions
    #: False for suites whose result does not depend on the evaluation mode (run once, as ``default``)
    per_mode: ClassVar[bool] = True

    def __init__(self, options: Any, ctx: SuiteContext) -> None:
        self.options = options
        self.ctx = ctx

    def check(self) -> None:
        """Raise ConfigError when this run cannot be evaluated by this suite (before any work)."""

    def start(self) -> Any:
        """A fresh accumulator for one mode."""
        return {}

    def update(self, accs: Mapping[str, Any], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        """Add one batch (uint8 images on the device, their targets and split indices) to the
        accumulator of every mode (``accs``); ``predict(x)`` gives ``{mode: logits}`` for any images
        the suite makes from them."""
        raise NotImplementedError(f"suite {self.name!r} must implement update() or run()")

    def result(self, acc: Any) -> dict[str, Any]:
        """The JSON-ready result of one mode."""
        raise NotImplementedError(f"suite {self.name!r} must implement result() or run()")

    def run(self, data: EvalData, modes: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        """Suites that do not use the shared loop return ``{mode: result}`` here; None: use the loop."""
        return None

    def top_level(self, results: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
        """Keys written at the top level of ``eval/<name>.json`` beside ``modes`` (given every suite's
        results of this evaluation). Default: none; the suites whose files predate modes keep their
        old top-level keys here."""
        return {}

    def options_dict(self) -> dict[str, Any]:
        from batchaug.schema import to_dict

        return to_dict(self.options)


def default_result(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The ``default`` mode's result of one suite (its first mode's when it did not run ``default``)."""
    return results.get("default") or next(iter(results.values()))


def bind(ctx: SuiteContext, names: Sequence[str]) -> Model:
    """The method's joint predictor of modes ``names``, bound to the run's model, without gradients,
    as float logits."""
    model = ctx.model
    joint = ctx.method.joint_predictor(list(names))

    @torch.no_grad()
    def bound(images: Tensor) -> dict[str, Tensor]:
        return {name: logits.float() for name, logits in joint(model, images).items()}

    return bound


def run_suites(suites: Sequence[Suite], modes: Sequence[str], data: EvalData,
               ctx: SuiteContext) -> dict[str, dict[str, dict[str, Any]]]:
    """``{suite: {mode: result}}`` of every suite under every mode in ``modes`` (``per_mode=False``
    suites: once, under ``default``), iterating ``data`` once."""
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise ConfigError("--modes: no mode to evaluate")
    ctx.model.eval()
    results: dict[str, dict[str, dict[str, Any]]] = {}
    looped: list[tuple[Suite, Model, dict[str, Any]]] = []
    predictors: dict[tuple[str, ...], Model] = {}
    for suite in suites:
        own = tuple(modes) if suite.per_mode else ("default",)
        direct = suite.run(data, own)
        if direct is not None:
            results[suite.name] = direct
            continue
        if own not in predictors:
            predictors[own] = bind(ctx, own)
        looped.append((suite, predictors[own], {mode: suite.start() for mode in own}))
    for images, targets, index in data.batches(ctx.batch_size, ctx.device) if looped else ():
        for suite, predict, accs in looped:
            suite.update(accs, predict, images, targets, index)
    for suite, _, accs in looped:
        results[suite.name] = {mode: suite.result(acc) for mode, acc in accs.items()}
    return {s.name: results[s.name] for s in suites}
