"""Files written whole or not at all, outputs committed all or nothing, and a lock for files that several processes
update.

* One file: :func:`atomic_path` (and :func:`atomic_open`, the text/bytes/JSON helpers on top of it) gives a uniquely
  named temporary sibling (same suffixes, so writers that pick their format from the name still do), renamed onto
  the target only when the write succeeded; on any failure the temporary file is removed and the target is as it
  was.
* A command's outputs: :func:`check_outputs` refuses, before any work, outputs that could not be written;
  :class:`StagedOutputs` writes them into private staging folders beside their targets and commits them all or
  none, with SIGINT/SIGTERM held back during the commit (:func:`handle_signals`).  A staging folder carries a
  marker file that its process holds locked, so that a later run recognises the folder of a killed run (marker
  present, lock free) and removes it (:func:`remove_stale_staging`), never a live run's folder nor anything else.
* :func:`locked` serialises read-modify-write updates of one file across processes (:func:`update_json`).

Every file mgicon writes goes through one of these, except three writers that need another shape of atomicity:
downloads (:mod:`mgicon.download`: a resumable ``.part`` file renamed when complete and verified), extracted
archives (:mod:`mgicon.data.archive`: a temporary folder renamed) and the synthetic suite's landmark CSVs
(:mod:`mgicon.data.synthetic`, written into the dataset folder its manifest job creates).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence


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


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **kwargs: Any) -> Iterator[IO]:
    """``open`` a temporary sibling of ``path`` (:func:`atomic_path`) for writing; when the block succeeds the data
    are flushed to disk and the file is renamed onto ``path``.  ``kwargs`` go to :func:`open` (``encoding``,
    ``newline``)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (flushed to disk before the rename)."""
    with atomic_open(path) as fh:
        fh.write(data)


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


# ------------------------------------------------------------------------------------------------- signals


class Terminated(BaseException):
    """SIGTERM arrived (a BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_deferring = 0  # > 0 inside signals_deferred
_pending: int | None = None  # a signal held back
_commits = 0  # StagedOutputs commits completed in this process


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _on_signal(signum: int, frame: object) -> None:
    """SIGINT → KeyboardInterrupt, SIGTERM → :class:`Terminated`; held back while :func:`signals_deferred`."""
    global _pending
    if _deferring:
        _pending = signum
        return
    _raise_for(signum)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (as handled by :func:`handle_signals`) back until the block is done, then act on them."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """While the block runs, SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated` (held back inside
    :func:`signals_deferred`); main thread only, and ignored signals stay ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN:
            previous[signum] = signal.SIG_DFL if handler is None else handler
            signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def commits() -> int:
    """How many :meth:`StagedOutputs.commit` calls have completed in this process (a caller compares counts to
    tell whether an interrupted run had committed outputs)."""
    return _commits


# ------------------------------------------------------------------------------------------------- outputs


class OutputError(ValueError):
    """An output that cannot be written; the message names it (and the option asking for it) and the problem."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (the same resolved path, or the same existing inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_folder(where: str, folder: Path) -> None:
    """``folder`` exists and is writable, or can be created.

    Raises:
        OutputError: ``"{where}: problem"``.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{where}: {existing} is not a folder")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{where}: cannot create folder {folder} ({existing} is not writable)")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mgicon-check.", dir=folder))
    except OSError as exc:
        raise OutputError(f"{where}: folder {folder} is not writable ({exc.strerror or exc})") from None


def check_outputs(
    outputs: Sequence[tuple[str, str | os.PathLike | None, str | None]],
    inputs: Sequence[tuple[str, str | os.PathLike | None]],
    format_problem: Callable[[Path, str], str | None] | None = None,
) -> None:
    """Refuse, before any work, outputs that could not be written; then remove the staging folders killed runs
    left for them (:func:`remove_stale_staging`).

    Args:
        outputs: ``(option, path, kind)`` per output (``path`` None: not asked for).
        inputs: ``(option, path)`` per input file.
        format_problem: ``(path, kind) -> problem or None``: whether the output's writer can write that kind of
            output under that name (``kind`` None: not asked).

    Raises:
        OutputError: "OPTION PATH: problem" for an output that is an input or another output, a folder, or not a
            regular file; whose folder is not writable and cannot be created; or that ``format_problem`` refuses.
    """
    seen: list[tuple[str, str]] = []
    for option, path, kind in outputs:
        if path is None:
            continue
        path = os.fspath(path)
        where = f"{option} {path}"
        if not path.strip():
            raise OutputError(f"{option}: empty path")
        target = Path(path)
        for other_option, other in seen:
            if same_file(path, other):
                raise OutputError(f"{where}: the same file as {other_option}")
        for in_option, in_path in inputs:
            if in_path and same_file(path, in_path):
                raise OutputError(f"{where}: the same file as the input {in_option}; it would be overwritten")
        seen.append((option, path))
        check_folder(where, target.parent)
        if target.is_dir():
            raise OutputError(f"{where}: is a folder")
        if target.exists() and not target.is_file():
            raise OutputError(f"{where}: exists and is not a regular file")
        problem = format_problem(target, kind) if format_problem is not None and kind is not None else None
        if problem:
            raise OutputError(f"{where}: {problem}")
    for _, path, _ in outputs:
        if path is not None:
            remove_stale_staging(path)


# A staging folder is ".{target name}.{random}.tmp" beside its target, holding the staged file(s), this marker
# (locked by its process for as long as the folder is in use) and, during a commit, the originals moved aside.
STAGING_MARKER = ".mgicon-staging"
_MARKER_TEXT = b"mgicon staging folder: outputs of a run not yet committed\n"
_ORIGINALS = ".mgicon-originals"
_RESERVED = (STAGING_MARKER, f"{STAGING_MARKER}.new", _ORIGINALS)


def _staging_pattern(target: Path) -> str:
    return str(target.parent / f".{glob.escape(target.name)}.*.tmp")


class StagedOutputs:
    """Output files written first into private staging folders beside their targets, then committed all or none.

    :meth:`path` gives a path with the target's own name inside such a folder, so that a writer that adds
    companion files (``.mhd`` + ``.zraw``, ``.hdr`` + ``.img``) names them as it would beside the target.
    :meth:`commit` moves every staged file into place, or none; :meth:`discard` removes whatever is staged (and
    the folders this object created for the targets).  As a context manager it discards on exit.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path, int]] = []  # (staging folder, target, descriptor of its locked marker)
        self._created: list[Path] = []  # parent folders made for the targets, outermost first

    def __enter__(self) -> StagedOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def path(self, final: str | os.PathLike) -> Path:
        """A path to write the output ``final`` to (its parent folders are created if missing; staging folders a
        killed run left for it are removed first)."""
        final = Path(final)
        if final.name in _RESERVED:
            raise OutputError(f"{final}: this name is reserved for mgicon's staging folders")
        missing = []
        for folder in [final.parent, *final.parent.parents]:
            if folder.exists():
                break
            missing.append(folder)
        for folder in reversed(missing):
            folder.mkdir(exist_ok=True)
            self._created.append(folder)
        remove_stale_staging(final)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        try:
            fd = _lock_marker(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._staged.append((staging, final, fd))
        return staging / final.name

    def commit(self) -> None:
        """Move every staged file into place, all or nothing.

        Targets that exist are first moved aside (into their staging folder), then the staged files are moved in;
        on any failure (or interruption) the new files are removed and every original is put back, byte-identical.
        On success the originals are deleted.  SIGINT/SIGTERM are held back until the commit is complete.  (Only a
        SIGKILL during the renames can leave some targets new and others old; the next run's
        :func:`remove_stale_staging` then puts back an original whose target is missing.)

        Raises:
            OutputError: two outputs would write the same file, a target is a folder, or an original could not be
                put back after a failure.
            OSError: a move failed (everything is as it was before the commit).
        """
        global _commits
        with signals_deferred():
            moves = [
                (f, staging, final.parent / f.name)
                for staging, final, _ in self._staged
                for f in sorted(staging.iterdir())
                if f.name not in _RESERVED
            ]
            targets = [os.path.abspath(t) for _, _, t in moves]
            if len(set(targets)) != len(targets):
                raise OutputError(f"{next(t for t in targets if targets.count(t) > 1)}: two outputs write this file")
            aside: list[tuple[Path, Path]] = []  # (where the original is kept, target)
            placed: list[Path] = []
            try:
                for _, staging, target in moves:
                    if target.is_dir() and not target.is_symlink():
                        raise OutputError(f"{target}: is a folder; an output cannot replace it")
                    if os.path.lexists(target):
                        keep = staging / _ORIGINALS / target.name
                        keep.parent.mkdir(exist_ok=True)
                        os.replace(target, keep)
                        aside.append((keep, target))
                for staged, _, target in moves:
                    os.replace(staged, target)
                    placed.append(target)
            except BaseException:
                self._roll_back(placed, aside)
                raise
            _commits += 1
            self._created.clear()  # the folders now hold outputs
            self.discard()  # removes the originals with the staging folders

    @staticmethod
    def _roll_back(placed: Sequence[Path], aside: Sequence[tuple[Path, Path]]) -> None:
        """Remove the new files in ``placed`` and put every original back."""
        lost = []
        for target in placed:
            with contextlib.suppress(OSError):
                target.unlink()
        for keep, target in reversed(aside):
            try:
                os.replace(keep, target)
            except OSError:
                lost.append(f"{target} is kept as {keep}")
        if lost:
            raise OutputError(f"could not restore every original output: {'; '.join(lost)}")

    def discard(self) -> None:
        """Remove every staged file and folder, and the target folders this object created (when empty)."""
        for staging, _, fd in self._staged:
            shutil.rmtree(staging, ignore_errors=True)
            os.close(fd)
        self._staged.clear()
        for folder in reversed(self._created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._created.clear()


def _lock_marker(staging: Path) -> int:
    """Create ``staging``'s marker, locked by this process (the descriptor is returned and must stay open).

    The marker is locked before it gets its name, so no other process ever sees an unlocked marker of a live
    folder; the lock ends with the descriptor, also when the process is killed."""
    new = staging / f"{STAGING_MARKER}.new"
    fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _MARKER_TEXT)
        os.replace(new, staging / STAGING_MARKER)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders of ``target`` that killed runs left behind; return them.

    A folder is removed only when it is a real folder named ``.{target name}.*.tmp`` beside ``target``, holds
    mgicon's marker file with its exact text, and that marker's lock is free (its process is gone; a live run,
    also a concurrent one into the same folder, holds it).  Folders without the marker (a user's own, or one
    being created this instant) are left alone.  An original that a killed commit had moved aside is put back
    when its target is missing, and otherwise removed with the folder (the commit had replaced it).
    """
    target = Path(target)
    removed = []
    for name in glob.glob(_staging_pattern(target)):
        folder = Path(name)
        if folder.is_symlink() or not folder.is_dir():
            continue
        try:
            fd = os.open(folder / STAGING_MARKER, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.read(fd, len(_MARKER_TEXT) + 1) != _MARKER_TEXT:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live process holds it
                continue
            originals = folder / _ORIGINALS
            if originals.is_dir() and not originals.is_symlink():
                for original in originals.iterdir():
                    if not os.path.lexists(folder.parent / original.name):
                        os.replace(original, folder.parent / original.name)
            shutil.rmtree(folder)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed
