"""Stochastic Batch Augmentation (Li et al. 2020, "Stochastic Batch Augmentation with an Effective
Distilled Dynamic Soft Label Regularizer").

At every optimizer step a Bernoulli scheduler ``λ(t) ~ B(p = cos ω)`` decides whether the step is
augmented. An augmented step runs the batch to an eligible layer ``k`` (drawn uniformly from ``S``, or
fixed), makes ``M = p + q`` virtual copies of every hidden vector there (``p`` Gaussian, ``q`` dropout;
see :mod:`batchaug.nn.latent`), runs the rest of the network on ``[X_k; V_g; V_d]`` in one pass and
minimises (Eq. 11)::

    (1/B) Σ_i CE(y_i, Y_i)  +  η·λ(t)/(M·B) Σ_i Σ_j KL(Y_i ‖ Y_ij)

plus, for a model with auxiliary heads, ``aux_weight ·`` their cross-entropy on the raw rows
(:meth:`~batchaug.methods.base.Method.split_auxiliary`).

where ``Y_i`` is the softmax prediction on raw sample ``i`` (the "distilled" soft label) and ``Y_ij``
that on its ``j``-th virtual copy. A step with ``λ = 0`` is an ordinary step. Every choice the paper
leaves open is listed, with the reason for the default, in ``docs/sba.md``.

Metrics written to ``metrics.jsonl`` (interval means): ``sba_augmented`` (1 on augmented steps, 0
otherwise: its mean is the fraction of augmented steps), ``sba_kl`` (the mean KL term, reported on
augmented steps only, so its mean is over augmented steps), ``sba_reg`` (``η·λ·KL``, the term actually
added to the loss, 0 on plain steps: its mean is over all steps) and ``sba_ce`` (cross-entropy of the
raw predictions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.errors import ConfigError
from batchaug.methods.base import (
    JointPredictor,
    LossOutput,
    Method,
    MethodBatch,
    MethodContext,
    Predictor,
)
from batchaug.methods.views import AugmentOptions, build_view_augmenter
from batchaug.nn.latent import LatentAugmenter, split_virtual
from batchaug.nn.outputs import split_output
from batchaug.schema import option

__all__ = ["SBAOptions", "StochasticBatchAugmentation", "aggregate_predictions", "soft_label_kl"]


@dataclass
class SBAOptions(AugmentOptions):
    """Options of ``method.name=sba`` (``docs/sba.md`` explains every default). ``policy`` (from
    :class:`~batchaug.methods.views.AugmentOptions`) is the input augmentation of the one view per sample."""

    m: int = option(8, ge=1)
    """Virtual copies per sample, M = p + q."""
    dropout_copies: int | None = option(None, ge=0)
    """q, the dropout copies among the M; the other p = M - q are Gaussian. Unset: q = M // 2."""
    p: float | None = None
    """Probability that a step (or epoch) is augmented. Give ``p`` or ``omega``, not both; neither: 0.5."""
    omega: float | None = None
    """Scheduler angle ω in [0, π/2] radians, p = cos ω (ω = π/3 gives p = 0.5)."""
    sigma: float = option(0.1, ge=0)
    """Standard deviation σ of the Gaussian noise ε ~ N(0, σ²I) in feature units."""
    tau: float | None = option(None, gt=0)
    """Clipping bound τ of the noise (elementwise). Unset: 2σ."""
    eta: float = option(0.1, ge=0)
    """Weight η of the soft-label KL term. The paper's §4.2 finds 0.01 best for AlexNet and ResNet44 on
    CIFAR-10 and 0.1 for VGG-16 on CIFAR-10 and VGG-16/ResNet44 on CIFAR-100, and adopts those two; the
    default is 0.1, its choice in three of those five cases (``docs/sba.md``)."""
    dropout_p: float = option(0.2, ge=0, lt=1)
    """Drop rate of the dropout copies' Bernoulli masks."""
    layers: list[str] | None = None
    """Eligible layers S (module paths). Unset: the model's registry default (``batchaug models``)."""
    layer_choice: Literal["uniform", "fixed"] = "uniform"
    """Draw k uniformly from S at every augmented step, or always use ``fixed_layer``."""
    fixed_layer: str | None = None
    """The layer of ``layer_choice=fixed``. Unset: the last of ``layers``."""
    eval_layer: str | None = None
    """Where inference-time virtual samples are made (``inference`` mean/vote, ``batchaug eval
    --sba-vote``). Unset: ``fixed_layer`` when fixed, else the last of ``layers``."""
    granularity: Literal["step", "epoch"] = "step"
    """Draw λ once per optimizer step (Algorithm 1) or once per epoch (Section 3's wording)."""
    detach_teacher: bool = True
    """Treat the raw prediction Y_i as a fixed soft label (no gradient through the teacher side)."""
    inference: Literal["plain", "mean", "vote"] = "plain"
    """What ``predict`` (and so ``val_acc``) returns: the raw prediction, the mean probability of the raw
    and M virtual predictions, or their majority vote (the paper's inference, §3.4). With mean or vote the
    plain accuracy is validated beside it as ``val_acc_plain``."""
    seed: int | None = option(None, ge=0)
    """Seed of the scheduler and noise generators. Unset: the run's seed (``torch.initial_seed()``)."""

    def probability(self) -> float:
        """The scheduler's p."""
        if self.p is not None:
            return self.p
        return math.cos(self.omega) if self.omega is not None else 0.5

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if self.dropout_copies is not None and not 0 <= self.dropout_copies <= self.m:
            raise ConfigError(f"{prefix}.dropout_copies: must be in [0, m={self.m}], got {self.dropout_copies}")
        if self.p is not None and self.omega is not None:
            raise ConfigError(f"{prefix}.p and {prefix}.omega: set one of them (p = cos ω), not both")
        if self.p is not None and not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"{prefix}.p: must be a probability in [0, 1], got {self.p}")
        if self.omega is not None and not 0.0 <= self.omega <= math.pi / 2 + 1e-12:
            raise ConfigError(f"{prefix}.omega: must be in [0, π/2] radians (p = cos ω), got {self.omega}")
        if self.tau is None and self.sigma == 0:
            raise ConfigError(f"{prefix}.tau: set tau when sigma is 0 (the default tau is 2·sigma)")
        if self.layers is not None:
            if not self.layers:
                raise ConfigError(f"{prefix}.layers: give at least one module path, or leave it unset for the "
                                  "model's default")
            if len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"{prefix}.layers: {self.layers} names a layer twice")
            for key in ("fixed_layer", "eval_layer"):
                value = getattr(self, key)
                if value is not None and value not in self.layers:
                    raise ConfigError(f"{prefix}.{key}: {value!r} is not one of {prefix}.layers {self.layers}")
        if self.fixed_layer is not None and self.layer_choice != "fixed":
            raise ConfigError(f"{prefix}.fixed_layer: only used with {prefix}.layer_choice=fixed "
                              f"(got layer_choice={self.layer_choice!r})")

    @property
    def num_dropout(self) -> int:
        """q."""
        return self.m // 2 if self.dropout_copies is None else self.dropout_copies

    @property
    def num_gauss(self) -> int:
        """p (the number of Gaussian copies, not the scheduler's probability)."""
        return self.m - self.num_dropout

    @property
    def clip(self) -> float:
        """τ."""
        return 2.0 * self.sigma if self.tau is None else self.tau


def soft_label_kl(raw_logits: Tensor, virtual_logits: Tensor, *, detach_teacher: bool = True) -> Tensor:
    """``1/(M·B) Σ_i Σ_j KL(Y_i ‖ Y_ij)`` for raw ``(B, K)`` and virtual ``(B, M, K)`` logits (float32)."""
    teacher = raw_logits.float().log_softmax(-1)
    if detach_teacher:
        teacher = teacher.detach()
    student = virtual_logits.float().log_softmax(-1)
    kl = F.kl_div(student, teacher.unsqueeze(1).expand_as(student), reduction="none", log_target=True)
    return kl.sum(-1).mean()


def aggregate_predictions(raw_logits: Tensor, virtual_logits: Tensor, mode: str) -> Tensor:
    """One ``(B, K)`` prediction from the raw and the M virtual ones, as log-probabilities.

    ``mean``: log of the mean softmax of the ``1 + M`` predictions. ``vote``: log of the normalized
    vote counts plus a tie-break below one vote (the mean probability over ``1 + M + 1``), so the argmax
    is the majority vote, ties going to the higher mean probability (as
    :func:`batchaug.evaluate.clean.majority_vote`), and the cross-entropy stays finite.
    """
    every = torch.cat([raw_logits.unsqueeze(1), virtual_logits], 1).float()  # (B, 1+M, K)
    probs = every.softmax(-1).mean(1)
    if mode == "mean":
        return probs.clamp_min(torch.finfo(torch.float32).tiny).log()
    if mode == "vote":
        n = every.shape[1]
        votes = F.one_hot(every.argmax(-1), every.shape[-1]).sum(1).float()
        scores = votes + probs / (n + 1)
        return (scores / scores.sum(-1, keepdim=True)).log()
    raise ValueError(f"mode must be 'mean' or 'vote', got {mode!r}")


class StochasticBatchAugmentation(Method):
    """SBA on any model: latent virtual samples at a random eligible layer on scheduled steps, KL soft labels.

    ``prepare_model`` must run first (the trainer does it); it resolves the eligible layers, checks each
    on a tiny batch and attaches the latent augmenter's hooks, which act only during augmented passes
    (registered once, so that a compiled model sees them: :class:`~batchaug.nn.latent.LatentAugmenter`).
    """

    name = "sba"
    Options = SBAOptions

    def __init__(self, options: SBAOptions, context: MethodContext) -> None:
        super().__init__(options, context)
        self.augmenter = build_view_augmenter(options.policy, 1, context)
        self.prob = options.probability()
        self.m = options.m
        self.seed = int(options.seed) if options.seed is not None else torch.initial_seed()
        # Separate streams: the scheduler's (λ and k, on the CPU so they never wait for the device; the
        # same on every process, so all ranks augment the same steps) and the noise's (Σ, ε, masks, drawn
        # where the features live; one per process, so ranks do not share noise). Both are re-seeded from
        # (seed, step) at every step: the draws of a step are a function of the step alone, so a resumed
        # run, a retried step (the trainer's out-of-memory fallback) and a run moved to another device need
        # no generator state (a CUDA generator's state cannot be loaded into a CPU one, nor back).
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self._rank = torch.distributed.get_rank() if distributed else 0
        self._sched_gen = torch.Generator()
        self._noise_gen = torch.Generator(device=context.device)
        self._noise_gen.manual_seed(_stream_seed(self.seed, 2 + self._rank))
        self.latent: LatentAugmenter | None = None
        self.layer_shapes: dict[str, tuple[int, ...]] = {}
        self.augmented = False
        self.layer: str | None = None
        self._lambda_epoch: int | None = None

    def describe(self) -> str:
        o = self.options
        return (f"sba (M={o.m} virtual copies: {o.num_gauss} Gaussian + {o.num_dropout} dropout, p={self.prob:.3g}, "
                f"η={o.eta:g}, policy {o.policy})")

    # -- model ---------------------------------------------------------------------------------
    def resolve_layers(self, model: nn.Module) -> list[str]:
        """``method.layers``, else the registry default of the model named in the context."""
        if self.options.layers is not None:
            return list(self.options.layers)
        # MethodContext.model_name (set by the trainer) names the registry model whose spec lists the layers.
        model_name = getattr(self.context, "model_name", None)
        if model_name:
            from batchaug.models import get_spec

            default = get_spec(model_name).sba_layers
            if default:
                return list(default)
            raise ConfigError(f"method.layers: model {model_name!r} has no default SBA layers; set method.layers "
                              f"to module paths of its (B, F) features, e.g. {_candidate_layers(model)}")
        raise ConfigError(f"method.layers: no default SBA layers are known for {type(model).__name__}; set "
                          f"method.layers to module paths of its (B, F) features, e.g. {_candidate_layers(model)}")

    def prepare_model(self, model: nn.Module) -> nn.Module:
        o = self.options
        layers = self.resolve_layers(model)
        for key in ("fixed_layer", "eval_layer"):
            value = getattr(o, key)
            if value is not None and value not in layers:
                raise ConfigError(f"method.{key}: {value!r} is not one of the SBA layers {layers}")
        if self.latent is not None:  # prepared before: its hooks stay on that model otherwise
            self.latent.remove()
        self.latent = LatentAugmenter(model, layers, gauss=o.num_gauss, drop_copies=o.num_dropout,
                                      sigma=o.sigma, tau=o.clip, drop=o.dropout_p)
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        # two images, not one: with a batch of 1 a broken residual would broadcast (1, F) against (1+M, F)
        example = torch.zeros(2, len(self.context.mean), *self.context.image_size, device=device)
        self.layer_shapes = self.latent.probe(example)
        return model

    @property
    def layers(self) -> tuple[str, ...]:
        """The eligible layers S (after ``prepare_model``)."""
        return self._require_latent().layers

    @property
    def fixed_layer(self) -> str:
        """The layer of ``layer_choice=fixed``."""
        return self.options.fixed_layer or self.layers[-1]

    @property
    def eval_layer(self) -> str:
        """The layer where inference-time virtual samples are made."""
        if self.options.eval_layer is not None:
            return self.options.eval_layer
        return self.fixed_layer if self.options.layer_choice == "fixed" else self.layers[-1]

    def _require_latent(self) -> LatentAugmenter:
        if self.latent is None:
            raise RuntimeError("StochasticBatchAugmentation.prepare_model(model) must be called first")
        return self.latent

    # -- one step ------------------------------------------------------------------------------
    def begin_step(self, step: int, epoch: int) -> None:
        """Draw λ(t) (per step, or at the first step of each epoch) and the layer k; seed this step's noise.

        A function of ``step`` (and, for ``granularity=epoch``, of the epoch's first step seen): calling
        it again for the same step draws the same λ, k and noise."""
        layers = self.layers
        self._sched_gen.manual_seed(_step_seed(self.seed, 0, step))
        self._noise_gen.manual_seed(_step_seed(self.seed, 2 + self._rank, step))
        # Both draws happen at every step whatever the options, so the stream never depends on them
        # (CPU tensors: reading them costs no device synchronization).
        u = torch.rand((), generator=self._sched_gen).item()
        k = int(torch.randint(len(layers), (), generator=self._sched_gen))
        if self.options.granularity == "step" or epoch != self._lambda_epoch:
            self.augmented = u < self.prob
            self._lambda_epoch = epoch
        self.layer = layers[k] if self.options.layer_choice == "uniform" else self.fixed_layer

    def make_batch(self, images: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> MethodBatch:
        return MethodBatch({"inputs": self.augmenter(images, generator), "targets": targets}, images.shape[0])

    def loss(self, model: nn.Module, batch: MethodBatch) -> LossOutput:
        x, y = batch["inputs"], batch["targets"]
        b = x.shape[0]

        def aux_objective(aux_logits: Tensor) -> Tensor:
            # An auxiliary head before layer k saw the raw rows only; one after it (or at a layer before
            # the head) sees [raw; virtual] rows: either way it is trained on the labels of the raw rows,
            # which come first. The soft-label term is the main classifier's.
            return self.cross_entropy(aux_logits[:b], y)

        if not self.augmented:
            logits, aux_loss, metrics = self.split_auxiliary(model(x), aux_objective)
            ce = self.cross_entropy(logits, y)
            metrics = {"sba_augmented": 0.0, "sba_reg": 0.0, "sba_ce": ce.detach(), **metrics}
            return LossOutput(ce + aux_loss, logits, y, metrics)
        latent = self._require_latent()
        if self.layer is None:
            raise RuntimeError("begin_step(step, epoch) must be called before loss()")
        with latent.active(self.layer, self._noise_gen):
            out = model(x)
        logits, aux_loss, aux_metrics = self.split_auxiliary(out, aux_objective)
        raw, virtual = split_virtual(logits, b, self.m)
        ce = self.cross_entropy(raw, y)
        kl = soft_label_kl(raw, virtual, detach_teacher=self.options.detach_teacher)
        reg = self.options.eta * kl
        metrics: dict[str, float | Tensor] = {"sba_augmented": 1.0, "sba_kl": kl.detach(), "sba_reg": reg.detach(),
                                              "sba_ce": ce.detach(), **aux_metrics}
        return LossOutput(ce + reg + aux_loss, raw, y, metrics)

    # -- evaluation ------------------------------------------------------------------------------
    def virtual_predictions(self, model: nn.Module, inputs: Tensor, *, layer: str | None = None,
                            generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Raw ``(B, K)`` and virtual ``(B, M, K)`` logits of normalized ``inputs``, in one pass.

        In eval mode every row is independent, so the raw rows equal the plain model's prediction.
        """
        latent = self._require_latent()
        if generator is None:
            generator = torch.Generator(device=inputs.device).manual_seed(_stream_seed(self.seed, 1))
        with latent.active(layer or self.eval_layer, generator):
            out = model(inputs)
        return split_virtual(split_output(out)[0], inputs.shape[0], self.m)

    def predict(self, model: nn.Module, images: Tensor) -> Tensor:
        """Logits (``plain``) or log-probabilities (``mean``/``vote``) per ``options.inference``.

        The virtual copies come from a generator seeded afresh at every call, so a prediction is a
        deterministic function of the images and weights.
        """
        x = self.normalize(images)
        if self.options.inference == "plain":
            return model(x)
        raw, virtual = self.virtual_predictions(model, x)
        return aggregate_predictions(raw, virtual, self.options.inference)

    def eval_modes(self) -> dict[str, Predictor]:
        """``default`` (``options.inference``), ``plain`` (the raw prediction), and ``mean``/``vote``
        over the raw and M virtual predictions at ``eval_layer``."""
        return {"default": self.predict, "plain": lambda model, images: model(self.normalize(images)),
                "mean": self._aggregate_mode("mean"), "vote": self._aggregate_mode("vote")}

    def joint_predictor(self, names: Sequence[str]) -> JointPredictor:
        """``plain``, ``mean``, ``vote`` (and ``default``) from one pass with the virtual copies: in eval mode
        the raw rows of that pass are the plain prediction (up to float32 rounding of a larger batch)."""
        names = list(names)
        kinds = {name: (self.options.inference if name == "default" else name) for name in names}
        if any(k not in ("plain", "mean", "vote") for k in kinds.values()):
            return super().joint_predictor(names)
        if all(k == "plain" for k in kinds.values()):
            return lambda model, images: dict.fromkeys(names, model(self.normalize(images)))

        def predict(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
            raw, virtual = self.virtual_predictions(model, self.normalize(images))
            return {name: raw if k == "plain" else aggregate_predictions(raw, virtual, k) for name, k in kinds.items()}

        return predict

    def _aggregate_mode(self, how: str) -> Predictor:
        def predictor(model: nn.Module, images: Tensor) -> Tensor:
            raw, virtual = self.virtual_predictions(model, self.normalize(images))
            return aggregate_predictions(raw, virtual, how)

        return predictor

    def extra_val_predictions(self) -> dict[str, Any]:
        """With ``inference`` mean or vote, the plain prediction as ``plain`` (``val_acc_plain``): the paper
        reports the vote, and the plain accuracy is what a deployed single pass gets."""
        if self.options.inference == "plain":
            return {}
        return {"plain": lambda model, images: model(self.normalize(images))}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The seed and the current step's draws: plain Python values, loadable on any device (the
        generators are re-seeded per step, see ``__init__``)."""
        return {
            "seed": self.seed,
            "augmented": bool(self.augmented),
            "layer": self.layer,
            "lambda_epoch": self._lambda_epoch,
        }

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`. Checkpoints written before the per-step seeding also hold the
        generators' states (``sched_rng``, ``noise_rng``: 16 bytes from a CUDA generator, 5,056 from a
        CPU one); they are ignored, so such a run evaluates on any device, and a resumed one continues
        with the per-step streams."""
        if not state:
            return
        if "seed" in state:
            self.seed = int(state["seed"])
        self.augmented = bool(state.get("augmented", False))
        self.layer = state.get("layer")
        self._lambda_epoch = state.get("lambda_epoch")


def _stream_seed(seed: int, stream: int) -> int:
    """A distinct generator seed per (run seed, stream): scheduler 0, inference 1, noise of rank r 2 + r."""
    return (seed * 1_000_003 + stream) % (2**63)


def _step_seed(seed: int, stream: int, step: int) -> int:
    """The seed of ``stream`` at optimizer step ``step``."""
    return (_stream_seed(seed, stream) * 2**32 + step) % (2**63)


def _candidate_layers(model: nn.Module, limit: int = 4) -> str:
    """Names of the last few modules that look like feature outputs, for error messages."""
    kinds = (nn.Flatten, nn.AdaptiveAvgPool2d, nn.ReLU, nn.Dropout)
    names = [n for n, m in model.named_modules() if n and isinstance(m, kinds)]
    return ", ".join(repr(n) for n in names[-limit:]) or "'<module path>'"
