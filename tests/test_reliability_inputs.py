"""Every bad input of issue 15 ends in a one-line error naming it, before any work: bad numbers, bad YAML,
bad data, a data kind that does not match the data, resource bombs (pixels, zip members, YAML aliases,
huge values), symbolic links, unwritable run directories (docs/reliability.md)."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_runs import QUICK, common, make_tree, train

from batchaug.data import ImageFolderSource, decode_image, load_split
from batchaug.data.archive import ZipTree, open_tree
from batchaug.errors import ConfigError, DataError


def refused(capsys, *args: str, match: str, out: Path | None = None) -> str:
    """Run ``batchaug train ARGS``: exit 2, one line on stderr containing ``match``, no traceback, nothing trained."""
    capsys.readouterr()
    assert train(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("batchaug train: error: "), err
    assert match in err, err
    if out is not None:
        assert not (out / "metrics.jsonl").exists()
    return err


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


def zip_of(folder: Path, dest: Path, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(dest, "w", compression) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return dest


# ------------------------------------------------------------------------------------- numbers and keys

@pytest.mark.parametrize("override,match", [
    ("train.batch_size=-4", "train.batch_size: must be >= 1, got -4"),
    ("optim.lr=-0.1", "optim.lr: must be >= 0"),
    ("optim.lr=inf", "optim.lr: must be a finite number"),
    ("method.m=0", "method.m: must be >= 1"),
    ("seed=1e30", "seed: must be in [0, 4294967296)"),
    ("seed=-1", "seed: must be in"),
    ("eval.batch_size=0", "eval.batch_size: must be >= 1"),
    ("train.ghost_bn=-1", "train.ghost_bn: must be >= 1"),
    ("train.max_steps=0", "train.max_steps: must be >= 1"),
    ("train.max_steps=-3", "train.max_steps: must be >= 1"),
    ("train.epochs=-1", "train.epochs: must be > 0"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay: must be >= 0"),
    ("optim.warmup_epochs=-1", "optim.warmup_epochs: must be >= 0"),
    ("model.num_classes=0", "model.num_classes: must be >= 1"),
    ("train.micro_batch=0", "train.micro_batch: must be >= 1"),
    ("data.subset=0", "data.subset: must be >= 1"),
    ('data.root=""', "data.root: an empty path"),
    ("data.max_pixels=0", "data.max_pixels: must be >= 1"),
    ("data.image_size=20000", "data.image_size: 20000x20000 images exceed data.max_pixels"),
    ("train.on_nonfinite=ignore", "train.on_nonfinite: 'ignore' is not allowed"),
])
def test_bad_numbers_and_keys_are_one_line_errors(capsys, tree, tmp_path, override, match):
    extra = ["method.name=ba", override] if override.startswith("method.m") else [override]
    refused(capsys, *common(tree), *extra, "--out", str(tmp_path / "run"), match=match, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # a bad config stops before the run directory is even made


def test_views_that_cannot_fit_are_refused_before_training(capsys, tree, tmp_path, monkeypatch):
    out = tmp_path / "run"
    refused(capsys, *common(tree, "method.name=ba", "method.m=1000000000"), "--out", str(out),
            match="lower method.m or train.batch_size", out=out)
    # the case: the quick config's 64 CIFAR images x 100000 views, on a 139 GiB accelerator
    from batchaug.train import run as run_mod

    monkeypatch.setattr(run_mod, "device_memory", lambda device: 139 * 2**30)
    plan = run_mod.RunPlan(64, 125, 625, 5.0, (3.0, 4.0), 0.1, 125)
    with pytest.raises(ConfigError, match=r"64 samples x 100000 views of 3x32x32 images needs 146\.5 GiB"):
        run_mod.check_step_fits(plan, 100000, (3, 32, 32), torch.device("cpu"))
    run_mod.check_step_fits(plan, 64, (3, 32, 32), torch.device("cpu"))  # M=64 is fine


def test_long_values_are_cut_in_messages(capsys, tree, tmp_path):
    err = refused(capsys, *common(tree), "model.name=" + "x" * 100_000, "--out", str(tmp_path / "r"),
                  match="characters>")
    assert len(err) < 600
    err = refused(capsys, *common(tree), "train." + "k" * 50_000 + "=1", "--out", str(tmp_path / "r"),
                  match="unknown key train.")
    assert len(err) < 1500


# ------------------------------------------------------------------------------------------------ YAML

@pytest.mark.parametrize("text,match", [
    (b"data:\n  root: caf\xe9\n", "is not UTF-8 text (byte 0xe9"),
    (b"train:\n  batch_size: 8\n  epochs: 1\n  batch_size: 16\n", "line 4: key 'batch_size' appears twice"),
    (b"train: {}\ntrain: {}\n", "key 'train' appears twice"),
    (b"model:\n  kwargs: &a {x: [1, 2]}\n  name: *a\n", "YAML aliases (*a) are not allowed"),
    (b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n",
     "aliases"),  # the start of a billion-laughs bomb
    (b"model:\n  kwargs: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"data: [\n", "is not valid YAML"),
    (b"- just\n- a list\n", "must hold a mapping of sections"),
    (b"base: 3\n", "base: must be the name of another config file"),
])
def test_bad_yaml_is_a_one_line_error(capsys, tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_bytes(text)
    refused(capsys, str(path), "--out", str(tmp_path / "run"), match=match)


def test_base_cycles_are_refused(capsys, tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain: {batch_size: 8}\n")
    (tmp_path / "b.yaml").write_text("base: ./a.yaml\n")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    err = refused(capsys, str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run"), match="base: forms a cycle")
    assert "a.yaml -> " in err and "b.yaml -> " in err
    refused(capsys, str(tmp_path / "self.yaml"), "--out", str(tmp_path / "run"), match="base: forms a cycle")


def test_huge_config_files_are_refused(capsys, tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    refused(capsys, str(path), "--out", str(tmp_path / "run"), match="larger than 1024 KiB")


# ------------------------------------------------------------------------------------------------ data

def test_empty_class_folder(capsys, tree, tmp_path):
    data = make_tree(tmp_path / "d", n_train=4, n_test=2)
    (data / "train" / "c").mkdir()
    refused(capsys, *common(data), "--out", str(tmp_path / "run"), match="class folder 'train/c' of split 'train'"
            " holds no images", out=tmp_path / "run")


def test_one_class_dataset(capsys, tmp_path):
    data = make_tree(tmp_path / "d", n_train=20, n_test=4, classes=("only",))
    refused(capsys, *common(data), "--out", str(tmp_path / "run"), match="has 1 class (only); a classifier needs "
            "at least 2", out=tmp_path / "run")


def test_splits_with_different_channels(capsys, tmp_path):
    import shutil

    data = make_tree(tmp_path / "d", n_train=16, n_test=8)
    shutil.rmtree(data / "test")
    shutil.copytree(make_tree(tmp_path / "g", n_train=1, n_test=8, channels=1) / "test", data / "test")
    refused(capsys, *common(data), "--out", str(tmp_path / "run"), match="the train split's images have 3 channel(s) "
            "but the test split's have 1; set data.grayscale_to_rgb=true", out=tmp_path / "run")
    assert train(*common(data, "data.grayscale_to_rgb=true", "train.max_steps=2"), "--out", str(tmp_path / "ok")) == 0


def test_truncated_zip(capsys, tree, tmp_path):
    whole = zip_of(tree, tmp_path / "d.zip")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    refused(capsys, *common(cut), "--out", str(tmp_path / "run"), match="truncated or corrupt zip archive")
    with pytest.raises(DataError, match="truncated or corrupt zip"):
        open_tree(cut)


def test_corrupt_jpeg_in_a_zip_names_the_member(capsys, tmp_path):
    """Done-when: batchaug train on a zip with a corrupt JPEG exits non-zero naming the file."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "jpegs"
    for split, n in (("train", 8), ("test", 4)):
        for c in ("a", "b"):
            (folder / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / split / c / f"{i}.jpg")
    bad = folder / "train" / "b" / "3.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[:200] + bytes(range(256)) * 2 + data[200:])  # garbage in the middle: undecodable
    archive = zip_of(folder, tmp_path / "d.zip")
    refused(capsys, *common(archive), "--out", str(tmp_path / "run"), match=f"member 'train/b/3.jpg' of zip "
            f"'{archive}': corrupt or truncated JPEG", out=tmp_path / "run")
    bad.write_bytes(data[: len(data) // 2])  # cut short
    archive = zip_of(folder, tmp_path / "d2.zip")
    refused(capsys, *common(archive), "--out", str(tmp_path / "run2"), match="member 'train/b/3.jpg'")


def test_a_kind_that_does_not_match_the_data(capsys, tmp_path):
    """The quick config (data.kind: cifar10_jpeg) pointed at another dataset with only data.root=OTHER.zip."""
    gray = zip_of(make_tree(tmp_path / "gray", n_train=8, n_test=4, channels=1), tmp_path / "gray.zip")
    rgb = zip_of(make_tree(tmp_path / "rgb", n_train=8, n_test=4), tmp_path / "rgb.zip")
    for archive in (gray, rgb):
        refused(capsys, QUICK, f"data.root={archive}", "data.cache=false", "--out", str(tmp_path / "run"),
                match="this is not CIFAR-10 (2 classes: a, b; ", out=tmp_path / "run")
        capsys.readouterr()
    err = refused(capsys, QUICK, f"data.root={gray}", "--out", str(tmp_path / "run"), match="set data.kind=imagefolder")
    assert "1-channel images" in err
    # and as imagefolder it trains, normalized with its own (one-channel) statistics
    assert train(QUICK, f"data.root={gray}", "data.kind=imagefolder", "data.subset=null", "data.val_subset=null",
                 "train.batch_size=8", "train.max_steps=1", "train.progress=false", "train.tensorboard=false",
                 "data.cache=false", "--out", str(tmp_path / "ok")) == 0


def test_normalize_message_reads():
    from batchaug.augment import normalize

    with pytest.raises(ConfigError, match=r"the images have 1 channel but mean has 3 values and std 3: give one "
                                          r"per channel, or a single value for all"):
        normalize(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), (0.5, 0.5, 0.5), (0.2, 0.2, 0.2))


def test_class_names_are_covered_by_the_cache_checksum(tmp_path, monkeypatch):
    from batchaug.data.cache import cache_key, cache_path, load_cached, save_cached
    from batchaug.data.tensors import TensorSplit

    monkeypatch.setenv("BATCHAUG_CACHE", str(tmp_path))
    split = TensorSplit(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["cat", "dog"])
    key = cache_key({"x": 1})
    path = cache_path(key)
    assert save_cached(path, key, split)
    assert load_cached(path, key).classes == ["cat", "dog"]
    blob = torch.load(path, weights_only=True)
    blob["classes"] = ["dog", "cat"]  # swapped names, same tensors: every label would mean the other class
    torch.save(blob, path)
    with pytest.warns(RuntimeWarning, match="checksum mismatch"):
        assert load_cached(path, key) is None


# -------------------------------------------------------------------------------------------- symlinks

def test_symlink_loops_are_followed_once(tmp_path):
    """Data-loss case: a symlink loop in a folder dataset duplicated the training set 41 times."""
    data = make_tree(tmp_path / "d", n_train=4, n_test=2)
    os.symlink("..", data / "train" / "a" / "loop")  # train/a/loop -> train
    os.symlink(data / "train" / "b", data / "train" / "a" / "b_again")
    with pytest.warns(RuntimeWarning, match="lead to folders listed already"):
        src = ImageFolderSource(data, "train")
    assert len(src) == 8 and sorted(set(src.files)) == sorted(src.files)


def test_symlinks_outside_the_root_are_never_read(capsys, tmp_path):
    data = make_tree(tmp_path / "d", n_train=4, n_test=2)
    outside = make_tree(tmp_path / "elsewhere", n_train=2, n_test=0)
    os.symlink(outside / "train" / "a", data / "train" / "a" / "more")
    with pytest.raises(DataError, match="outside the dataset folder"):
        ImageFolderSource(data, "train")
    os.unlink(data / "train" / "a" / "more")
    os.symlink(outside / "train" / "a" / "0.png", data / "train" / "a" / "x.png")
    refused(capsys, *common(data), "--out", str(tmp_path / "run"), match="a symbolic link to")


# ---------------------------------------------------------------------------------------------- bombs

def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", w, h)  # IHDR width and height (its CRC no longer matches: never decoded)
    return bytes(data)


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")  # baseline SOF0: length, precision, height, width
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def _bmp(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "BMP")
    data = bytearray(buf.getvalue())
    data[18:26] = struct.pack("<ii", w, h)
    return bytes(data)


@pytest.mark.parametrize("make", [_png, _jpeg, _bmp])
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_pixel_bombs_are_refused_before_decoding(make, backend):
    bomb = make(60_000, 60_000)  # 3.6 gigapixels: 10 GiB of RGB from a few hundred bytes
    with pytest.raises(DataError, match=r"bomb is 60000x60000 = 3,600,000,000 pixels, above the limit of "
                                        r"89,478,485|bomb: .*MAX_IMAGE_PIXELS"):
        decode_image(bomb, name="bomb", backend=backend)
    small = make(4, 4)
    if make is not _png:  # (the patched PNG's IHDR CRC is wrong even at its own size)
        assert decode_image(small, backend=backend).shape == (3, 4, 4)
    with pytest.raises(DataError, match="above the limit of 15"):
        decode_image(make(4, 4) if make is not _png else _png(4, 4), max_pixels=15, backend=backend, name="x")


def test_pixel_limit_is_configurable_and_applies_to_training(capsys, tmp_path):
    data = make_tree(tmp_path / "d", n_train=4, n_test=2)  # 8x8 = 64 pixels
    refused(capsys, *common(data, "data.max_pixels=63"), "--out", str(tmp_path / "run"),
            match="is 8x8 = 64 pixels, above the limit of 63 (config key data.max_pixels")
    (data / "train" / "a" / "bomb.png").write_bytes(_png(100_000, 100_000))
    refused(capsys, *common(data), "--out", str(tmp_path / "run2"), match="bomb.png' is 100000x100000")


def test_zip_members_are_never_inflated_past_the_cap(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train/a/0.png", b"\0" * 1_000_000)  # a megabyte of zeros deflates to a kilobyte
    with pytest.raises(DataError, match=r"member 'train/a/0.png' declares 1,000,000 bytes, above the cap of 4,096"):
        ZipTree(path, max_member_bytes=4096).read("train/a/0.png")
    assert len(ZipTree(path).read("train/a/0.png")) == 1_000_000  # under the default cap
    # a member that lies about its size (declares 10 bytes): inflating stops at 11, and the lie is reported
    raw = bytearray(path.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = raw.index(sig)
        raw[i + offset:i + offset + 4] = struct.pack("<I", 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt|cannot be read"):
        ZipTree(path).read("train/a/0.png")


def test_decompression_bomb_through_load_split(tmp_path):
    folder = make_tree(tmp_path / "d", n_train=2, n_test=1)
    (folder / "train" / "a" / "bomb.jpg").write_bytes(_jpeg(50_000, 50_000))
    archive = zip_of(folder, tmp_path / "d.zip", zipfile.ZIP_DEFLATED)
    with pytest.raises(DataError, match="bomb.jpg' of zip .* is 50000x50000"):
        load_split(archive, "train", cache=False)


# ------------------------------------------------------------------------------------ the run directory

def test_unwritable_run_directories_are_one_line_errors(capsys, tree, tmp_path):
    refused(capsys, *common(tree), "--out", "/proc/batchaug-test/run", match="cannot write /proc/batchaug-test")
    (tmp_path / "file").write_text("x")
    refused(capsys, *common(tree), "--out", str(tmp_path / "file"), match=f"cannot write {tmp_path / 'file'}: it "
            "exists and is not a folder")
    if os.geteuid() != 0:  # root writes through permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            refused(capsys, *common(tree), "--out", str(ro / "run"), match=f"cannot write {ro / 'run'}")
        finally:
            ro.chmod(0o755)


def test_resume_of_a_non_run_directory(capsys, tmp_path):
    capsys.readouterr()
    assert train("--resume", str(tmp_path)) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert train("--resume", str(tmp_path / "missing")) == 2
    assert "no such directory" in capsys.readouterr().err
    assert train("--resume", str(tmp_path), QUICK) == 2
    assert "keeps its own config" in capsys.readouterr().err


def test_resume_of_a_damaged_checkpoint_names_it(capsys, tree, tmp_path):
    from batchaug.config import dump_config, load_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(QUICK, [f"data.root={tree}"])))
    (run / "last.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    capsys.readouterr()
    assert train("--resume", str(run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {run / 'last.pt'} could not be read" in err


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_holding_code_is_refused_without_advice_to_run_it(capsys, tree, tmp_path):
    """torch.load's own message for a refused pickle suggests weights_only=False (running the file's code):
    the one-line error names the file and what was refused, and never passes that advice on."""
    from batchaug.config import dump_config, load_config

    run, marker = tmp_path / "run", tmp_path / "payload-ran"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(load_config(QUICK, [f"data.root={tree}"])))
    torch.save({"model": _Payload(marker)}, run / "best.pt")
    (run / "last.pt").write_bytes(os.urandom(64))
    from batchaug.cli import main

    for argv, name, detail in ((["eval", str(run), "--device", "cpu"], "best.pt", "GLOBAL posix.system"),
                               (["train", "--resume", str(run)], "last.pt", "not in torch.save's zip format")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert f"checkpoint {run / name} could not be read (damaged, or not a checkpoint" in err, err
        assert detail in err and "weights_only" not in err and "torch.save your" not in err, err
    assert not marker.exists()


def test_no_warnings_from_a_clean_run(tree, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert train(*common(tree, "train.max_steps=2"), "--out", str(tmp_path / "run")) == 0


def test_a_missing_relative_root_says_where_it_was_read_from(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    err = refused(capsys, QUICK, "data.root=not/here.zip", "--out", str(out), match="not/here.zip: no such file")
    assert str(tmp_path) in err and "data.root=null" in err
    assert not out.exists(), "a start that failed before writing anything leaves no directory behind"


def test_a_failed_start_keeps_a_directory_that_was_there(capsys, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    refused(capsys, QUICK, f"data.root={tmp_path / 'absent.zip'}", "--out", str(out), match="no such file")
    assert (out / "notes.txt").read_text() == "the user's"
