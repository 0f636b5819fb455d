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
