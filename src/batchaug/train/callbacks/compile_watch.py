"""A watch on ``torch.compile`` (``train.compile``): warns when dynamo stops compiling a frame."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchaug.train.callbacks.base import Callback

if TYPE_CHECKING:
    from batchaug.config import RunConfig
    from batchaug.train.trainer import Trainer


class CompileWatch(Callback):
    """At every evaluation, warn once per new event if dynamo hit its recompile limit since the last
    look (it then runs that code eagerly, silently: ``batchaug.train.compiling``)."""

    name = "compile_watch"
    listable = False
    option = "train.compile"

    def __init__(self) -> None:
        self._seen = 0

    @classmethod
    def from_config(cls, cfg: RunConfig, out_dir: Path | None) -> CompileWatch | None:
        return cls() if cfg.train.compile else None

    def on_fit_start(self, trainer: Trainer) -> None:
        from batchaug.train.compiling import recompile_limit_hits

        self._seen = recompile_limit_hits()

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        from batchaug.train.compiling import warn_on_recompile_limit

        self._seen = warn_on_recompile_limit(self._seen)
