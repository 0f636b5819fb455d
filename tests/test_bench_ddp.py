"""``batchaug bench ddp``: its arithmetic and its refusals (the measurement itself is BENCHMARKS.md's)."""

from __future__ import annotations

import pytest

from batchaug.bench.ddp import _table
from batchaug.cli import main


def test_scaling_efficiency_compares_with_the_methods_own_single_process_rate():
    rows = _table([{"method": "ba", "processes": 1, "images_per_s": 40.0},
                   {"method": "baseline", "processes": 1, "images_per_s": 100.0},
                   {"method": "ba", "processes": 2, "images_per_s": 60.0},
                   {"method": "baseline", "processes": 4, "images_per_s": 100.0}])
    assert [r["scaling_efficiency"] for r in rows] == pytest.approx([1.0, 1.0, 0.75, 0.25])


@pytest.mark.parametrize("argv, message", [
    (["--procs", "1"], "needs at least 2 processes"),
    (["--batch", "63"], "63 samples do not split over 2 processes"),
])
def test_bench_ddp_refuses_runs_it_cannot_make(capsys, argv, message):
    assert main(["bench", "ddp", *argv]) == 2
    assert message in capsys.readouterr().err
