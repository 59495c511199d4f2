"""mgicon.fsutil: atomic writes leave the target whole; lock-file updates from parallel processes lose nothing."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time

import pytest

from mgicon import fsutil
from mgicon.data.adapters import record_download
from mgicon.weights import record_weights

WRITERS = 8
DELAY = 0.3  # seconds between a writer's read and its write: without the lock, the writers' updates overlap


def test_atomic_path_writes_on_success_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with fsutil.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".csv") and tmp != target
        tmp.write_bytes(b"a,b\n")
    assert target.read_bytes() == b"a,b\n"
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_atomic_path_on_an_exception_keeps_the_target_and_removes_the_temporary(tmp_path):
    target = tmp_path / "downloads.lock.json"
    target.write_bytes(b'{"old": 1}\n')
    with pytest.raises(RuntimeError, match="boom"):
        with fsutil.atomic_path(target) as tmp:
            tmp.write_bytes(b'{"new": ')
            raise RuntimeError("boom")
    assert target.read_bytes() == b'{"old": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["downloads.lock.json"]


def test_atomic_write_json_bytes(tmp_path):
    fsutil.atomic_write_json(tmp_path / "x.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "x.json").read_bytes() == (
        json.dumps({"b": 1, "a": [1, 2]}, indent=2, sort_keys=True) + "\n"
    ).encode()


def _record(kind: str, lock_path: str, i: int, barrier, naive: bool) -> None:
    """One writer process: record entry ``i`` through the real recording function, slowed between read and write
    (and, if ``naive``, without the file lock: a plain read-modify-write)."""
    write = fsutil.atomic_write_json

    def slow_write(path, obj):
        time.sleep(DELAY)
        write(path, obj)

    fsutil.atomic_write_json = slow_write
    if naive:
        fsutil.locked = lambda path: contextlib.nullcontext()
    barrier.wait(timeout=60)
    if kind == "downloads":
        record_download(lock_path, f"https://example.org/{i}.zip", f"{i:064x}", 1000 + i)
    else:
        record_weights(lock_path, f"model{i}", f"https://example.org/{i}.trch", 1000 + i, f"{i:064x}")


def _run_writers(kind: str, lock_path, naive: bool = False) -> dict:
    ctx = multiprocessing.get_context("fork")  # fsutil's lock is POSIX (fcntl) anyway
    barrier = ctx.Barrier(WRITERS)
    procs = [ctx.Process(target=_record, args=(kind, str(lock_path), i, barrier, naive)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * WRITERS
    return json.loads(lock_path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["downloads", "weights"])
def test_parallel_records_all_survive(tmp_path, kind):
    lock_path = tmp_path / f"{kind}.lock.json"
    lock = _run_writers(kind, lock_path)
    assert len(lock) == WRITERS
    if kind == "downloads":
        assert lock["https://example.org/3.zip"] == {"sha256": f"{3:064x}", "size": 1003}
    else:
        assert lock["model5"] == {"url": "https://example.org/5.trch", "size": 1005, "sha256": f"{5:064x}"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".{kind}.lock.json.lock", f"{kind}.lock.json"]


def test_without_the_lock_parallel_records_are_lost(tmp_path):
    """The control: the same writers with the lock disabled lose entries, so the test above can fail."""
    lock = _run_writers("downloads", tmp_path / "downloads.lock.json", naive=True)
    assert len(lock) < WRITERS


def test_the_first_record_stands(tmp_path):
    lock_path = tmp_path / "downloads.lock.json"
    assert record_download(lock_path, "u", "a" * 64, 1) == {"sha256": "a" * 64, "size": 1}
    assert record_download(lock_path, "u", "b" * 64, 2) == {"sha256": "a" * 64, "size": 1}
    assert (
        lock_path.read_text(encoding="utf-8")
        == json.dumps({"u": {"sha256": "a" * 64, "size": 1}}, indent=2, sort_keys=True) + "\n"
    )


# ----------------------------------------------------------------------------------------- staged outputs

# a process that stages T.h5 (and, if asked, commits until its first placement), says so, then waits to be killed
_STAGER = """
import os, sys, time
from pathlib import Path
from mgicon import fsutil

ready, target, phase = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out = fsutil.StagedOutputs()
out.path(target).write_bytes(b"new")
real = os.replace

def replace(src, dst):
    if Path(dst) == target and Path(src).parent.name.endswith(".tmp"):  # the original is aside, the new not in
        ready.write_text("committing")
        time.sleep(600)
    return real(src, dst)

if phase == "staged":
    ready.write_text("staged")
    time.sleep(600)
os.replace = replace
out.commit()
"""


def _killed_stager(tmp_path, target, phase):
    """Start :data:`_STAGER`; returns the process once it is paused in ``phase``."""
    import subprocess
    import sys

    ready = tmp_path / f"ready-{phase}"
    proc = subprocess.Popen([sys.executable, "-c", _STAGER, str(ready), str(target), phase])
    deadline = time.monotonic() + 120
    while not ready.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.is_file(), f"the stager did not reach {phase} (exit code {proc.poll()})"
    return proc


def _staging_folders(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / fsutil.STAGING_MARKER).is_file())


def test_stale_staging_is_removed_only_when_its_process_is_gone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = out / "T.h5"
    target.write_bytes(b"old")
    mine = out / ".T.h5.mine.tmp"  # a user's folder named like ours, without the marker
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    forged = out / ".T.h5.forged.tmp"  # a marker of another text: not ours either
    forged.mkdir()
    (forged / fsutil.STAGING_MARKER).write_text("something else\n")
    proc = _killed_stager(tmp_path, target, "staged")
    try:
        live = _staging_folders(out)
        assert len(live) == 2 and ".T.h5.forged.tmp" in live
        assert fsutil.remove_stale_staging(target) == []  # a live run's folder (it holds the marker's lock)
        assert _staging_folders(out) == live
    finally:
        proc.kill()
        proc.wait()
    removed = fsutil.remove_stale_staging(target)
    assert [p.name for p in removed] == [name for name in live if name != ".T.h5.forged.tmp"]
    assert sorted(p.name for p in out.iterdir()) == [".T.h5.forged.tmp", ".T.h5.mine.tmp", "T.h5"]
    assert target.read_bytes() == b"old" and (mine / "notes.txt").read_text() == "mine"


def test_a_commit_killed_half_way_gets_its_original_back(tmp_path):
    target = tmp_path / "T.h5"
    target.write_bytes(b"old")
    proc = _killed_stager(tmp_path, target, "committing")
    proc.kill()
    proc.wait()
    assert not target.exists(), "the kill came between moving the original aside and placing the new file"
    assert [p.name for p in fsutil.remove_stale_staging(target)]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("ready")) == ["T.h5"]
    assert target.read_bytes() == b"old"


def test_staged_outputs_commit_all_and_leave_nothing(tmp_path):
    with fsutil.StagedOutputs() as out:
        for name in ("a.txt", "sub/b.txt"):
            out.path(tmp_path / name).write_text(name)
        before = fsutil.commits()
        out.commit()
    assert fsutil.commits() == before + 1
    assert (tmp_path / "a.txt").read_text() == "a.txt" and (tmp_path / "sub" / "b.txt").read_text() == "sub/b.txt"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.txt", "sub"]
