"""Model selection without the test split: ``data.val_from_train`` holds a class-balanced, seeded share of
the training images out as the validation set; the test split is evaluated beside it (``test_*``); methods
validate extra predictions beside ``predict`` (SBA: the vote as ``val_acc``, the plain pass beside it);
``summary.json`` gives the final and median-of-last-5 of each accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from batchaug.config import OptimConfig, load_config, resolve_config
from batchaug.data import ImageFolderSource, TensorSplit
from batchaug.errors import ConfigError
from batchaug.methods import MethodContext, build_method
from batchaug.train.optim import LRSchedule, build_optimizer
from batchaug.train.run import load_run_data, summarize
from batchaug.train.trainer import Trainer, TrainerSettings

QUICK = str(Path(__file__).resolve().parents[1] / "configs" / "quick" / "cifar10_resnet20.yaml")


def _split(n_per_class: int = 10, classes: int = 3) -> TensorSplit:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_per_class * classes, 3, 4, 4), dtype=torch.uint8, generator=g)
    targets = torch.arange(classes).repeat_interleave(n_per_class)
    return TensorSplit(images, targets, [f"c{i}" for i in range(classes)])


def test_hold_out_is_balanced_disjoint_complete_and_seeded():
    split = _split()
    held, rest = split.hold_out(6, generator=torch.Generator().manual_seed(3))
    assert len(held) == 6 and len(rest) == 24
    assert held.class_counts().tolist() == [2, 2, 2]
    # every image is in exactly one of the two (images are distinct random tensors)
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([held.images, rest.images])}
    assert rows == {tuple(x.flatten().tolist()) for x in split.images}
    again, _ = split.hold_out(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.images, held.images)
    other, _ = split.hold_out(6, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other.images, held.images)
    with pytest.raises(ConfigError, match="hold out 30 images: must be between 1 and 29"):
        split.hold_out(30)


def _image_tree(root: Path, per_class: int = 6) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return root


def test_image_folder_load_of_indices_is_those_images(tmp_path):
    source = ImageFolderSource(_image_tree(tmp_path / "t"), "train", image_size=8)
    whole = source.load(num_workers=1)
    part = source.load(num_workers=2, indices=[7, 0, 3])
    assert torch.equal(part.images, whole.images[[7, 0, 3]]) and part.targets.tolist() == [1, 0, 0]


@pytest.mark.parametrize("in_memory", [True, False])
def test_run_data_holds_out_the_same_images_in_memory_and_streamed(tmp_path, in_memory):
    root = _image_tree(tmp_path / "t")
    raw = {"data": {"kind": "imagefolder", "root": str(root), "image_size": 8, "cache": False,
                    "in_memory": in_memory, "num_workers": 0, "val_from_train": 4}, "seed": 5}
    data = load_run_data(resolve_config(raw), torch.device("cpu"))
    whole_train = ImageFolderSource(root, "train", image_size=8).load(num_workers=1)
    whole_test = ImageFolderSource(root, "test", image_size=8).load(num_workers=1)
    held, rest = whole_train.hold_out(4, generator=torch.Generator().manual_seed(5 + 11))
    assert torch.equal(data.val_images, held.images) and data.val_targets.tolist() == held.targets.tolist()
    assert torch.equal(data.test_images, whole_test.images)  # the eval split is the test set
    train = data.train_images if in_memory else torch.stack([data.train_images[i][0]
                                                             for i in range(len(data.train_images))])
    assert len(train) == 8 and torch.equal(train, rest.images)  # the held-out images left the training split
    unset = load_run_data(resolve_config({**raw, "data": {**raw["data"], "val_from_train": None}}), torch.device("cpu"))
    assert unset.test_images is None and torch.equal(unset.val_images, whole_test.images)


def test_val_from_train_must_leave_training_images(tmp_path):
    root = _image_tree(tmp_path / "t")
    cfg = resolve_config({"data": {"kind": "imagefolder", "root": str(root), "cache": False, "val_from_train": 12}})
    with pytest.raises(ConfigError, match="data.val_from_train: 12 held-out images leave nothing"):
        load_run_data(cfg, torch.device("cpu"))


class _Half(nn.Module):
    """Predicts class 0 for images whose first pixel is dark, class 1 otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        score = x[:, 0, 0, 0] * 10 + self.w
        return torch.stack([-score, score], 1)


def test_trainer_validates_extra_predictions_and_the_test_set_beside_predict():
    ctx = MethodContext(num_classes=2, image_size=(4, 4), mean=(0.5,) * 3, std=(0.25,) * 3)
    method = build_method({"name": "baseline", "policy": "none"}, ctx)
    flipped = {"flipped": lambda model, images: -method.predict(model, images)}
    method.extra_val_predictions = lambda: flipped  # a method that validates a second prediction
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=g)
    targets = (images[:, 0, 0, 0] > 127).long()
    test_targets = targets.clone()
    test_targets[:10] = 1 - test_targets[:10]  # a test set on which the model is right 3/4 of the time
    model = _Half()
    opt = build_optimizer(model, OptimConfig(lr=0.0), 0.0)
    settings = TrainerSettings(batch_size=8, total_steps=1, steps_per_epoch=5, eval_every=1, progress=False,
                               eval_batch_size=16)
    trainer = Trainer(model, method, opt, LRSchedule(OptimConfig(lr=0.0), 0.0, 1, 1), settings, images, targets,
                      images, targets, torch.device("cpu"), test_images=images, test_targets=test_targets)
    out = trainer.evaluate()
    assert out["val_acc"] == 1.0 and out["val_acc_flipped"] == 0.0
    assert out["test_acc"] == 0.75 and out["test_acc_flipped"] == 0.25
    assert set(out) == {f"{s}_{k}{x}" for s in ("val", "test") for k in ("acc", "loss") for x in ("", "_flipped")}
    assert set(trainer.evaluate(test=False)) == {"val_acc", "val_loss", "val_acc_flipped", "val_loss_flipped"}


def test_sba_validates_the_plain_pass_beside_the_vote():
    ctx = MethodContext(num_classes=10, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3, model_name="resnet20")
    vote = build_method({"name": "sba", "m": 2, "inference": "vote"}, ctx)
    assert build_method({"name": "sba", "m": 2}, ctx).extra_val_predictions() == {}
    extra = vote.extra_val_predictions()
    assert list(extra) == ["plain"]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(extra["plain"](model, images), model(vote.normalize(images)))


def _write_run(run: Path, lines: list[dict], val_from_train: int | None) -> None:
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"val_from_train": val_from_train}}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"kind": "eval", **r}) + "\n" for r in lines))


def test_summary_gives_final_and_median_of_every_accuracy(tmp_path):
    lines = [{"epoch": e, "step": 10 * e, "val_acc": acc, "val_acc_plain": acc - 0.1, "test_acc": t, "val_loss": 1.0,
              "images_seen": 10 * e, "wall_time": float(e)}
             for e, acc, t in [(1, 0.5, 0.4), (2, 0.9, 0.6), (3, 0.7, 0.8), (4, 0.6, 0.5), (5, 0.8, 0.7),
                               (6, 0.75, 0.65)]]
    _write_run(tmp_path / "held", lines, 5000)
    s = summarize(tmp_path / "held")
    assert s["final_val_acc"] == 0.75 and s["best_val_acc"] == 0.9
    assert s["median_last5_val_acc"] == 0.75  # epochs 2..6: 0.9, 0.7, 0.6, 0.8, 0.75
    assert s["median_last5_val_acc_plain"] == pytest.approx(0.65)
    assert s["final_test_acc"] == 0.65 and s["median_last5_test_acc"] == 0.65
    assert s["test_acc_at_best_val"] == 0.6 and "held out" in s["selected_on"]
    no_test = [{k: v for k, v in r.items() if k != "test_acc"} for r in lines]
    _write_run(tmp_path / "plain", no_test, None)
    s = summarize(tmp_path / "plain")  # the eval split was the validation set: its figures are the test figures
    assert s["final_test_acc"] == s["final_val_acc"] == 0.75
    assert s["median_last5_test_acc_plain"] == s["median_last5_val_acc_plain"]
    assert "test_acc_at_best_val" not in s and "test split" in s["selected_on"]


@pytest.mark.integration
def test_sba_run_selects_on_held_out_images_and_reports_the_voted_median(cifar_zip, tmp_path):
    from batchaug.cli import main
    from batchaug.train.metrics_log import read_metrics

    out = tmp_path / "sba"
    rc = main(["train", QUICK, f"data.root={cifar_zip}", "method.name=sba", "method.m=4", "method.inference=vote",
               "data.subset=2000", "data.val_from_train=300", "data.val_subset=300", "train.batch_size=64",
               "train.max_steps=60", "train.eval_every=30", "train.progress=false", "train.tensorboard=false",
               "--out", str(out)])
    assert rc == 0
    records = read_metrics(out)
    for r in records:
        for key in ("val_acc", "val_acc_plain", "test_acc", "test_acc_plain"):
            assert 0.0 <= r[key] <= 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["median_last5_test_acc"] is not None and summary["median_last5_test_acc_plain"] is not None
    assert summary["final_test_acc"] > 0.15  # chance is 0.10: 60 steps learned something
    assert summary["test_acc_at_best_val"] == max(records, key=lambda r: r["val_acc"])["test_acc"]
    assert load_config(out / "config.yaml").data.val_from_train == 300
