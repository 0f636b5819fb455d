"""Durable, atomic file writes: the one implementation every writer of a run directory (and the cache) uses.

A file is replaced whole or not at all: :func:`atomic_write` writes a temporary file in the target's
folder, flushes and ``fsync``\\ s it, renames it over the target (``os.replace``, atomic on POSIX) and
``fsync``\\ s the folder so the rename itself survives a power cut. A reader (``eval``, ``report``, a
resumed run) therefore sees the old file or the new one, never an empty or half-written one, whatever
kills the writer and whenever: ``kill -9``, a full disk (``ENOSPC``), a read-only remount.

Append-only logs (``metrics.jsonl``) use :func:`append_text`: each line is written with one unbuffered
write, flushed and ``fsync``\\ ed; when the write fails part-way (a full disk), the file is cut back to
its length before the line, so no half line is left for the next line to be glued onto.

Temporary files are named ``.<target name>.<random>.batchaug-tmp`` and hold an ``flock`` while their
writer lives, so :func:`remove_orphans` can tell the leftovers of a killed writer (removed on the next
start) from a file another process is still writing (kept).

Every ``OSError`` of a write comes out as :class:`~batchaug.errors.WriteError`, ``cannot write PATH:
reason``, which the command line prints as one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from batchaug.errors import BatchaugError, WriteError

__all__ = ["TMP_SUFFIX", "append_text", "atomic_path", "atomic_write", "fsync_dir", "is_temp_file", "make_dirs",
           "remove_orphans", "write_bytes", "write_json", "write_text"]

TMP_SUFFIX = ".batchaug-tmp"
# temporary names of earlier versions (checkpoints: ``last.pt.<random>.tmp``, the cache: ``.<key>.<random>.tmp``,
# the CSV and perplexity writers: ``<name>.tmp``), recognised so that their leftovers are cleaned up too
_LEGACY_TMP = re.compile(r"^(\.?[\w.-]+\.pt\.[a-z0-9_]{8}\.tmp|\.[0-9a-f]{40}\.[a-z0-9_]{8}\.tmp"
                         r"|metrics\.csv\.tmp|perplexity\.json\.tmp)$")


def _read_umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, which races with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


# ------------------------------------------------------------------------------------------ the seams
# Every byte this module writes goes through these two openers and every rename through _replace; the
# fault-injection tests (tests/faults.py) wrap them to fail (ENOSPC) or die (SIGKILL) at chosen points.


def _open_temp(folder: Path, name: str) -> tuple[IO[bytes], Path]:
    """A new temporary file beside ``folder / name``, open for binary writing and ``flock``\\ ed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_SUFFIX, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; the result gets an ordinary file's mode
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the writer closes it or dies
        return os.fdopen(fd, "wb"), Path(tmp)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _open_append(path: Path) -> IO[bytes]:
    """``path`` open for unbuffered appending (one write per line: nothing left in a buffer to flush later)."""
    return open(path, "ab", buffering=0)  # noqa: SIM115 - closed by append_text


def _replace(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- writing


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """``fsync`` a folder, so that the names created, renamed or removed in it are on disk."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as exc:
        raise WriteError(folder, exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):  # filesystems that cannot sync folders
            raise WriteError(folder, exc) from exc
    finally:
        os.close(fd)


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """``mkdir -p`` with a :class:`~batchaug.errors.WriteError` (``cannot write FOLDER: reason``) on failure."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise WriteError(folder, "it exists and is not a folder") from exc
    except OSError as exc:
        raise WriteError(folder, exc) from exc
    return folder


@contextlib.contextmanager
def _replacement(path: Path, durable: bool) -> Iterator[tuple[IO[bytes], Path]]:
    """The temporary file (object and path) of an atomic replacement of ``path``: renamed over ``path``
    when the block exits without an error, removed on any error (``OSError`` named after ``path``)."""
    try:
        f, tmp = _open_temp(path.parent, path.name)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    try:
        with f:  # held open (and flock-ed) while the caller writes, so a cleaner never takes it for an orphan
            yield f, tmp
        _replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, BatchaugError):
            raise WriteError(path, exc) from exc
        raise
    if durable:
        fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[IO[bytes]]:
    """A binary file object whose content replaces ``path`` when the block exits without an error.

    On an error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.
    ``durable=False`` skips the two ``fsync`` calls (for files that a checksum guards, like the cache).

    Raises:
        WriteError: any ``OSError`` of the write, named after ``path``.
    """
    with _replacement(Path(path), durable) as (f, _):
        yield f
        f.flush()
        if durable:
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Like :func:`atomic_write`, for writers that need a file name rather than a file object (e.g.
    ``torch.save`` by name, which uses a faster writer): write to the yielded path."""
    with _replacement(Path(path), durable) as (_, tmp):
        yield tmp
        if durable:
            with open(tmp, "rb") as g:
                os.fsync(g.fileno())


def write_bytes(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (:func:`atomic_write`)."""
    with atomic_write(path, durable=durable) as f:
        f.write(data)


def write_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically (:func:`atomic_write`)."""
    write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Replace ``path`` with ``payload`` as indented JSON plus a newline, atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def append_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Append ``text`` to ``path`` (created if missing) in one write, then flush and ``fsync``.

    When the write fails part-way (a full disk, an interrupt), the file is cut back to its length before the
    call, so it never ends in a fragment (only a ``kill -9`` in the middle of the write can leave one, which
    :func:`batchaug.train.metrics_log.read_metrics` then skips).

    Raises:
        WriteError: any ``OSError`` of the append, named after ``path``.
    """
    path = Path(path)
    data = text.encode("utf-8")
    created = not path.exists()
    try:
        f = _open_append(path)
    except OSError as exc:
        raise WriteError(path, exc) from exc
    with f:
        start = os.fstat(f.fileno()).st_size
        try:
            view = memoryview(data)
            while view:
                n = f.write(view)
                if not n:  # pragma: no cover - a raw file writes at least a byte or raises
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
            if durable:
                os.fsync(f.fileno())
        except BaseException as exc:  # a full disk, or an interrupt, part-way through the line
            with contextlib.suppress(OSError):
                os.ftruncate(f.fileno(), start)
            if isinstance(exc, OSError):
                raise WriteError(path, exc) from exc
            raise
    if created and durable:
        fsync_dir(path.parent)


# ------------------------------------------------------------------------------------------ clean-up


def is_temp_file(name: str) -> bool:
    """Whether a file name is one of this module's temporary files (or an earlier version's)."""
    return (name.startswith(".") and name.endswith(TMP_SUFFIX)) or bool(_LEGACY_TMP.match(name))


def remove_orphans(folder: str | os.PathLike[str], *, min_age: float = 0.0) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder``; returns what was removed.

    A temporary file whose writer is alive holds an ``flock`` and is kept; so is one younger than
    ``min_age`` seconds (a shared folder such as the cache, where another process may have created a
    file and not yet locked it). Errors are ignored: clean-up never stops a run.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not is_temp_file(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or now - entry.stat().st_mtime < min_age:
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live writer holds it
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
        finally:
            os.close(fd)
    if removed:
        with contextlib.suppress(BatchaugError):
            fsync_dir(folder)
    return removed
