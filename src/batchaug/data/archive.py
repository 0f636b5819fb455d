"""Read-only file trees: a folder on disk or a zip archive, behind the same small interface.

Image datasets come either unpacked (one file per image) or as one zip. Reading the zip in place
avoids unpacking 60k-1M small files; members that are stored uncompressed (the usual case for
JPEG/PNG archives, which do not deflate) are sliced straight out of a memory map of the archive,
which is several times faster than ``zipfile.ZipFile.read`` and safe to call from many threads.
Every member read from a zip is checked against its CRC-32, so a damaged archive is reported
rather than decoded into garbage, and no member is inflated past :data:`~batchaug.limits.MAX_MEMBER_BYTES`
(checked before inflating, and enforced while inflating: a zip bomb can lie about its sizes).

In a folder, symbolic links are followed once at most: every folder is listed once, however many links
lead to it (a link loop does not repeat the data), and a link that leads outside the dataset folder is an
error, so no path outside it is ever read.

Paths inside a tree are POSIX-style and relative (``"train/cat/0001.jpg"``); listings are sorted by
that string, so a zip and the same files unpacked list (and therefore load) in the same order.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import stat
import struct
import threading
import warnings
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchaug.errors import DataError
from batchaug.limits import MAX_MEMBER_BYTES

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip local file header, 30 bytes
_LOCAL_MAGIC = b"PK\x03\x04"


def _is_hidden(part: str) -> bool:
    # Finder/Explorer droppings and dotfiles are never data.
    return part.startswith(".") or part == "__MACOSX" or part == "Thumbs.db"


class FileTree(ABC):
    """A read-only tree of files addressed by relative POSIX paths."""

    path: Path

    @abstractmethod
    def list_dir(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """Immediate sub-folder names and file names under ``prefix`` (``""`` or ending in ``/``), sorted."""

    @abstractmethod
    def walk_files(self, prefix: str = "") -> list[str]:
        """Every file below ``prefix`` (recursively), as paths relative to the tree root, sorted."""

    @abstractmethod
    def read(self, name: str) -> bytes:
        """The bytes of one file; :class:`DataError` naming the file when it cannot be read."""

    @abstractmethod
    def read_ends(self, name: str, n: int) -> tuple[bytes, bytes]:
        """The first and last ``n`` bytes of a file, without reading the middle where possible."""

    @abstractmethod
    def fingerprint(self, names: Sequence[str]) -> str:
        """A string that changes whenever any of ``names`` (or the tree itself) changes on disk."""

    @abstractmethod
    def describe(self, name: str) -> str:
        """How to name one file in an error message (includes the archive for zip members)."""

    def close(self) -> None:  # noqa: B027 - optional for trees without open handles
        """Release open handles; the tree reopens them on the next read."""


class DirTree(FileTree):
    """A folder on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: not a folder")

    def list_dir(self, prefix: str = "") -> tuple[list[str], list[str]]:
        folder = self.path / prefix if prefix else self.path
        dirs: list[str] = []
        files: list[str] = []
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if _is_hidden(entry.name):
                        continue
                    (dirs if entry.is_dir() else files).append(entry.name)
        except OSError as exc:
            raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
        return sorted(dirs), sorted(files)

    def walk_files(self, prefix: str = "") -> list[str]:
        top = self.path / prefix if prefix else self.path
        root = os.path.realpath(self.path)
        out: list[str] = []
        visited: set[tuple[int, int]] = set()
        repeats = 0
        try:
            st = os.stat(top)
        except OSError as exc:
            raise DataError(f"{top}: cannot list folder ({exc.strerror or exc})") from exc
        visited.add((st.st_dev, st.st_ino))
        pending = [(str(top), prefix if not prefix or prefix.endswith("/") else prefix + "/")]
        while pending:
            folder, rel = pending.pop()
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as exc:
                raise DataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
            for entry in entries:
                if _is_hidden(entry.name):
                    continue
                try:
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        if os.path.commonpath([root, target]) != root:
                            raise DataError(f"{entry.path}: a symbolic link to {target}, outside the dataset folder "
                                            f"{self.path}; nothing outside it is read (copy the data in, or point "
                                            "data.root at the folder that holds it all)")
                    if entry.is_dir():
                        st = entry.stat()
                        key = (st.st_dev, st.st_ino)
                        if key in visited:  # a link loop, or a second link to a folder: listed once
                            repeats += 1
                            continue
                        visited.add(key)
                        pending.append((entry.path, f"{rel}{entry.name}/"))
                    elif entry.is_file():
                        out.append(rel + entry.name)
                except DataError:
                    raise
                except OSError as exc:
                    raise DataError(f"{entry.path}: cannot read ({exc.strerror or exc})") from exc
        if repeats:
            warnings.warn(f"{self.path}: {repeats} symbolic link(s) lead to folders listed already (a loop, or a "
                          "second link to one folder); each folder's images are used once", RuntimeWarning,
                          stacklevel=2)
        out.sort()
        return out

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise DataError(f"{self.path / name}: cannot read ({exc.strerror or exc})") from exc

    def read_ends(self, name: str, n: int) -> tuple[bytes, bytes]:
        try:
            with open(self.path / name, "rb") as f:
                head = f.read(n)
                size = os.fstat(f.fileno()).st_size
                f.seek(max(size - n, 0))
                return head, f.read(n)
        except OSError as exc:
            raise DataError(f"{self.path / name}: cannot read ({exc.strerror or exc})") from exc

    def fingerprint(self, names: Sequence[str]) -> str:
        # A folder's own mtime does not change when a file inside is rewritten: hash every file's
        # size and mtime instead (one stat per file, ~0.1 s per 60k files).
        h = hashlib.sha256()
        for name in names:
            try:
                st = os.stat(self.path / name)
            except OSError as exc:
                raise DataError(f"{self.path / name}: cannot stat ({exc.strerror or exc})") from exc
            h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"dir:{self.path.resolve()}:{len(names)}:{h.hexdigest()}"

    def describe(self, name: str) -> str:
        return f"file '{self.path / name}'"


class ZipTree(FileTree):
    """A zip archive read in place. Safe to share between threads; reopens itself after ``fork``."""

    def __init__(self, path: str | os.PathLike[str], *, max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
        self.path = Path(path)
        self.max_member_bytes = int(max_member_bytes)
        self._lock = threading.Lock()
        self._pid = -1
        self._zip: zipfile.ZipFile | None = None
        self._file: Any = None
        self._map: mmap.mmap | None = None
        self._data_start: dict[str, int] = {}
        self._open()
        assert self._zip is not None
        self._infos: dict[str, zipfile.ZipInfo] = {}
        files_in: dict[str, list[str]] = {}
        folders = {""}
        for info in self._zip.infolist():
            name = info.filename
            parent, _, base = name.rstrip("/").rpartition("/")
            # _is_hidden on every path component, as substring tests (60k members per archive).
            if "/." in f"/{name}" or "__MACOSX/" in name or base == "Thumbs.db":
                continue
            parent = parent + "/" if parent else ""
            if info.is_dir():
                folders.add(f"{parent}{base}/")
            else:
                self._infos[name] = info
                files_in.setdefault(parent, []).append(base)
                folders.add(parent)
        # Zips need not hold explicit folder entries: every ancestor of a file is a folder too.
        sub_dirs: dict[str, set[str]] = {}
        for folder in folders:
            parts = folder.rstrip("/").split("/") if folder else []
            for depth in range(len(parts)):
                parent = "".join(p + "/" for p in parts[:depth])
                sub_dirs.setdefault(parent, set()).add(parts[depth])
        self._children: dict[str, tuple[list[str], list[str]]] = {
            f: (sorted(sub_dirs.get(f, ())), sorted(files_in.get(f, ())))
            for f in set(sub_dirs) | set(files_in) | {""}
        }
        self._names: list[str] = sorted(self._infos)

    # -- handles -------------------------------------------------------------------------------
    def _open(self) -> None:
        try:
            file = open(self.path, "rb")  # noqa: SIM115 - lives as long as the tree
        except OSError as exc:
            raise DataError(f"{self.path}: cannot open ({exc.strerror or exc})") from exc
        try:
            self._zip = zipfile.ZipFile(file)
            size = os.fstat(file.fileno()).st_size
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            file.close()
            raise DataError(f"{self.path}: truncated or corrupt zip archive ({exc}); re-download or re-create "
                            "it") from exc
        self._file = file
        self._pid = os.getpid()

    def _ensure_open(self) -> None:
        if self._pid != os.getpid() or self._zip is None:
            with self._lock:
                if self._pid != os.getpid() or self._zip is None:
                    self._open()

    def close(self) -> None:
        with self._lock:
            if self._map is not None:
                self._map.close()
            if self._zip is not None:
                self._zip.close()
            if self._file is not None:
                self._file.close()
            self._zip = self._file = self._map = None

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers started with spawn get a copy without the open handles.
        state = self.__dict__.copy()
        state.update(_lock=None, _zip=None, _file=None, _map=None, _pid=-1)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()

    # -- listing -------------------------------------------------------------------------------
    def list_dir(self, prefix: str = "") -> tuple[list[str], list[str]]:
        dirs, files = self._children.get(prefix, ([], []))
        return list(dirs), list(files)

    def walk_files(self, prefix: str = "") -> list[str]:
        if not prefix:
            return list(self._names)
        return [n for n in self._names if n.startswith(prefix)]

    # -- reading -------------------------------------------------------------------------------
    def _info(self, name: str) -> zipfile.ZipInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise DataError(f"{self.path}: no member '{name}'") from None

    def _start(self, info: zipfile.ZipInfo) -> int:
        start = self._data_start.get(info.filename)
        if start is None:
            assert self._map is not None
            off = info.header_offset
            header = self._map[off:off + _LOCAL_HEADER.size]
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_MAGIC:
                raise DataError(f"{self.path}: member '{info.filename}' has a damaged local header")
            fields = _LOCAL_HEADER.unpack(header)
            start = off + _LOCAL_HEADER.size + fields[9] + fields[10]
            self._data_start[info.filename] = start
        return start

    def _raw(self, info: zipfile.ZipInfo) -> bytes:
        assert self._map is not None
        start = self._start(info)
        raw = self._map[start:start + info.compress_size]
        if len(raw) != info.compress_size:
            raise DataError(f"{self.path}: member '{info.filename}' is cut short (archive truncated?)")
        return raw

    def read(self, name: str) -> bytes:
        self._ensure_open()
        info = self._info(name)
        if info.flag_bits & 0x1:
            raise DataError(f"{self.path}: member '{name}' is encrypted; encrypted zips are not supported")
        cap = self.max_member_bytes
        if info.file_size > cap or (info.compress_type == zipfile.ZIP_STORED and info.compress_size > cap):
            raise DataError(f"{self.path}: member '{name}' declares {max(info.file_size, info.compress_size):,} "
                            f"bytes, above the cap of {cap:,} per member (a zip bomb?)")
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                data = self._raw(info)
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                # never inflate past the declared size (+1 byte to notice a member that lies about it)
                data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(self._raw(info), info.file_size + 1)
            else:  # bzip2 / lzma: rare for images; zipfile knows them
                with self._lock:
                    assert self._zip is not None
                    with self._zip.open(info) as member:
                        data = member.read(info.file_size + 1)
        except (zlib.error, zipfile.BadZipFile, OSError, NotImplementedError, EOFError) as exc:
            raise DataError(f"{self.path}: member '{name}' cannot be read ({exc})") from exc
        if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
            raise DataError(f"{self.path}: member '{name}' is corrupt (CRC-32 or size mismatch)")
        return data

    def read_ends(self, name: str, n: int) -> tuple[bytes, bytes]:
        self._ensure_open()
        info = self._info(name)
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            assert self._map is not None
            # Slice the two ends out of the map: only the pages they touch are read.
            start = self._start(info)
            end = start + info.compress_size
            if end > len(self._map):
                raise DataError(f"{self.path}: member '{name}' is cut short (archive truncated?)")
            return self._map[start:min(start + n, end)], self._map[max(end - n, start):end]
        data = self.read(name)
        return data[:n], data[-n:]

    def fingerprint(self, names: Sequence[str]) -> str:
        return zip_fingerprint(self.path)

    def describe(self, name: str) -> str:
        return f"member '{name}' of zip '{self.path}'"


def zip_fingerprint(path: str | os.PathLike[str]) -> str:
    """Identifies a zip's content without opening it: an archive cannot change without its size or
    mtime changing."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot stat ({exc.strerror or exc})") from exc
    return f"zip:{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def open_tree(path: str | os.PathLike[str]) -> FileTree:
    """Open a folder or a ``.zip`` file as a :class:`FileTree`."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        raise DataError(f"{p}: no such file or folder") from exc
    if stat.S_ISDIR(st.st_mode):
        return DirTree(p)
    if zipfile.is_zipfile(p):
        return ZipTree(p)
    if p.suffix.lower() == ".zip" or _starts_like_zip(p):
        raise DataError(f"{p}: truncated or corrupt zip archive (its central directory is missing); re-download "
                        "or re-create it")
    raise DataError(f"{p}: expected a folder or a .zip archive")


def _starts_like_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == _LOCAL_MAGIC
    except OSError:
        return False
