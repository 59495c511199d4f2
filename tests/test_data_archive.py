"""Safe extraction: members that would escape the target folder are refused and nothing is left behind."""

import io
import tarfile
import zipfile

import pytest

from mgicon.data.archive import ArchiveError, extract


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "ok/../../escape.txt"])
def test_tar_member_escaping_the_target_is_refused(tmp_path, evil):
    _tar(tmp_path / "a.tar.gz", {"good.txt": b"1", evil: b"2"})
    with pytest.raises(ArchiveError, match="escape"):
        extract(tmp_path / "a.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz"]


def test_zip_member_escaping_the_target_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(ArchiveError, match="escape"):
        extract(tmp_path / "a.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tar_symlink_is_refused(tmp_path):
    with tarfile.open(tmp_path / "l.tar", "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(ArchiveError, match="link"):
        extract(tmp_path / "l.tar", tmp_path / "out")


def test_good_archives_extract(tmp_path):
    _tar(tmp_path / "a.tgz", {"d/x.txt": b"tar"})
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("d/y.txt", b"zip")
    assert (extract(tmp_path / "a.tgz", tmp_path / "t") / "d" / "x.txt").read_bytes() == b"tar"
    assert (extract(tmp_path / "a.zip", tmp_path / "z") / "d" / "y.txt").read_bytes() == b"zip"
    with pytest.raises(ArchiveError, match="already exists"):
        extract(tmp_path / "a.zip", tmp_path / "z")
