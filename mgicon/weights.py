"""Where network weights come from: a released model name or a checkpoint path.

Released checkpoints (``unigradicon``, ``multigradicon``) live in a cache folder, ``$MGICON_WEIGHTS`` or
``~/.cache/mgicon``, as ``{name}/Step_2_final.trch``.  A missing one is downloaded from upstream's GitHub release
(URLs from upstream's package; ``$MGICON_{NAME}_URL`` overrides one) with a message on stderr, never into the working
directory.  No checksum is published upstream, so the first download is checked structurally (it must load as
upstream's 188-key network) and its size and SHA-256 are recorded in ``weights.lock.json`` in the cache; later
downloads and every later use are verified against that record.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mgicon.download import DownloadError, download, sha256sum

RELEASE_URLS = {
    "unigradicon": "https://github.com/uncbiag/uniGradICON/releases/download/unigradicon_weights/Step_2_final.trch",
    "multigradicon": "https://github.com/uncbiag/uniGradICON/releases/download/multigradicon_weights/Step_2_final.trch",
}
LOCK_NAME = "weights.lock.json"


class WeightsError(RuntimeError):
    """Weights that cannot be had; the message says what to download and where to put it."""


def cache_dir() -> Path:
    return Path(os.environ.get("MGICON_WEIGHTS") or Path.home() / ".cache" / "mgicon")


def released_path(name: str) -> Path:
    return cache_dir() / name / "Step_2_final.trch"


def release_url(name: str) -> str:
    return os.environ.get(f"MGICON_{name.upper()}_URL") or RELEASE_URLS[name]


def _read_lock() -> dict:
    lock = cache_dir() / LOCK_NAME
    return json.loads(lock.read_text(encoding="utf-8")) if lock.is_file() else {}


def _write_lock(entries: dict) -> None:
    lock = cache_dir() / LOCK_NAME
    lock.parent.mkdir(parents=True, exist_ok=True)
    tmp = lock.with_name(lock.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, lock)


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


def fetch_released(name: str, allow_download: bool = True) -> Path:
    """The local path of released weights ``name``, downloading (and recording) them when missing."""
    if name not in RELEASE_URLS:
        raise WeightsError(f"unknown released model {name!r}; choose from {sorted(RELEASE_URLS)} or give a path")
    path = released_path(name)
    lock = _read_lock()
    entry = lock.get(name)
    if path.is_file():
        if entry and path.stat().st_size != entry["size"]:
            raise WeightsError(
                f"{path}: {path.stat().st_size} bytes, but {entry['size']} were recorded in "
                f"{cache_dir() / LOCK_NAME} at download; delete the file to download it again"
            )
        return path
    url = release_url(name)
    advice = f"download {url} and save it as {path} (or pass --model PATH to a checkpoint)"
    if not allow_download:
        raise WeightsError(f"{name} weights are not in {path}; {advice}")
    print(f"mgicon: downloading {name} weights from {url} to {path}", file=sys.stderr)
    try:
        download(url, path, sha256=entry["sha256"] if entry else None, size=entry["size"] if entry else None)
    except DownloadError as exc:
        raise WeightsError(f"{name} weights are not in {path} and the download failed ({exc}); {advice}") from None
    if not entry:
        _check_structure(path)
        lock[name] = {"url": url, "size": path.stat().st_size, "sha256": sha256sum(path)}
        _write_lock(lock)
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
