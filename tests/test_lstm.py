"""Batch Augmentation for language models, on tiny models and synthetic streams: the AWD-LSTM's dropout
masks (per copy, reproducible), weight drop batched over copies against a per-copy reference, M = 1
against the baseline, the BPTT state carried and detached, token windows, NT-ASGD, perplexity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from batchaug.config import OptimConfig, load_config
from batchaug.data.ptb import batchify, load_corpus
from batchaug.data.token_batches import MIN_LENGTH, TokenBatches, TokenWindow, window_lengths
from batchaug.errors import ConfigError, DataError
from batchaug.evaluate.perplexity import PerplexityValidation, stream_perplexity
from batchaug.methods import MethodContext, build_method
from batchaug.models import build_model, count_params, get_spec
from batchaug.models.awd_lstm import AWDLSTM, DropoutMasks
from batchaug.nn.seq_dropout import embedding_keep, keep_mask, locked_dropout
from batchaug.nn.weight_drop_lstm import WeightDropLSTM
from batchaug.train.callbacks.ntasgd import NTASGD
from batchaug.train.optim import LRSchedule
from batchaug.train.trainer import Trainer, TrainerSettings

VOCAB = 23


def _tiny(**kwargs) -> AWDLSTM:
    torch.manual_seed(0)
    return AWDLSTM(VOCAB, **{"emb_size": 6, "hidden_size": 10, "num_layers": 3, **kwargs})


def _stream(n: int, seed: int = 0) -> torch.Tensor:
    """A learnable synthetic stream: each token is mostly the previous one plus 1 (mod VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    jumps = torch.where(torch.rand(n, generator=g) < 0.8, 1, torch.randint(0, VOCAB, (n,), generator=g))
    return torch.cumsum(jumps, 0) % VOCAB


def _method(name: str = "ba", m: int = 2):
    section = {"name": name, **({"m": m} if name == "ba" else {})}
    return build_method(section, MethodContext(num_classes=VOCAB), modality="tokens")


def _trainer(name: str = "ba", m: int = 2, steps: int = 8, seed: int = 0, micro_batch: int | None = None,
             callbacks=(), eval_every: int | None = 4, variable: bool = True, amp: str = "none") -> Trainer:
    method = _method(name, m)
    model = method.prepare_model(_tiny())
    batches = TokenBatches(_stream(1200), batch_size=4, bptt=9, seed=seed, variable=variable)
    cfg = OptimConfig(lr=2.0, momentum=0.0, weight_decay=0.0, schedule="constant")
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    settings = TrainerSettings(batch_size=4, total_steps=steps, steps_per_epoch=batches.steps_per_epoch,
                               eval_every=eval_every, seed=seed, micro_batch=micro_batch, amp=amp, progress=False)
    return Trainer(model, method, opt, LRSchedule(cfg, 2.0, 1, steps), settings, None, None, None, None,
                   torch.device("cpu"), callbacks=list(callbacks), batches=batches,
                   validation=PerplexityValidation(_stream(300, seed=1), 3, 9, "cpu"))


def _params(trainer: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


# ------------------------------------------------------------------------------------------ the model


def test_awd_lstm_has_the_papers_24m_parameters_for_ptb():
    spec = get_spec("awd_lstm")
    assert spec.family == "text" and spec.input_size is None
    with torch.device("meta"):
        count = count_params(build_model("awd_lstm", num_classes=10_000))
    assert abs(count - spec.published_params) <= 0.02 * spec.published_params, count
    with pytest.raises(ConfigError, match="dropout_hidden"):
        AWDLSTM(10, dropout_hidden=1.0)


def test_fused_weight_drop_equals_lstm_with_the_masked_weight():
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_drop=0.5)
    x, h, c = torch.randn(6, 4, 5), torch.randn(4, 7), torch.randn(4, 7)
    keep = keep_mask((1, 28, 7), 0.5, generator=torch.Generator().manual_seed(3))
    out, (hn, cn) = layer(x, (h, c), keep)
    plain = torch.nn.LSTM(5, 7)
    with torch.no_grad():
        for name, p in plain.named_parameters():
            p.copy_(getattr(layer.lstm, name))
        plain.weight_hh_l0.mul_(keep[0].float() * 2.0)
    ref, (hr, cr) = plain(x, (h[None], c[None]))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close((hn, cn), (hr[0], cr[0]))
    assert not torch.equal(out, layer(x, (h, c))[0])  # the mask mattered


def _cell_loop(layer: WeightDropLSTM, x, state, keep):
    """Slow reference: the LSTM equations step by step, row r with copy r % C's masked matrix."""
    lstm, copies = layer.lstm, keep.shape[0]
    w_hh = lstm.weight_hh_l0 * keep / (1 - layer.weight_drop)  # (C, 4H, H)
    h, c = state
    outputs = []
    for t in range(x.shape[0]):
        rows = []
        for r in range(x.shape[1]):
            gates = lstm.weight_ih_l0 @ x[t, r] + lstm.bias_ih_l0 + w_hh[r % copies] @ h[r] + lstm.bias_hh_l0
            i, f, g, o = gates.chunk(4)
            cr = torch.sigmoid(f) * c[r] + torch.sigmoid(i) * torch.tanh(g)
            rows.append((torch.sigmoid(o) * torch.tanh(cr), cr))
        h = torch.stack([hr for hr, _ in rows])
        c = torch.stack([cr for _, cr in rows])
        outputs.append(h)
    return torch.stack(outputs), (h, c)


def test_weight_drop_per_copy_matches_the_lstm_equations_row_by_row():
    """C masks (one fused call per copy) against the LSTM equations evaluated row by row with each row's
    copy's mask: outputs, states and gradients."""
    torch.manual_seed(0)
    layer = WeightDropLSTM(5, 7, weight_drop=0.4)
    copies, per = 3, 2
    x = torch.randn(6, copies * per, 5)
    state = (torch.randn(copies * per, 7), torch.randn(copies * per, 7))
    keep = keep_mask((copies, 28, 7), 0.4, generator=torch.Generator().manual_seed(1))
    out, (hn, cn) = layer(x, state, keep)
    (out.square().sum() + hn.sum()).backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    ref, (hr, cr) = _cell_loop(layer, x, state, keep)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(hn, hr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cn, cr, rtol=1e-5, atol=1e-6)
    (ref.square().sum() + hr.sum()).backward()
    for n, p in layer.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[:, 0], layer(x[:, [0]], (state[0][[0]], state[1][[0]]), keep[1:2])[0][:, 0])


def test_locked_and_embedding_dropout_masks():
    x = torch.ones(5, 4, 3)
    keep = keep_mask((4, 3), 0.5, generator=torch.Generator().manual_seed(0))
    y = locked_dropout(x, keep, 0.5)
    assert torch.equal(y, y[:1].expand_as(y))  # the same features dropped at every step
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    tokens = torch.tensor([[1, 2, 1, 3]]).t().repeat(1, 4)  # (L=4, N=4): every row reads 1, 2, 1, 3
    word_keep = torch.tensor([[True, False, True, True], [True, True, False, True]])  # 2 copies, vocab 4
    k = embedding_keep(word_keep, tokens)
    # rows 0, 2 are copy 0 (drops word 1), rows 1, 3 copy 1 (drops word 2): every occurrence of a word
    assert k[:, 0].tolist() == [False, True, False, True] and k[:, 1].tolist() == [True, False, True, True]
    assert torch.equal(k[:, 0], k[:, 2]) and torch.equal(k[:, 1], k[:, 3])


# ---------------------------------------------------------------------------- BA for sequences


def _window(seed: int = 0, rows: int = 3, length: int = 5) -> tuple[TokenWindow, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (rows, length + 1), generator=g)
    return TokenWindow(tokens[:, :-1].contiguous(), start=True, lr_scale=0.8), tokens[:, 1:].contiguous()


def test_copies_get_different_masks_reproducible_from_the_seed():
    method = _method("ba", 3)
    method.prepare_model(_tiny())
    window, targets = _window()
    a = method.make_batch(window, targets, torch.Generator().manual_seed(5))
    b = method.make_batch(window, targets, torch.Generator().manual_seed(5))
    c = method.make_batch(window, targets, torch.Generator().manual_seed(6))
    assert a.num_samples == 3 and a["tokens"].shape == (9, 5) and a.lr_scale == 0.8
    assert torch.equal(a["tokens"][0], a["tokens"][2]) and torch.equal(a["targets"][3], a["targets"][5])
    per_copy = a.extras["per_copy"]
    assert set(per_copy) == {"embed", "weight_hh.0", "weight_hh.1", "weight_hh.2"}
    for key, mask in per_copy.items():
        assert mask.shape[0] == 3 and not torch.equal(mask[0], mask[1]) and not torch.equal(mask[1], mask[2]), key
        assert torch.equal(mask, b.extras["per_copy"][key]) and not torch.equal(mask, c.extras["per_copy"][key])
    rows = {k: v for k, v in a.tensors.items() if k.startswith("mask.")}
    assert set(rows) == {"mask.input", "mask.hidden.0", "mask.hidden.1", "mask.output"}
    for key, mask in rows.items():
        assert mask.shape[0] == 9 and not torch.equal(mask[0], mask[1]), key  # copies of row 0 differ
        assert torch.equal(mask, b[key]) and not torch.equal(mask, c[key])


def test_loss_over_copies_is_the_mean_of_each_copy_alone():
    """One batch of B·M rows gives the mean over copies of the per-copy objectives (cross-entropy and AR/TAR)."""
    method = _method("ba", 3)
    model = method.prepare_model(_tiny())
    window, targets = _window()
    batch = method.make_batch(window, targets, torch.Generator().manual_seed(0))
    whole = method.loss(model, batch).loss
    per_copy = []
    for j in range(3):
        rows = slice(j, None, 3)
        masks = DropoutMasks(1, {k[5:]: t[rows] for k, t in batch.tensors.items() if k.startswith("mask.")},
                             {k: v[j:j + 1] for k, v in batch.extras["per_copy"].items()})
        logits, _, reg = model(batch["tokens"][rows], None, masks)
        per_copy.append(F.cross_entropy(logits.reshape(-1, VOCAB), batch["targets"][rows].reshape(-1)) + reg)
    torch.testing.assert_close(whole, torch.stack(per_copy).mean(), rtol=1e-5, atol=1e-6)


def test_m1_is_exactly_the_baseline():
    a, b = _trainer("ba", 1), _trainer("baseline")
    ha, hb = a.fit(), b.fit()
    assert torch.equal(_params(a), _params(b))
    def same(r):  # NaN (train_acc: not measured) compares unequal to itself; the written line has null
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()
                if k not in ("wall_time", "views_per_s")}

    assert [same(r) for r in ha] == [same(r) for r in hb]
    assert ha[-1]["val_acc"] is None and ha[-1]["val_ppl"] == pytest.approx(math.exp(ha[-1]["val_loss"]))


def test_the_bptt_state_is_carried_across_steps_and_detached():
    trainer = _trainer("ba", 2, steps=0)
    method = trainer.method
    seen = []
    make = method.make_batch

    def spy(window, targets, generator=None):
        batch = make(window, targets, generator)
        weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}  # before this step's update
        seen.append((window.start, batch["state.h.0"].clone(), batch, weights))
        return batch

    method.make_batch = spy
    states = []
    for step in range(4):
        trainer.train_step(step)
        states.append([(h.clone(), c.clone()) for h, c in method.state])
        assert all(not h.requires_grad and h.grad_fn is None for pair in method.state for h in pair)
    assert seen[0][0] and not seen[1][0]
    assert torch.count_nonzero(seen[0][1]) == 0  # an epoch starts from zeros
    for step in range(1, 4):
        torch.testing.assert_close(seen[step][1], states[step - 1][0][0], rtol=0, atol=0)
    # the carried state is the model's final state of the window from the previous state, same masks
    model = _tiny()
    _, _, batch, weights = seen[2]
    model.load_state_dict(weights)
    start = [(batch[f"state.h.{i}"], batch[f"state.c.{i}"]) for i in range(3)]
    with torch.no_grad():
        masks = DropoutMasks(2, {k[5:]: t for k, t in batch.tensors.items() if k.startswith("mask.")},
                             batch.extras["per_copy"])
        _, end, _ = model(batch["tokens"], start, masks)
    for (h, c), (h2, c2) in zip(end, states[2], strict=True):
        torch.testing.assert_close(h, h2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c, c2, rtol=1e-5, atol=1e-6)


def test_micro_batched_step_gives_the_same_update():
    a, b = _trainer("ba", 2, steps=4), _trainer("ba", 2, steps=4, micro_batch=3)  # 8 rows -> 3 chunks
    a.fit()
    b.fit()
    assert b.n_chunks == 3
    torch.testing.assert_close(_params(a), _params(b), rtol=1e-4, atol=1e-6)
    for (h, c), (h2, c2) in zip(a.method.state, b.method.state, strict=True):
        torch.testing.assert_close((h, c), (h2, c2), rtol=1e-4, atol=1e-6)


def test_evaluations_default_to_the_end_of_every_epoch():
    probe = TokenBatches(_stream(1200), batch_size=4, bptt=9, seed=0)
    n0, n1 = probe.steps_in_epoch(0), probe.steps_in_epoch(1)
    assert n0 != n1  # variable window lengths: epochs differ in steps
    trainer = _trainer("baseline", steps=n0 + n1, eval_every=None)
    history = trainer.fit()
    assert [r["step"] for r in history] == [n0, n0 + n1] and [r["epoch"] for r in history] == [1.0, 2.0]


def test_bf16_autocast_step_on_cpu():
    """train.amp=bf16 (a GPU option that also exists on the CPU) runs the per-copy loop and the carried state."""
    (record,) = _trainer("ba", 2, steps=3, eval_every=3, amp="bf16").fit()
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_ppl"])


def test_the_learning_rate_follows_the_window_length():
    trainer = _trainer("baseline", steps=0)
    for step in range(3):
        window, _ = trainer.batches.fetch(step)
        trainer.train_step(step)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * window.lr_scale)


# ------------------------------------------------------------------------------------ token windows


def test_token_windows_cover_each_epoch_and_are_a_function_of_the_step():
    ids = torch.arange(4 * 400)
    src = TokenBatches(ids, batch_size=4, bptt=12, seed=3)
    again = TokenBatches(ids, batch_size=4, bptt=12, seed=3)
    other = TokenBatches(ids, batch_size=4, bptt=12, seed=4)
    n0, n1 = src.steps_in_epoch(0), src.steps_in_epoch(1)
    columns = batchify(ids, 4)
    covered = torch.cat([src.fetch(s)[1] for s in range(n0)], dim=1)  # targets of epoch 0, column by column
    assert torch.equal(covered, columns[1:].t())  # every token predicted exactly once per epoch
    assert src.fetch(n0)[0].start and not src.fetch(n0 + 1)[0].start and src.fetch(0)[0].start
    for step in (0, 5, n0 + 2, n0 + n1 + 1):
        w, y = src.fetch(step)
        w2, y2 = again.fetch(step)
        assert torch.equal(w.tokens, w2.tokens) and torch.equal(y, y2) and w.lr_scale == w2.lr_scale
    assert [other.fetch(s)[0].length for s in range(8)] != [src.fetch(s)[0].length for s in range(8)]
    assert src.epoch_of(n0 - 1) == 0 and src.epoch_of(n0) == 1 and src.epoch_at(n0) == 1.0
    assert src.epoch_at(n0 + n1 // 2) == pytest.approx(1 + (n1 // 2) / n1)
    assert src.steps_for_epochs(2) == n0 + n1 and src.steps_for_epochs(1.5) == n0 + math.ceil(n1 / 2)
    assert src.progress(n0)["tokens_seen"] == 399 * 4
    fixed = TokenBatches(ids, batch_size=4, bptt=12, variable=False)
    assert [fixed.fetch(s)[0].length for s in range(fixed.steps_per_epoch)] == [12] * 33 + [3]
    assert all(fixed.fetch(s)[0].lr_scale == 1.0 for s in range(5))
    with pytest.raises(ConfigError, match="rows per column"):
        TokenBatches(torch.arange(8), batch_size=4, bptt=5)


def test_window_lengths_follow_the_awd_lstm_distribution():
    g = torch.Generator().manual_seed(0)
    _, lengths, drawn = window_lengths(200_000, 70, g)
    assert int(drawn.min()) >= MIN_LENGTH and torch.equal(lengths[:-1], drawn[:-1])
    half = (drawn < 52).float().mean().item()  # N(35, 5) windows are below 52, N(70, 5) ones above
    assert 0.035 < half < 0.065  # probability 0.05
    long = drawn[drawn >= 52].double()
    assert long.mean().item() == pytest.approx(69.5, abs=0.3) and long.std().item() == pytest.approx(5.0, abs=0.3)


# ------------------------------------------------------------------------------------- NT-ASGD


class _FakeTrainer:
    def __init__(self, model):
        self.model = model
        self.validation = PerplexityValidation(_stream(100), 2, 5, "cpu")
        self.state = type("S", (), {"step": 0})()


def test_ntasgd_switches_when_validation_stops_improving_and_averages_the_iterates():
    model = torch.nn.Linear(2, 1)
    cb, trainer = NTASGD(2), _FakeTrainer(model)
    ppls = [10.0, 9.0, 8.0, 8.5, 8.2, 7.9, 8.1, 7.0]  # the reference rule: worse than min(history[:-2])
    started = None
    for i, ppl in enumerate(ppls):
        trainer.state.step = i + 1
        record = {"val_ppl": ppl}
        cb.on_eval(trainer, record)
        if started is None and cb.averaging:
            started = i
    # 8.5 (i=3) is not worse than min([10]), 8.2 not than min([10, 9]), 7.9 not than 8; 8.1 (i=6) is worse
    # than min([10, 9, 8, 8.5]) = 8: averaging starts after the step of that evaluation
    assert started == 6 and cb.start_step == 7 and cb.history == ppls[:7]
    iterates = []
    for step in range(3):
        with torch.no_grad():
            model.weight.add_(1.0 + step)
        iterates.append(model.weight.detach().clone())
        cb.on_step_end(trainer, step, {})
    torch.testing.assert_close(cb.eval_weights(trainer)["weight"], torch.stack(iterates).mean(0))
    restored = NTASGD(2)
    restored.load_state_dict(cb.state_dict())
    assert restored.history == cb.history and restored.start_step == 7 and restored.count == 3
    torch.testing.assert_close(restored.weights["weight"], cb.weights["weight"])


def test_ntasgd_validates_and_keeps_the_average_in_best_pt(tmp_path):
    cb = NTASGD(1)
    trainer = _trainer("baseline", steps=16, callbacks=[cb], eval_every=2)
    trainer.out_dir = tmp_path
    cb.history = [0.0, 0.0]  # impossible perplexities: the first evaluation is worse -> averaging from step 2
    history = trainer.fit()
    assert cb.averaging and cb.start_step == 2 and cb.count == 14
    assert [r["ntasgd_averaging"] for r in history] == [False] + [True] * 7
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    for k, v in cb.weights.items():
        assert torch.equal(ckpt["eval_model"][k], v)
    # the line's val_ppl is the average's, not the live weights'
    from batchaug.nn.wrappers import swapped_weights

    with swapped_weights(trainer.model, cb.weights):
        assert trainer.evaluate()["val_ppl"] == pytest.approx(history[-1]["val_ppl"])
    assert trainer.evaluate()["val_ppl"] != pytest.approx(history[-1]["val_ppl"])


# ---------------------------------------------------------------------------------- perplexity


def test_stream_perplexity_carries_the_state_across_windows():
    """Windows of 7 tokens with the state carried equal one pass over the whole stream."""
    method = _method("baseline")
    model = method.prepare_model(_tiny()).eval()
    columns = batchify(_stream(301), 3)  # (100, 3)
    windowed = stream_perplexity(model, method, columns, 7)
    whole = stream_perplexity(model, method, columns, 1000)
    assert windowed["tokens"] == whole["tokens"] == 99 * 3
    assert windowed["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    with torch.no_grad():  # and equals the mean cross-entropy of that one pass
        logits, _, _ = model(columns[:-1].t().contiguous())
        ref = F.cross_entropy(logits.reshape(-1, VOCAB), columns[1:].t().reshape(-1)).item()
    assert whole["loss"] == pytest.approx(ref, rel=1e-5) and whole["ppl"] == pytest.approx(math.exp(ref))


# ------------------------------------------------------------------------------ corpus and config


def test_corpus_folder_with_plain_split_names_and_clear_errors(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("a b c\nb c a\n")
    with pytest.raises(DataError, match=r"valid\.txt: missing"):
        load_corpus(folder)
    (folder / "valid.txt").write_text("a b\n")
    (folder / "test.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"test\.txt: empty"):
        load_corpus(folder)
    (folder / "test.txt").write_text("c d\n")
    with pytest.raises(DataError, match=r"test\.txt: token 'd' is not in the vocabulary built from train\.txt"):
        load_corpus(folder)
    (folder / "test.txt").write_text("c a\n")
    corpus = load_corpus(folder)
    assert len(corpus.vocab) == 4 and corpus["test"].tolist() == [2, 0, 3]


def test_token_configs_resolve_language_model_methods():
    cfg = load_config(None, ["data.kind=ptb", "model.name=awd_lstm", "method.name=ba", "method.m=3"])
    assert cfg.modality == "tokens" and cfg.method.method_class.__name__ == "SequenceBatchAugmentation"
    assert cfg.method.to_dict() == {"name": "ba", "m": 3}
    with pytest.raises(ConfigError, match="unknown key method.policy"):
        load_config(None, ["data.kind=ptb", "method.name=ba", "method.policy=cutout"])
    with pytest.raises(ConfigError, match="method for images"):
        load_config(None, ["data.kind=text", "method.name=splitbn"])
    from batchaug.config import apply_overrides, resolve_config

    raw = {"data": {"kind": "ptb"}, "model": {"name": "awd_lstm"}, "method": {"name": "ba", "m": 3}}
    switched = resolve_config(apply_overrides(raw, ["method.name=baseline"]))  # the file's m is dropped
    assert switched.method.to_dict() == {"name": "baseline"}
