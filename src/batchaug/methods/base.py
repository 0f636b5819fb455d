"""The contract between the trainer and a training method.

A method is a small object that says (a) how a batch becomes model inputs and (b) how the model's
outputs become a loss and metrics. The trainer knows no method by name: it calls

    method.prepare_model(model)             once, before the optimizer is built (layer swaps, hooks)
    method.begin_step(step, epoch)          once per optimizer step (e.g. SBA's Bernoulli draw; again,
                                            from the same state, when a step is retried after an OOM)
    batch = method.make_batch(inputs, targets, generator)
    for chunk in batch.chunks(n):           micro-batching; n == 1 unless B*views does not fit
        out = method.loss(model, chunk)     forward pass + objective for this chunk
        (out.loss * chunk.num_samples / batch.num_samples).backward()
    optimizer step (learning rate x batch.lr_scale)
    method.end_step(step, [out.carry ...])  what each chunk carries to the next step (default: nothing)
    method.predict(model, images)           evaluation logits for uint8 images (image validation, ``val_acc``)
    method.extra_val_predictions()          further named predictors validated beside it (``val_acc_<name>``)

``inputs`` are what the run's batch source yields: uint8 images (B, C, H, W) for image data, a
:class:`~batchaug.data.token_batches.TokenWindow` for token streams. Methods that carry state from one
step to the next (an RNN's hidden state under truncated BPTT) return it as ``LossOutput.carry`` and
take it back in ``end_step``; the others ignore both, and ``lr_scale`` stays 1.

All tensors in a :class:`MethodBatch` are laid out sample-major (each sample's rows adjacent), so a
batch can be cut into micro-batches along the sample axis without the trainer knowing what the rows are.

A model may return, in training mode, its main logits together with named auxiliary logits
(:class:`~batchaug.nn.outputs.ModelOutput`, e.g. the DARTS network's auxiliary head). Every method's
objective includes them through one helper, :meth:`Method.split_auxiliary`: it splits the output and
adds ``aux_weight · Σ_heads objective(aux logits)``, where ``objective`` is the method's own loss of one
set of logits (so the auxiliary term follows the method: over all views for BA, over the raw rows for
SBA, averaged over both halves for split BN). ``aux_weight`` is ``model.aux_weight`` of the run config
(:attr:`MethodContext.aux_weight`).
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.nn.outputs import split_output

#: An evaluation mode: ``(model, uint8 or [0, 1] float images) -> logits`` (or log-probabilities).
Predictor = Callable[[nn.Module, Tensor], Tensor]
#: Several modes at once: ``(model, images) -> {mode: logits}``.
JointPredictor = Callable[[nn.Module, Tensor], dict[str, Tensor]]


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
    aux_weight: float = 0.0
    """Weight of the loss of the model's auxiliary heads, when it has any (``model.aux_weight``)."""


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


class SplitOutput(NamedTuple):
    """A model output split by :meth:`Method.split_auxiliary`."""

    logits: Tensor
    """The main logits."""
    aux_loss: Tensor | float
    """``aux_weight · Σ_heads objective(aux logits)``, to add to the method's loss; ``0.0`` without heads."""
    metrics: dict[str, Tensor]
    """``aux_head_loss`` (the unweighted sum over heads, detached) when the model has heads."""


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
        """Called before each optimizer step (all micro-batches of the step share it). When the trainer
        retries a step after an out-of-memory error it restores :meth:`state_dict` from before the first
        call and calls this again: the step's draws must follow from ``step`` and that state."""

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

    # -- evaluation modes (batchaug eval --modes; every suite runs under each) ----------------------
    def eval_modes(self) -> dict[str, Predictor]:
        """The evaluation modes this method offers, by name: what ``batchaug eval --modes all`` runs.

        A mode is a predictor ``(model, images) -> logits`` (uint8 images, or float in [0, 1]); every
        method has ``default`` (= :meth:`predict`). Split BN adds its branches and blends, SBA its voting.
        """
        return {"default": self.predict}

    def eval_mode_patterns(self) -> dict[str, str]:
        """Parametric mode names :meth:`eval_mode` also accepts (pattern -> meaning), e.g. ``alpha=<a>``."""
        return {}

    def eval_mode(self, name: str) -> Predictor:
        """The predictor of mode ``name``: one of :meth:`eval_modes`, or a parametric name this method
        parses (override :meth:`parse_eval_mode`); ConfigError listing the modes otherwise."""
        modes = self.eval_modes()
        if name in modes:
            return modes[name]
        predictor = self.parse_eval_mode(name)
        if predictor is not None:
            return predictor
        offered = ", ".join([*modes, *self.eval_mode_patterns()])
        raise ConfigError(f"--modes: {name!r} is not a mode of method {self.name!r}; its modes: {offered}")

    def joint_predictor(self, names: Sequence[str]) -> JointPredictor:
        """One callable ``(model, images) -> {mode: logits}`` for the modes ``names``. Default: each mode's
        predictor in turn; a method whose modes share work (split BN's branches and blends come from one
        pass, SBA's plain/mean/vote from one virtual pass) overrides it to do that work once."""
        predictors = {name: self.eval_mode(name) for name in names}
        return lambda model, images: {name: p(model, images) for name, p in predictors.items()}

    def parse_eval_mode(self, name: str) -> Predictor | None:
        """A predictor for a parametric mode name, or None when ``name`` is not one. Default: None."""
        del name
        return None

    def extra_val_predictions(self) -> Mapping[str, Callable[[nn.Module, Tensor], Tensor]]:
        """Predictions the trainer validates beside :meth:`predict` at every evaluation, by name:
        ``callable(model, uint8 images) -> logits``; each adds ``val_acc_<name>`` and ``val_loss_<name>``
        (and ``test_*_<name>``) to the evaluation lines, never used to select ``best.pt``. Default: none.

        For a method whose ``predict`` is not the plain model (SBA's majority vote), this keeps the plain
        accuracy beside the reported one. Each costs a pass over the validation set: keep it short."""
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

    def split_auxiliary(self, output: Any, objective: Callable[[Tensor], Tensor]) -> SplitOutput:
        """Split a training-mode model output into its main logits and the weighted auxiliary loss.

        ``output`` is what the model returned (logits, or a :class:`~batchaug.nn.outputs.ModelOutput`
        / torchvision-style tuple with auxiliary logits); ``objective`` maps one head's logits to a scalar
        loss, the same the method applies to the main logits (it may select rows, average views...).
        The auxiliary term is ``context.aux_weight · Σ_heads objective(aux)``; it is added even when the
        weight is 0, so every head keeps a (zero) gradient and DDP sees all parameters used.

        Warns once when the model returns heads but ``aux_weight`` is 0 (they are not trained), or when
        ``aux_weight`` is set but the model returns none (the setting does nothing).
        """
        logits, aux = split_output(output)
        weight = float(self.context.aux_weight)
        if not aux:
            if weight > 0:
                self._warn_once("model.aux_weight is set but the model returns no auxiliary logits in training, "
                                "so it has no effect (darts_v2: model.kwargs.auxiliary=true adds the head)")
            return SplitOutput(logits, 0.0, {})
        if weight == 0:
            self._warn_once(f"the model returns auxiliary logits ({', '.join(aux)}) but model.aux_weight is 0: the "
                            "auxiliary heads are not trained (DARTS uses 0.4)")
        total = torch.stack([objective(head).float() for head in aux.values()]).sum()
        return SplitOutput(logits, weight * total, {"aux_head_loss": total.detach()})

    def _warn_once(self, message: str) -> None:
        warned = self.__dict__.setdefault("_aux_warnings", set())
        if message not in warned:
            warned.add(message)
            warnings.warn(message, stacklevel=3)


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
