"""The split BatchNorm layers: :class:`SplitBatchNorm` and its rank-checking 1d/2d/3d versions.

Each layer holds ``num_splits`` sets of statistics (and γ/β) and normalizes its input as its ``route``
says (read with :func:`.route_spec._parse_route`); see the package docstring for the routes and the
parameter names.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.nn.bn_utils import fold_batch_norm
from batchaug.nn.split_bn.route_spec import Route, _parse_route
from batchaug.nn.split_bn.sync import accumulation_dtype, synced_moments

_POST_CHILDREN = ("drop", "act")  # applied after the norm, as in timm's BatchNormAct2d: norm -> drop -> act


def _key(name: str, k: int) -> str:
    """State-dict name of split ``k``'s tensor ``name``: nn.BatchNorm's name for split 0, ``aux{k}_name`` after."""
    return name if k == 0 else f"aux{k}_{name}"


class SplitBatchNorm(nn.Module):
    """BatchNorm with ``num_splits`` sets of statistics (and γ/β unless ``shared_affine``).

    Accepts inputs of shape (N, C, ...); :class:`SplitBatchNorm1d`/``2d``/``3d`` check the rank like
    their ``nn.BatchNorm`` counterparts. With ``sync=True`` the batch statistics of each split are
    all-reduced over ``process_group`` (the default group when None) whenever ``torch.distributed`` is
    initialized with more than one process, as :class:`torch.nn.SyncBatchNorm` does for one split.
    """

    _batchaug_bn = True  # a BatchNorm to batchaug.nn.bn_utils.is_batch_norm (frozen_bn_stats, no-decay rule)
    _template: nn.Module | None

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, num_splits: int = 2, shared_affine: bool = False,
                 sync: bool = False, process_group: Any = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if int(num_splits) != num_splits or num_splits < 2:
            raise ValueError(f"num_splits must be an integer >= 2 (a main and at least one auxiliary BN), "
                             f"got {num_splits!r}")
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)
        self.num_splits = int(num_splits)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        self.shared_affine = bool(shared_affine) and self.affine
        self.sync = bool(sync)
        self.process_group = process_group
        self.route: Route = None
        for k in range(self.num_splits):
            if self.affine and (k == 0 or not self.shared_affine):
                self.register_parameter(_key("weight", k),
                                        nn.Parameter(torch.ones(num_features, device=device, dtype=dtype)))
                self.register_parameter(_key("bias", k),
                                        nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype)))
            if self.track_running_stats:
                self.register_buffer(_key("running_mean", k), torch.zeros(num_features, device=device, dtype=dtype))
                self.register_buffer(_key("running_var", k), torch.ones(num_features, device=device, dtype=dtype))
                self.register_buffer(_key("num_batches_tracked", k),
                                     torch.tensor(0, dtype=torch.long, device=device))
        # Set by convert_split_bn from timm's BatchNormAct2d (dropout then activation after the norm).
        self.drop: nn.Module | None = None
        self.act: nn.Module | None = None
        # The layer this one was converted from, kept unregistered (not a submodule, not in the state
        # dict) so that export gives back its class, e.g. timm's BatchNormAct2d with its activation.
        object.__setattr__(self, "_template", None)

    # ------------------------------------------------------------------------------ accessors
    def weight_of(self, k: int) -> Tensor | None:
        """γ of split ``k`` (the shared γ when ``shared_affine``); None without affine."""
        return getattr(self, _key("weight", 0 if self.shared_affine else k)) if self.affine else None

    def bias_of(self, k: int) -> Tensor | None:
        """β of split ``k`` (the shared β when ``shared_affine``); None without affine."""
        return getattr(self, _key("bias", 0 if self.shared_affine else k)) if self.affine else None

    def running_stats_of(self, k: int) -> tuple[Tensor | None, Tensor | None]:
        """(running mean, running variance) of split ``k``; (None, None) without running statistics."""
        if not self.track_running_stats:
            return None, None
        return getattr(self, _key("running_mean", k)), getattr(self, _key("running_var", k))

    def _tracked_stats(self, k: int) -> tuple[Tensor, Tensor]:
        mean, var = self.running_stats_of(k)
        if mean is None or var is None:
            raise RuntimeError(f"{type(self).__name__}: no running statistics (track_running_stats=False)")
        return mean, var

    def extra_repr(self) -> str:
        s = (f"{self.num_features}, num_splits={self.num_splits}, eps={self.eps}, momentum={self.momentum}, "
             f"affine={self.affine}, track_running_stats={self.track_running_stats}")
        if self.shared_affine:
            s += ", shared_affine=True"
        if self.sync:
            s += ", sync=True"
        return s

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"{type(self).__name__}: expected an input of shape (N, C, ...), got {x.dim()}D")

    # ------------------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: input has {x.shape[1]} channels, "
                             f"the layer {self.num_features}")
        kind, k, alpha = _parse_route(self.route, self.num_splits, self.training)
        if kind == "split":
            y = self._forward_split(x)
        elif kind == "branch":
            y = self._forward_branches([x], [k])[0]
        else:
            y = self._forward_blend(x, alpha, affine_blend=kind == "blend_affine")
        if self.drop is not None:
            y = self.drop(y)
        if self.act is not None:
            y = self.act(y)
        return y

    def _forward_split(self, x: Tensor) -> Tensor:
        n, s = x.shape[0], self.num_splits
        if n % s:
            raise ValueError(
                f"{type(self).__name__} (route 'split'): a batch of {n} rows cannot be cut into {s} equal "
                f"splits; feed cat([main_batch, aux_batch]) of equal sizes, or route the whole batch through "
                f"one branch with batchaug.nn.route(model, 'main')")
        return torch.cat(self._forward_branches(list(x.split(n // s)), list(range(s))))

    def _use_batch_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _sync_active(self) -> bool:
        if not (self.sync and self._use_batch_stats() and dist.is_available() and dist.is_initialized()):
            return False
        return dist.get_world_size(self.process_group) > 1

    def _momentum(self, k: int) -> float | Tensor:
        """Running-average factor for split ``k``, counting the update (as ``nn.BatchNorm`` does). With
        ``momentum=None`` (a cumulative average) it is ``1 / num_batches_tracked`` as a 0-d tensor on the
        layer's device: ``nn.BatchNorm`` reads the count back to the host at every step instead."""
        nbt = getattr(self, _key("num_batches_tracked", k))
        nbt.add_(1)
        if self.momentum is None:
            return (1.0 / nbt).to(self._tracked_stats(k)[0].dtype)
        return float(self.momentum)

    @torch.no_grad()
    def _update_running(self, k: int, part: Tensor, factor: Tensor) -> None:
        """Move split ``k``'s running statistics towards ``part``'s batch statistics by ``factor``."""
        run_mean, run_var = self._tracked_stats(k)
        dims = [0, *range(2, part.dim())]
        var, mean = torch.var_mean(part.to(accumulation_dtype(part.dtype)), dim=dims, correction=1)
        run_mean.lerp_(mean.to(run_mean.dtype), factor)
        run_var.lerp_(var.to(run_var.dtype), factor)

    def _forward_branches(self, parts: list[Tensor], splits: list[int]) -> list[Tensor]:
        """Normalize ``parts[i]`` with split ``splits[i]`` (one F.batch_norm per part: S is small)."""
        if self._sync_active():
            return self._forward_synced(parts, splits)
        update = self.training and self.track_running_stats
        outs = []
        for part, k in zip(parts, splits, strict=True):
            mean, var = self.running_stats_of(k)
            factor = self._momentum(k) if update else 0.0
            if isinstance(factor, Tensor):  # F.batch_norm takes a float momentum: update the averages here
                self._update_running(k, part, factor)
                mean = var = None
                factor = 0.0
            outs.append(F.batch_norm(part, mean, var, self.weight_of(k), self.bias_of(k),
                                     self._use_batch_stats(), factor, self.eps))
        return outs

    def _forward_synced(self, parts: list[Tensor], splits: list[int]) -> list[Tensor]:
        """Normalize every part with its split's batch statistics summed over all processes.

        The statistics come from :func:`.sync.synced_moments` (one autograd-aware all_reduce, so every
        process gets the gradient of the global objective, as with ``nn.SyncBatchNorm``). Sums are
        taken in float32 (or float64 for float64 inputs).
        """
        acc = accumulation_dtype(parts[0].dtype)
        xfs = [part.to(acc) for part in parts]
        moments = synced_moments(xfs, self.process_group)
        c = self.num_features
        outs = []
        for part, xf, k, (mean, var, total) in zip(parts, xfs, splits, moments, strict=True):
            if self.training and self.track_running_stats:
                factor = self._momentum(k)
                run_mean, run_var = self._tracked_stats(k)
                with torch.no_grad():
                    unbiased = var * (total / (total - 1).clamp_min(1))
                    run_mean.lerp_(mean.detach().to(run_mean.dtype), factor)
                    run_var.lerp_(unbiased.detach().to(run_var.dtype), factor)
            shape = [1, c] + [1] * (part.dim() - 2)
            w, b = self.weight_of(k), self.bias_of(k)
            scale, shift = fold_batch_norm(None if w is None else w.to(acc), None if b is None else b.to(acc),
                                           mean, var, self.eps)
            outs.append((xf * scale.view(shape) + shift.view(shape)).to(part.dtype))
        return outs

    def _blended(self, alpha: float) -> tuple[Tensor | None, ...]:
        """(γ, β, μ, σ²) interpolated between split 0 and split 1."""
        def lerp(a: Tensor | None, b: Tensor | None) -> Tensor | None:
            return None if a is None or b is None else torch.lerp(a, b, alpha)

        (m0, v0), (m1, v1) = self.running_stats_of(0), self.running_stats_of(1)
        return (lerp(self.weight_of(0), self.weight_of(1)), lerp(self.bias_of(0), self.bias_of(1)),
                lerp(m0, m1), lerp(v0, v1))

    def _forward_blend(self, x: Tensor, alpha: float, affine_blend: bool) -> Tensor:
        weight, bias, mean, var = self._blended(alpha)
        if self._use_batch_stats():
            # Batch statistics are the same for both branches: only γ/β differ, nothing is tracked.
            if self._sync_active():
                raise RuntimeError(f"{type(self).__name__}: blend routes use local batch statistics; "
                                   f"synchronized training through a blend is not supported")
            return F.batch_norm(x, None, None, weight, bias, True, 0.0, self.eps)
        if not affine_blend:
            return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)
        scale, shift = self._blended_folded(alpha)
        shape = [1, self.num_features] + [1] * (x.dim() - 2)
        return (x * scale.view(shape).to(x.dtype) + shift.view(shape).to(x.dtype))

    def _blended_folded(self, alpha: float) -> tuple[Tensor, Tensor]:
        """The folded (scale, shift) interpolated between split 0 and split 1."""
        (s0, b0), (s1, b1) = self.folded_affine(0), self.folded_affine(1)
        return torch.lerp(s0, s1, alpha), torch.lerp(b0, b1, alpha)

    def folded_affine(self, k: int) -> tuple[Tensor, Tensor]:
        """Split ``k``'s eval-mode transform as per-channel (scale, shift): ``y = x·scale + shift``."""
        mean, var = self._tracked_stats(k)
        return fold_batch_norm(self.weight_of(k), self.bias_of(k), mean, var, self.eps)



class SplitBatchNorm1d(SplitBatchNorm):
    """Split BatchNorm over (N, C) or (N, C, L) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3):
            raise ValueError(f"SplitBatchNorm1d: expected 2D or 3D input (got {x.dim()}D input)")


class SplitBatchNorm2d(SplitBatchNorm):
    """Split BatchNorm over (N, C, H, W) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"SplitBatchNorm2d: expected 4D input (got {x.dim()}D input)")


class SplitBatchNorm3d(SplitBatchNorm):
    """Split BatchNorm over (N, C, D, H, W) inputs."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"SplitBatchNorm3d: expected 5D input (got {x.dim()}D input)")

