"""Released weights: cache folder, download with a recorded checksum, clear advice when they cannot be had."""

import json

import pytest
import torch

import mgicon
from mgicon import weights
from tests.http_server import FileServer, closed_port_url


@pytest.fixture(scope="module")
def released_bytes(tmp_path_factory):
    """A released-format Step_2_final.trch (upstream's 188-key layout; random weights)."""
    path = tmp_path_factory.mktemp("release") / "Step_2_final.trch"
    torch.save(mgicon.build_network("paper", input_shape=(65, 65, 65)).state_dict(), path)
    return path.read_bytes()


def test_download_to_cache_records_checksum_and_reuses(tmp_path, monkeypatch, released_bytes):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    with FileServer({"/multi.trch": released_bytes}) as server:
        monkeypatch.setenv("MGICON_MULTIGRADICON_URL", server.url("/multi.trch"))
        path = weights.resolve_model("multigradicon")
        assert path == tmp_path / "cache" / "multigradicon" / "Step_2_final.trch"
        assert weights.resolve_model("multigradicon") == path
        assert len(server.requests) == 1
    lock = json.loads((tmp_path / "cache" / "weights.lock.json").read_text(encoding="utf-8"))
    assert lock["multigradicon"]["size"] == len(released_bytes)
    assert len(lock["multigradicon"]["sha256"]) == 64
    assert mgicon.load_network(path).config.preset == "paper"
    assert not any(p.name.endswith(".part") for p in path.parent.iterdir())
    assert weights.weights_available("multigradicon") == path
    assert weights.weights_available("multigradicon", cache_dir=tmp_path / "cache") == path


def test_recorded_checksum_guards_a_later_download(tmp_path, monkeypatch, released_bytes):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weights.lock.json").write_text(
        json.dumps({"unigradicon": {"url": "x", "size": len(released_bytes), "sha256": "0" * 64}})
    )
    with FileServer({"/uni.trch": released_bytes}) as server:
        monkeypatch.setenv("MGICON_UNIGRADICON_URL", server.url("/uni.trch"))
        with pytest.raises(weights.WeightsError, match="SHA-256"):
            weights.resolve_model("unigradicon")
    assert not (tmp_path / "cache" / "unigradicon" / "Step_2_final.trch").exists()


def test_a_file_that_is_not_a_network_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    with FileServer({"/bad.trch": b"<html>rate limited</html>"}) as server:
        monkeypatch.setenv("MGICON_UNIGRADICON_URL", server.url("/bad.trch"))
        with pytest.raises(weights.WeightsError, match="not a GradICON network"):
            weights.resolve_model("unigradicon")
    assert not (tmp_path / "cache" / "unigradicon" / "Step_2_final.trch").exists()


def test_unreachable_server_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("MGICON_MULTIGRADICON_URL", "http://127.0.0.1:9/Step_2_final.trch")
    with pytest.raises(weights.WeightsError) as err:
        weights.resolve_model("multigradicon")
    message = str(err.value)
    assert "http://127.0.0.1:9/Step_2_final.trch" in message
    assert str(tmp_path / "cache" / "multigradicon" / "Step_2_final.trch") in message


def test_a_path_is_used_as_is_and_a_missing_one_is_an_error(tmp_path):
    with pytest.raises(weights.WeightsError, match="no such checkpoint file"):
        weights.resolve_model(str(tmp_path / "x.trch"))
    (tmp_path / "x.trch").write_bytes(b"")
    assert weights.resolve_model(str(tmp_path / "x.trch")) == tmp_path / "x.trch"


@pytest.mark.parametrize("part_bytes", [None, b""])
def test_offline_message_claims_no_partial_download(tmp_path, monkeypatch, part_bytes):
    """Released weights absent, server unreachable, nothing (or an empty file) downloaded before."""
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("MGICON_MULTIGRADICON_URL", closed_port_url("/Step_2_final.trch"))
    part = tmp_path / "cache" / "multigradicon" / "Step_2_final.trch.part"
    if part_bytes is not None:
        part.parent.mkdir(parents=True)
        part.write_bytes(part_bytes)
    with pytest.raises(weights.WeightsError) as err:
        weights.resolve_model("multigradicon")
    message = str(err.value)
    assert "download failed" in message and "save it as" in message
    assert "partial" not in message and "kept" not in message
    assert not part.exists()


def test_offline_message_names_a_kept_partial_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("MGICON_MULTIGRADICON_URL", closed_port_url("/Step_2_final.trch"))
    part = tmp_path / "cache" / "multigradicon" / "Step_2_final.trch.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1234)
    with pytest.raises(weights.WeightsError) as err:
        weights.resolve_model("multigradicon")
    assert f"partial download kept in {part}: 1234 bytes" in str(err.value)
    assert part.read_bytes() == b"x" * 1234


def test_weights_available_checks_the_record_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MGICON_UNIGRADICON_URL", closed_port_url())
    cache = tmp_path / "cache"
    path = cache / "unigradicon" / "Step_2_final.trch"
    assert weights.weights_available("unigradicon", cache) is None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert weights.weights_available("unigradicon", cache) == path  # saved by hand, no record: used as is
    import hashlib

    digest = hashlib.sha256(b"weights").hexdigest()
    weights.record_weights(cache / weights.LOCK_NAME, "unigradicon", "u", 7, digest)
    assert weights.weights_available("unigradicon", cache) == path
    assert weights.weights_available("multigradicon", cache) is None
    path.write_bytes(b"WEIGHTS")  # same size, other bytes
    assert weights.weights_available("unigradicon", cache) is None
    assert weights.weights_available("unigradicon", cache, checksum=False) == path
    path.write_bytes(b"truncated weights")
    assert weights.weights_available("unigradicon", cache, checksum=False) is None
    assert weights.weights_available("unigradicon") is None  # default cache: $MGICON_WEIGHTS
    with pytest.raises(weights.WeightsError, match="unknown released model"):
        weights.weights_available("nogradicon", cache)
