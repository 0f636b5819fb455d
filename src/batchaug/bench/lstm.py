"""Language-model training step: tokens/s of BA with M = 1 and M = 10 against a plain nn.LSTM step.

  batchaug bench lstm [--device cpu|cuda] [--batch 20] [--bptt 35] [--m 1 10] [--json]

The model is configs/quick/ptb_lstm.yaml's (a 2-layer AWD-LSTM of 256 units, tied 256-d embedding,
10,000 words) unless --paper picks the PTB AWD-LSTM (3 layers, 1150 units). For every M it times, in
one run and round by round alternately:

- ``batchaug``: one training step through the trainer (the window of the step, every dropout mask of
  the M copies drawn from the step's generator, the weight-dropped model with the state carried,
  cross-entropy + AR/TAR, backward, clipping to 0.25, the SGD update) on B·M rows;
- ``plain``: embedding -> ``nn.LSTM`` -> tied decoder -> cross-entropy, backward, ``clip_grad_norm_``,
  SGD, on the same B·M rows and length, without dropout (the fused kernel; cuDNN on a GPU).

Windows have the fixed length ``--bptt`` so both sides see the same shapes. Reported per M: step time,
tokens/s over all B·M rows (``row_tokens_per_s``) and over the B distinct rows (``tokens_per_s``),
``over_plain`` (batchaug's step time / plain's at the same rows; the cost of weight drop and of the
masks), and ``cost_per_copy`` (the M-copy step's time / (M x the M = 1 step's)): at most 1 when the
copies run as one batch and not as M passes. Times are medians of per-round values.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from batchaug.bench.timing import alternate

QUICK_MODEL = {"emb_size": 256, "hidden_size": 256, "num_layers": 2, "dropout_input": 0.25, "dropout_hidden": 0.1,
               "dropout_output": 0.25, "dropout_embed": 0.05, "weight_drop": 0.25}
"""configs/quick/ptb_lstm.yaml's model.kwargs (tests/test_lstm_bench.py checks they agree)."""
PAPER_MODEL = {"emb_size": 400, "hidden_size": 1150, "num_layers": 3}
VOCAB = 10_000


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=20, help="distinct rows per step (B)")
    parser.add_argument("--bptt", type=int, default=35, help="window length")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 10], help="copies per row to time")
    parser.add_argument("--paper", action="store_true", help="the PTB AWD-LSTM (3 x 1150) instead of the quick model")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (one step of each contender)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (B=4, bptt 8, M=1/2, 1 repeat)")


def _stream(n: int) -> torch.Tensor:
    """Real PTB training tokens when the shared corpus is found, else random ids (the cost is the same)."""
    try:
        from batchaug.data.ptb import load_ptb

        ids = load_ptb()["train"]
        if len(ids) >= n:
            return ids[:n].clone()
    except Exception:  # benchmarks must run anywhere
        pass
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(0))


def _batchaug_step(kwargs: dict[str, Any], m: int, batch: int, bptt: int, device: torch.device) -> Callable[[], None]:
    from batchaug.config import OptimConfig
    from batchaug.data.token_batches import TokenBatches
    from batchaug.evaluate.perplexity import PerplexityValidation
    from batchaug.methods import MethodContext, build_method
    from batchaug.models import build_model
    from batchaug.train.callbacks.clip import ClipGradNorm
    from batchaug.train.optim import LRSchedule, build_optimizer
    from batchaug.train.trainer import Trainer, TrainerSettings

    ids = _stream(batch * (bptt * 50 + 2))
    batches = TokenBatches(ids, batch, bptt, seed=0, variable=False, device=device)
    method = build_method({"name": "ba", "m": m}, MethodContext(num_classes=VOCAB, device=device), modality="tokens")
    torch.manual_seed(0)
    model = method.prepare_model(build_model("awd_lstm", num_classes=VOCAB, **kwargs)).to(device)
    ocfg = OptimConfig(lr=30.0, momentum=0.0, weight_decay=1.2e-6, schedule="constant")
    settings = TrainerSettings(batch_size=batch, total_steps=10**9, steps_per_epoch=batches.steps_per_epoch,
                               eval_every=10**9, progress=False)
    trainer = Trainer(model, method, build_optimizer(model, ocfg, 30.0), LRSchedule(ocfg, 30.0, 1, 10**9), settings,
                      None, None, None, None, device, callbacks=[ClipGradNorm(0.25)], batches=batches,
                      validation=PerplexityValidation(ids[:1000], 2, bptt, device))
    counter = iter(range(10**9))
    return lambda: trainer.train_step(next(counter))


class _PlainLM(nn.Module):
    def __init__(self, emb: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(VOCAB, emb)
        self.rnns = nn.ModuleList(nn.LSTM(emb if i == 0 else hidden, emb if i == layers - 1 else hidden)
                                  for i in range(layers))
        self.decoder = nn.Linear(emb, VOCAB)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.encoder(tokens.t())
        for rnn in self.rnns:
            x, _ = rnn(x)
        return self.decoder(x.transpose(0, 1))


def _plain_step(kwargs: dict[str, Any], rows: int, bptt: int, device: torch.device) -> Callable[[], None]:
    torch.manual_seed(0)
    model = _PlainLM(kwargs["emb_size"], kwargs["hidden_size"], kwargs["num_layers"]).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=30.0, weight_decay=1.2e-6)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (rows, bptt), generator=g).to(device)
    y = torch.randint(0, VOCAB, (rows, bptt), generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    return step


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    batch, bptt, ms, repeats = (4, 8, [1, 2], 1) if args.quick else (args.batch, args.bptt, args.m, args.repeats)
    kwargs = {**QUICK_MODEL, **(PAPER_MODEL if args.paper else {})}
    if args.paper:
        kwargs.update(dropout_input=0.4, dropout_hidden=0.25, dropout_output=0.4, dropout_embed=0.1, weight_drop=0.5)
    rows_out: list[dict[str, Any]] = []
    for m in ms:
        ours, plain = alternate((_batchaug_step(kwargs, m, batch, bptt, device),
                                 _plain_step(kwargs, batch * m, bptt, device)), repeats, device)
        t_ours, t_plain = statistics.median(ours), statistics.median(plain)
        rows_out.append({"m": m, "rows": batch * m, "batchaug_step_s": t_ours, "plain_step_s": t_plain,
                         "tokens_per_s": batch * bptt / t_ours, "row_tokens_per_s": batch * m * bptt / t_ours,
                         "plain_row_tokens_per_s": batch * m * bptt / t_plain,
                         "over_plain": statistics.median(x / y for x, y in zip(ours, plain, strict=True))})
    base = next((r for r in rows_out if r["m"] == 1), None)
    for r in rows_out:
        r["cost_per_copy"] = r["batchaug_step_s"] / (r["m"] * base["batchaug_step_s"]) if base else None
    result = {"device": str(device), "model": "awd_lstm " + ("paper" if args.paper else "quick"), "kwargs": kwargs,
              "batch": batch, "bptt": bptt, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "results": rows_out}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"awd_lstm ({'paper' if args.paper else 'quick'}: {kwargs['num_layers']} x {kwargs['hidden_size']}, "
          f"emb {kwargs['emb_size']}), B={batch}, bptt {bptt}, {device}, {torch.get_num_threads()} threads")
    print(f"{'M':>3} {'rows':>5} {'batchaug ms':>12} {'plain ms':>9} {'tokens/s':>9} {'row tok/s':>10} "
          f"{'plain row tok/s':>16} {'over plain':>11} {'cost/copy':>10}")
    for r in rows_out:
        per_copy = "-" if r["cost_per_copy"] is None else f"{r['cost_per_copy']:.2f}"
        print(f"{r['m']:>3} {r['rows']:>5} {r['batchaug_step_s'] * 1e3:>12.1f} {r['plain_step_s'] * 1e3:>9.1f} "
              f"{r['tokens_per_s']:>9.0f} {r['row_tokens_per_s']:>10.0f} {r['plain_row_tokens_per_s']:>16.0f} "
              f"{r['over_plain']:>11.2f} {per_copy:>10}")
    return 0
