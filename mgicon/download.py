"""Resumable, verified downloads: a ``.part`` file beside the target grows with HTTP range requests, is checked
against a size and SHA-256 when they are known, and is renamed onto the target only when complete and verified."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that failed or did not verify; nothing is left at the target."""


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def partial_note(part: Path) -> str:
    """What is left of an interrupted download, for an error message: `` (partial download kept in PART: N bytes,
    resumed next time)`` when ``part`` holds data; otherwise ``""`` (an empty ``part`` is removed)."""
    try:
        have = part.stat().st_size
    except OSError:
        return ""
    if have == 0:
        part.unlink(missing_ok=True)
        return ""
    return f" (partial download kept in {part}: {have} bytes, resumed next time)"


def download(
    url: str,
    target: str | os.PathLike,
    sha256: str | None = None,
    size: int | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``target``, resuming a previous partial download; verify ``size``/``sha256`` if given.

    On a checksum or size mismatch the partial file is removed and :class:`DownloadError` raised; when the
    transfer fails, whatever arrived stays in ``TARGET.part`` for the next call to resume, and the message says so
    only if there is such a file with data in it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have > 0 and response.status == 206
            length = response.headers.get("Content-Length")
            expected = (have if resumed else 0) + int(length) if length is not None else None
            with open(part, "ab" if resumed else "wb") as fh:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
        got = part.stat().st_size
        if expected is not None and got < expected:
            raise DownloadError(f"{url}: connection closed at {got} of {expected} bytes{partial_note(part)}")
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part file is already complete
            pass
        else:
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}{partial_note(part)}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"{url}: {reason}{partial_note(part)}") from None
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: got {got} bytes, expected {size}; removed the partial file")
    if sha256 is not None:
        digest = sha256sum(part)
        if digest != sha256:
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {sha256}; removed the file")
    os.replace(part, target)
    return target
