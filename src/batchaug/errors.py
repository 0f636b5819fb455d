"""Exceptions that the command line turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import os


class BatchaugError(Exception):
    """Base class of every error batchaug raises on purpose (bad input, missing file, bad config).

    The command line prints the message on one line and exits with :attr:`exit_code`.
    """

    exit_code = 2


class ConfigError(BatchaugError, ValueError):
    """A configuration key or value is wrong; the message names the key and what is allowed."""


class DataError(BatchaugError, OSError):
    """A data file or folder is missing, unreadable or not in the expected layout; names the file."""


class WriteError(BatchaugError, OSError):
    """A file or folder could not be written (read-only or full disk, a path under ``/proc``...):
    ``cannot write PATH: reason``. ``errno`` is the failed call's, so callers can still tell ENOSPC apart."""

    def __init__(self, path: str | os.PathLike[str], exc: BaseException | str, code: int | None = None) -> None:
        reason = exc if isinstance(exc, str) else (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        super().__init__(f"cannot write {path}: {reason}")
        self.errno = getattr(exc, "errno", None) if code is None else code
        self.path, self.reason = str(path), reason

    def __str__(self) -> str:  # OSError's own __str__ would print "[Errno None] ..." for a one-argument error
        return str(self.args[0])

    def __reduce__(self):  # picklable (DataLoader workers, multiprocessing) despite the two-argument __init__
        return (type(self), (self.path, self.reason, self.errno))


class RunBusyError(BatchaugError):
    """Another process holds the lock of a run directory (:mod:`batchaug.lock`); names its PID."""


class NonFiniteError(BatchaugError):
    """Training met a NaN or Inf loss, gradient or weight (``train.on_nonfinite: stop``); names the step.
    Its own exit status (3) tells a diverged run from a bad input (2)."""

    exit_code = 3
