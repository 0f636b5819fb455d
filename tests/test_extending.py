"""docs/extending.md's examples run as written: a method, a callback, a suite and a model, each one
class and one registry line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def _examples() -> dict[str, str]:
    text = (REPO / "docs" / "extending.md").read_text()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, flags=re.S))


def test_the_doc_has_the_four_examples():
    assert set(_examples()) == {"method", "callback", "suite", "model"}


@pytest.mark.parametrize("name", ["method", "callback", "suite", "model"])
def test_example_runs_as_written(name, cifar_zip, tmp_path):
    code = _examples()[name].replace('"runs/extending/', f'"{tmp_path}/')
    code = code.replace("../shared/data/cifar10-jpeg.zip", str(cifar_zip))
    script = tmp_path / f"{name}.py"
    script.write_text(code)
    # a fresh interpreter, from the repository root (the examples' relative config paths), as a user runs it
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "BATCHAUG_DATA": str(cifar_zip.parent)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    if name == "method":
        records = [json.loads(x) for x in (tmp_path / "method" / "metrics.jsonl").read_text().splitlines()]
        assert 0 <= float(last) <= 1 and all(r["consistency"] >= 0 for r in records)
    elif name == "callback":
        assert json.loads(last)[-1] in (2, 4)
    elif name == "suite":
        assert 0 <= float(last) <= 1
        assert (tmp_path / "suite" / "eval" / "calibration.json").is_file()
    else:
        assert (tmp_path / "model" / "summary.json").is_file()
