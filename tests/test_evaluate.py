"""mgicon.evaluate: scores against analytic truths and the synthetic ground truth, identity = unregistered,
released-format checkpoints through the same path, weights restored per pair, resumption."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mgicon.data.build import PATH_COLUMNS
from mgicon.data.manifest import read_csv, write_landmarks
from mgicon.data.pairs import make_pairs
from mgicon.data.preprocess import preprocess_rows
from mgicon.data.registry import load_registry
from mgicon.data.synthetic import generate_dataset
from mgicon.evaluate import EVAL_COLUMNS, make_method, score, select_pairs
from mgicon.evaluate.job import build_method
from mgicon.evaluate.methods import Method, MethodError, Registered
from mgicon.evaluate.runner import evaluate_pairs, partial_path
from mgicon.io import itk as itkio
from mgicon.network.checkpoint import save_checkpoint
from mgicon.network.model import build_network
from mgicon.records import PairRecord, ScanRecord
from mgicon.testing import randomize_weights
from mgicon.vocabulary import is_fold

SHAPE = (20, 20, 20)
SMALL = {
    "subjects": 3,
    "n_test": 2,
    "syn-lung": {"size": [28, 24, 28], "subjects": 2, "n_test": 1, "landmarks": 12},
    "syn-abdomen": {"size": [28, 24, 20]},
}
DATASETS = {
    "syn-lung": {
        "region": "Lung",
        "modalities": ["ct"],
        "pairing": "intra",
        "stages": ["test"],
        "roi_mask": True,
        "evaluation": {"metric": "landmarks", "masked": [True, False]},
        "table": 2,
        "source": {"kind": "synthetic"},
    },
    "syn-abdomen": {
        "region": "Abdomen",
        "modalities": ["ct", "mri"],
        "pairing": "inter",
        "stages": ["test"],
        "evaluation": {"metric": "dice"},
        "table": 5,
        "source": {"kind": "synthetic"},
    },
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Two small synthetic test datasets: preprocessed scans (absolute paths) and their test pairs."""
    root = tmp_path_factory.mktemp("suite")
    registry = load_registry(DATASETS)
    out = {}
    for name, spec in registry.items():
        rows = generate_dataset(name, root, SMALL, seed=3)
        rows = [{**r, **{c: str(root / r[c]) for c in PATH_COLUMNS if r.get(c)}} for r in rows]
        rows = preprocess_rows(rows, SHAPE, root / name / "network")
        pairs = [PairRecord.from_row({k: str(v) for k, v in p.items()}) for p in make_pairs(spec, rows, "test", 1.0)]
        out[name] = (spec, [ScanRecord.from_row(r) for r in rows], select_pairs(pairs, spec))
    return out


def _scan(scans, pair, side):
    return next(s for s in scans if s.key == pair.scan_key(side))


def _nearest_dice(transform, fixed_label: str, moving_label: str) -> float:
    """Dice computed without sitk.Resample: map every fixed voxel centre through the transform point by point,
    round to the nearest moving voxel, look its label up."""
    fixed, moving = sitk.ReadImage(fixed_label), sitk.ReadImage(moving_label)
    f, m = sitk.GetArrayFromImage(fixed), sitk.GetArrayFromImage(moving)
    warped = np.zeros_like(f)
    for z, y, x in np.ndindex(f.shape):
        p = transform.TransformPoint(fixed.TransformIndexToPhysicalPoint((x, y, z)))
        i = np.rint(moving.TransformPhysicalPointToContinuousIndex(p)).astype(int)
        if all(0 <= i[k] < moving.GetSize()[k] for k in range(3)):
            warped[z, y, x] = m[i[2], i[1], i[0]]
    labels = [v for v in np.union1d(np.unique(f), np.unique(warped)) if v != 0]
    return float(
        np.mean([2 * np.sum((f == v) & (warped == v)) / (np.sum(f == v) + np.sum(warped == v)) for v in labels])
    )


# ----------------------------------------------------------------------------------------------- analytic truths


def _block_case(tmp_path: Path, shift_voxels: int):
    """A label block and landmarks, and the same content shifted by ``shift_voxels`` along x in the moving image."""
    spacing = (1.5, 2.0, 2.5)
    f = np.zeros((12, 14, 16), np.uint8)
    f[3:9, 4:10, 3:8] = 1
    f[3:9, 4:10, 8:11] = 2
    m = np.roll(f, shift_voxels, axis=2)
    for name, arr in (("fixed", f), ("moving", m)):
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing(spacing)
        img.SetOrigin((-10.0, 5.0, 3.0))
        sitk.WriteImage(img, str(tmp_path / f"{name}_label.nii.gz"))
        sitk.WriteImage(sitk.Cast(img, sitk.sitkFloat32), str(tmp_path / f"{name}.nii.gz"))
    pts = np.array([[-10.0 + 1.5 * i, 5.0 + 2.0 * j, 3.0 + 2.5 * k] for i, j, k in [(4, 5, 4), (9, 7, 6), (5, 9, 7)]])
    write_landmarks(pts, tmp_path / "fixed.csv")
    write_landmarks(pts + [1.5 * shift_voxels, 0, 0], tmp_path / "moving.csv")

    def scan(n: str) -> ScanRecord:
        return ScanRecord(
            "block",
            n,
            "",
            "ct",
            str(tmp_path / f"{n}.nii.gz"),
            label=str(tmp_path / f"{n}_label.nii.gz"),
            landmarks=str(tmp_path / f"{n}.csv"),
        )

    return scan("fixed"), scan("moving"), spacing


@pytest.mark.parametrize("shift", [0, 2, 3])
def test_exact_transform_scores_perfectly(tmp_path, shift):
    """The true transform of a voxel-exact shift: Dice 1, TRE 0, no folds; the identity: the shifted scores."""
    fixed, moving, spacing = _block_case(tmp_path, shift)
    truth = sitk.TranslationTransform(3, (spacing[0] * shift, 0.0, 0.0))
    scores = score(truth, fixed, moving)
    assert scores.dice == pytest.approx(1.0)
    assert scores.mtre == pytest.approx(0.0, abs=1e-9)
    assert scores.negative_jacobian_percent == 0.0
    initial = score(sitk.Transform(3, sitk.sitkIdentity), fixed, moving)
    assert initial.mtre == pytest.approx(spacing[0] * shift)
    assert initial.dice == pytest.approx(_nearest_dice(sitk.Transform(3, sitk.sitkIdentity), fixed.label, moving.label))


def test_folding_transform_is_counted(tmp_path):
    """A reflection along x folds everywhere: 100 % negative Jacobian."""
    fixed, moving, _ = _block_case(tmp_path, 0)
    flip = sitk.AffineTransform(3)
    flip.SetMatrix((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert score(flip, fixed, moving).negative_jacobian_percent == pytest.approx(100.0)


# ----------------------------------------------------------------------------------------------- synthetic suite


#: voxels of the field of view's edge where the exact map may leave the stored fields' grid
EDGE = 8


def test_ground_truth_method_recovers_truth(suite, tmp_path):
    """Synthetic ground truth: landmarks land on their partners (< 0.1 mm), no folds inside the field of view (at
    its edge the exact map leaves the stored fields' grid, outside which ITK's field transforms are the identity),
    Dice = an independent nearest-neighbour computation (the voxel-label ceiling, ≥ 0.8 on this suite's coarse
    grids) and far above the unregistered Dice."""
    gt = make_method("gt", "ground-truth")
    for name, (spec, rows, pairs) in suite.items():
        out = evaluate_pairs(gt, "noio", spec, pairs, rows, tmp_path / f"{name}.csv")
        assert len(out) == len(pairs)
        for row, pair in zip(out, pairs):
            moving, fixed = _scan(rows, pair, "moving"), _scan(rows, pair, "fixed")
            transform = gt.register(moving, fixed, pair.masked, "noio").transform
            field = itkio.displacement_field(transform, itkio.read_image(fixed.image))
            folds = is_fold(itkio.to_array(itkio.jacobian_determinant(field)))
            assert row.negative_jacobian_percent == pytest.approx(100 * folds.mean())
            assert not folds[EDGE:-EDGE, EDGE:-EDGE, EDGE:-EDGE].any(), f"{name}: folds inside the field of view"
            if spec.evaluation["metric"] == "landmarks":
                assert row.mtre < 0.1 < row.initial_mtre  # ≪ a voxel (11 mm)
            else:
                from mgicon.data.synthetic import ground_truth_transform

                truth = ground_truth_transform(moving.to_row(), fixed.to_row(), "/")
                expected = _nearest_dice(truth, fixed.label, moving.label)
                assert row.dice == pytest.approx(expected, abs=2e-3)
                assert row.dice > 0.8
                assert row.dice > row.initial_dice + 0.05


def test_identity_method_equals_unregistered(suite, tmp_path):
    spec, rows, pairs = suite["syn-abdomen"]
    out = evaluate_pairs(make_method("identity", "identity"), "noio", spec, pairs, rows, tmp_path / "id.csv")
    for row, pair in zip(out, pairs):
        assert row.dice == row.initial_dice
        moving, fixed = _scan(rows, pair, "moving"), _scan(rows, pair, "fixed")
        f = sitk.GetArrayFromImage(sitk.ReadImage(fixed.label))
        m = sitk.GetArrayFromImage(sitk.ReadImage(moving.label))  # same grid: unregistered = direct overlap
        labels = [v for v in np.union1d(np.unique(f), np.unique(m)) if v]
        direct = np.mean([2 * np.sum((f == v) & (m == v)) / (np.sum(f == v) + np.sum(m == v)) for v in labels])
        assert row.dice == pytest.approx(direct)
        assert row.negative_jacobian_percent == 0.0


def test_test_pairs_masked_conditions_and_cap(suite):
    spec, _, pairs = suite["syn-lung"]
    assert sorted({p.masked for p in pairs}) == [False, True]
    spec_a, _, pairs_a = suite["syn-abdomen"]
    capped = select_pairs([p for p in pairs_a], spec_a, max_pairs=1)
    assert len(capped) == len({(p.moving_modality, p.fixed_modality) for p in pairs_a})


# ----------------------------------------------------------------------------------------------- networks


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """A tiny network with random non-trivial weights as our checkpoint and as a bare (released-format) state dict."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1)
    net = build_network("tiny", SHAPE)
    randomize_weights(net, seed=1, last_std=0.02)
    save_checkpoint(net, root / "ours.pt")
    torch.save(net.state_dict(), root / "released.trch")
    return root / "ours.pt", root / "released.trch"


def test_released_format_evaluates_through_the_same_path(suite, tiny_checkpoints, tmp_path):
    ours, released = tiny_checkpoints
    spec, rows, pairs = suite["syn-abdomen"]
    config = {
        "seed": 0,
        "network": {"input_shape": list(SHAPE)},
        "results": str(tmp_path),
        "variants": {},
        "evaluation": {"released": {"released-x": {"model": str(released), "input_shape": list(SHAPE)}}},
    }
    a = evaluate_pairs(
        make_method("ours", "network", checkpoint=ours), "noio", spec, pairs[:2], rows, tmp_path / "a.csv"
    )
    b = evaluate_pairs(build_method(config, "released-x"), "noio", spec, pairs[:2], rows, tmp_path / "b.csv")
    for x, y in zip(a, b):
        assert x.dice == y.dice and x.negative_jacobian_percent == y.negative_jacobian_percent
    assert list(read_csv(tmp_path / "b.csv")[0]) == list(EVAL_COLUMNS)


def test_io_restores_weights_for_every_pair(suite, tiny_checkpoints, tmp_path):
    """IO works on a copy: the checkpoint's weights are unchanged, and a pair's result does not depend on the
    pairs evaluated before it."""
    ours, _ = tiny_checkpoints
    spec, rows, pairs = suite["syn-lung"]
    method = make_method("ours", "network", checkpoint=ours, io_iterations=2, io_lr=1e-3)
    before = {k: v.clone() for k, v in method.net.state_dict().items()}
    both = evaluate_pairs(method, "io-lncc2", spec, pairs[:2], rows, tmp_path / "both.csv")
    alone = evaluate_pairs(method, "io-lncc2", spec, pairs[1:2], rows, tmp_path / "alone.csv")
    assert both[1].mtre == alone[0].mtre
    assert all(torch.equal(before[k], v) for k, v in method.net.state_dict().items())
    noio = evaluate_pairs(method, "noio", spec, pairs[1:2], rows, tmp_path / "noio.csv")
    assert noio[0].mtre != alone[0].mtre  # the IO steps did change the registration


def test_baselines_refuse_io():
    with pytest.raises(MethodError, match="io-mind"):
        make_method("syn", "syn").check_io("io-mind")


# ----------------------------------------------------------------------------------------------- resumption


class Flaky(Method):
    """The identity, counting registrations, and interrupted after ``fail_after`` of them."""

    kind = "identity"

    def __init__(self, fail_after: int | None = None):
        super().__init__("identity")
        self.calls, self.fail_after = 0, fail_after

    def register(self, moving, fixed, masked, io):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        return Registered(sitk.Transform(3, sitk.sitkIdentity), 0.0)


def test_interrupted_evaluation_resumes_without_redoing_pairs(suite, tmp_path):
    spec, rows, pairs = suite["syn-abdomen"]
    out = tmp_path / "eval.csv"
    with pytest.raises(KeyboardInterrupt):
        evaluate_pairs(Flaky(fail_after=3), "noio", spec, pairs, rows, out)
    assert not out.exists() and len(read_csv(partial_path(out))) == 3
    again = Flaky()
    rows_resumed = evaluate_pairs(again, "noio", spec, pairs, rows, out)
    assert again.calls == len(pairs) - 3
    assert not partial_path(out).exists()
    fresh = evaluate_pairs(Flaky(), "noio", spec, pairs, rows, tmp_path / "fresh.csv")
    assert [replace(r, seconds=None) for r in rows_resumed] == [replace(r, seconds=None) for r in fresh]


def test_partial_results_of_another_method_are_not_reused(suite, tmp_path):
    spec, rows, pairs = suite["syn-abdomen"]
    out = tmp_path / "eval.csv"
    with pytest.raises(KeyboardInterrupt):
        evaluate_pairs(Flaky(fail_after=2), "noio", spec, pairs, rows, out)
    other = Flaky()
    other.kind = "something-else"  # another fingerprint
    evaluate_pairs(other, "noio", spec, pairs, rows, out)
    assert other.calls == len(pairs)
