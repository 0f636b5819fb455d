"""The ``corruptions`` suite: the error of every mode under every corruption and severity, with uCE,
CE, mCE and relative mCE (:mod:`batchaug.evaluate.corruptions` holds the corruptions and the metrics).

Generated corruptions are made per batch from the evaluation images, each image's from
``(seed, corruption, severity, split index)``: the same for any ``--limit`` or batch size. With
``source`` (``--corruptions-from DIR``, a CIFAR-10-C-style directory), the directory's images are
evaluated instead (the first ``--limit`` of each file) and the clean error comes from the evaluation
images as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from batchaug.errors import ConfigError
from batchaug.evaluate.corruptions import (
    CORRUPTIONS,
    RGB_ONLY,
    SEVERITIES,
    corrupt,
    corruption_metrics,
    load_corruption_dir,
    table_for_size,
)
from batchaug.evaluate.suite import EvalData, Model, Suite
from batchaug.schema import option

__all__ = ["CorruptionOptions", "CorruptionSuite"]


@dataclass
class CorruptionOptions:
    names: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    """Corruptions to evaluate (``batchaug.evaluate.corruptions.CORRUPTIONS``: 15 of the benchmark, 4 extras)."""
    severities: list[int] = option(default_factory=lambda: list(SEVERITIES), ge=1, le=5)
    """Severities to evaluate."""
    source: str | None = None
    """A CIFAR-10-C-style directory to read instead of generating (one ``.npy`` per corruption, ``labels.npy``)."""

    def validate(self, prefix: str) -> None:
        unknown = [n for n in self.names if n not in CORRUPTIONS]
        if unknown:
            raise ConfigError(f"{prefix}.names: unknown corruption {unknown[0]!r}; choose from "
                              + ", ".join(CORRUPTIONS))
        if not self.names or not self.severities:
            raise ConfigError(f"{prefix}: give at least one corruption and one severity")


class CorruptionSuite(Suite):
    """``{"error": {corruption: {severity: e}}, "uCE", "CE", "mCE", "relative_CE", "relative_mCE",
    "clean_error"}`` per mode."""

    name = "corruptions"
    Options = CorruptionOptions

    def check(self) -> None:
        self.directory = None
        if self.options.source is not None:
            self.directory = load_corruption_dir(self.options.source)  # validates every file before any work
            missing = [n for n in self.options.names if n not in self.directory.names]
            if missing and self.options.names != list(CORRUPTIONS):
                raise ConfigError(f"corruptions.names: {self.options.source} has no {missing[0]!r}")
            self.names = [n for n in self.options.names if n in self.directory.names]
        else:
            channels = self.ctx.run.data.val_images.shape[1]
            rgb_only = [n for n in self.options.names if n in RGB_ONLY]
            if channels != 3 and rgb_only and self.options.names != list(CORRUPTIONS):
                raise ConfigError(f"corruptions.names: {rgb_only[0]!r} needs RGB images; this run's have {channels} "
                                  "channel(s)")
            self.names = [n for n in self.options.names if channels == 3 or n not in RGB_ONLY]
            if "frost" in self.names:
                from batchaug.evaluate.corruptions.weather import frost_texture_folder

                try:
                    frost_texture_folder()
                except ConfigError as exc:
                    raise ConfigError(f"{exc}; or leave frost out: --option 'corruptions.names=[...]'") from None

    def start(self) -> dict[str, Any]:
        return {"wrong": {}, "n": 0, "clean_wrong": 0.0, "clean_n": 0}

    def update(self, accs: Mapping[str, dict[str, Any]], predict: Model, images: Tensor, targets: Tensor,
               index: Tensor) -> None:
        for mode, logits in predict(images).items():
            accs[mode]["clean_wrong"] += (logits.argmax(-1) != targets).sum()  # summed on the device
            accs[mode]["clean_n"] += targets.numel()
        if self.directory is not None:
            return  # the directory's images are evaluated once, in run()
        for name in self.names:
            for severity in self.options.severities:
                x = corrupt(images, name, severity, seed=self.ctx.seed, index=index)
                for mode, logits in predict(x).items():
                    key = (name, severity)
                    accs[mode]["wrong"][key] = accs[mode]["wrong"].get(key, 0.0) + (logits.argmax(-1) != targets).sum()
        for acc in accs.values():
            acc["n"] += targets.numel()

    def run(self, data: EvalData, modes: Sequence[str]) -> dict[str, dict[str, Any]] | None:
        if self.options.source is None:
            return None
        from batchaug.evaluate.suite import bind

        # the clean error of the evaluation images, then every file of the directory
        predict = bind(self.ctx, list(modes))
        accs = {mode: self.start() for mode in modes}
        for images, targets, index in data.batches(self.ctx.batch_size, self.ctx.device):
            self.update(accs, predict, images, targets, index)
        d = self.directory
        limit = data.limit if data.limit is not None else d.num_images
        labels = d.labels[:limit].to(self.ctx.device)
        for name in self.names:
            for severity in self.options.severities:
                images = d.severity(name, severity)[:limit]
                for lo in range(0, images.shape[0], self.ctx.batch_size):
                    x = images[lo:lo + self.ctx.batch_size].to(self.ctx.device)
                    y = labels[lo:lo + self.ctx.batch_size]
                    for mode, logits in predict(x).items():
                        wrong = accs[mode]["wrong"]
                        wrong[(name, severity)] = wrong.get((name, severity), 0.0) + (logits.argmax(-1) != y).sum()
        for acc in accs.values():
            acc["n"] = int(labels.numel())
        return {mode: self.result(acc) for mode, acc in accs.items()}

    def result(self, acc: dict[str, Any]) -> dict[str, Any]:
        n = max(acc["n"], 1)
        errors: dict[str, dict[str, float]] = {}
        for (name, severity), wrong in acc["wrong"].items():
            errors.setdefault(name, {})[str(severity)] = float(wrong) / n
        clean = float(acc["clean_wrong"]) / max(acc["clean_n"], 1)
        h, w = self.ctx.run.data.image_size
        out = dict(corruption_metrics(errors, clean, alexnet=table_for_size(h, w) == "imagenet"))
        out["num_images"] = acc["n"]
        return out
