"""The contract between the trainer and a training method.

A method is a small object that says (a) how a batch becomes model inputs and (b) how the model's
outputs become a loss and metrics. The trainer knows no method by name: it calls

    method.prepare_model(model)             once, before the optimizer is built (layer swaps, hooks)
    method.begin_step(step, epoch)          once per optimizer step (e.g. SBA's Bernoulli draw)
    batch = method.make_batch(inputs, targets, generator)
    for chunk in batch.chunks(n):           micro-batching; n == 1 unless B*views does not fit
        out = method.loss(model, chunk)     forward pass + objective for this chunk
        (out.loss * chunk.num_samples / batch.num_samples).backward()
    optimizer step (learning rate x batch.lr_scale)
    method.end_step(step, [out.carry ...])  what each chunk carries to the next step (default: nothing)
    method.predict(model, images)           evaluation logits for uint8 images (image validation)

``inputs`` are what the run's batch source yields: uint8 images (B, C, H, W) for image data, a
:class:`~batchaug.data.token_batches.TokenWindow` for token streams. Methods that carry state from one
step to the next (an RNN's hidden state under truncated BPTT) return it as ``LossOutput.carry`` and
take it back in ``end_step``; the others ignore both, and ``lr_scale`` stays 1.

All tensors in a :class:`MethodBatch` are laid out sample-major (each sample's rows adjacent), so a
batch can be cut into micro-batches along the sample axis without the trainer knowing what the rows are.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MethodContext:
    """What a method may need to know about the run, given to its constructor."""

    num_classes: int
    """Classes of the output (a language model's: the vocabulary size)."""
    image_size: tuple[int, int] | None = None
    """Height and width of the images (image data only)."""
    mean: tuple[float, ...] = ()
    """Per-channel normalization of the images (image data only)."""
    std: tuple[float, ...] = ()
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    label_smoothing: float = 0.0
    channels_last: bool = False
    model_name: str | None = None
    """Registry name of the model (SBA's default eligible layers come from its spec)."""


@dataclass(frozen=True)
class Regime:
    """How a method changes the run's length and batch (regime adaptation); 1 = unchanged."""

    batch_multiplier: int = 1
    epoch_multiplier: float = 1.0
    lr_multiplier: float = 1.0


@dataclass
class MethodBatch:
    """A step's worth of model inputs.

    ``tensors`` maps names to tensors whose first dimension is ``num_samples * rows_per_sample[name]``,
    sample-major. ``extras`` holds anything that is not split (it is shared by all chunks).
    ``lr_scale`` multiplies the step's learning rate (e.g. a language model's window length over its
    nominal length, so short windows take shorter steps); 1 for everything else.
    """

    tensors: dict[str, Tensor]
    num_samples: int
    extras: dict[str, Any] = field(default_factory=dict)
    lr_scale: float = 1.0

    def rows_per_sample(self, name: str) -> int:
        n = self.tensors[name].shape[0]
        if n % self.num_samples:
            raise ValueError(f"MethodBatch tensor {name!r} has {n} rows, not a multiple of {self.num_samples} samples")
        return n // self.num_samples

    @property
    def num_views(self) -> int:
        """Rows of the largest tensor: what goes through the network (for images/s)."""
        return max(t.shape[0] for t in self.tensors.values() if t.dim() > 1) if self.tensors else 0

    def __getitem__(self, name: str) -> Tensor:
        return self.tensors[name]

    def chunks(self, n: int) -> Iterator[MethodBatch]:
        """Split into at most ``n`` micro-batches along the sample axis (sizes differ by at most one)."""
        n = max(1, min(int(n), self.num_samples))
        if n == 1:
            yield self
            return
        bounds = [round(i * self.num_samples / n) for i in range(n + 1)]
        per = {k: self.rows_per_sample(k) for k in self.tensors}
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi == lo:
                continue
            yield MethodBatch({k: t[lo * per[k]: hi * per[k]] for k, t in self.tensors.items()}, hi - lo, self.extras,
                              self.lr_scale)


@dataclass
class LossOutput:
    """The objective of one (micro-)batch.

    ``loss`` is the mean over this chunk's samples (the trainer weights chunks by their sample count).
    ``logits``/``targets`` are the predictions used for the running training accuracy. ``metrics`` are
    per-chunk means (floats or 0-d tensors) that the trainer averages over the logging interval and
    writes into ``metrics.jsonl`` under their own names. ``carry`` is what this chunk hands to the next
    step (e.g. the final hidden state of its rows); the trainer passes every chunk's to
    :meth:`Method.end_step` and never looks inside.
    """

    loss: Tensor
    logits: Tensor | None = None
    targets: Tensor | None = None
    metrics: dict[str, float | Tensor] = field(default_factory=dict)
    carry: Any = None


class Method(abc.ABC):
    """Base class of training methods. Subclasses declare ``name`` and an ``Options`` dataclass."""

    name: ClassVar[str]
    Options: ClassVar[type]

    def __init__(self, options: Any, context: MethodContext) -> None:
        self.options = options
        self.context = context

    # -- model and regime ---------------------------------------------------------------------
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Swap layers or attach hooks before the optimizer is built. Default: unchanged."""
        return model

    @classmethod
    def regime_of(cls, options: Any) -> Regime:
        """Changes to batch size and run length that the method asks for with ``options``
        (needs no model or data, so a run's length is known before anything is built). Default: none."""
        return Regime()

    def regime(self) -> Regime:
        """:meth:`regime_of` this method's options."""
        return type(self).regime_of(self.options)

    def describe(self) -> str:
        """One line for the start-up header: the method and what matters of its options."""
        return self.name

    @property
    def views_per_sample(self) -> int:
        """Network inputs per training sample (for images/s and micro-batch sizing)."""
        return 1

    # -- one step -------------------------------------------------------------------------------
    def begin_step(self, step: int, epoch: int) -> None:
        """Called once before each optimizer step (all micro-batches of the step share it)."""

    @abc.abstractmethod
    def make_batch(self, images: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> MethodBatch:
        """Turn the batch source's inputs (uint8 images (B, C, H, W) for image data) on the training
        device and their targets into model inputs."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        """Forward ``batch`` through ``model`` and return the objective."""

    def end_step(self, step: int, carries: Sequence[Any]) -> None:
        """Called once after each optimizer step with the ``carry`` of every chunk's
        :class:`LossOutput`, in chunk order (a retried step's only). Default: nothing is carried."""

    # -- evaluation ------------------------------------------------------------------------------
    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (or [0, 1] float) images -> normalized float inputs, on their device."""
        from batchaug.augment import normalize

        x = normalize(images, self.context.mean, self.context.std)  # one fused pass, as for training views
        if self.context.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        """Evaluation logits for uint8 images. Default: the plain model on normalized images."""
        return model(self.normalize(images))

    def view_policy(self) -> Any:
        """The policy spec of the views this method trains on (test-time views reuse it). Default:
        ``options.policy`` when the options have one, else ``standard``."""
        return getattr(self.options, "policy", "standard")

    def eval_modes(self) -> Mapping[str, Any]:
        """Extra named evaluation modes this method offers (e.g. split-BN branches). Default: none."""
        return {}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state that a resumed run needs (e.g. RNG of a scheduler)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        del state

    # -- helpers -----------------------------------------------------------------------------
    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.context.label_smoothing)


def check_policy(policy: Any, key: str) -> None:
    """Raise ConfigError naming ``key`` unless ``policy`` is a valid augmentation policy spec.

    Shared by every method's options, so a bad policy is reported at config time with its dotted key.
    """
    from batchaug.augment import build_policy
    from batchaug.errors import ConfigError

    try:
        build_policy(policy)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from exc
