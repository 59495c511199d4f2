"""Nothing bad gets through, nothing is clobbered: every failure of ``mgicon`` is one line on stderr naming the
file (or option) and the problem, exit code 2 (SIGINT/SIGTERM: 130/143), no traceback, no library warning, and
every output that existed before is byte-identical afterwards, with no temporary file left beside it."""

from __future__ import annotations

import ast
import errno
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mgicon.cli import main
from mgicon.network import save_checkpoint
from mgicon.network.checkpoint import FORMAT, VERSION
from mgicon.testing import known_output_network, make_image, smooth_volume

PREVIOUS = {"T.h5": b"the transform of an earlier run\n", "W.nii.gz": b"the warped image of an earlier run\n"}


@dataclass
class Env:
    """A registration that would succeed: its inputs and its (pre-existing) outputs."""

    tmp: Path
    fixed: Path
    moving: Path
    model: Path
    out: Path

    def argv(self, **changes: str) -> list[str]:
        """``mgicon register`` with the options of :meth:`options`, ``changes`` applied."""
        return ["register", *[item for pair in {**self.options(), **changes}.items() for item in pair]]

    def options(self) -> dict[str, str]:
        return {
            "--fixed": str(self.fixed),
            "--moving": str(self.moving),
            "--fixed-modality": "mri",
            "--moving-modality": "mri",
            "--model": str(self.model),
            "--io-iterations": "0",
            "--device": "cpu",
            "--transform-out": str(self.out / "T.h5"),
            "--warped-moving-out": str(self.out / "W.nii.gz"),
        }


@pytest.fixture
def env(tmp_path) -> Env:
    fixed = make_image(100 * smooth_volume((12, 14, 16), 1, scale=4)[0, 0].numpy(), (1.1, 0.9, 1.3), (3.0, -2.0, 1.0))
    moving = make_image(100 * smooth_volume((14, 12, 16), 2, scale=4)[0, 0].numpy(), (0.9, 1.2, 1.0))
    e = Env(tmp_path, tmp_path / "fixed.nii.gz", tmp_path / "moving.nii", tmp_path / "tiny.pt", tmp_path / "out")
    sitk.WriteImage(fixed, str(e.fixed))
    sitk.WriteImage(moving, str(e.moving))
    save_checkpoint(known_output_network(translation=[0.04, -0.03, 0.02]), e.model)
    e.out.mkdir()
    for name, data in PREVIOUS.items():
        (e.out / name).write_bytes(data)
    return e


@dataclass
class Case:
    """What a case changes in the command line, what its one stderr line must contain, and its exit code."""

    changes: dict[str, str]
    needles: tuple[str, ...]
    code: int = 2


def _cut(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


def _written(path: Path, image: sitk.Image) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def _volume(shape=(10, 11, 12)) -> sitk.Image:
    return make_image(np.random.default_rng(0).random(shape).astype(np.float32))


def corrupt_image(e: Env, mp: pytest.MonkeyPatch) -> Case:
    # a MetaImage header without an element type: MetaIO complains on stderr before ITK gives up
    bad = e.tmp / "corrupt.mha"
    bad.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementDataFile = LOCAL\n" + bytes(256))
    return Case({"--moving": str(bad)}, (str(bad), "cannot read"))


def truncated_nii_gz(e: Env, mp: pytest.MonkeyPatch) -> Case:
    path = _written(e.tmp / "cut.nii.gz", _volume())
    _cut(path, int(0.6 * path.stat().st_size))
    return Case({"--moving": str(path)}, (str(path), "truncated"))


def truncated_nii(e: Env, mp: pytest.MonkeyPatch) -> Case:
    path = _written(e.tmp / "cut.nii", _volume())
    data = 10 * 11 * 12 * 4
    _cut(path, path.stat().st_size - data // 5)
    return Case({"--fixed": str(path)}, (str(path), f"truncated ({data - data // 5} of {data} bytes of image data)"))


def truncated_mha(e: Env, mp: pytest.MonkeyPatch) -> Case:
    path = _written(e.tmp / "cut.mha", _volume())
    _cut(path, path.stat().st_size - 100)
    return Case({"--moving": str(path)}, (str(path), "truncated"))


def mhd_without_its_data_file(e: Env, mp: pytest.MonkeyPatch) -> Case:
    path = _written(e.tmp / "lonely.mhd", _volume())
    (e.tmp / "lonely.raw").unlink()
    return Case({"--moving": str(path)}, (str(path), "lonely.raw", "does not exist"))


def output_parent_is_a_file(e: Env, mp: pytest.MonkeyPatch) -> Case:
    (e.tmp / "a_file").write_text("not a folder")
    target = e.tmp / "a_file" / "W.nii.gz"
    return Case({"--warped-moving-out": str(target)}, ("--warped-moving-out", str(target), "is not a folder"))


def output_folder_unwritable(e: Env, mp: pytest.MonkeyPatch) -> Case:
    # the output's folder would have to be created in a read-only one; root may write anywhere, so the permission
    # check is told the truth of a read-only folder for every user
    folder = e.tmp / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    real = os.access
    mp.setattr(os, "access", lambda path, mode, **kw: Path(path) != folder and real(path, mode, **kw))
    target = folder / "new" / "W.nii.gz"
    return Case({"--warped-moving-out": str(target)}, ("--warped-moving-out", str(folder), "not writable"))


def output_folder_refuses_files(e: Env, mp: pytest.MonkeyPatch) -> Case:
    # what a read-only folder does to root too: creating a file in it fails (here: on a read-only file system)
    folder = e.tmp / "read_only_fs"
    folder.mkdir()
    real = tempfile.mkdtemp

    def mkdtemp(suffix=None, prefix=None, dir=None):
        if dir is not None and Path(dir) == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))
        return real(suffix, prefix, dir)

    mp.setattr(tempfile, "mkdtemp", mkdtemp)
    return Case({"--warped-moving-out": str(folder / "W.nii.gz")}, ("--warped-moving-out", str(folder), "not writable"))


def unsupported_suffix(e: Env, mp: pytest.MonkeyPatch) -> Case:
    target = e.out / "T.nii.gz"
    return Case({"--transform-out": str(target)}, ("--transform-out", str(target), "transform", ".nii.gz", ".h5"))


def output_is_a_folder(e: Env, mp: pytest.MonkeyPatch) -> Case:
    (e.out / "folder.nii.gz").mkdir()
    return Case({"--warped-moving-out": str(e.out / "folder.nii.gz")}, ("--warped-moving-out", "is a folder"))


def output_is_an_input(e: Env, mp: pytest.MonkeyPatch) -> Case:
    return Case({"--warped-moving-out": str(e.moving)}, ("--warped-moving-out", str(e.moving), "input --moving"))


def output_is_another_output(e: Env, mp: pytest.MonkeyPatch) -> Case:
    target = e.tmp / "out" / ".." / "out" / "T.h5"
    return Case({"--inverse-transform-out": str(target)}, ("--inverse-transform-out", "same file as --transform-out"))


def checkpoint_without_config(e: Env, mp: pytest.MonkeyPatch) -> Case:
    bad = e.tmp / "no_config.pt"
    torch.save({"format": FORMAT, "version": VERSION, "state_dict": known_output_network().state_dict()}, bad)
    return Case({"--model": str(bad)}, (str(bad), "no 'config' entry"))


def checkpoint_with_unknown_config(e: Env, mp: pytest.MonkeyPatch) -> Case:
    net = known_output_network()
    bad = e.tmp / "odd_config.pt"
    config = {**net.config.to_dict(), "attention_heads": 8}
    torch.save({"format": FORMAT, "version": VERSION, "config": config, "state_dict": net.state_dict()}, bad)
    return Case({"--model": str(bad)}, (str(bad), "attention_heads"))


def commit_fails_half_way(e: Env, mp: pytest.MonkeyPatch) -> Case:
    # the disk fills up when the second output is moved into place: the first must be rolled back
    real = os.replace

    def replace(src, dst):
        if Path(src).parent.name.endswith(".tmp") and Path(dst).name == "W.nii.gz":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst)

    mp.setattr(os, "replace", replace)
    return Case({}, ("W.nii.gz", os.strerror(errno.ENOSPC)))


def unexpected_error(e: Env, mp: pytest.MonkeyPatch) -> Case:
    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nover two lines")

    mp.setattr("mgicon.register.register", broken)
    return Case({}, ("unexpected RuntimeError: a bug over two lines",))


def sigterm_while_writing(e: Env, mp: pytest.MonkeyPatch) -> Case:
    from mgicon.io import itk as itkio

    real = itkio.write_image

    def write_then_terminated(*args, **kwargs):
        real(*args, **kwargs)  # a staged file exists when the signal comes
        os.kill(os.getpid(), signal.SIGTERM)

    mp.setattr(itkio, "write_image", write_then_terminated)
    return Case({}, ("terminated by SIGTERM", "left as they were"), code=128 + signal.SIGTERM)


CASES: dict[str, Callable[[Env, pytest.MonkeyPatch], Case]] = {
    f.__name__: f
    for f in (
        corrupt_image,
        truncated_nii_gz,
        truncated_nii,
        truncated_mha,
        mhd_without_its_data_file,
        output_parent_is_a_file,
        output_folder_unwritable,
        output_folder_refuses_files,
        unsupported_suffix,
        output_is_a_folder,
        output_is_an_input,
        output_is_another_output,
        checkpoint_without_config,
        checkpoint_with_unknown_config,
        commit_fails_half_way,
        unexpected_error,
        sigterm_while_writing,
    )
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_failure_is_one_line_and_clobbers_nothing(env, capfd, monkeypatch, name):
    case = CASES[name](env, monkeypatch)
    inputs = {p: p.read_bytes() for p in (env.fixed, env.moving)}
    before = _snapshot(env.out)
    handler = signal.getsignal(signal.SIGTERM)

    code = main(env.argv(**case.changes))

    monkeypatch.undo()
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert code == case.code, err
    assert len(lines) == 1, err
    assert all(needle in lines[0] for needle in case.needles), (lines[0], case.needles)
    assert "Traceback" not in err and out == ""
    assert _snapshot(env.out) == before, "pre-existing outputs changed, or files were left beside them"
    folders = ["folder.nii.gz"] if name == "output_is_a_folder" else []
    assert [p.name for p in env.out.iterdir() if p.is_dir()] == folders, "temporary folders were left"
    assert all(p.read_bytes() == data for p, data in inputs.items())
    assert signal.getsignal(signal.SIGTERM) is handler


def test_commit_replaces_every_output_on_success(env, capfd):
    assert main(env.argv()) == 0
    assert sorted(p.name for p in env.out.iterdir()) == ["T.h5", "W.nii.gz"]
    assert sitk.ReadTransform(str(env.out / "T.h5")).GetDimension() == 3
    assert sitk.ReadImage(str(env.out / "W.nii.gz")).GetSize() == sitk.ReadImage(str(env.fixed)).GetSize()
    assert capfd.readouterr().err == ""


def _handles_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: the SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_during_a_run_cleans_up(env):
    argv = env.argv(**{"--io-iterations": "100000"})  # far longer than the test waits
    proc = subprocess.Popen(
        [sys.executable, "-m", "mgicon.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _handles_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # into the run: model, images, instance optimization
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert len(lines) == 1 and "terminated by SIGTERM" in lines[0], err
    assert _snapshot(env.out) == PREVIOUS and sorted(p.name for p in env.out.iterdir()) == sorted(PREVIOUS)


# `mgicon register` that stops just before committing its staged outputs (says so in READY) and waits to be killed
_PAUSED_BEFORE_COMMIT = """
import sys, time
from pathlib import Path
from mgicon import fsutil

def paused(self):
    Path(sys.argv[1]).write_text("staged")
    time.sleep(600)

fsutil.StagedOutputs.commit = paused
from mgicon.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_while_staging_then_a_rerun_leaves_nothing_behind(env):
    """SIGKILL (no handler runs) while the outputs are staged: the pre-existing outputs are intact, and the next run
    of the same command removes the killed run's staging folders, never a user's look-alike."""
    mine = env.out / ".T.h5.mine.tmp"  # hidden files of the user's, named like staging folders
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (env.out / ".W.nii.gz.abc.tmp").write_bytes(b"a file of the user's")
    before = _snapshot(env.out)
    ready = env.tmp / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_BEFORE_COMMIT, str(ready), *env.argv()])
    try:
        deadline = time.monotonic() + 120
        while not ready.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.is_file(), f"the run did not reach its commit (exit code {proc.poll()})"
    finally:
        proc.kill()
        proc.wait()
    staged = sorted(p.name for p in env.out.iterdir() if p.is_dir() and p != mine)
    assert [name.split(".")[1] for name in staged] == ["T", "W"], "the killed run's staging folders"
    assert _snapshot(env.out) == before

    assert main(env.argv()) == 0
    assert sorted(p.name for p in env.out.iterdir() if p.is_dir()) == [mine.name]
    assert (mine / "notes.txt").read_text() == "mine"
    assert (env.out / ".W.nii.gz.abc.tmp").read_bytes() == b"a file of the user's"
    assert sitk.ReadTransform(str(env.out / "T.h5")).GetDimension() == 3
    assert sitk.ReadImage(str(env.out / "W.nii.gz")).GetSize() == sitk.ReadImage(str(env.fixed)).GetSize()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_ants_worker_dies_with_its_parent(tmp_path):
    # the worker's start-up code, read from the module without importing it (that would load ANTs)
    source = Path(importlib.util.find_spec("mgicon.io.ants").origin).read_text(encoding="utf-8")
    code = next(
        ast.literal_eval(node.value)
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "_WORKER_CODE"
    )
    job = tmp_path / "job.py"  # stands in for mgicon/io/ants.py: its _worker writes its pid, then waits
    job.write_text(
        "import os, time\n\ndef _worker(path):\n    open(path, 'w').write(str(os.getpid()))\n    time.sleep(120)\n"
    )
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, subprocess, sys, time; "
                "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2], sys.argv[3], str(os.getpid())]); "
                "time.sleep(120)"
            ),
            code,
            str(job),
            str(pid_file),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = int(pid_file.read_text())
    finally:
        parent.kill()  # SIGKILL: no handler of the parent runs
        parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and "State:\tZ" not in _status(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists() or "State:\tZ" in _status(worker), "the worker outlived its parent"


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
