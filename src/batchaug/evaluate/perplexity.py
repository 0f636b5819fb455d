"""Perplexity of a language model over a token stream, with the hidden state carried across windows.

The stream is cut into ``batch_size`` contiguous columns (:func:`~batchaug.data.ptb.batchify`) and read
in windows of ``bptt`` tokens; each window starts from the state the previous one left, so every token
is predicted from everything before it in its column. The loss is the mean negative log-likelihood of
every predicted token (``exp`` of it is the perplexity). The AWD-LSTM's evaluation batch sizes are 10
(validation) and 1 (test) (salesforce/awd-lstm-lm ``main.py``: ``eval_batch_size = 10``,
``test_batch_size = 1``); the reference divides the summed loss by the number of rows rather than of
predicted tokens (one more per column), a difference of 1/rows (1e-5 relative on PTB's test set).

- :func:`stream_perplexity`: the loop, for any model and method with ``init_state`` and
  ``predict_window`` (:func:`evaluates_perplexity`);
- :class:`PerplexityValidation`: the trainer's validation for language models (``val_loss``,
  ``val_ppl``; ``best.pt`` at the lowest ``val_ppl``);
- :func:`evaluate_run_perplexity`: perplexity of a trained run directory's checkpoint on its corpus's
  splits — what ``batchaug eval RUN`` writes to ``RUN/eval/perplexity.json`` for language-model runs
  and what training computes at its end for ``summary.json``'s ``test_ppl``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from batchaug.data.ptb import batchify, get_batch
from batchaug.errors import ConfigError, DataError
from batchaug.train import distributed as dist_utils

__all__ = ["PerplexityValidation", "evaluate_run_perplexity", "evaluates_perplexity", "stream_perplexity"]


def evaluates_perplexity(method_class: type) -> bool:
    """Whether a method class evaluates by perplexity over a stream (has ``init_state`` and ``predict_window``)."""
    return all(callable(getattr(method_class, name, None)) for name in ("init_state", "predict_window"))


@torch.no_grad()
def stream_perplexity(model: nn.Module, method: Any, columns: Tensor, bptt: int, *,
                      autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                      rank: int = 0, world: int = 1) -> dict[str, float]:
    """Mean next-token loss, perplexity and token count of ``model`` over ``columns`` (T, B), a batchified
    stream on the model's device, in windows of ``bptt``; under ``torchrun`` each rank reads columns
    ``rank::world`` and the sums are all-reduced. ``model`` is put in eval mode."""
    if bptt < 1:
        raise ConfigError(f"data.bptt: must be >= 1, got {bptt}")
    model.eval()
    data = columns[:, rank::world] if world > 1 else columns
    sums = torch.zeros(2, dtype=torch.float64, device=columns.device)  # summed NLL, tokens: one sync at the end
    if data.shape[1] > 0 and data.shape[0] > 1:
        state = method.init_state(model, int(data.shape[1]), data.device)
        for i in range(0, data.shape[0] - 1, bptt):
            x, y = get_batch(data, i, bptt)  # (L, B) time-major; the model reads (B, L)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits, state = method.predict_window(model, x.t().contiguous(), state)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.t().reshape(-1), reduction="sum")
            sums += torch.stack([nll.double(), torch.tensor(float(y.numel()), dtype=torch.float64, device=y.device)])
    total = dist_utils.all_reduce_sum(sums) if world > 1 else sums
    nll_sum, tokens = total.tolist()
    if tokens == 0:
        raise DataError(f"no tokens to evaluate: a stream of {columns.shape[0]} rows in {columns.shape[1]} columns")
    loss = nll_sum / tokens
    return {"loss": loss, "ppl": math.exp(loss), "tokens": int(tokens)}


class PerplexityValidation:
    """The trainer's validation of a language model: ``val_loss`` and ``val_ppl`` over the stream ``ids``
    in ``batch_size`` columns and windows of ``bptt`` (``best.pt`` follows the lowest ``val_ppl``)."""

    selection = ("val_ppl", "min")

    def __init__(self, ids: Tensor, batch_size: int, bptt: int, device: torch.device | str) -> None:
        if len(ids) < 2 * batch_size:
            raise ConfigError(f"eval.batch_size: {batch_size} columns need at least {2 * batch_size} validation "
                              f"tokens; the split has {len(ids)} (data.val_subset)")
        self.columns = batchify(ids, batch_size).to(device)
        self.bptt = int(bptt)

    def __call__(self, model: nn.Module, method: Any, *, device: torch.device,
                 autocast: Callable[[], contextlib.AbstractContextManager], test: bool = True) -> dict[str, float]:
        r = stream_perplexity(model, method, self.columns, self.bptt, autocast=autocast, rank=dist_utils.rank(),
                              world=dist_utils.world_size())
        return {"val_loss": r["loss"], "val_ppl": r["ppl"]}


def evaluate_run_perplexity(run_dir: str | Path, checkpoint: str = "best", device: str = "auto", *,
                            splits: Sequence[str] = ("valid", "test"),
                            batch_sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """Perplexity of a language-model run's checkpoint (``best``, ``last`` or a path) on ``splits`` of its
    corpus (the whole splits: ``data.val_subset`` limits validation during training only).

    The weights are those that stood for the model at that checkpoint (NT-ASGD's average once it ran,
    ``eval_model``; else the model's). Batch sizes: ``batch_sizes[split]``, else ``eval.test_batch_size``
    for ``test`` and ``eval.batch_size`` for the others. Returns the ``eval/perplexity.json`` payload:
    ``{"suite": "perplexity", "limit": None, "modes": {"plain": {split: {loss, ppl, tokens,
    batch_size}}}, ...}`` plus the run directory, checkpoint, step and which weights were used.
    """
    from batchaug.evaluate.loading import checkpoint_path
    from batchaug.nn.wrappers import clean_state_dict
    from batchaug.train.checkpoint import load_checkpoint
    from batchaug.train.lm_run import build_lm, load_text_corpus
    from batchaug.train.run import load_run_config, resolve_device

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if not evaluates_perplexity(cfg.method.method_class):
        raise ConfigError(f"{run_dir}: method {cfg.method.name!r} on {cfg.modality} is not a language-model method")
    path = checkpoint_path(run_dir, checkpoint)
    dev = resolve_device(device if device != "auto" else cfg.train.device)
    ckpt = load_checkpoint(path, map_location=dev)
    corpus = load_text_corpus(cfg)
    saved_vocab = ckpt.get("vocab")
    if saved_vocab is not None and list(saved_vocab) != list(corpus.vocab.itos):
        raise DataError(f"{cfg.data.root or cfg.data.kind}: its vocabulary ({len(corpus.vocab)} words) is not the one "
                        f"{run_dir} was trained with ({len(saved_vocab)} words); evaluate on the training corpus")
    model, method = build_lm(cfg, len(corpus.vocab), dev)
    weights = ckpt.get("eval_model")
    model.load_state_dict(clean_state_dict(weights if weights is not None else ckpt["model"]))
    model.eval()
    results = {}
    for split in splits:
        size = (batch_sizes or {}).get(split) or (cfg.eval.test_batch_size if split == "test" else cfg.eval.batch_size)
        ids = corpus[split]
        if len(ids) < 2 * size:
            raise ConfigError(f"{split}: {size} columns need at least {2 * size} tokens; the split has {len(ids)}")
        r = stream_perplexity(model, method, batchify(ids, size).to(dev), cfg.data.bptt)
        results[split] = {**r, "batch_size": size}
    return {"suite": "perplexity", "run_dir": str(run_dir), "checkpoint": path.name, "step": int(ckpt.get("step", 0)),
            "weights": "eval_model" if weights is not None else "model", "bptt": cfg.data.bptt,
            "limit": None, "modes": {"plain": results}}
