"""Adapters on tiny fake layouts: templates, Learn2Reg json, own manifests, downloads; missing files are named."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mgicon.data.adapters import DatasetSourceError, dataset_rows, read_learn2reg, read_template
from mgicon.data.build import build_manifest
from mgicon.data.manifest import ManifestError, read_landmarks, read_landmarks_as_mm, read_manifest, write_manifest
from mgicon.testing import make_image
from tests.http_server import FileServer
from tests.paths import CONFIGS, TEST_CONFIGS, load_yaml


def _img(path, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(make_image(np.random.rand(4, 5, 6).astype(np.float32), spacing, origin), str(path))
    return path


HCP_LAYOUT = {
    "images": {
        "t1w": "{subject}/T1w/T1w_acpc_dc_restore_brain.nii.gz",
        "t2w": "{subject}/T1w/T2w_acpc_dc_restore_brain.nii.gz",
    },
    "label": "{subject}/T1w/label.nii.gz",
}


def _hcp(root, subjects=("100307", "100408", "101107")):
    for s in subjects:
        for mod in ("T1w", "T2w"):
            _img(root / s / "T1w" / f"{mod}_acpc_dc_restore_brain.nii.gz")
        _img(root / s / "T1w" / "label.nii.gz")


def test_template_layout_finds_scans_and_splits(tmp_path):
    _hcp(tmp_path)
    rows = read_template("HCP", tmp_path, HCP_LAYOUT, {"test_subjects": ["101107"]})
    assert len(rows) == 6
    assert {(r["subject"], r["modality"]) for r in rows} >= {("100307", "t1w"), ("101107", "t2w")}
    assert {r["split"] for r in rows if r["subject"] == "101107"} == {"test"}
    assert all(r["label"].endswith("label.nii.gz") for r in rows)


def test_template_layout_names_missing_files(tmp_path):
    _hcp(tmp_path)
    missing = tmp_path / "100408" / "T1w" / "T2w_acpc_dc_restore_brain.nii.gz"
    missing.unlink()
    with pytest.raises(DatasetSourceError, match="1 expected file.*T2w_acpc_dc_restore_brain") as err:
        read_template("HCP", tmp_path, HCP_LAYOUT, {})
    assert str(missing) in str(err.value)


def _l2r(root, training_as_dict=False):
    entries = []
    for case in ("0001", "0002", "0003"):
        for ch in ("0000", "0001"):
            _img(root / "imagesTr" / f"Task_{case}_{ch}.nii.gz", spacing=(2.0, 1.0, 1.0), origin=(5.0, 0.0, 0.0))
            kp = root / "keypointsTr" / f"Task_{case}_{ch}.csv"
            kp.parent.mkdir(parents=True, exist_ok=True)
            kp.write_text("1.0,2.0,3.0\n0.5,0.0,1.0\n")
            entries.append(
                {"image": f"./imagesTr/Task_{case}_{ch}.nii.gz", "keypoints": f"./keypointsTr/Task_{case}_{ch}.csv"}
            )
    training = {"0": entries[0::2], "1": entries[1::2]} if training_as_dict else entries
    meta = {"name": "Task", "modality": {"0": "MR", "1": "CT"}, "training": training}
    (root / "Task_dataset.json").write_text(json.dumps(meta))
    return root / "Task_dataset.json"


@pytest.mark.parametrize("as_dict", [False, True])
def test_learn2reg_json_channels_as_modalities(tmp_path, as_dict):
    path = _l2r(tmp_path, as_dict)
    rows = read_learn2reg("T", path, {"modality_names": {"mr": "t1w"}}, {"test_subjects": ["0003"]})
    assert sorted({r["modality"] for r in rows}) == ["ct", "t1w"]
    assert {r["split"] for r in rows if r["subject"] == "0003"} == {"test"}
    assert {r["timepoint"] for r in rows} == {"0"}


def test_learn2reg_channels_as_timepoints_and_missing_file(tmp_path):
    path = _l2r(tmp_path)
    rows = read_learn2reg("T", path, {"channel_is": "timepoint"}, {})
    assert {r["timepoint"] for r in rows} == {"0", "1"}
    (tmp_path / "imagesTr" / "Task_0002_0001.nii.gz").unlink()
    with pytest.raises(DatasetSourceError, match="Task_0002_0001.nii.gz"):
        read_learn2reg("T", path, {}, {})


@pytest.mark.parametrize(
    "fmt, text, expected",
    [
        ("voxel_csv", "1.0,2.0,3.0\n", [5.0 + 2.0, 2.0, 3.0]),
        ("dirlab_txt", "2\t3\t4\n", [5.0 + 2.0, 2.0, 3.0]),
    ],
)
def test_landmarks_in_voxel_formats_become_mm(tmp_path, fmt, text, expected):
    image = make_image(np.zeros((8, 8, 8), np.float32), (2.0, 1.0, 1.0), (5.0, 0.0, 0.0))
    (tmp_path / "lm.txt").write_text(text)
    assert np.allclose(read_landmarks_as_mm(tmp_path / "lm.txt", image, fmt), [expected])


# A hand-built BraTS-Reg case: a 5 × 6 × 7 (x, y, z) image with spacing (2, 0.5, 3) mm, origin (10, -20, 5) and
# direction rotating the index axes i -> +y, j -> -x, k -> +z (columns of the ITK direction matrix).  A landmark
# (X, Y, Z) is the voxel index (X, Y + 239, Z), so its point is origin + D · (spacing ⊙ index):
#   (1, -238, 2)     -> index (1, 1, 2)     -> spacing ⊙ index (2, 0.5, 6)   -> D · (-0.5, 2, 6)   -> (9.5, -18, 11)
#   (4.5, -234.5, 0) -> index (4.5, 4.5, 0) -> spacing ⊙ index (9, 2.25, 0)  -> D · (-2.25, 9, 0)  -> (7.75, -11, 5)
BRATS_DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # row-major, as SimpleITK takes it
BRATS_CSV = "Landmark,X,Y,Z\n1,1.0,-238.0,2.0\n2,4.5,-234.5,0.0\n"
BRATS_MM = [[9.5, -18.0, 11.0], [7.75, -11.0, 5.0]]


def _brats_image():
    return make_image(np.zeros((7, 6, 5), np.float32), (2.0, 0.5, 3.0), (10.0, -20.0, 5.0), BRATS_DIRECTION)


def test_bratsreg_landmarks_become_mm(tmp_path):
    (tmp_path / "lm.csv").write_text(BRATS_CSV)
    assert np.allclose(read_landmarks_as_mm(tmp_path / "lm.csv", _brats_image(), "bratsreg_csv"), BRATS_MM)


@pytest.mark.parametrize(
    "text, error",
    [
        ("Landmark,X,Y,Z\n1,1.0,2.0,2.0\n", "1 landmark.*outside the \\(5, 6, 7\\) image"),  # Y not shifted
        ("Landmark,X,Y\n1,1.0,-238.0\n", "missing columns Z"),
        ("Landmark,X,Y,Z\n1,a,-238.0,2.0\n", "not a BraTS-Reg landmark file"),
    ],
)
def test_bratsreg_landmarks_errors_name_the_file(tmp_path, text, error):
    (tmp_path / "lm.csv").write_text(text)
    with pytest.raises(ManifestError, match=error) as err:
        read_landmarks_as_mm(tmp_path / "lm.csv", _brats_image(), "bratsreg_csv")
    assert str(tmp_path / "lm.csv") in str(err.value)


def test_bratsreg_layout_of_the_paper_config(tmp_path):
    """config/paper.yaml's BratsReg layout on a release-like tree: baseline and follow-up scans, their landmark
    CSVs converted to mm with each scan's image, the listed test subjects in the test split."""
    config = load_yaml(CONFIGS / "paper.yaml")
    entry = config["datasets"]["BratsReg"]
    test_subject = entry["source"]["test_subjects"][0]
    root = tmp_path / "BraTSReg_Training_Data_v3"
    for subject, follow_up in (("BraTSReg_001", "01_0106"), (test_subject, "01_0214")):
        for timepoint in ("00_0000", follow_up):
            stem = root / subject / f"{subject}_{timepoint}"
            for suffix in ("t1", "t1ce", "t2", "flair"):
                stem.parent.mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(_brats_image(), f"{stem}_{suffix}.nii.gz")
            Path(f"{stem}_landmarks.csv").write_text(BRATS_CSV)
    entry["source"]["root"] = str(root)
    rows = build_manifest(
        "BratsReg",
        {"datasets": {"BratsReg": entry}, "resources": str(tmp_path / "res")},
        tmp_path / "data" / "BratsReg" / "manifest.csv",
    )
    assert len(rows) == 2 * 2 * 4
    assert {(r["subject"], r["timepoint"]) for r in rows} == {
        ("BraTSReg_001", "00_0000"),
        ("BraTSReg_001", "01_0106"),
        (test_subject, "00_0000"),
        (test_subject, "01_0214"),
    }
    assert {r["subject"] for r in rows if r["split"] == "test"} == {test_subject}
    assert {r["modality"] for r in rows} == {"t1w", "t1ce", "t2w", "flair"}
    for row in rows:
        landmarks = tmp_path / "data" / "BratsReg" / row["landmarks"]
        assert np.allclose(read_landmarks(landmarks), BRATS_MM)


def test_own_manifest_resolves_relative_paths_and_names_missing(tmp_path):
    _img(tmp_path / "own" / "a.nii.gz")
    rows = [
        {
            "dataset": "mine",
            "subject": "a",
            "timepoint": "0",
            "modality": "ct",
            "image": "a.nii.gz",
            "label": "",
            "landmarks": "",
            "mask": "",
            "split": "train",
        }
    ]
    write_manifest(rows, tmp_path / "own" / "manifest.csv")
    got = dataset_rows("mine", {"kind": "manifest", "path": str(tmp_path / "own" / "manifest.csv")}, tmp_path, tmp_path)
    assert got[0]["image"] == str(tmp_path / "own" / "a.nii.gz")
    write_manifest([{**rows[0], "image": "gone.nii.gz"}], tmp_path / "own" / "manifest.csv")
    with pytest.raises(DatasetSourceError, match="gone.nii.gz"):
        dataset_rows("mine", {"kind": "manifest", "path": str(tmp_path / "own" / "manifest.csv")}, tmp_path, tmp_path)


def test_controlled_access_without_root_says_what_to_set(tmp_path):
    with pytest.raises(DatasetSourceError, match=r"datasets.HCP.source.root: not set; .*your copy.*ConnectomeDB"):
        dataset_rows("HCP", {"kind": "local", "root": None, "access": "ConnectomeDB"}, tmp_path, tmp_path)


def test_download_extracts_records_checksum_and_reuses(tmp_path):
    staging = tmp_path / "staging" / "Task"
    _l2r(staging)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for p in staging.rglob("*"):
            if p.is_file():
                zf.write(p, p.relative_to(staging.parent).as_posix())
    resources = tmp_path / "resources"
    with FileServer({"/Task.zip": buffer.getvalue()}) as server:
        source = {"kind": "download", "url": server.url("/Task.zip"), "layout": {"kind": "learn2reg"}}
        rows = dataset_rows("T", source, resources, resources)
        again = dataset_rows("T", source, resources, resources)
        assert len(server.requests) == 1
    assert len(rows) == 6 and rows == again
    lock = json.loads((resources / "downloads.lock.json").read_text(encoding="utf-8"))
    assert len(lock[source["url"]]["sha256"]) == 64


def test_studies_of_other_seeds_sharing_resources_keep_their_own_synthetic_files(tmp_path):
    """A synthetic dataset is drawn from the study's seed: two studies with one `resources` folder (seed 0 and
    seed 1) each keep the files their manifest names."""
    from mgicon.config import resolve

    micro = load_yaml(TEST_CONFIGS / "config.yaml")
    manifests = {}
    for seed in (0, 1):
        config = resolve({**micro, "seed": seed, "resources": str(tmp_path / "resources")})
        out = tmp_path / f"results-{seed}" / "data" / "syn-abdomen" / "manifest.csv"
        build_manifest("syn-abdomen", config, out)
        manifests[seed] = out
    images = {}
    for seed, out in manifests.items():
        rows = read_manifest(out)
        assert all(Path(r["image"]).is_relative_to(out.parent) for r in rows), rows[0]["image"]
        images[seed] = sitk.GetArrayFromImage(sitk.ReadImage(rows[0]["image"]))
    assert not np.array_equal(images[0], images[1])  # seed 1 did not overwrite seed 0's subject
