"""``mgicon learn2reg`` and ``mgicon register --learn2reg-displacement-out``: Learn2Reg fields in the official layout.

The truth is Learn2Reg's own evaluation (``evaluation.py`` of MDL-UzL/L2R, written out here from its documented
behaviour).  Finding the files (since its Feb 2025 "fixed naming issue"): for each pair of the json it reads the
fixed case and channel from ``pair["fixed"][-16:-12]`` and ``[-11:-7]`` (``TASK_CASE_CHAN.nii.gz``), the same for
the moving image, and accepts ``disp_{fixcase}_{movcase}`` only for fixed channel ``0000`` and moving ``0001``,
``disp_{fixcase}_{fixchan}_{movcase}_{movchan}`` always, each as ``.nii.gz`` or ``.npz``; else "Missing files".
Scoring: the field is read with nibabel as ``(X, Y, Z, 3)``; the moving labels are sampled at fixed voxel index +
field (``map_coordinates``, order 0); the fixed keypoints (voxel indices) are moved by the field and compared with
the moving ones in moving voxels times the moving spacing.  It must equal mgicon's own scoring of the same
transforms (:func:`mgicon.evaluate.scoring.pair_dice`, :func:`~mgicon.evaluate.scoring.pair_mtre`) in physical
space.  The images of a pair have different grids and the network runs two IO steps, so the transforms are neither
the identity nor affine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import map_coordinates

from mgicon.cli import main
from mgicon.data.adapters import Learn2RegPair, learn2reg_pairs
from mgicon.data.manifest import read_landmarks_as_mm, write_landmarks
from mgicon.evaluate.scoring import pair_dice, pair_mtre
from mgicon.io import itk as itkio
from mgicon.network import build_network, save_checkpoint
from mgicon.testing import make_image, rotation, smooth_volume

TASK = "TOY"
# (case, channel): [z, y, x] size, spacing (x, y, z), origin, direction
SCANS = {
    ("0001", "0000"): ((18, 22, 20), (1.2, 1.0, 1.5), (3.0, -4.0, 2.0), None),
    ("0002", "0000"): ((20, 18, 24), (1.0, 1.3, 1.2), (-2.0, 5.0, 1.0), rotation(0.1)),
    ("0003", "0001"): ((16, 20, 22), (1.1, 1.1, 1.6), (0.0, 0.0, -3.0), rotation(-0.05, 0.05)),
}
PAIRS = [  # (fixed, moving, the file name mgicon writes): channels 0000/0000, 0000/0001, 0001/0000
    (("0001", "0000"), ("0002", "0000"), "disp_0001_0000_0002_0000.nii.gz"),
    (("0002", "0000"), ("0003", "0001"), "disp_0002_0003.nii.gz"),  # the short name, accepted for 0000/0001 only
    (("0003", "0001"), ("0001", "0000"), "disp_0003_0001_0001_0000.nii.gz"),
]
LABELS = [1, 2]
IO = ["--io-iterations", "2", "--io-lr", "1e-3", "--io-sim", "lncc", "--device", "cpu"]


def _name(case: str, channel: str) -> str:
    return f"{TASK}_{case}_{channel}.nii.gz"


@pytest.fixture
def dataset(tmp_path):
    """A Learn2Reg-style dataset: images, label maps (2 labels), keypoints (voxel indices), a dataset json."""
    root = tmp_path / "TOY"
    for folder in ("imagesTr", "labelsTr", "masksTr", "keypointsTr"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k, ((case, channel), (size, spacing, origin, direction)) in enumerate(SCANS.items()):
        volume = smooth_volume(size, 10 + k, scale=5)[0, 0].numpy()
        image = make_image((200 * volume).astype(np.float32), spacing, origin, direction)
        sitk.WriteImage(image, str(root / "imagesTr" / _name(case, channel)))
        labels = np.digitize(volume, [0.4, 0.6]).astype(np.uint8)  # 0, 1, 2
        # background on the outer voxel shell: ITK's nearest neighbour reads voxel 0 down to index -0.5, scipy's
        # map_coordinates (the official evaluation's) reads 0 below index 0; with a background shell both agree
        labels[[0, -1]], labels[:, [0, -1]], labels[:, :, [0, -1]] = 0, 0, 0
        sitk.WriteImage(make_image(labels, spacing, origin, direction), str(root / "labelsTr" / _name(case, channel)))
        mask = np.zeros(size, np.uint8)
        mask[2:-2, 3:-3, 2:-4] = 1
        sitk.WriteImage(make_image(mask, spacing, origin, direction), str(root / "masksTr" / _name(case, channel)))
        # integer voxel indices (x, y, z) inside the grid (every scan is the fixed one of a pair): the field is exact
        # there, whatever the interpolation of the evaluation
        points = np.stack([rng.integers(2, n - 2, 12) for n in size[::-1]], axis=1).astype(float)
        np.savetxt(root / "keypointsTr" / _name(case, channel).replace(".nii.gz", ".csv"), points, delimiter=",")
    meta = {
        "name": TASK,
        "modality": {"0": "MR", "1": "MR"},
        "training": [
            {"image": f"./imagesTr/{_name(*s)}", "label": f"./labelsTr/{_name(*s)}", "mask": f"./masksTr/{_name(*s)}"}
            for s in SCANS
        ],
        "registration_val": [
            {"fixed": f"./imagesTr/{_name(*f)}", "moving": f"./imagesTr/{_name(*m)}"} for f, m, _ in PAIRS
        ],
    }
    path = root / f"{TASK}_dataset.json"
    path.write_text(json.dumps(meta))
    return path


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.pt"
    save_checkpoint(build_network("tiny", input_shape=(24, 24, 24)), path)
    return path


def _evaluator_finds(folder, dataset_json, split="registration_val") -> list[str]:
    """The files Learn2Reg's evaluation finds for the json's pairs in ``folder`` (see the module docstring); raises,
    like it, on a pair without one."""
    found = []
    for pair in json.loads(dataset_json.read_text())[split]:
        fix_case, fix_chan = pair["fixed"][-16:-12], pair["fixed"][-11:-7]
        mov_case, mov_chan = pair["moving"][-16:-12], pair["moving"][-11:-7]
        stems = [f"disp_{fix_case}_{fix_chan}_{mov_case}_{mov_chan}"]
        if fix_chan == "0000" and mov_chan == "0001":
            stems.append(f"disp_{fix_case}_{mov_case}")
        names = [stem + ext for stem in stems for ext in (".nii.gz", ".npz")]
        present = [name for name in names if (folder / name).is_file()]
        if not present:
            raise AssertionError(f"Missing files: none of {names}")
        found.append(present[0])
    return found


def test_pair_names():
    for channels, name in [
        (("0000", "0000"), "disp_0011_0000_0012_0000.nii.gz"),
        (("0000", "0001"), "disp_0011_0012.nii.gz"),
        (("0001", "0000"), "disp_0011_0001_0012_0000.nii.gz"),
        (("0001", "0001"), "disp_0011_0001_0012_0001.nii.gz"),
        (("0000", "0002"), "disp_0011_0000_0012_0002.nii.gz"),
    ]:
        assert Learn2RegPair(None, None, "0011", channels[0], "0012", channels[1]).displacement_name == name


def test_pairs_of_the_json(dataset):
    pairs = learn2reg_pairs(dataset, "val")
    assert [p.displacement_name for p in pairs] == [name for _, _, name in PAIRS]
    root = dataset.parent
    assert pairs[0].fixed == (root / "imagesTr" / _name("0001", "0000")).resolve()
    assert pairs[0].moving_label == (root / "labelsTr" / _name("0002", "0000")).resolve()
    assert pairs[2].fixed_mask == (root / "masksTr" / _name("0003", "0001")).resolve()


def test_the_evaluator_finds_every_field_of_the_zip(tmp_path, dataset, model):
    """Channels 0000/0000, 0000/0001 and 0001/0000: the official file-finding rule finds every field in the zip
    as it is (its members at the top level)."""
    out = tmp_path / "submission" / "val"
    args = ["learn2reg", "--dataset-json", str(dataset), "--split", "val", "--model", str(model), "--out", str(out)]
    assert main([*args, "--io-iterations", "0", "--device", "cpu"]) == 0
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(tmp_path / "submission" / "val.zip") as archive:
        assert all("/" not in name for name in archive.namelist())
        archive.extractall(unpacked)
    assert sorted(_evaluator_finds(unpacked, dataset)) == sorted(p.name for p in unpacked.iterdir())
    assert len(list(unpacked.iterdir())) == len(PAIRS)


def _learn2reg_scores(field_path, fixed_label, moving_label, fixed_kp, moving_kp, moving_image):
    """Dice and TRE as the official Learn2Reg evaluation computes them."""
    disp = nib.load(str(field_path)).get_fdata()
    fixed_seg = nib.load(str(fixed_label)).get_fdata()
    moving_seg = nib.load(str(moving_label)).get_fdata()
    identity = np.meshgrid(*[np.arange(n) for n in fixed_seg.shape], indexing="ij")
    warped = map_coordinates(moving_seg, identity + disp.transpose(3, 0, 1, 2), order=0)
    dice = []
    for label in LABELS:
        a, b = fixed_seg == label, warped == label
        dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    fix_lms, mov_lms = np.loadtxt(fixed_kp, delimiter=","), np.loadtxt(moving_kp, delimiter=",")
    moved = fix_lms + np.stack([map_coordinates(disp[..., k], fix_lms.T) for k in range(3)], axis=1)
    spacing_mov = nib.load(str(moving_image)).header.get_zooms()[:3]
    tre = np.linalg.norm((moved - mov_lms) * np.asarray(spacing_mov), axis=1)
    return float(np.mean(dice)), float(tre.mean())


def test_learn2reg_fields_score_as_mgicon(tmp_path, dataset, model):
    out = tmp_path / "submission" / "val"
    assert (
        main(
            ["learn2reg", "--dataset-json", str(dataset), "--split", "val", "--model", str(model)]
            + ["--out", str(out), *IO]
        )
        == 0
    )
    names = [name for _, _, name in PAIRS]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    with zipfile.ZipFile(tmp_path / "submission" / "val.zip") as archive:
        assert sorted(archive.namelist()) == sorted(names)
    root = dataset.parent
    for fixed, moving, name in PAIRS:
        images = [root / "imagesTr" / _name(*scan) for scan in (fixed, moving)]
        labels = [root / "labelsTr" / _name(*scan) for scan in (fixed, moving)]
        keypoints = [root / "keypointsTr" / _name(*scan).replace(".nii.gz", ".csv") for scan in (fixed, moving)]
        field = nib.load(str(out / name))
        assert field.shape == (*SCANS[fixed][0][::-1], 3)
        # mgicon's own route: the same registration through `mgicon register`, scored in physical space, and its
        # Learn2Reg field, the same as learn2reg's
        transform, register_field = tmp_path / f"{name}.h5", tmp_path / "register" / name
        assert (
            main(
                ["register", "--fixed", str(images[0]), "--moving", str(images[1]), "--model", str(model)]
                + ["--fixed-modality", "mri", "--moving-modality", "mri", "--transform-out", str(transform)]
                + ["--learn2reg-displacement-out", str(register_field), *IO]
            )
            == 0
        )
        np.testing.assert_allclose(nib.load(str(register_field)).get_fdata(), field.get_fdata(), atol=1e-5)
        t = itkio.read_transform(transform)
        mm = []
        for kp, image in zip(keypoints, images):
            mm.append(tmp_path / f"{kp.stem}.mm.csv")
            write_landmarks(read_landmarks_as_mm(kp, itkio.read_image(image), "voxel_csv"), mm[-1])
        dice, mtre = pair_dice(t, str(labels[0]), str(labels[1]), LABELS), pair_mtre(t, str(mm[0]), str(mm[1]))
        for scored in (out / name, register_field):
            l2r_dice, l2r_tre = _learn2reg_scores(scored, *labels, *keypoints, images[1])
            assert l2r_dice == pytest.approx(dice, abs=1e-6), scored
            assert l2r_tre == pytest.approx(mtre, abs=1e-4), scored
        assert 0.1 < dice < 1.0 and mtre > 1.0  # not a trivial pair


def _one_thread_main(argv: list[str]) -> int:
    """``mgicon ARGV`` in a fresh process whose ANTs runs on one ITK thread; its exit code."""
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    code = "import sys; from mgicon.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], env=env).returncode


SIDE_FILES = {
    "masksTr": ("--fixed-mask", "--moving-mask"),
    "labelsTr": ("--fixed-segmentation", "--moving-segmentation"),
}


@pytest.mark.parametrize(
    "options, side_files",
    [
        (["--affine", "--keep-orientation"], []),
        (["--masks"], ["masksTr"]),
        (["--input-masking"], ["masksTr"]),
        (["--dice-loss-weight", "2"], ["labelsTr"]),
    ],
    ids=["affine", "masks", "input-masking", "dice"],
)
def test_learn2reg_takes_the_options_of_register(tmp_path, dataset, model, options, side_files):
    """Each run option, with the json's masks and labels: `mgicon learn2reg`'s field equals `mgicon register`'s with
    the same option and those files, and differs from the field without the option.  (ANTs' affine registration is
    repeatable only on one thread, so the two `--affine` runs go to a process whose ANTs has one.)"""
    run = _one_thread_main if "--affine" in options else main
    base = ["learn2reg", "--dataset-json", str(dataset), "--split", "val", "--model", str(model), *IO]
    assert run([*base, "--out", str(tmp_path / "with"), *options]) == 0
    assert main([*base, "--out", str(tmp_path / "without")]) == 0
    (fixed, moving, name), root = PAIRS[1], dataset.parent
    field = tmp_path / "register" / name
    argv = ["register", "--fixed", str(root / "imagesTr" / _name(*fixed)), "--model", str(model)]
    argv += ["--moving", str(root / "imagesTr" / _name(*moving)), "--fixed-modality", "mri", "--moving-modality", "mri"]
    argv += ["--transform-out", str(tmp_path / "T.h5"), "--learn2reg-displacement-out", str(field), *IO]
    for folder in side_files:
        argv += [SIDE_FILES[folder][0], str(root / folder / _name(*fixed))]
        argv += [SIDE_FILES[folder][1], str(root / folder / _name(*moving))]
    assert run(argv + [o for o in options if o != "--masks"]) == 0
    with_option = nib.load(str(tmp_path / "with" / name)).get_fdata()
    np.testing.assert_allclose(nib.load(str(field)).get_fdata(), with_option, atol=1e-6)
    assert np.abs(with_option - nib.load(str(tmp_path / "without" / name)).get_fdata()).max() > 1e-4


def test_a_pipeline_submission_runs_io_with_the_configs_evaluation_settings(tmp_path, dataset, model, monkeypatch):
    """``submission_job`` (the pipeline's ``learn2reg_split``) gives IO the config's LNCC window, not upstream's."""
    from mgicon import register as reg
    from mgicon.learn2reg import submission_job
    from mgicon.losses import squared_lncc

    seen = []
    optimize = reg.instance_optimize

    def spy(net, a, b, similarity, *args, **kwargs):
        seen.append(similarity)
        return optimize(net, a, b, similarity, *args, **kwargs)

    monkeypatch.setattr(reg, "instance_optimize", spy)
    config = {
        "seed": 0,
        "resources": str(tmp_path / "resources"),
        "source": {"kind": "learn2reg", "path": str(dataset), "layout": {"modality_names": {"mr": "t1w"}}},
        "released": None,
        "io": "io-lncc2",
        "evaluation": {"io_iterations": 1, "io_lr": 1e-3, "io_lncc_sigma": 1.5, "device": "cpu"},
    }
    zip_path = submission_job(config, "toy", "val", tmp_path / "out", tmp_path / "out.zip", checkpoint=model)
    assert zip_path.is_file() and len(seen) == len(PAIRS)
    a, b = (smooth_volume((12, 12, 12), seed=s) for s in (1, 2))
    for similarity in seen:
        assert torch.allclose(similarity(a, b), squared_lncc(a, b, sigma=1.5))
        assert not torch.allclose(similarity(a, b), squared_lncc(a, b, sigma=5.0))


def test_learn2reg_bad_input(tmp_path, dataset, model, capsys):
    args = ["learn2reg", "--model", str(model), "--out", str(tmp_path / "o"), *IO]
    assert main([*args, "--dataset-json", str(dataset), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "registration_test" in err[0] and str(dataset) in err[0]
    assert main([*args, "--dataset-json", str(tmp_path / "missing.json"), "--split", "val"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.json" in err[0]
    # the Dice term and input masking need the json's label maps and masks of every image of the split
    meta = json.loads(dataset.read_text())
    meta["training"] = [{"image": entry["image"]} for entry in meta["training"]]
    bare = dataset.with_name("bare_dataset.json")
    bare.write_text(json.dumps(meta))
    for option, what in (["--dice-loss-weight", "1"], "label"), (["--input-masking"], "mask"):
        assert main([*args, "--dataset-json", str(bare), "--split", "val", *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{option[0]}: the dataset json lists no {what} for" in err[0], err
        assert _name("0001", "0000") in err[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.zip").exists()


def test_pipeline_target_writes_the_submission(tmp_path, dataset, model):
    """`snakemake learn2reg` on a Learn2Reg dataset of the config: the fields and zip of `mgicon learn2reg`."""
    import yaml

    from tests.paths import SNAKEFILE, SNAKEMAKE

    config = {
        "seed": 0,
        "network": {"preset": "tiny", "input_shape": [24, 24, 24]},
        "datasets": {
            "toy": {
                "region": "Brain",
                "modalities": ["t1w"],
                "pairing": "inter",
                "stages": ["test"],
                "anatomies": ["brain"],
                "evaluation": {"metric": "dice"},
                "source": {"kind": "learn2reg", "path": str(dataset), "layout": {"modality_names": {"mr": "t1w"}}},
            }
        },
        "variants": {},
        "evaluation": {"released": {"tiny": {"model": str(model)}}, "baselines": ["identity"], "io": ["noio"]},
        "learn2reg": {"datasets": ["toy"], "method": "tiny", "io": "noio"},
    }
    work = tmp_path / "work"
    work.mkdir()
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(work), "--cores", "1", "learn2reg"]
    run = subprocess.run([*cmd, "--configfile", str(work / "config.yaml")], capture_output=True, text=True, cwd=work)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    fields = work / "results" / "learn2reg" / "toy" / "val"
    names = sorted(name for _, _, name in PAIRS)
    assert sorted(p.name for p in fields.glob("disp_*")) == names  # beside Snakemake's .snakemake_timestamp
    with zipfile.ZipFile(fields.parent / "val.zip") as archive:
        assert sorted(archive.namelist()) == names
    # the same fields as the command line's, no IO
    cli = tmp_path / "cli"
    args = ["learn2reg", "--dataset-json", str(dataset), "--split", "val", "--model", str(model), "--out", str(cli)]
    assert main([*args, "--io-iterations", "0", "--device", "cpu"]) == 0
    for name in names:
        assert np.array_equal(nib.load(str(fields / name)).get_fdata(), nib.load(str(cli / name)).get_fdata())
