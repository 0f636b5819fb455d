"""Latent augmentation: virtual samples made inside a network, at a named layer, in the same pass.

Stochastic Batch Augmentation (Li et al. 2020) runs a batch to an eligible layer ``k``, makes ``M``
virtual copies of every hidden vector there and runs the rest of the network on all of them at once.
This module holds the tensor functions that make the copies and :class:`LatentAugmenter`, which does
it to any ``nn.Module`` with a forward hook on module ``k``: while the hook is active, the layer's
output ``X`` (``B`` rows) is replaced by ``[X; V_g; V_d]`` (``B·(1+M)`` rows), so everything downstream
sees the larger batch and the model returns ``B·(1+M)`` rows of logits.

Row order (the contract :func:`split_virtual` undoes): the ``B`` raw rows first, then the copies
*copy-major*: row ``B·(1 + j) + i`` is copy ``j`` of sample ``i``. Copies ``0 .. p-1`` are Gaussian,
copies ``p .. M-1`` are dropout copies.

* **Gaussian copies** ``x + Σ·clip(ε, τ)``: ``ε ~ N(0, σ²I)`` clamped elementwise to ``[-τ, τ]``, one
  draw per copy and sample; ``Σ`` a random normalized basis (i.i.d. normal entries, every column scaled
  to unit L2 norm), one per call, shared by all copies. Unit columns keep the per-coordinate noise
  variance at about σ² whatever the width, so σ means the same at every layer.
* **Dropout copies** ``B_i ⊙ x / (1 - r)``: Bernoulli keep-masks with drop rate ``r``, one per copy and
  sample, rescaled like inverted dropout so a copy's expected value is ``x`` (the Gaussian copies are
  centred on ``x`` too; without the rescaling the dropout copies would shift every downstream
  activation and the soft-label term would mostly measure that shift).
* **Convolutional maps** (structured alternative to a dense ``Q×Q`` basis, ``Q = C·H·W``): ``Σ`` is a
  ``C×C`` basis that mixes channels, the same at every position (a random 1×1 convolution of the
  noise). Noise stays correlated across features along random directions, as with the dense basis, at
  the cost of a 1×1 convolution instead of a ``(CHW)²`` matrix. In general the basis acts on dimension
  1 of any output with two or more dimensions; a ``(B, Q)`` vector is the dense case.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from batchaug.errors import ConfigError

__all__ = [
    "LatentAugmenter",
    "clipped_gaussian",
    "dropout_copies",
    "gaussian_copies",
    "make_virtual",
    "random_normalized_basis",
    "split_virtual",
]


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(f"the generator is on {generator.device} but the features are on {device}; "
                         "create the generator on the features' device")


def random_normalized_basis(q: int, *, generator: torch.Generator | None = None,
                            device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """A random ``(q, q)`` matrix whose columns have unit L2 norm (i.i.d. normal entries, column-normalized).

    Random directions rather than an orthonormal basis: a QR factorization per augmented step would cost
    ``O(q³)`` (4096-wide FC layers), while normalized Gaussian columns are already nearly orthogonal in
    high dimension and cost ``O(q²)``.
    """
    if q < 1:
        raise ValueError(f"basis size must be >= 1, got {q}")
    device = torch.device("cpu") if device is None else torch.device(device)
    _check_generator(generator, device)
    basis = torch.randn(q, q, generator=generator, device=device, dtype=torch.float32)
    basis = basis / basis.norm(dim=0, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return basis.to(dtype)


def clipped_gaussian(shape: Sequence[int], sigma: float, tau: float, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``clip(ε, τ)`` with ``ε ~ N(0, σ²)`` elementwise: normal noise clamped to ``[-τ, τ]``."""
    if sigma < 0 or tau <= 0:
        raise ValueError(f"need sigma >= 0 and tau > 0, got sigma={sigma}, tau={tau}")
    device = torch.device("cpu") if device is None else torch.device(device)
    _check_generator(generator, device)
    eps = torch.randn(tuple(shape), generator=generator, device=device, dtype=torch.float32)
    return eps.mul_(sigma).clamp_(-tau, tau).to(dtype)


def gaussian_copies(x: Tensor, copies: int, sigma: float, tau: float, *,
                    generator: torch.Generator | None = None, basis: Tensor | None = None) -> Tensor:
    """``copies`` Gaussian virtual copies of ``x`` (``(B, F, ...)``), copy-major: ``(copies·B, F, ...)``.

    Copy ``j`` of sample ``i`` is ``x_i + Σ·clip(ε_ij, τ)``, with ``Σ`` mixing dimension 1 (drawn with
    :func:`random_normalized_basis` unless ``basis`` is given).
    """
    if x.dim() < 2:
        raise ValueError(f"features must have a batch and a feature dimension, got shape {tuple(x.shape)}")
    if copies == 0:
        return x.new_empty((0, *x.shape[1:]))
    width = x.shape[1]
    if basis is None:
        basis = random_normalized_basis(width, generator=generator, device=x.device)
    elif basis.shape != (width, width):
        raise ValueError(f"basis must be ({width}, {width}) for features of width {width}, got {tuple(basis.shape)}")
    eps = clipped_gaussian((copies * x.shape[0], *x.shape[1:]), sigma, tau, generator=generator, device=x.device)
    # Σ·ε for every position: move the feature axis last so the product is one GEMM.
    noise = (eps.movedim(1, -1) @ basis.to(eps.dtype).T).movedim(-1, 1)
    base = x.unsqueeze(0).expand(copies, *x.shape).reshape(copies * x.shape[0], *x.shape[1:])
    return base + noise.to(x.dtype)


def dropout_copies(x: Tensor, copies: int, drop: float, *, generator: torch.Generator | None = None) -> Tensor:
    """``copies`` dropout virtual copies ``B_ij ⊙ x_i / (1 - drop)``, copy-major: ``(copies·B, F, ...)``."""
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop rate must be in [0, 1), got {drop}")
    if copies == 0:
        return x.new_empty((0, *x.shape[1:]))
    _check_generator(generator, x.device)
    shape = (copies, *x.shape)
    keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(1.0 - drop, generator=generator)
    return (x.unsqueeze(0) * keep).div_(1.0 - drop).reshape(copies * x.shape[0], *x.shape[1:])


def make_virtual(x: Tensor, gauss: int, drop_copies: int, *, sigma: float, tau: float, drop: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """``[V_g; V_d]``: ``gauss`` Gaussian then ``drop_copies`` dropout copies of ``x``, copy-major."""
    return torch.cat([
        gaussian_copies(x, gauss, sigma, tau, generator=generator),
        dropout_copies(x, drop_copies, drop, generator=generator),
    ])


def _eager(fn: Callable) -> Callable:
    """``fn`` excluded from ``torch.compile`` (traced around, run eagerly): its decisions read Python
    state that changes between calls, and it draws from explicit generators, which dynamo cannot trace."""
    disable = getattr(torch.compiler, "disable", None) or torch._dynamo.disable
    return disable(fn)


def split_virtual(out: Tensor, batch_size: int, m: int) -> tuple[Tensor, Tensor]:
    """Undo the row order of an augmented pass: ``(B·(1+M), ...)`` -> raw ``(B, ...)``, virtual ``(B, M, ...)``."""
    if out.shape[0] != batch_size * (1 + m):
        raise ValueError(f"expected {batch_size}·(1+{m}) = {batch_size * (1 + m)} rows, got {out.shape[0]}")
    raw = out[:batch_size]
    virtual = out[batch_size:].unflatten(0, (m, batch_size)).transpose(0, 1)
    return raw, virtual


class LatentAugmenter:
    """Adds virtual samples at one of a model's named layers, for the duration of a ``with`` block.

    Args:
        model: the network (the unwrapped module; a DDP or compiled wrapper around it still works, since
            the hooks live on the submodules).
        layers: the eligible layers ``S``: keys of ``model.named_modules()`` whose output is a tensor
            ``(B, F, ...)`` that alone feeds the rest of the network.
        gauss: Gaussian copies ``p``; ``drop_copies``: dropout copies ``q``; ``M = p + q``.
        sigma, tau: noise scale and clipping bound of the Gaussian copies.
        drop: drop rate of the dropout copies.

    Example::

        aug = LatentAugmenter(model, ["features_out"], gauss=4, drop_copies=4, sigma=0.1, tau=0.2, drop=0.2)
        with aug.active("features_out", generator):
            logits = model(x)                      # (B·9, classes)
        raw, virtual = split_virtual(logits, x.shape[0], aug.m)
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, gauss: int, drop_copies: int,
                 sigma: float, tau: float, drop: float) -> None:
        if gauss < 0 or drop_copies < 0 or gauss + drop_copies < 1:
            raise ConfigError(f"need at least one virtual copy, got {gauss} Gaussian and {drop_copies} dropout copies")
        if not layers:
            raise ConfigError("no eligible layers given")
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules or name == ""]
        if missing:
            close = difflib.get_close_matches(missing[0], [n for n in modules if n], n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ConfigError(f"layer {missing[0]!r} is not a module of {type(model).__name__}{hint} "
                              "(names are keys of model.named_modules(), e.g. 'features_out' or 'classifier.1')")
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self._modules = {name: modules[name] for name in self.layers}
        self.gauss, self.drop_copies = int(gauss), int(drop_copies)
        self.sigma, self.tau, self.drop = float(sigma), float(tau), float(drop)
        self._calls = 0
        self._current: str | None = None
        self._generator: torch.Generator | None = None
        # The hooks are registered once and stay: they do nothing unless `active` names their layer.
        # Adding and removing hooks per step would be invisible to torch.compile, which does not guard on
        # module hooks (torch._dynamo.config.skip_nnmodule_hook_guards): a compiled model would keep
        # running the graph traced with the hooks of an earlier step. The hooks are excluded from
        # compilation (one graph break at each eligible layer), so the check runs eagerly every time.
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(_eager(self._reset))]
        self._handles += [module.register_forward_hook(_eager(self._make_hook(name)))
                          for name, module in self._modules.items()]

    @property
    def m(self) -> int:
        """Virtual copies per sample, ``M = p + q``."""
        return self.gauss + self.drop_copies

    @contextlib.contextmanager
    def active(self, layer: str, generator: torch.Generator | None = None) -> Iterator[LatentAugmenter]:
        """Within the block, every forward pass of the model adds the virtual copies at ``layer``.

        Outside it the hooks return at once (a Python call per eligible layer and pass). ``generator``
        (on the features' device) drives Σ, ε and the masks.
        """
        if layer not in self._modules:
            raise ConfigError(f"layer {layer!r} is not one of the eligible layers {list(self.layers)}")
        if self._current is not None:
            raise RuntimeError(f"latent augmentation is already active at {self._current!r}")
        self._current, self._generator = layer, generator
        try:
            yield self
        finally:
            self._current, self._generator = None, None

    def remove(self) -> None:
        """Detach the hooks from the model for good (the augmenter is unusable afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _reset(self, module: nn.Module, args: object) -> None:
        self._calls = 0

    def _make_hook(self, layer: str) -> Callable[[nn.Module, object, object], Tensor | None]:
        def hook(module: nn.Module, args: object, output: object) -> Tensor | None:
            if self._current != layer:
                return None
            generator = self._generator
            self._calls += 1
            if self._calls > 1:
                raise RuntimeError(f"layer {layer!r} ran more than once in one forward pass; latent augmentation "
                                   "needs a layer that runs once (choose another layer)")
            if not isinstance(output, Tensor) or output.dim() < 2:
                what = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
                raise RuntimeError(f"layer {layer!r} outputs {what}; latent augmentation needs a (B, F, ...) tensor")
            virtual = make_virtual(output, self.gauss, self.drop_copies, sigma=self.sigma, tau=self.tau,
                                   drop=self.drop, generator=generator)
            return torch.cat([output, virtual])

        return hook

    @torch.no_grad()
    def probe(self, example: Tensor) -> dict[str, tuple[int, ...]]:
        """Check every eligible layer on ``example`` inputs; returns each layer's per-sample output shape.

        Runs the model in eval mode (no statistics change) once per layer with the augmentation active and
        raises :class:`ConfigError` naming the layer when it never runs, runs twice, outputs something
        other than a ``(B, F, ...)`` tensor, or when the network downstream cannot take the larger batch
        (e.g. a residual that adds a tensor computed before the layer).
        """
        shapes: dict[str, tuple[int, ...]] = {}
        was_training = self.model.training
        self.model.eval()
        try:
            try:
                self.model(example)
            except RuntimeError as exc:  # not the layer's fault: say so rather than blame the layer
                raise ConfigError(f"the model does not run on inputs of shape {tuple(example.shape)}: {exc}") from exc
            for layer in self.layers:
                seen: list[tuple[int, ...]] = []

                def grab_shape(mod: nn.Module, args: object, out: object, seen: list = seen) -> None:
                    if isinstance(out, Tensor):
                        seen.append(tuple(out.shape[1:]))

                grab = self._modules[layer].register_forward_hook(grab_shape)
                try:
                    with self.active(layer, torch.Generator(device=example.device).manual_seed(0)):
                        out = self.model(example)
                except RuntimeError as exc:
                    raise ConfigError(f"cannot add virtual samples at layer {layer!r}: {exc}") from exc
                finally:
                    grab.remove()
                if self._calls == 0:
                    raise ConfigError(f"layer {layer!r} is not used by the model's forward pass")
                b = example.shape[0]
                if not isinstance(out, Tensor) or out.shape[0] != b * (1 + self.m):
                    rows = out.shape[0] if isinstance(out, Tensor) else type(out).__name__
                    raise ConfigError(f"cannot add virtual samples at layer {layer!r}: the model returned {rows} rows "
                                      f"instead of {b}·(1+{self.m}); the layer's output must alone feed the rest "
                                      "of the network (e.g. pooled features or a fully connected layer)")
                shapes[layer] = seen[0]
        finally:
            self.model.train(was_training)
        return shapes
