"""README.md's "In your own training loop" example runs as written (CPU or GPU) and trains."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HEADING = "## In your own training loop"


def readme_example() -> str:
    """The first ```python block under the README's "In your own training loop" heading."""
    text = (REPO / "README.md").read_text()
    start = text.find("\n" + HEADING + "\n")
    assert start >= 0, f"README.md has no {HEADING!r} heading"
    section = text[start + len(HEADING) + 2:]
    section = section[:section.find("\n## ")] if "\n## " in section else section
    found = re.search(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    assert found, f"no ```python block under {HEADING!r}"
    return found.group(1)


@pytest.mark.integration
def test_readme_training_loop_runs_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    code = readme_example()
    archive = re.search(r'load_split\("([^"]+)"', code)
    assert archive, "the example no longer loads data with load_split(PATH, ...)"
    if not (REPO / archive.group(1)).is_file():
        pytest.skip(f"{archive.group(1)} (relative to the repository root) not found")
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository root
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(code, "README.md", "exec"), namespace)

    losses, views, train = namespace["losses"], namespace["views"], namespace["train"]
    assert isinstance(losses, list) and len(losses) == 4  # 256 images in steps of 64
    assert all(math.isfinite(v) for v in losses)
    assert isinstance(views, torch.Tensor) and views.shape == (4 * 64, 3, 32, 32) and views.dtype == torch.float32
    assert train.images.dtype == torch.uint8 and len(train) == 256  # type: ignore[attr-defined]
    # every step went through backward and the optimizer: each weight has a gradient and a momentum buffer
    model, optimizer = namespace["model"], namespace["optimizer"]
    params = list(model.parameters())  # type: ignore[attr-defined]
    assert all(p.grad is not None and "momentum_buffer" in optimizer.state[p] for p in params)  # type: ignore[attr-defined]
