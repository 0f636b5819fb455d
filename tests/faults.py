"""Fault injection for the reliability tests: a full disk, an interrupt or a ``kill -9`` at a chosen write.

Every byte batchaug writes goes through the seams of :mod:`batchaug.io` (``_open_temp`` for the files
replaced atomically, ``_open_append`` for ``metrics.jsonl`` lines). :class:`Faults` wraps them: it records
each *write event* (the name of the file being written) and, at the chosen event, lets part of the bytes
through and then raises ``ENOSPC`` (a full disk), raises ``KeyboardInterrupt`` (an interrupt), or
``SIGKILL``\\ s its own process (``kill -9`` in the middle of a write).

Run as a script, it is a ``batchaug`` command line that kills itself at write event ``K``::

    python tests/faults.py --kill-at K -- train CONFIG ... --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class _Faulty:
    """A file object whose first write at the chosen event writes half its bytes, then fails."""

    def __init__(self, f: Any, action: str) -> None:
        self._f = f
        self._action = action

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._f.write(chunk[: len(chunk) // 2])
        self._f.flush()
        if self._action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self._action == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _Faulty:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


@dataclass
class Faults:
    """Record write events and inject ``action`` (``"enospc"``, ``"interrupt"`` or ``"kill"``) at one of them:
    the ``at``-th event (0-based) among those whose file name is ``name`` (any name when None)."""

    at: int | None = None
    name: str | None = None
    action: str = "enospc"
    events: list[str] = field(default_factory=list)
    fired: str | None = None

    def _hit(self, target: str) -> bool:
        self.events.append(target)
        if self.at is None or self.fired is not None or (self.name is not None and target != self.name):
            return False
        matching = [e for e in self.events if self.name is None or e == self.name]
        if len(matching) - 1 == self.at:
            self.fired = target
            return True
        return False

    @contextlib.contextmanager
    def installed(self):
        import batchaug.io as bio

        open_temp, open_append = bio._open_temp, bio._open_append

        def faulty_temp(folder: Path, name: str):
            f, tmp = open_temp(folder, name)
            return (_Faulty(f, self.action) if self._hit(name) else f), tmp

        def faulty_append(path: Path):
            f = open_append(path)
            return _Faulty(f, self.action) if self._hit(Path(path).name) else f

        bio._open_temp, bio._open_append = faulty_temp, faulty_append
        try:
            yield self
        finally:
            bio._open_temp, bio._open_append = open_temp, open_append


def temp_files(folder: Path) -> list[Path]:
    """Temporary files (of this or an earlier version's writers) anywhere under ``folder``."""
    from batchaug.io import is_temp_file

    return sorted(p for p in folder.rglob("*") if is_temp_file(p.name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kill-at", type=int, required=True, help="0-based write event to die in")
    parser.add_argument("--name", default=None, help="count only writes of files with this name")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then the batchaug command line")
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    from batchaug.cli import main as batchaug_main

    with Faults(at=args.kill_at, name=args.name, action="kill").installed():
        return batchaug_main(rest)


if __name__ == "__main__":
    sys.exit(main())
