"""Safe extraction of downloaded zip and tar archives: every member must land inside the target folder.

Absolute paths, ``..`` components, and links or devices in tar files are refused before anything is written;
extraction goes to a temporary folder beside the target that is renamed into place when complete.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath


class ArchiveError(ValueError):
    """An archive that is unreadable or would write outside its target folder."""


def _check_member(archive: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise ArchiveError(f"{archive}: member {name!r} would escape the target folder; refusing to extract")


def extract(archive: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Extract a .zip, .tar, .tar.gz/.tgz or .tar.bz2 archive into ``target`` (created; must not exist yet)."""
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise ArchiveError(f"{target}: already exists; remove it to extract {archive} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _check_member(archive, name)
                zf.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(archive, m.name)
                    if not (m.isfile() or m.isdir()):
                        raise ArchiveError(f"{archive}: member {m.name!r} is a link or device; refusing to extract")
                if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                    tf.extractall(tmp, members=members, filter="data")
                else:
                    tf.extractall(tmp, members=members)
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
