"""One writer per run directory: an advisory lock (``fcntl.flock``) on ``DIR/.batchaug.lock``.

``batchaug train`` holds the lock of its run directory for the life of the run, so a second trainer
pointed at the same ``--out`` (or ``--resume``) stops at once with a message naming the directory and
the holder's PID, instead of interleaving its lines and checkpoints with the first's. The kernel
releases an ``flock`` when its holder exits or is killed, so a crashed run never leaves a stale lock;
the file itself stays (removing it would let a third process lock a new file while a second still
holds the old one). The PID and host written into it are for the message only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from batchaug.errors import RunBusyError, WriteError

__all__ = ["LOCK_NAME", "DirLock"]

LOCK_NAME = ".batchaug.lock"


class DirLock:
    """An exclusive, non-blocking lock on ``folder`` (which must exist), as a context manager::

        with DirLock(run_dir):
            ...  # the only batchaug process writing run_dir

    Raises (on entering):
        RunBusyError: another process holds it (the message names the folder and that process's PID).
        WriteError: the lock file cannot be created or written (read-only or full disk).
    """

    def __init__(self, folder: str | os.PathLike[str], *, what: str = "run directory") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirLock:
        if self._fd is not None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError(self.folder, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunBusyError(f"{self.folder}: this {self.what} is in use by another batchaug process "
                                   f"({holder}); wait for it to finish (or stop it), or choose another "
                                   "directory") from None
            raise WriteError(self.folder, exc) from exc
        try:
            # the holder's identity, for the message of whoever comes second; also the first write of the
            # run, so a full or read-only disk stops it here, before any work
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise WriteError(self.folder, exc) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    except OSError:
        text = []
    if not text:
        return "PID unknown: it is starting"
    pid = text[0]
    host = f" on {text[1]}" if len(text) > 1 and text[1] != socket.gethostname() else ""
    return f"PID {pid}{host}"
