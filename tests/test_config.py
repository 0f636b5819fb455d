import pytest

from batchaug.config import apply_overrides, load_config, parse_override, resolve_config
from batchaug.errors import ConfigError

QUICK = "configs/quick/cifar10_resnet20.yaml"
NO_MIX = {"mix": "none", "mix_alpha": 1.0, "mix_prob": 1.0}  # the batch-transform options every views method has


def test_quick_config_loads_with_overrides():
    cfg = load_config(QUICK, ["method.name=ba", "method.m=2", "train.max_steps=150", "data.subset=5000", "seed=1"])
    assert cfg.method["name"] == "ba" and cfg.method["m"] == 2
    assert cfg.train.max_steps == 150 and cfg.data.subset == 5000 and cfg.seed == 1


def test_parse_override_types():
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("optim.milestones=[1,2]") == (["optim", "milestones"], [1, 2])
    assert parse_override("train.max_steps=null") == (["train", "max_steps"], None)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("method.m")


@pytest.mark.parametrize("override, fragment", [
    ("train.bogus=1", "unknown key train.bogus; allowed keys in train:"),
    ("bogus.x=1", "unknown key bogus"),
    ("train.amp=fp8", "train.amp: 'fp8' is not allowed; choose one of 'none', 'bf16', 'fp16'"),
    ("train.batch_size=big", "train.batch_size: expected an integer"),
    ("method.name=nope", "method.name: unknown method 'nope'; choose one of baseline, ba, ra"),
    ("method.zzz=1", "unknown key method.zzz"),
    ("method.m=0", "method.m: must be >= 1"),
])
def test_bad_keys_and_values_name_the_key(override, fragment):
    overrides = [override]
    if override.startswith("method.m=") or override.startswith("method.zzz"):
        overrides = ["method.name=ba", override]
    with pytest.raises(ConfigError) as info:
        load_config(QUICK, overrides)
    assert fragment in str(info.value)


def test_method_defaults_filled_and_validated():
    cfg = resolve_config({"method": {"name": "ba"}})
    assert cfg.method == {"name": "ba", "m": 4, "policy": "standard", "average_outputs": False,
                          "adapt_grad_norm": False, "adapt_every": 50, "adapt_momentum": 0.9, **NO_MIX}


def test_base_inheritance(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {batch_size: 32, epochs: 3}\nseed: 5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {epochs: 7}\n")
    cfg = load_config(tmp_path / "b.yaml")
    assert cfg.train.batch_size == 32 and cfg.train.epochs == 7 and cfg.seed == 5


def test_missing_config_file_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_apply_overrides_does_not_mutate():
    raw = {"train": {"epochs": 1}}
    out = apply_overrides(raw, ["train.epochs=2"])
    assert raw["train"]["epochs"] == 1 and out["train"]["epochs"] == 2


def test_switching_method_keeps_shared_options_and_drops_others(tmp_path):
    (tmp_path / "ba.yaml").write_text("method: {name: ba, m: 8, policy: cutout}\n")
    cfg = load_config(tmp_path / "ba.yaml", ["method.name=baseline"])
    assert cfg.method == {"name": "baseline", "policy": "cutout", **NO_MIX}
    cfg = load_config(tmp_path / "ba.yaml", ["method.name=ra", "method.m=2"])
    assert cfg.method["m"] == 2 and cfg.method["policy"] == "cutout"
    with pytest.raises(ConfigError, match="unknown key method.m"):
        load_config(tmp_path / "ba.yaml", ["method.name=baseline", "method.m=3"])


def test_a_base_with_another_method_keeps_only_the_options_the_child_method_declares(tmp_path):
    (tmp_path / "sbn.yaml").write_text("method: {name: splitbn, weak: cutout, strong: randaugment, policy: flip}\n")
    (tmp_path / "base.yaml").write_text("base: sbn.yaml\nmethod: {name: baseline}\n")
    assert load_config(tmp_path / "base.yaml").method == {"name": "baseline", "policy": "flip", **NO_MIX}
    (tmp_path / "same.yaml").write_text("base: sbn.yaml\nmethod: {strong: gaussian}\n")  # same method: merged
    assert load_config(tmp_path / "same.yaml").method["weak"] == "cutout"


# ------------------------------------------------------------------------------------------ the paper block

ROW = {"paper": "sba", "table": "Table 1", "row": "ResNet44, CIFAR-10",
       "values": {"baseline": 6.92, "sba": 3.23, "m": 40},
       "runs": {"sba": [], "baseline": ["method={name: baseline, policy: standard}"]}, "regime": {"method.m": 40},
       "source": [{"file": "sba_li_fulltext.txt", "line": 196,
                   "quote": "ResNet44 6.92% 6.28% 4.56% (M = 40) 3.23% (M = 40)"}]}


def test_paper_block_is_kept_in_config_yaml_and_not_inherited(tmp_path):
    import yaml

    from batchaug.config import dump_config

    (tmp_path / "row.yaml").write_text(yaml.safe_dump({"method": {"name": "ba", "m": 40}, "paper": ROW}))
    cfg = load_config(tmp_path / "row.yaml")
    assert cfg.paper.values == {"baseline": 6.92, "sba": 3.23, "m": 40} and cfg.paper.source[0].line == 196
    assert [r.row for r in cfg.paper.rows()] == ["ResNet44, CIFAR-10"]
    again = resolve_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg and again.paper == cfg.paper
    (tmp_path / "child.yaml").write_text("base: row.yaml\ndata: {kind: cifar100}\n")
    child = load_config(tmp_path / "child.yaml")
    assert child.paper is None and child.method["m"] == 40  # the run is inherited, the published row is not


@pytest.mark.parametrize("change, fragment", [
    ({"paper": "hoffer"}, "paper.paper: 'hoffer' is not allowed; choose one of ba, sba, splitbn"),
    ({"values": {"baseline": 6.92, "sba": 3.3}}, "paper.values.sba: 3.3 is not printed in any source quote"),
    ({"values": {"baseline": 6.92, "sba": "3.23%"}}, "paper.values.sba: expected a number"),
    ({"row": None}, "paper.row: name the row"),
    ({"source": []}, "paper.source: give the line(s)"),
    ({"source": [{"file": "x.txt", "line": 0, "quote": "3.23"}]}, "paper.source[0].line: must be >= 1"),
    ({"source": [{"file": "x.txt", "line": 3, "quote": " "}]}, "paper.source[0].quote: quote the text"),
    ({"runs": {"sbaa": []}}, "paper.runs.sbaa: not a column of values"),
    ({"runs": {"sba": "method.m=4"}}, "paper.runs.sba: expected a list of key=value overrides"),
    ({"regime": {"m": 40}}, "paper.regime: 'm' is not a dotted config key"),
    ({"extra": True}, "an extra file (extra: true) is no row"),
    ({"colour": 1}, "unknown key paper.colour"),
])
def test_bad_paper_blocks_name_the_key(change, fragment):
    with pytest.raises(ConfigError) as info:
        resolve_config({"paper": {**ROW, **change}})
    assert fragment in str(info.value)


def test_extra_paper_block_needs_a_note_and_no_row():
    ok = resolve_config({"paper": {"paper": "ba", "table": "Table 1", "extra": True, "note": "extra, not a row"}})
    assert ok.paper.rows() == []
    with pytest.raises(ConfigError, match="paper.note: say why"):
        resolve_config({"paper": {"paper": "ba", "extra": True}})
