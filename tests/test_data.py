"""Image sources: the real CIFAR-10 archive, ImageFolder trees and zips made here, the tensor cache,
path resolution, errors, CIFAR pickles, and TensorSplit.subset."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import batchaug.data.sources as sources_mod
from batchaug.data import (
    CIFAR_STATS,
    ImageFolderSource,
    TensorSplit,
    cache_split,
    dataset_info,
    decode_image,
    load_split,
    resolve_data_path,
    verify_source,
)
from batchaug.data.decode import ends_look_complete
from batchaug.data.tensors import class_quotas
from batchaug.errors import ConfigError, DataError

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------------------------
# Helpers (also used by test_data_cli.py and test_data_loader.py)

def encode(arr: np.ndarray, ext: str) -> bytes:
    """Encode an (H, W) or (H, W, C) uint8 array in the format named by a file extension."""
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[ext]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_files(root: Path, files: dict[str, np.ndarray | bytes]) -> Path:
    """Write ``{relative path: array or raw bytes}``; arrays are encoded by extension."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content if isinstance(content, bytes) else encode(content, path.suffix.lower())
        path.write_bytes(data)
    return root


def make_zip(src: Path, dest: Path, prefix: str = "") -> Path:
    """Zip every file under ``src`` (stored, like image archives usually are), paths under ``prefix``."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            zf.write(path, prefix + path.relative_to(src).as_posix())
    return dest


def random_image(rng: np.random.Generator, h: int = 32, w: int = 32, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    # Smooth-ish content so JPEG files look like photos rather than noise.
    base = rng.integers(0, 256, size=shape, dtype=np.int64)
    return ((base + np.roll(base, 1, axis=0) + np.roll(base, 1, axis=1)) // 3).astype(np.uint8)


def small_tree(root: Path, classes: tuple[str, ...] = ("cat", "dog", "emu"), per_class: int = 4,
               ext: str = ".jpg", seed: int = 0, splits: tuple[str, ...] = ("train", "test")) -> Path:
    rng = np.random.default_rng(seed)
    files = {f"{s}/{c}/{i:03d}{ext}": random_image(rng)
             for s in splits for c in classes for i in range(per_class)}
    return write_files(root, files)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHAUG_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BATCHAUG_DATA", raising=False)


@pytest.fixture(scope="module")
def cifar_test(cifar_zip, tmp_path_factory) -> TensorSplit:
    return load_split(cifar_zip, "test", cache=False)


# ------------------------------------------------------------------------------------------------
# The real CIFAR-10 archive

def test_real_cifar_info_counts_classes_shape(cifar_zip):
    info = dataset_info(cifar_zip, check="none")
    assert info["kind"] == "cifar10_jpeg"
    assert info["splits"] == {"test": 10000, "train": 50000}
    assert info["num_classes"] == 10 and info["classes"] == CIFAR_CLASSES
    assert info["shape"] == [3, 32, 32]


def test_real_cifar_test_split_tensors(cifar_test):
    assert cifar_test.images.shape == (10000, 3, 32, 32)
    assert cifar_test.images.dtype == torch.uint8 and cifar_test.images.is_contiguous()
    assert cifar_test.targets.dtype == torch.int64
    assert cifar_test.class_counts().tolist() == [1000] * 10
    assert cifar_test.classes == CIFAR_CLASSES
    # images are sorted by class then file name: targets are non-decreasing
    assert bool((cifar_test.targets[1:] >= cifar_test.targets[:-1]).all())


def test_real_cifar_lazy_items_and_pil_backend_match_the_whole_load(cifar_zip, cifar_test):
    lazy = ImageFolderSource(cifar_zip, "test")
    pil = ImageFolderSource(cifar_zip, "test", backend="pil")
    assert len(lazy) == 10000
    for i in (0, 1, 4321, 9999):
        img, target = lazy[i]
        assert torch.equal(img, cifar_test.images[i]) and target == int(cifar_test.targets[i])
        assert torch.equal(pil.decode(i), cifar_test.images[i])


def test_cifar10_stats_match_the_training_pixels(cifar_zip):
    train = load_split(cifar_zip, "train", cache=False)
    assert len(train) == 50000 and train.class_counts().tolist() == [5000] * 10
    # Exact per-channel moments from 256-bin histograms (no float copy of 150M pixels).
    levels = torch.arange(256, dtype=torch.float64) / 255
    hist = torch.stack([torch.bincount(train.images[:, c].flatten(), minlength=256) for c in range(3)])
    p = hist.double() / hist.sum(1, keepdim=True)
    mean = (p * levels).sum(1)
    std = ((p * levels**2).sum(1) - mean**2).sqrt()
    ref_mean, ref_std = map(torch.tensor, CIFAR_STATS["cifar10"])
    # JPEG re-encoding shifts the statistics slightly from the PNG originals.
    assert torch.allclose(mean, ref_mean.double(), atol=3e-3), mean
    assert torch.allclose(std, ref_std.double(), atol=4e-3), std
    assert set(CIFAR_STATS) >= {"cifar10", "cifar100", "imagenet"}


def test_real_cifar_stratified_subset(cifar_test):
    gen = torch.Generator().manual_seed(3)
    sub = cifar_test.subset(1000, gen)
    assert sub.class_counts().tolist() == [100] * 10
    again = cifar_test.subset(1000, torch.Generator().manual_seed(3))
    assert torch.equal(sub.images, again.images) and torch.equal(sub.targets, again.targets)


# ------------------------------------------------------------------------------------------------
# Zip vs folder, layouts

def test_zip_and_unpacked_folder_give_identical_tensors(cifar_zip, tmp_path):
    # A slice of the real archive, re-zipped under a wrapping folder and unpacked beside it.
    folder = tmp_path / "unpacked"
    with zipfile.ZipFile(cifar_zip) as zf:
        names = [n for n in zf.namelist() if n.endswith(".jpg") and int(n[-8:-4]) < 6]
        for name in names:
            rel = name.split("/", 1)[1]
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(zf.read(name))
    archive = make_zip(folder, tmp_path / "small.zip", prefix="small/")
    a = load_split(archive, "train", cache=False)
    b = load_split(folder, "train", cache=False)
    assert len(a) == 60 and a.classes == CIFAR_CLASSES
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert a.classes == b.classes
    ta, tb = load_split(archive, "test", cache=False), load_split(folder, "test", cache=False)
    assert torch.equal(ta.images, tb.images)


def test_layout_without_split_folders_is_train_only(tmp_path):
    rng = np.random.default_rng(1)
    write_files(tmp_path / "ds", {f"{c}/{i}.png": random_image(rng) for c in "ab" for i in range(3)})
    info = dataset_info(tmp_path / "ds")
    assert info["splits"] == {"train": 6} and info["classes"] == ["a", "b"]
    with pytest.raises(DataError, match="no split 'test'.*available: train"):
        load_split(tmp_path / "ds", "test")


def test_val_folder_serves_test_and_classes_are_shared_across_splits(tmp_path):
    rng = np.random.default_rng(2)
    write_files(tmp_path / "ds", {
        "train/a/0.png": random_image(rng), "train/c/0.png": random_image(rng),
        "val/b/0.png": random_image(rng), "val/c/0.png": random_image(rng),
    })
    test = load_split(tmp_path / "ds", "test", cache=False)
    train = load_split(tmp_path / "ds", "train", cache=False)
    assert test.classes == train.classes == ["a", "b", "c"]
    assert test.targets.tolist() == [1, 2] and train.targets.tolist() == [0, 2]


def test_grayscale_and_odd_sizes_with_resize_and_center_crop(tmp_path):
    rng = np.random.default_rng(3)
    sizes = [(20, 40), (48, 30), (16, 16), (33, 17)]
    files = {f"train/{c}/{i}.png": random_image(rng, h, w, c=None)
             for c in ("x", "y") for i, (h, w) in enumerate(sizes)}
    write_files(tmp_path / "ds", files)
    with pytest.raises(DataError, match="image_size"):
        load_split(tmp_path / "ds", cache=False)
    gray = load_split(tmp_path / "ds", image_size=16, cache=False)
    assert gray.images.shape == (8, 1, 16, 16)
    rgb = load_split(tmp_path / "ds", image_size=16, grayscale_to_rgb=True, cache=False)
    assert rgb.images.shape == (8, 3, 16, 16)
    # exact: one uint8 resize kernel on the same pixels, integer arithmetic per channel (that kernel is not
    # bit-identical across CPUs, AVX2 vs ATEN_CPU_CAPABILITY=default: one level; nothing here compares CPUs)
    assert torch.equal(rgb.images, gray.images.expand(-1, 3, -1, -1))
    # Reference per image: PIL resizes the shorter side to 16 (bilinear, antialiased), then the centre.
    for k, (rel, arr) in enumerate(sorted(files.items())):
        h, w = arr.shape
        new = (16, max(16, round(w * 16 / h))) if h <= w else (max(16, round(h * 16 / w)), 16)
        ref = np.asarray(Image.fromarray(arr).resize(new[::-1], Image.BILINEAR))
        top, left = (new[0] - 16) // 2, (new[1] - 16) // 2
        ref = torch.from_numpy(ref[top:top + 16, left:left + 16].copy())
        diff = (gray.images[k, 0].int() - ref.int()).abs().max()
        assert diff <= 2, (rel, diff)
    stretched = load_split(tmp_path / "ds", image_size=12, resize_mode="stretch", cache=False)
    assert stretched.images.shape == (8, 1, 12, 12)


def test_crop_mode_cuts_the_exact_centre_and_refuses_small_images(tmp_path):
    arr = np.arange(20 * 40, dtype=np.int64).reshape(20, 40).astype(np.uint8)
    write_files(tmp_path / "ds", {"a/0.png": arr})
    out = load_split(tmp_path / "ds", image_size=16, resize_mode="crop", cache=False)
    assert torch.equal(out.images[0, 0], torch.from_numpy(arr[2:18, 12:28].copy()))
    with pytest.raises(DataError, match="smaller than image_size=24"):
        load_split(tmp_path / "ds", image_size=24, resize_mode="crop", cache=False)
    with pytest.raises(ConfigError, match="resize_mode"):
        load_split(tmp_path / "ds", image_size=8, resize_mode="squash")


def test_channel_rules_gray_split_refuses_colour_mixed_split_is_rgb(tmp_path):
    rng = np.random.default_rng(4)
    gray, colour = random_image(rng, c=None), random_image(rng)
    # 40 grayscale images and one colour image that the 17 channel probes do not land on
    files = {f"a/{i:02d}.png": gray for i in range(40)} | {"a/01.png": colour}
    write_files(tmp_path / "g", files)
    with pytest.raises(DataError, match="a/01.png.*grayscale_to_rgb"):
        load_split(tmp_path / "g", cache=False)
    both = load_split(tmp_path / "g", grayscale_to_rgb=True, cache=False)
    assert torch.equal(both.images[0], torch.from_numpy(gray).expand(3, -1, -1))
    assert torch.equal(both.images[1], torch.from_numpy(colour).permute(2, 0, 1))
    # a grayscale first image does not make the split grayscale when the probes find colour
    write_files(tmp_path / "c", {"a/0.png": gray, "a/1.png": colour, "a/2.png": gray})
    mixed = load_split(tmp_path / "c", cache=False)
    assert mixed.images.shape == (3, 3, 32, 32)
    assert torch.equal(mixed.images[0], torch.from_numpy(gray).expand(3, -1, -1))
    write_files(tmp_path / "allgray", {"a/0.png": gray, "a/1.png": gray})
    assert load_split(tmp_path / "allgray", cache=False).images.shape == (2, 1, 32, 32)


def test_decoders_handle_palette_alpha_16bit_cmyk_and_bmp():
    rng = np.random.default_rng(5)
    rgb = random_image(rng, 6, 7)
    ref = torch.from_numpy(rgb).permute(2, 0, 1)

    def enc(im: Image.Image, fmt: str) -> bytes:
        buf = io.BytesIO()
        im.save(buf, fmt)
        return buf.getvalue()

    for backend in ("torchvision", "pil"):
        rgba = enc(Image.fromarray(rgb).convert("RGBA"), "PNG")
        assert torch.equal(decode_image(rgba, backend=backend), ref)
        pal = Image.fromarray(rgb).convert("P")
        pal_ref = torch.from_numpy(np.array(pal.convert("RGB"))).permute(2, 0, 1)
        assert torch.equal(decode_image(enc(pal, "PNG"), backend=backend), pal_ref)
        sixteen = (rng.integers(0, 65536, (5, 4))).astype(np.uint16)
        out = decode_image(enc(Image.fromarray(sixteen), "PNG"), channels=None, backend=backend)
        assert out.shape == (1, 5, 4)
        assert torch.equal(out[0], torch.from_numpy((sixteen >> 8).astype(np.uint8)))
        cmyk = decode_image(enc(Image.fromarray(rgb).convert("CMYK"), "JPEG"), backend=backend)
        assert cmyk.shape == (3, 6, 7)
    assert torch.equal(decode_image(enc(Image.fromarray(rgb), "BMP")), ref)
    with pytest.raises(DataError, match="colour image"):
        decode_image(encode(rgb, ".png"), channels=1)


# ------------------------------------------------------------------------------------------------
# Cache

def test_cache_round_trip_and_warm_load_skips_decoding(tmp_path, monkeypatch):
    archive = make_zip(small_tree(tmp_path / "t"), tmp_path / "t.zip")
    cold, file = cache_split(archive, "train")
    assert file is not None and file.is_file() and file.parent == tmp_path / "cache" / "decoded"

    def no_decoding(*args, **kwargs):
        raise AssertionError("a warm load must not decode")

    with monkeypatch.context() as m:
        m.setattr(sources_mod, "ImageFolderSource", no_decoding)
        warm, file2 = cache_split(archive, "train")
    assert file2 == file
    assert torch.equal(warm.images, cold.images) and torch.equal(warm.targets, cold.targets)
    assert warm.classes == cold.classes
    # other options are other cache entries
    _, file3 = cache_split(archive, "train", image_size=16)
    assert file3 != file and file3.is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped byte"])
def test_corrupt_cache_file_is_rebuilt(tmp_path, damage):
    folder = small_tree(tmp_path / "t")
    fresh, file = cache_split(folder, "train")
    raw = bytearray(file.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"not a torch file" * 10)
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:  # inside the image data, which torch.load itself does not verify
        raw[len(raw) // 2] ^= 0xFF
    file.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="rebuilt"):
        again, file2 = cache_split(folder, "train")
    assert file2 == file
    assert torch.equal(again.images, fresh.images)
    blob = torch.load(file, weights_only=True)  # rewritten whole
    assert torch.equal(blob["images"], fresh.images)


def test_folder_cache_key_follows_file_changes(tmp_path):
    folder = small_tree(tmp_path / "t")
    _, before = cache_split(folder, "train")
    target = folder / "train" / "cat" / "000.jpg"
    target.write_bytes(encode(random_image(np.random.default_rng(99)), ".jpg"))
    os.utime(target, ns=(1, 1))
    changed, after = cache_split(folder, "train")
    assert after != before
    assert torch.equal(changed.images[0], decode_image(target.read_bytes()))


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("BATCHAUG_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not write cache"):
        data, file = cache_split(small_tree(tmp_path / "t"), "train")
    assert file is None and len(data) == 12


# ------------------------------------------------------------------------------------------------
# Errors

def test_missing_path_names_the_file(tmp_path):
    missing = tmp_path / "nope.zip"
    with pytest.raises(DataError, match="nope.zip: no such file"):
        load_split(missing)
    with pytest.raises(DataError, match="nope.zip"):
        dataset_info(missing)


def corrupt_zip(tmp_path: Path, how: str) -> tuple[Path, str]:
    """A small ImageFolder zip in which one JPEG is damaged; returns (zip, damaged member)."""
    folder = small_tree(tmp_path / "src", per_class=3)
    victim = folder / "train" / "dog" / "001.jpg"
    good = victim.read_bytes()
    victim.write_bytes({"truncated": good[: len(good) // 2], "garbage": bytes(range(7, 256)) * 3,
                        "header only": good[:200]}[how])
    return make_zip(folder, tmp_path / "bad.zip", prefix="bad/"), "bad/train/dog/001.jpg"


@pytest.mark.parametrize("how", ["truncated", "garbage", "header only"])
def test_corrupt_jpeg_in_zip_names_zip_and_member(tmp_path, how):
    archive, member = corrupt_zip(tmp_path, how)
    for call in (lambda: load_split(archive, "train"), lambda: verify_source(archive),
                 lambda: dataset_info(archive)):
        with pytest.raises(DataError) as err:
            call()
        assert member in str(err.value) and "bad.zip" in str(err.value)
    # the other split is fine
    assert len(load_split(archive, "test", cache=False)) == 9


def test_quick_check_of_large_datasets_catches_cut_files_without_false_alarms(tmp_path, monkeypatch):
    monkeypatch.setattr(sources_mod, "FULL_CHECK_LIMIT", 0)  # force the marker path
    archive, member = corrupt_zip(tmp_path / "a", "truncated")
    with pytest.raises(DataError, match=member):
        dataset_info(archive)
    # A JPEG with bytes after its end marker is valid: no false alarm.
    folder = small_tree(tmp_path / "b", per_class=2)
    padded = folder / "train" / "cat" / "000.jpg"
    padded.write_bytes(padded.read_bytes() + b"\0" * 300)
    disguised = folder / "train" / "dog" / "000.jpg"  # a PNG named .jpg, as found in ImageNet
    disguised.write_bytes(encode(random_image(np.random.default_rng(8)), ".png"))
    info = dataset_info(make_zip(folder, tmp_path / "ok.zip"))
    assert info["check"].startswith("quick") and info["splits"] == {"test": 6, "train": 6}
    assert ends_look_complete(b"\xff\xd8\xff\xe0", b"xx\xff\xd9", "a.JPG")
    assert not ends_look_complete(b"\xff\xd8\xff", b"xx", "a.jpg")
    assert not ends_look_complete(b"garbage", b"\xff\xd9", "a.jpeg")
    assert ends_look_complete(b"garbage", b"", "a.bmp")  # not a checked format


def test_damaged_zip_member_fails_its_crc(tmp_path):
    folder = small_tree(tmp_path / "src", per_class=2)
    archive = make_zip(folder, tmp_path / "crc.zip")
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("train/emu/001.jpg")
    off = info.header_offset  # local header: 30 bytes, then the name and the extra field
    name_len, extra_len = (int.from_bytes(raw[off + k:off + k + 2], "little") for k in (26, 28))
    start = off + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0x55  # a flip inside the entropy-coded data
    archive.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"crc.zip: member 'train/emu/001.jpg' is corrupt \(CRC"):
        load_split(archive, "train", cache=False)


def test_bad_layouts_and_files(tmp_path):
    write_files(tmp_path / "flat", {"0.png": random_image(np.random.default_rng(0))})
    with pytest.raises(DataError, match="sub-folder per class"):
        dataset_info(tmp_path / "flat")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        dataset_info(tmp_path / "nothing")
    # ImageNet's raw val/ (no class folders) blocks val, not train
    write_files(tmp_path / "rawval", {"train/a/0.png": random_image(np.random.default_rng(0)),
                                      "val/0.png": random_image(np.random.default_rng(1))})
    with pytest.raises(DataError, match="rawval \\(folder val\\): images lie directly.*sub-folder per class"):
        load_split(tmp_path / "rawval", "val")
    assert len(load_split(tmp_path / "rawval", "train", cache=False)) == 1
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        load_split(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt"):
        load_split(tmp_path / "notes.txt")
    (tmp_path / "fake.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="fake.zip"):
        load_split(tmp_path / "fake.zip", kind="imagefolder")
    with pytest.raises(ConfigError, match="allowed values are auto, cifar10_jpeg"):
        load_split(tmp_path, kind="mnist")


# ------------------------------------------------------------------------------------------------
# Where data is found

def test_resolution_order_explicit_then_env_then_cache(tmp_path, monkeypatch):
    env_dir, cache_dir = tmp_path / "env", tmp_path / "cache"
    (env_dir / "sub").mkdir(parents=True)
    cache_dir.mkdir(exist_ok=True)
    (cache_dir / "d.zip").write_bytes(b"c")
    assert resolve_data_path(None, "d.zip") == cache_dir / "d.zip"
    monkeypatch.setenv("BATCHAUG_DATA", str(env_dir))
    assert resolve_data_path(None, "d.zip") == cache_dir / "d.zip"  # env folder lacks it
    (env_dir / "d.zip").write_bytes(b"e")
    assert resolve_data_path(None, "d.zip") == env_dir / "d.zip"
    assert resolve_data_path(env_dir, "d.zip") == env_dir / "d.zip"  # folder holding the file
    assert resolve_data_path(env_dir / "sub", "d.zip") == env_dir / "sub"  # the folder itself
    assert resolve_data_path(None, ("x.zip", "d.zip")) == env_dir / "d.zip"
    with pytest.raises(DataError) as err:
        resolve_data_path(None, "missing.zip")
    assert str(env_dir / "missing.zip") in str(err.value) and str(cache_dir / "missing.zip") in str(err.value)


def test_imagenet_kind_is_an_imagefolder_with_train_and_val(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    write_files(tmp_path / "imagenet", {
        f"{s}/n0144{k}/{s}_{i}.JPEG": random_image(rng, 40 + 3 * i, 48) for s in ("train", "val")
        for k in range(2) for i in range(2)})
    monkeypatch.setenv("BATCHAUG_DATA", str(tmp_path))
    info = dataset_info(None, "imagenet")
    assert info["kind"] == "imagenet" and info["splits"] == {"train": 4, "val": 4}
    val = load_split(None, "val", kind="imagenet", image_size=32)
    assert val.images.shape == (4, 3, 32, 32) and val.classes == ["n01440", "n01441"]
    assert torch.equal(load_split(tmp_path / "imagenet", "test", image_size=32).images, val.images)
    lazy = ImageFolderSource(tmp_path / "imagenet", "val", image_size=32)
    assert torch.equal(lazy[3][0], val.images[3])


def test_env_var_finds_the_real_archive(cifar_zip, monkeypatch):
    monkeypatch.setenv("BATCHAUG_DATA", str(cifar_zip.parent))
    info = dataset_info(None, "cifar10_jpeg", check="none")
    assert info["path"] == str(cifar_zip) and info["splits"]["train"] == 50000
    assert dataset_info(None, check="none")["kind"] == "cifar10_jpeg"  # auto searches too
    assert dataset_info(cifar_zip.parent, check="none")["path"] == str(cifar_zip)


# ------------------------------------------------------------------------------------------------
# torchvision's CIFAR pickle format

def fake_cifar(root: Path, kind: str = "cifar10", per_batch: int = 4) -> Path:
    """The pickle layout with a few images per batch; image j of a batch has R=j, G=100+j, B=200+j
    except pixel (1, 2), which is 7 in every channel, so channel order and row-major layout show."""
    rng = np.random.default_rng(0)
    if kind == "cifar10":
        folder, label_key = root / "cifar-10-batches-py", b"labels"
        batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": per_batch}
        meta = ("batches.meta", {b"label_names": [n.encode() for n in CIFAR_CLASSES]})
        n_classes = 10
    else:
        folder, label_key = root / "cifar-100-python", b"fine_labels"
        batches = {"train": 5 * per_batch, "test": per_batch}
        meta = ("meta", {b"fine_label_names": [f"c{i:02d}".encode() for i in range(100)]})
        n_classes = 100
    folder.mkdir(parents=True)
    for name, n in batches.items():
        imgs = np.zeros((n, 3, 32, 32), np.uint8)
        for j in range(n):
            imgs[j] = np.array([j, 100 + j, 200 + j], np.uint8)[:, None, None]
            imgs[j, :, 1, 2] = 7
        labels = rng.integers(0, n_classes, n).tolist()
        (folder / name).write_bytes(pickle.dumps({b"data": imgs.reshape(n, 3072), label_key: labels,
                                                  b"batch_label": name.encode()}, protocol=2))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return folder


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_pickle_format_from_folder_parent_and_tarball(tmp_path, kind):
    folder = fake_cifar(tmp_path / "root", kind)
    train = load_split(folder, "train")
    test = load_split(tmp_path / "root", "test")  # torchvision's root, the folder's parent
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert train.num_classes == (10 if kind == "cifar10" else 100)
    assert train.images[3, :, 0, 0].tolist() == [3, 103, 203]
    assert train.images[3, :, 1, 2].tolist() == [7, 7, 7]
    archive = tmp_path / ("cifar-10-python.tar.gz" if kind == "cifar10" else "cifar-100-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    from_tar = load_split(archive, "train")
    assert torch.equal(from_tar.images, train.images) and torch.equal(from_tar.targets, train.targets)
    info = dataset_info(archive)
    assert info["kind"] == kind and info["splits"] == {"train": 20, "test": 4}
    resized = load_split(folder, "train", image_size=16)
    assert resized.images.shape == (20, 3, 16, 16)


def test_cifar_pickle_refuses_code_and_download_passes_through(tmp_path, monkeypatch):
    folder = fake_cifar(tmp_path / "root")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="test_batch.*refusing to load"):
        load_split(folder, "test")

    calls = []

    class FakeCIFAR10:  # stands in for torchvision's downloader (no internet here)
        def __init__(self, root, train, download):
            calls.append((root, download))
            fake_cifar(Path(root))

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    with pytest.raises(DataError, match="not found"):
        load_split(None, kind="cifar10")
    got = load_split(None, kind="cifar10", download=True)
    assert len(got) == 20 and calls == [(str(tmp_path / "cache"), True)]
    assert len(load_split(None, kind="cifar10")) == 20  # now found in the cache directory


# ------------------------------------------------------------------------------------------------
# TensorSplit

def _split(counts: list[int]) -> TensorSplit:
    targets = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    images = torch.arange(len(targets), dtype=torch.int64).remainder(256).to(torch.uint8)
    return TensorSplit(images.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous(), targets,
                       [f"c{i}" for i in range(len(counts))])


def test_stratified_subset_balance_remainder_and_short_classes():
    data = _split([50, 50, 50, 10])
    assert data.subset(40, torch.Generator().manual_seed(0)).class_counts().tolist() == [10] * 4
    short = _split([50, 50, 50, 3])
    assert short.subset(42, torch.Generator().manual_seed(0)).class_counts().tolist() == [13, 13, 13, 3]
    # remainders go to different classes for different generators, deterministically per seed
    picks = {tuple(data.subset(5, torch.Generator().manual_seed(s)).class_counts().tolist())
             for s in range(20)}
    assert len(picks) > 1 and all(sum(p) == 5 and max(p) == 2 for p in picks)
    assert class_quotas(torch.tensor([1, 9]), 8).tolist() == [1, 7]


def test_subset_is_deterministic_per_generator_and_samples_without_replacement():
    data = _split([30, 30, 30])
    a = data.subset(30, torch.Generator().manual_seed(1))
    b = data.subset(30, torch.Generator().manual_seed(1))
    c = data.subset(30, torch.Generator().manual_seed(2))
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    flat = a.images[:, 0, 0, 0]
    assert len(torch.unique(flat)) == 30 and bool((flat[1:] > flat[:-1]).all())  # original order kept
    plain = data.subset(17, torch.Generator().manual_seed(1), stratified=False)
    assert len(plain) == 17 and len(torch.unique(plain.images[:, 0, 0, 0])) == 17
    with pytest.raises(ConfigError, match="between 1 and the split's 90"):
        data.subset(91)
    assert data.to("cpu").images.shape == data.images.shape


def test_tensor_split_validates_its_tensors():
    with pytest.raises(DataError, match="uint8"):
        TensorSplit(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(DataError, match="2 images but 3 targets"):
        TensorSplit(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ["a"])
