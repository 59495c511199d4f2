"""Resumable, verified downloads against a local HTTP server on 127.0.0.1."""

import hashlib

import pytest

from mgicon.download import DownloadError, download
from tests.http_server import FileServer, closed_port_url

DATA = bytes(range(256)) * 4000  # ~1 MB


def test_download_verifies_and_renames(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        path = download(
            server.url("/f.bin"), tmp_path / "f.bin", sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA)
        )
    assert path.read_bytes() == DATA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        with pytest.raises(DownloadError, match="SHA-256 .* does not match"):
            download(server.url("/f.bin"), tmp_path / "f.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    with FileServer({"/f.bin": DATA}) as server:
        server.cut_next_response_after(300_000)
        with pytest.raises(DownloadError, match="partial download kept"):
            download(server.url("/f.bin"), tmp_path / "f.bin", size=len(DATA))
        part = tmp_path / "f.bin.part"
        assert 0 < part.stat().st_size < len(DATA)
        have = part.stat().st_size
        download(server.url("/f.bin"), tmp_path / "f.bin", sha256=hashlib.sha256(DATA).hexdigest())
        assert server.requests[-1] == ("/f.bin", f"bytes={have}-")
    assert (tmp_path / "f.bin").read_bytes() == DATA and not part.exists()


def test_http_error_names_the_url(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match=r"/missing.bin: HTTP 404"):
            download(server.url("/missing.bin"), tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_claims_no_partial_file(tmp_path):
    with pytest.raises(DownloadError) as err:
        download(closed_port_url("/f.bin"), tmp_path / "f.bin")
    assert "partial" not in str(err.value) and "kept" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_names_a_partial_file_that_is_kept(tmp_path):
    part = tmp_path / "f.bin.part"
    part.write_bytes(DATA[:1000])
    with pytest.raises(DownloadError, match=r"partial download kept in .*f\.bin\.part: 1000 bytes"):
        download(closed_port_url("/f.bin"), tmp_path / "f.bin")
    assert part.read_bytes() == DATA[:1000]
