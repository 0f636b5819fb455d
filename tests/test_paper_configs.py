"""Every paper config carries its paper's numbers and regime (the ``paper:`` block), and sets what it says.

Checked without training anything:
- every ``configs/paper/*.yaml`` has a well-formed ``paper:`` block (the loader checks its shape and that
  every published value is printed in one of its quotes); a file that is no row says so in its header;
- the regime a block declares (dotted config keys: M, η, epochs, batch size, learning rate...) is what
  the file sets, and a row's published M is the file's ``method.m``;
- the paper's own settings are there: M for every BA/SBA row, η for the SBA CIFAR rows (§4.2), majority
  vote for SBA, the split-BN regime of §3 (CIFAR and ImageNet);
- every ``runs`` entry (how to run each column) resolves;
- every quote is on its line of the paper's text (``../shared/papers``; skipped where it is absent);
- every row of BA Table 1, SBA Table 1 and Split-BN Tables 1-5 maps to a config.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import pytest

from batchaug.config import load_config
from batchaug.papers import PAPERS, verify_sources

REPO = Path(__file__).resolve().parents[1]
PAPER_DIR = REPO / "configs" / "paper"
PAPER_CONFIGS = sorted(PAPER_DIR.glob("*.yaml"))
TEXTS = Path(os.environ.get("BATCHAUG_PAPERS", REPO.parent / "shared" / "papers"))

# The rows each table has, as the configs' blocks name them.
EXPECTED_ROWS: dict[tuple[str, str], set[str]] = {
    ("ba", "Table 1"): {
        "ResNet44, Cifar10", "ResNet44 + cutout, Cifar10", "VGG + cutout, Cifar10",
        "Wide-ResNet28-10 + cutout, Cifar10", "DARTS, Cifar10", "Word-level LSTM, PTB",
        "ResNet44 + cutout, Cifar100", "VGG + cutout, Cifar100", "Wide-ResNet28-10 + cutout, Cifar100",
        "DenseNet100-12, Cifar100", "AlexNet, ImageNet", "MobileNet, ImageNet", "ResNet50, ImageNet"},
    ("sba", "Table 1"): {
        "ResNet44, CIFAR-10", "VGGNet-16, CIFAR-10", "AlexNet, CIFAR-10", "ResNet44, CIFAR-100", "VGGNet-16, CIFAR-100",
        "ResNet50, ImageNet", "VGGNet-16, ImageNet", "AlexNet, ImageNet"},
    ("splitbn", "Table 1"): {f"{aug} (on the main BN; RandAugment on the auxiliary BN)" for aug in (
        "None", "Flip", "Flip + Crop", "Cutout", "AugMix", "Gaussian", "RandAugment")},
    ("splitbn", "Table 2"): {"Wide-ResNet-28-2, CIFAR-10", "Wide-ResNet-28-10, CIFAR-10", "Wide-ResNet-28-2, CIFAR-100",
                             "Wide-ResNet-28-10, CIFAR-100", "ResNet50, ImageNet (Top-1/Top-5)"},
    ("splitbn", "Table 3"): {"(1) Baseline (Flips and Crops)", "(2) RandAugment", "(3) Two RandAugment Batches",
                             "(4) Two RandAugment Batches with separated BatchNorm",
                             "(5) Weak Augment without separated BatchNorms",
                             "(6) Weak Augment with shared gamma, beta parameters", "(7) Weak Augment"},
    ("splitbn", "Table 4"): {f"{aug} (on the auxiliary BN; Cutout on the main BN)" for aug in (
        "Gaussian (sigma = 0.2)", "Adversarial Noise", "AugMix")} | {"RandAugment (on the auxiliary BN)"},
    ("splitbn", "Table 5"): {"Wide-ResNet-28-2, CIFAR-10-C (uCE)", "Wide-ResNet-28-10, CIFAR-10-C (uCE)",
                             "ResNet50, ImageNet-C (CE)"},
}
# Settings the papers give, per paper and data: a row's block must declare them (and the file set them).
REQUIRED_REGIME = {
    ("sba", "cifar"): {"method.m", "method.eta", "method.inference"},
    ("sba", "imagenet"): {"method.m", "method.inference"},  # §4.2 gives η for CIFAR only
    ("splitbn", "cifar"): {"train.epochs", "train.batch_size", "optim.lr", "optim.weight_decay", "optim.schedule"},
    ("splitbn", "imagenet"): {"train.epochs", "train.batch_size", "optim.lr", "optim.weight_decay", "optim.momentum",
                              "data.image_size"},
}


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _header(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def _get(cfg, dotted: str):
    section, *rest = dotted.split(".")
    node = getattr(cfg, section)
    for part in rest:
        node = node[part] if hasattr(node, "__getitem__") and not hasattr(node, part) else getattr(node, part)
    return node


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _family(cfg) -> str:
    return "imagenet" if cfg.data.kind == "imagenet" else "cifar"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=_rel)
def test_every_paper_config_has_a_well_formed_block(path):
    cfg = load_config(path)  # validates the block's shape and that every value is printed in a quote
    ref = cfg.paper
    assert ref is not None, f"{path.name}: no paper: block"
    assert ref.paper in PAPERS
    assert path.name.startswith({"ba": ("ba_", "ra_"), "sba": ("sba_",), "splitbn": ("splitbn_",)}[ref.paper])
    first_lines = "\n".join(_header(path).splitlines()[:3])
    if ref.extra:
        assert "extra, not a row" in first_lines, f"{path.name}: the header must say it is extra, not a row"
    else:
        assert ref.row and ref.table and ref.source
        assert "extra" not in first_lines
    for row in ref.rows():
        assert row.table and row.row and row.source, f"{path.name}: a row without table, row or source"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=_rel)
def test_the_file_sets_the_regime_its_block_declares(path):
    cfg = load_config(path)
    ref = cfg.paper
    for key, value in ref.regime.items():
        assert _same(_get(cfg, key), value), f"{path.name}: {key} is {_get(cfg, key)!r}, the paper block says {value!r}"
    if ref.extra:
        return
    # a row's published M is the M the file trains with (BA: Table 1's column, SBA: Table 1's, RA: Fig. 5's)
    if "m" in ref.values or "m" in cfg.method:
        assert "method.m" in ref.regime, f"{path.name}: the block gives no M"
        if "m" in ref.values:
            assert cfg.method["m"] == ref.values["m"]
    required = REQUIRED_REGIME.get((ref.paper, _family(cfg)), set())
    if ref.paper == "splitbn" and cfg.paper.table != "Table 2":
        required = set()  # rows of the other tables inherit the Table 2 file's regime through base:
    missing = required - set(ref.regime)
    assert not missing, f"{path.name}: the paper gives {sorted(missing)}; declare them in paper.regime"


def test_sba_rows_use_the_papers_eta_and_vote():
    rows = {p.stem: load_config(p) for p in PAPER_DIR.glob("sba_*.yaml")}
    # §4.2: 0.01 for AlexNet and ResNet44 on CIFAR-10, 0.1 for VGG-16 on CIFAR-10 and on CIFAR-100
    expected = {"sba_cifar10_resnet44": 0.01, "sba_cifar10_alexnet": 0.01, "sba_cifar10_vgg16": 0.1,
                "sba_cifar100_resnet44": 0.1, "sba_cifar100_vgg16": 0.1}
    for stem, eta in expected.items():
        assert rows[stem].method["eta"] == eta and rows[stem].paper.regime["method.eta"] == eta
    for stem, cfg in rows.items():
        assert cfg.method["inference"] == "vote", stem
        if not cfg.paper.extra:
            assert cfg.paper.compare == "median_last5_test_acc", stem


def test_ba_and_ra_rows_set_table_1_and_fig_5():
    ra = load_config(PAPER_DIR / "ra_cifar10_resnet44_cutout.yaml")
    # Fig. 5: RA with B = 640 and 10x the epochs against BA with M = 10 at B = 64
    assert ra.method["name"] == "ra" and ra.method["m"] == 10 and ra.train.batch_size * ra.method["m"] == 640
    for path in PAPER_DIR.glob("ba_*.yaml"):
        cfg = load_config(path)
        if not cfg.paper.extra:
            assert cfg.method["m"] == cfg.paper.values["m"], path.name
            # accuracy rows compare the final test accuracy; the PTB row the test perplexity
            assert cfg.paper.compare == ("test_ppl" if cfg.modality == "tokens" else "final_test_acc"), path.name


def test_splitbn_rows_follow_section_3():
    imagenet = load_config(PAPER_DIR / "splitbn_imagenet_resnet50.yaml")
    t = imagenet.train
    assert (t.epochs, t.batch_size, imagenet.data.image_size) == (180, 4096, 224)
    assert imagenet.optim.lr == pytest.approx(0.1 * 4096 / 256)
    assert imagenet.optim.weight_decay == 1e-4 and imagenet.optim.momentum == 0.9
    assert imagenet.method["weak"] == {"name": "cutout", "length": 90}  # footnote 4: cutout on the main BN
    gaussian = load_config(PAPER_DIR / "splitbn_cifar10_wrn28_2_gaussian.yaml")
    assert gaussian.method["strong"] == ["standard", {"name": "gaussian", "sigma": 0.2}]  # §5.2, on flip + crop
    weak = {p.stem: load_config(p).method["weak"] for p in PAPER_DIR.glob("splitbn_weak_*.yaml")}
    assert weak["splitbn_weak_none"] == "none" and weak["splitbn_weak_flip"] == "flip"
    assert weak["splitbn_weak_flip_crop"] == "standard"


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=_rel)
def test_every_column_run_resolves(path):
    base = load_config(path)
    for row in base.paper.rows():
        for name, overrides in row.runs.items():
            cfg = load_config(path, overrides)
            if not overrides:
                assert cfg == base
            assert cfg.paper == base.paper, f"{path.name} {row.table} {name}: overrides must not touch paper"


def test_quotes_are_on_their_lines_of_the_papers():
    if not TEXTS.is_dir():
        pytest.skip(f"the papers' texts are not at {TEXTS} (set BATCHAUG_PAPERS)")
    refs = [load_config(p).paper for p in PAPER_CONFIGS]
    assert verify_sources(refs, TEXTS) == []


def test_verify_sources_reports_a_quote_that_is_not_on_its_line(tmp_path):
    from batchaug.papers import PaperRef, PaperSource

    (tmp_path / "t.txt").write_text("first line\nResNet44\t6.92%\t6.28%\n")
    good = PaperRef(paper="sba", table="Table 1", row="r", values={"a": 6.92},
                    source=[PaperSource("t.txt", 2, "ResNet44 6.92% 6.28%")])
    assert verify_sources([good], tmp_path) == []
    moved = PaperRef(paper="sba", table="Table 1", row="r", source=[PaperSource("t.txt", 1, "ResNet44 6.92%")])
    missing = PaperRef(paper="sba", table="Table 1", row="r", source=[PaperSource("nope.txt", 1, "x")])
    beyond = PaperRef(paper="sba", table="Table 1", row="r", source=[PaperSource("t.txt", 9, "x")])
    problems = verify_sources([moved, missing, beyond], tmp_path)
    assert len(problems) == 3
    assert "is not on that line" in problems[0] and "no such file" in problems[1] and "has 2 lines" in problems[2]


def test_every_table_row_maps_to_a_config():
    found: dict[tuple[str, str], Counter] = {}
    for path in PAPER_CONFIGS:
        ref = load_config(path).paper
        for row in ref.rows():
            found.setdefault((ref.paper, row.table), Counter())[row.row] += 1
    for key, rows in EXPECTED_ROWS.items():
        have = found.get(key, Counter())
        assert rows <= set(have), f"{key}: no config for {sorted(rows - set(have))}"
        assert all(have[r] == 1 for r in rows), f"{key}: a row is claimed by two configs: {have}"
