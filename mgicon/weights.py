"""Where network weights come from: a released model name or a checkpoint path.

Released checkpoints (``unigradicon``, ``multigradicon``) live in a cache folder, ``$MGICON_WEIGHTS`` or
``~/.cache/mgicon``, as ``{name}/Step_2_final.trch``.  A missing one is downloaded from upstream's GitHub release
(URLs from upstream's package; ``$MGICON_{NAME}_URL`` overrides one) with a message on stderr, never into the working
directory.  No checksum is published upstream, so the first download is checked structurally (it must load as
upstream's 188-key network) and its size and SHA-256 are recorded in ``weights.lock.json`` in the cache; later
downloads and every later use are verified against that record.  The record is updated under a file lock (parallel
jobs may fetch different models at once), and concurrent fetches of one model download it only once.
:func:`weights_available` says, without any network, whether a released checkpoint is ready in the cache.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mgicon.download import DownloadError, download, sha256sum
from mgicon.fsutil import locked, update_json

RELEASE_URLS = {
    "unigradicon": "https://github.com/uncbiag/uniGradICON/releases/download/unigradicon_weights/Step_2_final.trch",
    "multigradicon": "https://github.com/uncbiag/uniGradICON/releases/download/multigradicon_weights/Step_2_final.trch",
}
LOCK_NAME = "weights.lock.json"


class WeightsError(RuntimeError):
    """Weights that cannot be had; the message says what to download and where to put it."""


def cache_dir() -> Path:
    """The weights cache: ``$MGICON_WEIGHTS`` or ``~/.cache/mgicon``."""
    return Path(os.environ.get("MGICON_WEIGHTS") or Path.home() / ".cache" / "mgicon")


def _root(cache: str | os.PathLike | None) -> Path:
    return Path(cache) if cache is not None else cache_dir()


def released_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where released weights ``name`` live in the cache (``cache`` or :func:`cache_dir`)."""
    return _root(cache) / name / "Step_2_final.trch"


def release_url(name: str) -> str:
    return os.environ.get(f"MGICON_{name.upper()}_URL") or RELEASE_URLS[name]


def _read_lock(cache: str | os.PathLike | None = None) -> dict:
    lock = _root(cache) / LOCK_NAME
    return json.loads(lock.read_text(encoding="utf-8")) if lock.is_file() else {}


def record_weights(lock_path: str | os.PathLike, name: str, url: str, size: int, sha256: str) -> dict:
    """Record released weights ``name`` (source ``url``, ``size``, ``sha256``) in the lock file unless a record
    exists (the first download's stands); return the recorded entry.  The read-modify-write holds a file lock and
    writes through a unique temporary file (:func:`mgicon.fsutil.update_json`), so parallel jobs lose nothing."""

    def add(lock: dict) -> None:
        lock.setdefault(name, {"url": url, "size": int(size), "sha256": sha256})

    return update_json(lock_path, add)[name]


def _unknown(name: str) -> WeightsError:
    return WeightsError(f"unknown released model {name!r}; choose from {sorted(RELEASE_URLS)} or give a path")


def weights_available(name: str, cache_dir: str | os.PathLike | None = None, checksum: bool = True) -> Path | None:
    """The cached checkpoint of released weights ``name`` if it is ready to use, else ``None``; no network.

    Ready means: the file exists and, when ``weights.lock.json`` records it, has the recorded size and (with
    ``checksum``) SHA-256.  A file without a record (saved there by hand) is ready, as :func:`fetch_released`
    would use it as is.  Raises :class:`WeightsError` for a name that is not a released model.
    """
    if name not in RELEASE_URLS:
        raise _unknown(name)
    path = released_path(name, cache_dir)
    if not path.is_file():
        return None
    entry = _read_lock(cache_dir).get(name)
    if entry:
        if path.stat().st_size != entry["size"]:
            return None
        if checksum and sha256sum(path) != entry["sha256"]:
            return None
    return path


def _check_structure(path: Path) -> None:
    from mgicon.network.checkpoint import CheckpointError, load_checkpoint

    try:
        config = load_checkpoint(path)["config"]
    except CheckpointError as exc:
        path.unlink(missing_ok=True)
        raise WeightsError(f"downloaded file is not a GradICON network ({exc}); removed it") from None
    if config.preset != "paper":
        path.unlink(missing_ok=True)
        raise WeightsError(f"{path}: downloaded network has layout {config.preset!r}, expected 'paper'; removed it")


def _checked_size(name: str, path: Path) -> Path:
    """``path`` if its size matches the recorded one (or none is recorded); else a :class:`WeightsError`."""
    entry = _read_lock().get(name)
    if entry and path.stat().st_size != entry["size"]:
        raise WeightsError(
            f"{path}: {path.stat().st_size} bytes, but {entry['size']} were recorded in "
            f"{cache_dir() / LOCK_NAME} at download; delete the file to download it again"
        )
    return path


def fetch_released(name: str, allow_download: bool = True) -> Path:
    """The local path of released weights ``name``, downloading (and recording) them when missing."""
    if name not in RELEASE_URLS:
        raise _unknown(name)
    path = released_path(name)
    if path.is_file():
        return _checked_size(name, path)
    url = release_url(name)
    advice = f"download {url} and save it as {path} (or pass --model PATH to a checkpoint)"
    if not allow_download:
        raise WeightsError(f"{name} weights are not in {path}; {advice}")
    with locked(path):  # one download per file, even when several jobs want it at once
        if path.is_file():  # another process fetched it while this one waited
            return _checked_size(name, path)
        entry = _read_lock().get(name)
        print(f"mgicon: downloading {name} weights from {url} to {path}", file=sys.stderr)
        try:
            download(url, path, sha256=entry["sha256"] if entry else None, size=entry["size"] if entry else None)
        except DownloadError as exc:
            raise WeightsError(f"{name} weights are not in {path} and the download failed ({exc}); {advice}") from None
        if not entry:
            _check_structure(path)
            record_weights(cache_dir() / LOCK_NAME, name, url, path.stat().st_size, sha256sum(path))
    return path


def resolve_model(model: str, allow_download: bool = True) -> Path:
    """A released model name or a path to a ``.trch``/checkpoint file → a local checkpoint path."""
    if model in RELEASE_URLS:
        return fetch_released(model, allow_download)
    path = Path(model)
    if not path.is_file():
        raise WeightsError(
            f"{model}: no such checkpoint file (give a path, or one of {', '.join(sorted(RELEASE_URLS))})"
        )
    return path
