"""The pieces a run directory's safety rests on: atomic writes, safe appends, orphan clean-up, the lock,
and a metrics reader that survives a cut-off line (docs/reliability.md)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from faults import Faults, temp_files

from batchaug.errors import DataError, RunBusyError, WriteError
from batchaug.io import append_text, atomic_write, is_temp_file, remove_orphans, write_json, write_text
from batchaug.lock import LOCK_NAME, DirLock
from batchaug.train.checkpoint import load_checkpoint, save_checkpoint
from batchaug.train.metrics_log import MetricsWriter, read_metrics


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "config.yaml"
    write_text(path, "old\n")
    with Faults(at=0).installed(), pytest.raises(WriteError, match=r"cannot write .*config.yaml: No space left"):
        write_text(path, "new content\n")
    assert path.read_text() == "old\n" and temp_files(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_write(path) as f:  # an error in the writer's own code
        f.write(b"half")
        raise RuntimeError("boom")
    assert path.read_text() == "old\n" and temp_files(tmp_path) == []
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    # an ordinary file's permissions (mkstemp's are 0600), following the umask
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    for action, error in (("enospc", WriteError), ("interrupt", KeyboardInterrupt)):
        with Faults(at=0, action=action).installed(), pytest.raises(error):
            save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
        assert load_checkpoint(path)["step"] == 1 and temp_files(tmp_path) == []


def test_failed_append_leaves_no_fragment(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_text(path, '{"step": 1}\n')
    with Faults(at=0).installed(), pytest.raises(WriteError, match="No space left on device"):
        append_text(path, '{"step": 2, "val_acc": 0.5}\n')  # half of it reached the file, then ENOSPC
    assert path.read_text() == '{"step": 1}\n'
    append_text(path, '{"step": 2}\n')
    assert [r["step"] for r in read_metrics(path, kind=None)] == [1, 2]


def test_cut_off_last_line_is_dropped_with_a_warning_other_bad_lines_are_errors(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2, "val_acc": 0.5}\n{"step": 4, "val_acc": 0.6}\n{"step": 6, "val_')
    with pytest.warns(RuntimeWarning, match="last line, cut short"):
        assert [r["step"] for r in read_metrics(path)] == [2, 4]
    with pytest.warns(RuntimeWarning, match="cut short"):
        MetricsWriter(path).truncate_after(2)  # what a resume does: atomically, the fragment gone too
    assert path.read_text() == '{"step": 2, "val_acc": 0.5}\n' and temp_files(tmp_path) == []
    path.write_text('{"step": 2}\nnot json\n{"step": 4}\n')
    with pytest.raises(DataError, match="metrics.jsonl, line 2: not a JSON object"):
        read_metrics(path)
    path.write_bytes(b'{"step": 2}\n\xff\xfe\n')
    with pytest.raises(DataError, match="not UTF-8"):
        read_metrics(path)


def test_orphans_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / ".last.pt.abcd1234.batchaug-tmp"
    legacy = tmp_path / "best.pt.k2j4h5g6.tmp"  # an earlier version's checkpoint temporary
    live = tmp_path / ".config.yaml.zzzz9999.batchaug-tmp"
    keep = tmp_path / "notes.tmp"  # not ours
    for p in (dead, legacy, live, keep):
        p.write_bytes(b"x")
    assert is_temp_file(dead.name) and is_temp_file(legacy.name) and not is_temp_file(keep.name)
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # its writer is alive
    try:
        assert sorted(remove_orphans(tmp_path)) == sorted([dead, legacy])
    finally:
        os.close(fd)
    assert live.exists() and keep.exists()
    assert remove_orphans(tmp_path, min_age=3600) == []  # too young to be an orphan in a shared folder
    assert remove_orphans(tmp_path) == [live]


def test_lock_refuses_a_second_holder_naming_the_first(tmp_path):
    with DirLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        busy = rf"{tmp_path}: .* in use by another batchaug process \(PID {os.getpid()}"
        with pytest.raises(RunBusyError, match=busy):
            DirLock(tmp_path).acquire()
    with DirLock(tmp_path):  # released on exit
        pass
    # a holder that dies (kill -9) releases it: the kernel drops the flock with the process
    code = (f"import os, signal; from batchaug.lock import DirLock; DirLock({str(tmp_path)!r}).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -9
    with DirLock(tmp_path):
        pass


def test_a_full_disk_when_taking_the_lock_stops_before_any_work(tmp_path, monkeypatch):
    import batchaug.lock as lock_mod

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lock_mod.os, "pwrite", full)
    with pytest.raises(WriteError, match=rf"cannot write {tmp_path}: No space left on device"):
        DirLock(tmp_path).acquire()
    monkeypatch.undo()
    with DirLock(tmp_path):  # nothing was left held
        pass


def test_write_errors_name_the_path(tmp_path):
    with pytest.raises(WriteError, match=r"cannot write /proc/batchaug-test"):
        from batchaug.io import make_dirs

        make_dirs("/proc/batchaug-test/run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="exists and is not a folder"):
        make_dirs(tmp_path / "file")
    e = WriteError(tmp_path / "x", OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert str(e) == f"cannot write {tmp_path / 'x'}: Read-only file system" and e.errno == errno.EROFS


def test_no_warning_for_complete_files(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_metrics(path) == [{"step": 2}]


def test_the_cache_removes_old_orphans_on_its_first_write(tmp_path, monkeypatch):
    """A killed cache writer's temporary file goes on the next write; a fresh one (perhaps another live
    process's, in a folder runs share) gets a minute's grace."""
    from batchaug.data import cache
    from batchaug.data.tensors import TensorSplit

    monkeypatch.setenv("BATCHAUG_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "_cleaned", set())
    key = cache.cache_key({"x": 2})
    path = cache.cache_path(key)
    path.parent.mkdir(parents=True)
    old, young = path.parent / ".a.pt.old11111.batchaug-tmp", path.parent / ".b.pt.new22222.batchaug-tmp"
    for p in (old, young):
        p.write_bytes(b"half a cache file")
    os.utime(old, (time.time() - 2 * cache.ORPHAN_AGE,) * 2)
    split = TensorSplit(torch.zeros(2, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"])
    assert cache.save_cached(path, key, split)
    assert not old.exists() and young.exists() and cache.load_cached(path, key) is not None


def test_read_metrics_of_a_run_directory_created_while_it_looks(tmp_path, monkeypatch):
    """A poller's race: the directory appears between read_metrics' two checks (not a dir yet, then there).
    It reads as a run without lines, never as a file to parse."""
    from batchaug.train.metrics_log import read_metrics

    run = tmp_path / "run"
    real_is_dir = Path.is_dir

    def not_yet(self):
        if self == run:
            run.mkdir(exist_ok=True)  # created just after the look
            return False
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", not_yet)
    assert read_metrics(run) == []
    monkeypatch.setattr(Path, "is_dir", real_is_dir)
    assert read_metrics(run) == [] and read_metrics(tmp_path / "absent") == []
