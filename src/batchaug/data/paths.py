"""Where data lives: an explicit path, then ``$BATCHAUG_DATA``, then the cache directory.

The same three places, in the same order, are searched for every source, so that a config file
naming no path works on a laptop (data in ``~/.cache/batchaug``), in CI (``BATCHAUG_DATA`` pointing
at a shared folder) and on a cluster (``data.root`` in the config) without edits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from batchaug.errors import DataError

DATA_ENV = "BATCHAUG_DATA"
CACHE_ENV = "BATCHAUG_CACHE"


def cache_dir() -> Path:
    """The cache directory: ``$BATCHAUG_CACHE`` when set, else ``~/.cache/batchaug`` (not created)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "batchaug"


def resolve_data_path(root: str | os.PathLike[str] | None,
                      default_name: str | Sequence[str]) -> Path:
    """Find a data file or folder.

    Args:
        root: an explicit file or folder. A folder that holds ``default_name`` resolves to that
            entry (so ``root`` may be the folder *containing* the data); otherwise ``root`` itself
            is the data. When ``None``, ``$BATCHAUG_DATA/<default_name>`` and then
            ``<cache_dir()>/<default_name>`` are tried.
        default_name: the expected file or folder name (e.g. ``"cifar10-jpeg.zip"``), or several
            names tried in order (e.g. the archive, then its unpacked folder).

    Returns:
        The existing path.

    Raises:
        DataError: nothing exists at any of the places searched; the message lists them all.
    """
    names = [default_name] if isinstance(default_name, str) else list(default_name)
    if root is not None:
        root_path = Path(root).expanduser()
        if root_path.is_dir():
            for name in names:
                if name and (root_path / name).exists():
                    return root_path / name
        if root_path.exists():
            return root_path
        if not root_path.is_absolute():
            raise DataError(f"{root_path}: no such file or folder (a relative data.root is read from the working "
                            f"directory, {Path.cwd()}): run from the folder it is relative to, give an absolute "
                            f"path, or set data.root=null to search ${DATA_ENV} and the cache")
        raise DataError(f"{root_path}: no such file or folder")
    if not any(names):
        raise DataError("no data path given and this source has no default file name to search for; "
                        "pass the path explicitly (config key data.root)")
    searched: list[Path] = []
    env = os.environ.get(DATA_ENV)
    folders = ([Path(env).expanduser()] if env else []) + [cache_dir()]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.exists():
                return candidate
            searched.append(candidate)
    where = ", ".join(str(p) for p in searched)
    hint = "" if env else f"; ${DATA_ENV} is not set"
    raise DataError(f"{_expected(names)} not found (searched {where}{hint}); pass the path explicitly "
                    f"(config key data.root) or set ${DATA_ENV} to the folder holding it")


def _expected(names: Sequence[str]) -> str:
    return " or ".join(repr(n) for n in names if n) or "a data file or folder"
