"""Every YAML config under configs/ resolves, and the BA paper configs say what their headers claim.

Checked without training anything:
- every ``configs/**/*.yaml`` loads with :func:`batchaug.config.load_config` and survives the run
  directory's ``config.yaml`` round trip;
- every ``batchaug train CONFIG ...`` command written in a config header or in docs/ba.md and
  docs/configs.md resolves (overrides and every ``--sweep`` point), so documented commands keep working;
- the BA Table 1 rows (``configs/paper/ba_*.yaml``) use the ``ba`` method with the M, policy, model and
  dataset listed in :data:`BA_ROWS` (Table 1's; the PTB language-model row: M, model and corpus in
  :data:`LM_ROWS`); their documented baseline differs from them in the
  method only; the CIFAR-100 rows are their CIFAR-10 rows with another ``data.kind`` (and Table 1's M);
  the RA row is the BA row's regime with the ``ra`` method at Fig. 5's M;
- every number a paper config sets carries a comment saying where it comes from (the ``paper:`` blocks:
  tests/test_paper_configs.py);
- every model name exists in the model registry;
- every key of the config schema is documented in docs/configs.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import re
import shlex
from pathlib import Path

import pytest
import yaml

from batchaug.config import (
    SECTIONS,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    dump_config,
    load_config,
    resolve_config,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
PAPER = REPO / "configs" / "paper"
DOCS = [REPO / "docs" / "ba.md", REPO / "docs" / "configs.md", REPO / "docs" / "darts.md", REPO / "docs" / "lstm.md"]

# file -> (model, M, policy, data.kind): Table 1's M for its rows (ba_cifar10_densenet100_12 and
# ba_cifar100_resnet44 are no rows: M of the network's row), as each file's paper block records it.
BA_ROWS: dict[str, tuple[str, int, str | dict, str]] = {
    "ba_cifar10_resnet44.yaml": ("resnet44", 10, "standard", "cifar10"),
    "ba_cifar10_resnet44_cutout.yaml": ("resnet44", 40, "cutout", "cifar10"),
    "ba_cifar10_vgg16_cutout.yaml": ("vgg16_bn", 32, "cutout", "cifar10"),
    "ba_cifar10_wrn28_10_cutout.yaml": ("wrn28_10", 6, "cutout", "cifar10"),
    "ba_cifar10_densenet100_12.yaml": ("densenet_bc_100_12", 4, "standard", "cifar10"),
    "ba_cifar10_darts.yaml": ("darts_v2", 10, {"name": "cutout", "length": 16, "fill": [125, 123, 114]}, "cifar10"),
    "ba_cifar100_resnet44.yaml": ("resnet44", 10, "standard", "cifar100"),
    "ba_cifar100_resnet44_cutout.yaml": ("resnet44", 40, "cutout", "cifar100"),
    "ba_cifar100_vgg16_cutout.yaml": ("vgg16_bn", 32, "cutout", "cifar100"),
    "ba_cifar100_wrn28_10_cutout.yaml": ("wrn28_10", 10, "cutout", "cifar100"),
    "ba_cifar100_densenet100_12.yaml": ("densenet_bc_100_12", 4, "standard", "cifar100"),
    "ba_imagenet_alexnet.yaml": ("alexnet", 8, "standard", "imagenet"),
    "ba_imagenet_mobilenet.yaml": ("timm:mobilenetv1_100", 4, "standard", "imagenet"),
    "ba_imagenet_resnet50.yaml": ("resnet50", 4, "standard", "imagenet"),
}
# RA file -> (the BA file whose regime it adapts, M, lr_scaling): Fig. 5's B = 640 = 64 x 10
RA_ROWS: dict[str, tuple[str, int, str]] = {
    "ra_cifar10_resnet44_cutout.yaml": ("ba_cifar10_resnet44_cutout.yaml", 10, "none"),
}
# language-model rows: file -> (model, M, data.kind, published baseline and BA test perplexity)
LM_ROWS: dict[str, tuple[str, int, str, float, float]] = {
    "ba_ptb_awd_lstm.yaml": ("awd_lstm", 10, "ptb", 58.8, 58.6),
}
OWN = sorted(BA_ROWS) + sorted(RA_ROWS) + sorted(LM_ROWS)


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _header(path: Path) -> list[str]:
    """The comment lines at the top of a YAML file, without the leading '#'."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return lines


def _train_commands(lines: list[str]) -> list[list[str]]:
    """Argument lists following ``batchaug train`` in ``lines`` (backslash continuations joined)."""
    joined, buf = [], ""
    for line in lines:
        text = line.strip()
        if text.startswith("#"):  # Markdown files keep their own comment lines out of commands
            text = ""
        if buf:
            buf += " " + text
        elif "batchaug train " in text:
            buf = text
        if buf and buf.endswith("\\"):
            buf = buf[:-1]
            continue
        if buf:
            joined.append(buf)
            buf = ""
    commands = []
    for text in joined:
        tokens = shlex.split(text[text.index("batchaug train ") + len("batchaug train "):])
        commands.append(tokens)
    return commands


def _resolve_command(tokens: list[str]) -> list:
    """Resolve ``CONFIG [key=value ...] [--sweep k=v1,v2] [--out DIR]`` at every sweep point
    (``--resume DIR`` commands name no config file: nothing to resolve, an empty list)."""
    if "--resume" in tokens:
        return []
    config, overrides, sweeps = None, [], []
    it = iter(tokens)
    for tok in it:
        if tok == "--out":
            next(it)
        elif tok == "--sweep":
            sweeps.append(next(it))
        elif tok.startswith("--"):
            continue
        elif config is None and tok.endswith((".yaml", ".yml")):
            config = tok
        else:
            overrides.append(tok)
    assert config is not None, f"no config file in documented command {tokens}"
    path = REPO / config
    assert path.is_file(), f"documented command names {config}, which does not exist"
    grid = [[f"{key}={v}" for v in values.split(",")]
            for key, values in (s.split("=", 1) for s in sweeps)]
    return [load_config(path, overrides + list(point)) for point in itertools.product(*grid)]


def _without_method(cfg) -> dict:
    d = cfg.to_dict()
    d.pop("method")
    d.pop("paper")  # the published row, not the run
    return d


# ------------------------------------------------------------------------------------------ all configs


def test_config_tree_is_found_and_ba_rows_are_all_listed():
    assert CONFIGS, "no YAML files under configs/"
    on_disk = {p.name for p in PAPER.glob("ba_*.yaml")} | {p.name for p in PAPER.glob("ra_*.yaml")}
    assert on_disk == set(OWN), "every ba_*/ra_* config needs its row in BA_ROWS / RA_ROWS / LM_ROWS (and back)"


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_config_resolves_and_round_trips(path):
    cfg = load_config(path)
    # config.yaml in a run directory is dump_config(cfg); it must resolve back to the same run
    again = resolve_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_commands_in_config_headers_resolve(path):
    for tokens in _train_commands(_header(path)):
        _resolve_command(tokens)  # raises ConfigError (or fails an assert) on a broken command


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_commands_and_paths_in_docs_resolve(doc):
    text = doc.read_text()
    # commands in ```bash blocks and inline `batchaug train configs/...` spans; ```text blocks show
    # failing commands on purpose and are left out
    lines = [line for block in re.findall(r"```bash\n(.*?)```", text, re.S) for line in block.splitlines()]
    lines += re.findall(r"`(batchaug train configs/[^`]+)`", text)
    commands = _train_commands(lines)
    assert commands, f"{doc.name} shows no batchaug train command"
    for tokens in commands:
        _resolve_command(tokens)
    for ref in sorted(set(re.findall(r"configs/[\w/.-]+\.yaml", text))):
        assert (REPO / ref).is_file(), f"{doc.name} refers to {ref}, which does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_python_examples_in_docs_run(doc, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    monkeypatch.chdir(REPO)  # examples name configs relative to the repository root
    namespace: dict = {}
    for i, block in enumerate(blocks):  # one namespace: later blocks continue earlier ones
        exec(compile(block, f"{doc.name} python block {i + 1}", "exec"), namespace)


@pytest.mark.parametrize("path", CONFIGS, ids=_rel)
def test_model_names_exist_in_registry(path):
    try:
        from batchaug.models import get_spec
    except ImportError as exc:  # the zoo is another package; configs still load without it
        pytest.skip(f"model registry not importable: {exc}")
    name = load_config(path).model.name
    if name.startswith("timm:") and importlib.util.find_spec("timm") is None:
        pytest.skip(f"{name} needs the optional timm extra (pip install 'batchaug[timm]')")
    spec = get_spec(name)
    if path.name in OWN:  # our paper rows: an ImageNet network on ImageNet, a CIFAR one on CIFAR, an LM on text
        kind = load_config(path).data.kind
        assert spec.family == {"imagenet": "imagenet", "ptb": "text", "text": "text"}.get(kind, "cifar")


# ------------------------------------------------------------------------------------------ BA / RA rows


@pytest.mark.parametrize("name", sorted(BA_ROWS))
def test_ba_row_documents_its_m_policy_model_and_data(name):
    path = PAPER / name
    cfg = load_config(path)
    model, m, policy, kind = BA_ROWS[name]
    assert cfg.method["name"] == "ba"
    assert cfg.method["m"] == m
    assert cfg.method["policy"] == policy
    assert cfg.model.name == model
    assert cfg.data.kind == kind
    first = _header(path)[0]
    assert f"M = {m}" in first, "the header's first line states the row's M"
    if cfg.paper.extra:
        assert "extra, not a row" in first
    else:  # ... and the row's published accuracies, as the paper block holds them
        assert f"baseline {cfg.paper.values['baseline']}%, BA {cfg.paper.values['ba']}%" in first


@pytest.mark.parametrize("name", sorted(LM_ROWS))
def test_lm_row_documents_its_m_model_corpus_perplexities_and_baseline(name):
    path = PAPER / name
    cfg = load_config(path)
    model, m, kind, base_ppl, ba_ppl = LM_ROWS[name]
    assert cfg.modality == "tokens" and cfg.method["name"] == "ba" and cfg.method["m"] == m
    assert cfg.model.name == model and cfg.data.kind == kind
    header = "\n".join(_header(path))
    assert f"M = {m}" in header.splitlines()[0], "the header's first line states the row's M"
    assert f"baseline {base_ppl}, BA {ba_ppl} (M = {m})" in header, "the header reports Table 1's perplexities"
    values = cfg.paper.values
    assert values["baseline"] == base_ppl and values["ba"] == ba_ppl and values["m"] == m
    source = (REPO.parent / "shared" / "papers" / "ba_hoffer2019_figures_table1.txt")
    if source.is_file():
        assert f"{base_ppl} ppl\t{ba_ppl} ppl (M={m})" in source.read_text()
    baselines = [c for tokens in _train_commands(_header(path)) for c in _resolve_command(tokens)
                 if c.method["name"] == "baseline"]
    assert baselines, f"{name}: the header shows no command for the matching baseline"
    for base in baselines:
        assert base.modality == "tokens" and _without_method(base) == _without_method(cfg)


@pytest.mark.parametrize("name", sorted(BA_ROWS))
def test_ba_row_documents_a_baseline_that_differs_only_in_the_method(name):
    path = PAPER / name
    ba = load_config(path)
    baselines = [cfg for tokens in _train_commands(_header(path)) for cfg in _resolve_command(tokens)
                 if cfg.method["name"] == "baseline"]
    assert baselines, f"{name}: the header shows no command for the matching baseline"
    for base in baselines:
        assert base.method["policy"] == ba.method["policy"]
        assert _without_method(base) == _without_method(ba)


@pytest.mark.parametrize("name", sorted(n for n in BA_ROWS if n.startswith("ba_cifar10_")))
def test_cifar10_rows_take_the_shared_jpeg_archive_override(name):
    cfg = load_config(PAPER / name, ["data.kind=cifar10_jpeg", "data.root=../shared/data/cifar10-jpeg.zip"])
    assert cfg.data.kind == "cifar10_jpeg"
    assert "data.kind=cifar10_jpeg data.root=../shared/data/cifar10-jpeg.zip" in (PAPER / name).read_text()


@pytest.mark.parametrize("name", sorted(n for n in BA_ROWS if n.startswith("ba_cifar100_")))
def test_cifar100_rows_are_their_cifar10_rows_on_cifar100(name):
    # the authors' code has one regime per network for both datasets; Table 1's M may differ (WRN: 6 and 10)
    c100 = _without_method(load_config(PAPER / name))
    c10 = _without_method(load_config(PAPER / name.replace("cifar100", "cifar10")))
    assert c100["data"].pop("kind") == "cifar100" and c10["data"].pop("kind") == "cifar10"
    assert c100 == c10
    m100, m10 = (load_config(PAPER / n).method for n in (name, name.replace("cifar100", "cifar10")))
    assert {k: v for k, v in m100.items() if k != "m"} == {k: v for k, v in m10.items() if k != "m"}
    assert m100["m"] == BA_ROWS[name][1]


@pytest.mark.parametrize("name", sorted(RA_ROWS))
def test_ra_row_adapts_its_ba_row(name):
    ba_name, m, lr_scaling = RA_ROWS[name]
    ra, ba = load_config(PAPER / name), load_config(PAPER / ba_name)
    assert ra.method == {"name": "ra", "m": m, "policy": ba.method["policy"], "lr_scaling": lr_scaling,
                         "mix": "none", "mix_alpha": 1.0, "mix_prob": 1.0}
    # Fig. 5's BA curve is the BA row's file at RA's M: the same views per step as RA's batch
    assert load_config(PAPER / ba_name, [f"method.m={m}"]).method["m"] == m
    assert _without_method(ra) == _without_method(ba)
    header = "\n".join(_header(PAPER / name))
    # the header spells out the adapted regime; keep its numbers in step with the config
    assert f"{ra.train.batch_size * m}" in header
    assert f"{int(ra.train.epochs * m)} epochs" in header


_NUMBER_LINE = re.compile(r"^\s*[\w.]+:\s*(\[[-\d.,\se]+\]|-?\d[\d.e+-]*)\s*(#.*)?$")


@pytest.mark.parametrize("name", sorted(p.name for p in PAPER.glob("*.yaml")))
def test_every_number_in_a_paper_row_carries_a_comment(name):
    text = (PAPER / name).read_text()
    text = text[:text.index("\npaper:")] if "\npaper:" in text else text  # the block holds its own sources
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    bare = [line for line in body if (m := _NUMBER_LINE.match(line)) and not m.group(2)]
    assert not bare, f"{name}: numbers without a comment saying where they come from: {bare}"


# ------------------------------------------------------------------------------------------ docs


def test_every_schema_key_is_documented():
    from batchaug.methods.batch_augmentation import BAOptions, BaselineOptions, RAOptions
    from batchaug.papers import PaperRef, PaperSource

    text = (REPO / "docs" / "configs.md").read_text()
    keys = [f"{section}.{f.name}"
            for section, cls in zip(("data", "model", "optim", "train", "eval"),
                                    (DataConfig, ModelConfig, OptimConfig, TrainConfig, EvalConfig))
            for f in dataclasses.fields(cls)]
    keys += [f"method.{f.name}" for cls in (BaselineOptions, BAOptions, RAOptions) for f in dataclasses.fields(cls)]
    keys += ["seed", "base", "method.name", "paper"]
    keys += [f"paper.{f.name}" for f in dataclasses.fields(PaperRef)]
    keys += [f"paper.source.{f.name}" for f in dataclasses.fields(PaperSource)]
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"docs/configs.md does not document {missing}"
    assert set(SECTIONS) == {"data", "model", "method", "optim", "train", "eval"}, "a new section needs docs"
