"""``batchaug report``: runs grouped by seed and labelled by what differs, table.md numbers against the runs'
summaries, and every figure it writes opened (a valid PNG holding the expected series).

The run directories here are written as the run-directory contract says (``config.yaml`` from the real
config loader, ``metrics.jsonl`` lines with the documented keys, ``summary.json`` from the real
``summarize``, ``eval/*.json`` in the suites' format), with chosen numbers, so that every expected value
is known; tests/test_sweep.py reports on runs trained for real.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from batchaug.cli import main
from batchaug.config import dump_config, load_config
from batchaug.report import build_report
from batchaug.train.run import summarize

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "quick" / "cifar10_resnet20.yaml"
PNG = b"\x89PNG\r\n\x1a\n"
STEPS = (100, 200, 300)


def make_run(path: Path, overrides: list[str], acc: float, *, seed: int = 0, config: Path = QUICK,
             step_lines: bool = True, summary: bool = True, wall_per_step: float = 0.1,
             batch: int = 64) -> Path:
    """A run directory whose validation accuracy climbs to ``acc`` at step 300 (seed shifts it by 0.01·seed)."""
    path.mkdir(parents=True)
    cfg = load_config(config, [*overrides, f"seed={seed}", "train.max_steps=300", "train.eval_every=100"])
    (path / "config.yaml").write_text(dump_config(cfg))
    final = acc + 0.01 * seed
    lines = []
    if step_lines:
        lines += [{"kind": "step", "epoch": s / 125, "step": s, "images_seen": s * batch, "lr": 0.1,
                   "train_loss": 2.0 - s / 300, "grad_norm": 2.0 - s / 600 - 0.1 * seed,
                   "wall_time": s * wall_per_step} for s in range(50, 301, 50)]
    for s in STEPS:
        val = final * s / 300
        lines.append({"kind": "eval", "epoch": s / 125, "step": s, "images_seen": s * batch, "lr": 0.1,
                      "train_loss": 2.0 - s / 300, "train_acc": val + 0.05, "val_loss": 2.0 - val, "val_acc": val,
                      "grad_norm": 1.5, "wall_time": s * wall_per_step, "views_per_s": 640.0, "micro_batches": 1})
    lines.sort(key=lambda r: (r["step"], r["kind"] == "eval"))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if summary:
        (path / "summary.json").write_text(json.dumps(summarize(path), indent=2))
    return path


def corruptions_json(modes: dict[str, tuple[float, float]]) -> dict:
    """An eval/corruptions.json with, per mode, (uCE, clean error) and a two-corruption error table."""
    return {"suite": "corruptions", "limit": 500, "split": "test", "seed": 0, "options": {},
            "modes": {m: {"error": {"fog": {"1": uce - 0.05, "2": uce + 0.05}, "contrast": {"1": uce, "2": uce}},
                          "uCE": uce, "clean_error": clean, "CE": None, "mCE": None}
                      for m, (uce, clean) in modes.items()}}


def figures(out: Path) -> dict[str, dict]:
    """figures.json by file, after checking every figure is a readable PNG that report.md shows."""
    info = {f["file"]: f for f in json.loads((out / "plots" / "figures.json").read_text())}
    report = (out / "report.md").read_text()
    for name, f in info.items():
        png = out / "plots" / name
        assert png.read_bytes()[:8] == PNG, name
        with Image.open(png) as im:
            im.verify()
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
        assert f"](plots/{name})" in report, name
        assert f["title"], name
        for panel in f["panels"]:
            assert panel["xlabel"] and panel["ylabel"], (name, panel)
        assert f["series"], f"{name} has no legend"
    assert sorted(p.name for p in (out / "plots").glob("*.png")) == sorted(info)
    return info


def table_rows(md: str, title: str) -> list[list[str]]:
    """The body rows of the Markdown table under ``## title``."""
    section = md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def stat_cell(values: list[float]) -> str:
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    return f"{100 * mean:.2f} ± {100 * sd:.2f} (n={len(values)})"


@pytest.fixture
def ba_sweep(tmp_path):
    """Baseline, BA M=2 and BA M=4, two seeds each, in folders whose names say nothing."""
    root = tmp_path / "sweep"
    for i, (overrides, acc) in enumerate([(["method.name=baseline"], 0.60), (["method.name=ba", "method.m=2"], 0.63),
                                          (["method.name=ba", "method.m=4"], 0.66)]):
        for seed in (0, 1):
            make_run(root / f"folder{i}{seed}", overrides, acc, seed=seed)
    return root


def test_groups_runs_by_seed_and_labels_them_by_what_differs(ba_sweep, tmp_path):
    report = build_report([ba_sweep], tmp_path / "out")
    assert [(g.label, g.n) for g in report.groups] == [("baseline", 2), ("BA M=2", 2), ("BA M=4", 2)]
    assert all("folder" not in g.label for g in report.groups)


def test_runs_written_before_a_key_existed_group_with_runs_that_write_it(tmp_path):
    """The seed-0 runs of a sweep written by an older batchaug lack keys the seed-1 runs (a newer one) write
    with one value: they are still one group, and the key is no label."""
    import yaml

    root = tmp_path / "runs"
    for seed in (0, 1):
        for name, extra in (("base", ["method.name=baseline"]), ("ba", ["method.name=ba", "method.m=2"])):
            make_run(root / f"{name}{seed}", extra, 0.6, seed=seed)
    for name in ("base0", "ba0"):  # written before train.deterministic and the method's dropout_copies existed
        cfg = yaml.safe_load((root / name / "config.yaml").read_text())
        del cfg["train"]["deterministic"]
        cfg["method"].pop("dropout_copies", None)
        (root / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    report = build_report([root], tmp_path / "out")
    assert [(g.label, g.n) for g in report.groups] == [("BA M=2", 2), ("baseline", 2)]
    # a key that the runs writing it set to different values tells them apart, and then the runs without
    # it (whose value is unknown to a report) stand alone too
    cfg = yaml.safe_load((root / "ba1" / "config.yaml").read_text())
    cfg["train"]["deterministic"] = True
    (root / "ba1" / "config.yaml").write_text(yaml.safe_dump(cfg))
    groups = build_report([root], tmp_path / "out2").groups
    assert [g.n for g in groups] == [1, 1, 1, 1]
    assert next(g for g in groups if g.runs[0].path.name == "ba1").label == "BA M=2 train.deterministic=true"


def test_table_numbers_are_the_summaries(ba_sweep, tmp_path):
    out = tmp_path / "out"
    build_report([ba_sweep], out)
    md = (out / "table.md").read_text()
    assert md == (out / "table.md").read_text() and "## Runs" in (out / "report.md").read_text()
    summaries = {p.name: json.loads((p / "summary.json").read_text()) for p in ba_sweep.iterdir()}
    runs = {r[0]: r for r in table_rows(md, "Runs")}
    for label, prefix in (("baseline", "folder0"), ("BA M=2", "folder1"), ("BA M=4", "folder2")):
        accs = [summaries[f"{prefix}{s}"]["final_test_acc"] for s in (0, 1)]
        assert runs[label][1] == "2"
        assert runs[label][2] == stat_cell(accs)
        assert runs[label][4] == "300" and runs[label][5] == str(300 * 64)
    (m2, m4) = table_rows(md, "BA Table 1: baseline / BA (M)")
    base = [summaries[f"folder0{s}"]["final_test_acc"] for s in (0, 1)]
    ba4 = [summaries[f"folder2{s}"]["final_test_acc"] for s in (0, 1)]
    assert m4[3] == stat_cell(base) and m4[5] == "4" and m4[6] == stat_cell(ba4)
    assert m4[8] == f"{100 * (statistics.fmean(ba4) - statistics.fmean(base)):+.2f}"
    # BA M=4's mean curve is 0.665·s/300: it passes the baseline's final 0.605 first at the step-300 line
    # (0.4433 at 200); M=2's 0.635·s/300 also first at 300
    assert m4[9] == "300 of 300" and m2[9] == "300 of 300"
    sources = {r[0]: r[3] for r in table_rows(md, "Sources")}
    assert str(ba_sweep / "folder20") in sources["BA M=4"].replace("`", "")


def test_every_figure_opens_with_its_series(ba_sweep, tmp_path):
    out = tmp_path / "out"
    build_report([ba_sweep], out)
    info = figures(out)
    assert {"val_error_steps.png", "val_error_epochs.png", "grad_norm_epochs.png", "train_val_error.png"} <= set(info)
    labels = ["baseline (n=2)", "BA M=2 (n=2)", "BA M=4 (n=2)"]
    for name in ("val_error_steps.png", "val_error_epochs.png", "grad_norm_epochs.png", "train_val_error.png"):
        assert info[name]["series"] == labels, name
    steps = info["val_error_steps.png"]["panels"][0]["data"]["BA M=4 (n=2)"]
    assert steps["x"] == list(STEPS)
    assert steps["y"] == pytest.approx([100 - 100 * 0.665 * s / 300 for s in STEPS])
    epochs = info["val_error_epochs.png"]["panels"][0]["data"]["baseline (n=2)"]
    assert epochs["x"] == pytest.approx([s / 125 for s in STEPS])
    # the gradient norm comes from the step lines (every 50 steps), not the evaluation lines
    grad = info["grad_norm_epochs.png"]["panels"][0]["data"]["baseline (n=2)"]
    assert grad["x"] == pytest.approx([s / 125 for s in range(50, 301, 50)])
    assert grad["y"] == pytest.approx([2.0 - s / 600 - 0.05 for s in range(50, 301, 50)])


PTB_QUICK = REPO / "configs" / "quick" / "ptb_lstm.yaml"


def make_lm_run(path: Path, overrides: list[str], final_ppl: float, test_ppl: float, *, seed: int = 0) -> Path:
    """A language-model run directory: perplexity falls from 4·final_ppl to final_ppl over steps 50-150,
    accuracies are None (as a language model logs them), and eval/perplexity.json holds the test figure."""
    path.mkdir(parents=True)
    cfg = load_config(PTB_QUICK, [*overrides, f"seed={seed}", "train.max_steps=150", "train.eval_every=50"])
    (path / "config.yaml").write_text(dump_config(cfg))
    lines = [{"kind": "eval", "epoch": s / 1000, "step": s, "images_seen": s * 20, "tokens_seen": s * 700,
              "lr": 30.0, "train_loss": 6.0, "train_acc": None, "val_loss": 5.0, "val_acc": None,
              "val_ppl": final_ppl * (4 - 3 * (s - 50) / 100), "grad_norm": 0.5, "wall_time": s * 0.2,
              "views_per_s": 100.0} for s in (50, 100, 150)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (path / "eval").mkdir()
    (path / "eval" / "perplexity.json").write_text(json.dumps(
        {"suite": "perplexity", "limit": None, "modes": {"plain": {"test": {"loss": 5.0, "ppl": test_ppl}}}}))
    (path / "summary.json").write_text(json.dumps(summarize(path), indent=2))
    return path


def test_language_models_report_perplexity_and_no_accuracy(tmp_path):
    root = tmp_path / "lm"
    make_lm_run(root / "a", ["method.name=baseline"], 300.0, 280.0)
    make_lm_run(root / "b", ["method.name=ba", "method.m=2"], 250.0, 240.0)
    out = tmp_path / "out"
    build_report([root], out)
    info = figures(out)
    assert set(info) == {"val_ppl.png", "grad_norm_epochs.png"}  # no accuracy it never measured
    (panel,) = info["val_ppl.png"]["panels"]
    assert panel["yscale"] == "log" and info["val_ppl.png"]["series"] == ["baseline", "BA M=2"]
    assert panel["data"]["BA M=2"]["y"] == pytest.approx([1000.0, 625.0, 250.0])
    md = (out / "table.md").read_text()
    header = next(ln for ln in md.split("## Runs\n", 1)[1].splitlines() if ln.startswith("|"))
    assert "test ppl" in header and "accuracy" not in header
    rows = {r[0]: r for r in table_rows(md, "Runs")}
    assert rows["BA M=2"][2:5] == ["250.00", "250.00", "240.00"] and rows["baseline"][4] == "280.00"
    # BA Table 1 in perplexity (the quick config has no paper block): Δ in perplexity, and BA's validation
    # perplexity first reaches the baseline's final 300 at step 150 (625 at 100)
    (row,) = table_rows(md, "BA Table 1: baseline / BA (M)")
    assert row[3] == "280.00" and row[6] == "240.00" and row[8] == "-40.00" and row[9] == "150 of 150"
    report = (out / "report.md").read_text()
    assert "test ppl" in report and "val_error_steps.png not drawn" not in report


def test_sba_eta_and_layer_figures(tmp_path):
    root = tmp_path / "sba"
    make_run(root / "base", ["method.name=baseline"], 0.60)
    for eta, acc in ((0, 0.61), (0.01, 0.64), (0.1, 0.62)):
        make_run(root / f"eta{eta}", ["method.name=sba", "method.m=4", f"method.eta={eta}"], acc)
    layers = ["layer1", "layer2", "layer3"]
    fixed = ["method.name=sba", "method.m=4", "method.layer_choice=fixed", "method.layers=[layer1,layer2,layer3]"]
    times = {}
    for i, k in enumerate(layers):
        for p in (0.5, 1.0):
            times[k, p] = (0.4 - 0.1 * i) * (2 if p == 1.0 else 1)
            make_run(root / f"{k}_{p}", [*fixed, f"method.fixed_layer={k}", f"method.p={p}"], 0.5 + 0.01 * i,
                     wall_per_step=times[k, p])
    out = tmp_path / "out"
    report = build_report([root], out)
    info = figures(out)
    eta = info["sba_eta.png"]["panels"][0]
    assert sorted(eta["series"]) == ["SBA M=4", "baseline: 60.00%"]  # the SBA line and the baseline's level
    assert eta["data"]["SBA M=4"]["y"] == pytest.approx([61.0, 64.0, 62.0])
    cost, acc = info["sba_layers.png"]["panels"]
    ratio = cost["data"][next(s for s in cost["series"] if s.startswith("t_BA"))]
    assert ratio["y"] == pytest.approx([times[k, 1.0] / times[k, 0.5] for k in layers])
    assert acc["series"] == ["SBA", "BA at k (p = 1)"]
    assert acc["data"]["SBA"]["y"] == pytest.approx([50.0, 51.0, 52.0])
    # SBA Table 1: error and relative improvement over the baseline trained the same way
    md = (out / "table.md").read_text()
    rows = table_rows(md, "SBA Table 1: top-1 error (%)")
    assert len(rows) == 3  # the η runs; the layer study's fixed-layer runs are not Table 1 rows
    best = next(r for r in rows if "η=0.01" in r[14])
    assert best[2] == "40.00" and best[10] == "36.00" and best[12] == f"{100 * (40 - 36) / 40:.2f}"
    assert {g.label for g in report.groups} >= {"SBA M=4 η=0.01 k~U(S)",
                                                "SBA M=4 η=0.1 k=layer1 p=1 S=layer1+layer2+layer3"}


def test_split_bn_alpha_trade_off_suites_and_tables(tmp_path):
    root = tmp_path / "sbn"
    randaug = "method.policy=[standard, {name: randaugment, num_ops: 3, magnitude: 4}, cutout]"
    sbn = make_run(root / "weak_augment", ["method.name=splitbn"], 0.70)
    ra = make_run(root / "randaugment", ["method.name=baseline", randaug], 0.68)
    std = make_run(root / "standard", ["method.name=baseline"], 0.66)
    (sbn / "eval").mkdir()
    (sbn / "eval" / "corruptions.json").write_text(json.dumps(corruptions_json(
        {"main": (0.30, 0.30), "alpha=0.5": (0.27, 0.31), "aux": (0.25, 0.33)})))
    (sbn / "eval" / "fourier.json").write_text(json.dumps(
        {"suite": "fourier", "limit": 50, "modes": {m: {"grid": [[0.1, 0.2, 0.3]] * 3, "mean_error": 0.2, "norm": 8.0}
                                                    for m in ("main", "alpha=0.5", "aux")}}))
    (sbn / "eval" / "lowpass.json").write_text(json.dumps(
        {"suite": "lowpass", "limit": 50, "modes": {m: {"bandwidth": [4, 8, 16], "accuracy": [0.2, 0.4, 0.6]}
                                                    for m in ("main", "aux")}}))
    (sbn / "eval" / "affinity.json").write_text(json.dumps({"suite": "affinity", "limit": 50, "modes": {}}))
    for run, uce in ((ra, 0.24), (std, 0.35)):
        (run / "eval").mkdir()
        (run / "eval" / "corruptions.json").write_text(json.dumps(corruptions_json({"default": (uce, 0.32)})))
    out = tmp_path / "out"
    report = build_report([root], out)
    info = figures(out)
    trade = info["alpha_tradeoff.png"]["panels"][0]
    assert len(trade["series"]) == 3  # the split-BN curve and two single-BN points
    curve = trade["data"][trade["series"][0]]
    assert curve["x"] == pytest.approx([30.0, 27.0, 25.0]) and curve["y"] == pytest.approx([70.0, 69.0, 67.0])
    label = next(g.label for g in report.groups if g.method == "splitbn")
    stem = label.replace(" ", "_")
    assert info[f"{stem}_corruptions.png"]["panels"][0]["series"] == ["main", "alpha=0.5", "aux"]
    assert info[f"{stem}_fourier.png"]["series"] == ["main (mean 20.0%)", "alpha=0.5 (mean 20.0%)", "aux (mean 20.0%)"]
    assert info[f"{stem}_lowpass.png"]["series"] == ["main", "aux"]
    assert any("affinity" in s and "has no figure" in s for s in report.skipped)
    md = (out / "table.md").read_text()
    (t2,) = table_rows(md, "Split-BN Table 2: accuracy (%)")
    summaries = {r.path.name: r.summary for r in report.runs}
    assert t2[2] == f"{100 * summaries['standard']['final_test_acc']:.2f}"
    assert t2[8] == f"{100 * summaries['randaugment']['final_test_acc']:.2f}"
    assert t2[10] == f"{100 * summaries['weak_augment']['final_test_acc']:.2f}"
    (t5,) = table_rows(md, "Split-BN Table 5: uCE (%)")
    assert (t5[1], t5[3], t5[5]) == ("35.00", "24.00", "30.00")


def test_paper_columns_come_from_the_configs_paper_block(tmp_path):
    paper = REPO / "configs" / "paper" / "ba_cifar10_resnet44_cutout.yaml"
    small = ["model.name=resnet20", "data.kind=cifar10_jpeg", "data.root=../shared/data/cifar10-jpeg.zip"]
    make_run(tmp_path / "runs" / "ba", [*small, "method.m=4"], 0.66, config=paper)
    make_run(tmp_path / "runs" / "base", [*small, "method={name: baseline, policy: cutout}"], 0.60, config=paper)
    out = tmp_path / "out"
    build_report([tmp_path / "runs"], out)
    (row,) = table_rows((out / "table.md").read_text(), "BA Table 1: baseline / BA (M)")
    assert row[4] == "93.70" and row[7] == "95.27 (M=40)" and row[11] == "ResNet44 + cutout, Cifar10"
    assert row[3] == "60.00" and row[6] == "66.00" and row[5] == "4"


def test_runs_lacking_files_are_drawn_as_far_as_they_go(tmp_path, capsys):
    root = tmp_path / "runs"
    make_run(root / "finished", ["method.name=baseline"], 0.6)
    make_run(root / "running", ["method.name=ba", "method.m=2"], 0.62, summary=False, step_lines=False)
    (root / "started").mkdir()
    (root / "started" / "config.yaml").write_text(dump_config(load_config(
        QUICK, ["method.name=ba", "method.m=4", "train.max_steps=300", "train.eval_every=100"])))
    (root / "cut").mkdir()
    (root / "cut" / "metrics.jsonl").write_text(json.dumps({"kind": "eval", "step": 10, "epoch": 0.1, "val_acc": 0.2})
                                                 + '\n{"kind": "eval", "st')
    out = tmp_path / "out"
    assert main(["report", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "running: summary.json missing (unfinished run?)" in printed
    assert "started: metrics.jsonl missing: no curves" in printed
    assert "cut: config.yaml missing" in printed and "line 2 is not JSON" in printed
    rows = {r[0]: r for r in table_rows((out / "table.md").read_text(), "Runs")}
    assert rows["BA M=2"][-1] == "no" and rows["BA M=2"][2] == "62.00"  # the last line's val_acc
    assert rows["cut"][2] == "20.00"
    info = figures(out)
    assert len(info["val_error_steps.png"]["series"]) == 3  # finished, running and the cut run; not 'started'


def test_one_run_reports_into_its_own_directory(tmp_path):
    run = make_run(tmp_path / "run", ["method.name=ba", "method.m=4"], 0.6, step_lines=False)
    assert main(["report", str(run)]) == 0
    info = figures(run)
    assert info["val_error_steps.png"]["series"] == ["BA M=4"]
    assert info["grad_norm_epochs.png"]["panels"][0]["data"]["BA M=4"]["y"] == [1.5, 1.5, 1.5]  # eval lines
    (row,) = table_rows((run / "table.md").read_text(), "Runs")
    assert row[2] == "60.00"


def test_labels_option_names_each_argument(ba_sweep, tmp_path):
    one = make_run(tmp_path / "ra", ["method.name=ra", "method.m=4"], 0.64)
    report = build_report([ba_sweep, one], tmp_path / "out", labels=["mine", "RA run"])
    assert [g.label for g in report.groups] == ["mine baseline", "mine BA M=2", "mine BA M=4", "RA run"]
    info = figures(tmp_path / "out")
    # with an RA run, the training/validation figure is BA Fig. 5: RA, BA at its M and the baseline
    assert info["train_val_error.png"]["series"] == ["mine baseline (n=2)", "mine BA M=4 (n=2)", "RA run"]


def test_reporting_imports_no_torch(ba_sweep, tmp_path):
    code = ("import sys; from batchaug.report import build_report; "
            f"build_report([{str(ba_sweep)!r}], {str(tmp_path / 'out')!r}); print('torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert re.search(r"BA M=4", (tmp_path / "out" / "table.md").read_text())


@pytest.mark.integration
def test_demo_writes_its_report_through_batchaug_report(cifar_zip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the demo's default config path is relative to the repository root
    out = tmp_path / "demo"
    tiny = [f"data.root={cifar_zip}", "train.max_steps=8", "train.eval_every=4", "data.subset=256",
            "data.val_subset=100", "train.progress=false", "train.tensorboard=false"]
    assert main(["demo", "--out", str(out), "--m", "2", *tiny]) == 0
    md = (out / "table.md").read_text()
    (row,) = table_rows(md, "BA Table 1: baseline / BA (M)")
    summaries = {d: json.loads((out / d / "summary.json").read_text()) for d in ("baseline", "ba_m2")}
    assert row[3] == f"{100 * summaries['baseline']['final_test_acc']:.2f}"
    assert row[6] == f"{100 * summaries['ba_m2']['final_test_acc']:.2f}" and row[5] == "2"
    info = figures(out)
    assert info["val_error_steps.png"]["series"] == ["baseline", "BA M=2"]
    # without the data, the demo says how to point it at CIFAR-10
    capsys.readouterr()
    assert main(["demo", "--out", str(tmp_path / "nodata"), *tiny, f"data.root={tmp_path / 'missing.zip'}"]) == 2
    err = capsys.readouterr().err
    assert "missing.zip" in err and "data.root=PATH" in err and "data.download=true" in err
