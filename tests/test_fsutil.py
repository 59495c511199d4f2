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
