"""Files written whole or not at all, and a lock for files that several processes update.

Every writer of mgicon goes through :func:`atomic_path` (or the text/bytes/JSON helpers on top of it): the data go
to a uniquely named temporary sibling (same suffixes, so writers that pick their format from the name still do),
which is renamed onto the target only when the write succeeded; on any failure the temporary file is removed and
the target is as it was.  :func:`locked` serialises read-modify-write updates of one file across processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); on success rename it onto ``path``, on failure
    remove it.

    Args:
        path: the file to write.
        mkdir: create the parent folder if it does not exist.
    """
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make shared outputs private
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (flushed to disk before the rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` whole or not at all."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock for ``path`` (on the sibling ``.{name}.lock``) across processes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def update_json(path: str | os.PathLike, update) -> dict:
    """Read the JSON object at ``path`` (``{}`` if absent), apply ``update(obj)`` (in place or returning a new
    object) and write it back atomically, all under :func:`locked`; return the written object."""
    path = Path(path)
    with locked(path):
        obj = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        new = update(obj)
        obj = obj if new is None else new
        atomic_write_json(path, obj)
    return obj
