"""``batchaug bench lstm``: the command line runs and reports what BENCHMARKS.md quotes; its quick model is
the quick config's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchaug.bench.lstm import QUICK_MODEL
from batchaug.cli import main
from batchaug.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py
REPO = Path(__file__).resolve().parents[1]


def test_bench_model_is_the_quick_configs():
    cfg = load_config(REPO / "configs" / "quick" / "ptb_lstm.yaml")
    assert cfg.model.name == "awd_lstm" and cfg.model.kwargs == QUICK_MODEL


def test_bench_lstm_quick_json(capsys):
    assert main(["bench", "lstm", "--quick", "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["m"] for r in out["results"]] == [1, 2] and out["batch"] == 4 and out["bptt"] == 8
    for r in out["results"]:
        assert r["rows"] == 4 * r["m"] and r["batchaug_step_s"] > 0 and r["plain_step_s"] > 0
        assert r["row_tokens_per_s"] == pytest.approx(r["tokens_per_s"] * r["m"])
    assert out["results"][0]["cost_per_copy"] == pytest.approx(1.0)
