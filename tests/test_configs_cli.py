"""``batchaug configs``: the table of paper configs (file, paper, row, published numbers, command), as
text and JSON, read from the configs' paper: blocks without importing torch."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import batchaug
from batchaug.cli import main

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper"


def _blocks() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text())["paper"] for p in sorted(PAPER.glob("*.yaml"))}


def _json(capsys, *args: str) -> list[dict]:
    assert main(["configs", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_lists_every_row_of_every_paper_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    rows = _json(capsys)
    blocks = _blocks()
    assert {r["file"] for r in rows} == set(blocks)
    for name, block in blocks.items():
        mine = [r for r in rows if r["file"] == name]
        expected = 1 if block.get("extra") else 1 + len(block.get("also", []))
        assert len(mine) == expected, name
        assert mine[0]["values"] == block.get("values", {}) and mine[0]["paper"] == block["paper"]
        assert mine[0]["extra"] == bool(block.get("extra"))
        for r in mine:  # every command names this file; a column's command carries its overrides
            assert shlex.split(r["command"])[:3] == ["batchaug", "train", f"configs/paper/{name}"]
    ra = next(r for r in rows if r["file"] == "ra_cifar10_resnet44_cutout.yaml" and r["table"] == "Fig. 5")
    assert ra["runs"]["ra"] == ("batchaug train configs/paper/ra_cifar10_resnet44_cutout.yaml "
                                "--out runs/ra_cifar10_resnet44_cutout")
    assert "'method={name: ba, m: 10, policy: cutout}'" in ra["runs"]["ba"]
    # the header's own overrides (ImageNet's data.root) go into every column's command
    alexnet = next(r for r in rows if r["file"] == "ba_imagenet_alexnet.yaml")
    assert all("data.root=/path/to/imagenet" in c for c in [alexnet["command"], *alexnet["runs"].values()])


def test_table_prints_each_row_and_its_command(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["configs", "--paper", "sba"]) == 0
    out = capsys.readouterr().out.splitlines()
    row = next(line for line in out if line.startswith("sba_cifar10_resnet44.yaml"))
    assert "ResNet44, CIFAR-10: baseline 6.92, cutout 6.28, cutout_ba 4.56, sba 3.23, m 40" in row
    assert out[out.index(row) + 1].strip() == ("batchaug train configs/paper/sba_cifar10_resnet44.yaml "
                                               "--out runs/sba_cifar10_resnet44")
    assert any(line.startswith("sba_cifar100_alexnet.yaml") and "extra, not a row" in line for line in out)
    assert not any(line.startswith(("ba_", "splitbn_")) for line in out)
    assert out[-1].startswith("9 configs, 8 published rows")


def test_papers_option_reports_a_quote_not_on_its_line(tmp_path, capsys):
    folder = tmp_path / "configs"
    folder.mkdir()
    texts = tmp_path / "papers"
    texts.mkdir()
    (texts / "ba_hoffer2019_figures_table1.txt").write_text("ResNet44 Cifar10 93.07% 93.65% (M=10)\n")
    block = {"paper": "ba", "table": "Table 1", "row": "ResNet44, Cifar10", "values": {"baseline": 93.07},
             "source": [{"file": "ba_hoffer2019_figures_table1.txt", "line": 1,
                         "quote": "ResNet44 Cifar10 93.07% 93.65% (M=10)"}]}
    (folder / "ok.yaml").write_text(yaml.safe_dump({"paper": block}))
    assert main(["configs", str(folder), "--papers", str(texts)]) == 0
    block["source"][0]["line"] = 2
    (folder / "bad.yaml").write_text(yaml.safe_dump({"paper": block}))
    capsys.readouterr()
    assert main(["configs", str(folder), "--papers", str(texts)]) == 1
    err = capsys.readouterr().err  # the message names the row, the file and line, and what is wrong
    assert "'ResNet44, Cifar10': ba_hoffer2019_figures_table1.txt:2: the file has 1 lines" in err
    assert main(["configs", str(folder / "missing")]) == 2


@pytest.mark.skipif(not (REPO.parent / "shared" / "papers").is_dir(), reason="the papers' texts are not here")
def test_every_quote_of_the_repository_configs_is_on_its_line(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["configs", "--papers", str(REPO.parent / "shared" / "papers")]) == 0
    assert capsys.readouterr().err == ""


def test_listing_imports_no_torch():
    code = ("import sys; from batchaug.cli import main; main(['configs', '--json']); "
            "print([m for m in ('torch', 'torchvision', 'numpy') if m in sys.modules], file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(Path(batchaug.__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "[]"
    assert json.loads(proc.stdout)
