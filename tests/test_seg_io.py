"""Segmentation-guided IO (issue #14, item 2): a soft Dice term on the warped label maps, as upstream 1.0.6.

The truth: two images whose intensities are identical (so the similarity is already at its optimum with the
identity map and says nothing) but whose segmentations are two balls 3 voxels apart.  An untrained tiny network is
the identity map; IO without segmentations keeps it, IO with them moves the moving ball onto the fixed one.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mgicon import metrics
from mgicon.cli import main
from mgicon.config import schema_default
from mgicon.losses import shared_one_hot, soft_dice_loss
from mgicon.maps import warp
from mgicon.network import build_network, save_checkpoint
from mgicon.optimize import IO_DICE_WEIGHT, instance_optimize
from mgicon.testing import smooth_volume

SHAPE = (24, 24, 24)
# a tiny network needs a larger step than the released ones' 2e-5; Adam's first steps are sign-like and noisy, and
# the Dice term must outweigh the similarity's and GradICON's gradients away from the identity
STEPS, LR, WEIGHT = 10, 2e-3, 10.0


def _ball(center, radius=5.0, label=1) -> torch.Tensor:
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    inside = (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius**2
    return torch.from_numpy(inside.astype(np.float32) * label)[None, None]


def _dice(phi: torch.Tensor, seg_moving: torch.Tensor, seg_fixed: torch.Tensor) -> float:
    warped = warp(seg_moving, phi) > 0.5
    return metrics.mean_dice(seg_fixed[0, 0].numpy() > 0, warped[0, 0].numpy(), labels=[1])


@pytest.fixture
def synthetic_pair():
    image = smooth_volume(SHAPE, 7)
    return image, image.clone(), _ball((12, 12, 15)), _ball((12, 12, 12))  # moving, fixed, their segmentations


def test_default_weight_is_upstreams():
    assert IO_DICE_WEIGHT == schema_default("evaluation.io_dice_weight") == 0.0


def test_soft_dice_loss_analytic():
    a = _ball((12, 12, 12))
    assert float(soft_dice_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(a, torch.zeros_like(a))) == pytest.approx(1.0, abs=1e-6)
    half = torch.zeros(1, 1, 2, 2, 2)
    half[..., 0] = 1
    full = torch.ones(1, 1, 2, 2, 2)
    assert float(soft_dice_loss(half, full)) == pytest.approx(1 - 2 * 4 / (4 + 8), abs=1e-6)


def test_soft_dice_loss_valid_classes_per_pair():
    # pair 0: class 0 perfect (loss 0), class 1 disjoint (loss 1); pair 1: only class 1 valid, perfect; pair 2: none
    pred = torch.zeros(3, 2, 2, 2, 2)
    target = torch.zeros(3, 2, 2, 2, 2)
    pred[0, 0, 0], target[0, 0, 0] = 1, 1
    pred[0, 1, 0], target[0, 1, 1] = 1, 1
    pred[1, 1], target[1, 1] = 1, 1
    valid = torch.tensor([[True, True], [False, True], [False, False]])
    assert float(soft_dice_loss(pred, target, valid)) == pytest.approx((0.5 + 0.0) / 2, abs=1e-6)
    assert float(soft_dice_loss(pred, target, torch.zeros(3, 2, dtype=torch.bool))) == 0.0


def test_shared_one_hot_keeps_shared_labels_only():
    a = _ball((12, 12, 12), label=2) + _ball((4, 4, 4), radius=2, label=5)
    b = _ball((12, 12, 14), label=2) + _ball((20, 20, 20), radius=2, label=7)
    one_a, one_b, valid = shared_one_hot(a, b)
    assert one_a.shape == one_b.shape == (1, 1, *SHAPE)
    assert torch.equal(one_a, (a == 2).float()) and torch.equal(one_b, (b == 2).float())
    assert valid.tolist() == [[True]]
    none = shared_one_hot(_ball((12, 12, 12), label=1), _ball((12, 12, 12), label=3))
    assert none[0].shape == (1, 0, *SHAPE) and none[2].numel() == 0


def test_shared_one_hot_per_pair_of_a_batch():
    a = torch.cat([_ball((12, 12, 12), label=1), _ball((12, 12, 12), label=2)])
    b = torch.cat([_ball((12, 12, 12), label=1), _ball((12, 12, 12), label=3)])  # pair 1 shares nothing
    one_a, one_b, valid = shared_one_hot(a, b)
    assert one_a.shape[1] == 1 and valid.tolist() == [[True], [False]]
    assert torch.equal(one_a[0], (a[0] == 1).float()) and not one_a[1].any()


def test_io_with_unshared_labels_is_an_error(synthetic_pair):
    moving, fixed, _, _ = synthetic_pair
    net = build_network("tiny", input_shape=SHAPE)
    with pytest.raises(ValueError, match="share no"):
        instance_optimize(
            net,
            moving,
            fixed,
            steps=1,
            segmentation_moving=_ball((12, 12, 12), label=1),
            segmentation_fixed=_ball((12, 12, 12), label=3),
            dice_weight=1.0,
        )


def test_segmentations_raise_dice(synthetic_pair):
    moving, fixed, seg_moving, seg_fixed = synthetic_pair
    net = build_network("tiny", input_shape=SHAPE)
    initial = _dice(net(moving, fixed).on_grid(SHAPE).detach(), seg_moving, seg_fixed)
    plain = instance_optimize(net, moving, fixed, "lncc", STEPS, LR, seed=0)
    guided = instance_optimize(
        net,
        moving,
        fixed,
        "lncc",
        STEPS,
        LR,
        seed=0,
        segmentation_moving=seg_moving,
        segmentation_fixed=seg_fixed,
        dice_weight=WEIGHT,
    )
    without, with_seg = _dice(plain.phi_AB, seg_moving, seg_fixed), _dice(guided.phi_AB, seg_moving, seg_fixed)
    assert "dice" in guided.history[0] and "dice" not in plain.history[0]
    assert guided.history[-1]["dice"] < guided.history[0]["dice"]
    assert without == pytest.approx(initial, abs=0.02)  # the intensities carry no information
    assert with_seg > without + 0.1, (initial, without, with_seg)


def test_dice_weight_needs_both_segmentations(synthetic_pair):
    moving, fixed, seg_moving, _ = synthetic_pair
    net = build_network("tiny", input_shape=SHAPE)
    with pytest.raises(ValueError, match="both segmentations"):
        instance_optimize(net, moving, fixed, "lncc", 1, LR, segmentation_moving=seg_moving, dice_weight=1.0)


def _write(array: np.ndarray, path, label: bool = False) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8 if label else np.float32))
    image.SetSpacing((1.5, 1.5, 1.5))
    image.SetOrigin((3.0, -2.0, 1.0))
    sitk.WriteImage(image, str(path))


def test_cli_segmentation_guided_io(tmp_path, synthetic_pair, capsys):
    moving, fixed, seg_moving, seg_fixed = synthetic_pair
    files = {name: tmp_path / f"{name}.nii.gz" for name in ("fixed", "moving", "fseg", "mseg")}
    _write(100 * fixed[0, 0].numpy(), files["fixed"])
    _write(100 * moving[0, 0].numpy(), files["moving"])
    _write(seg_fixed[0, 0].numpy(), files["fseg"], label=True)
    _write(seg_moving[0, 0].numpy(), files["mseg"], label=True)
    model = tmp_path / "tiny.pt"
    save_checkpoint(build_network("tiny", input_shape=SHAPE), model)
    common = ["register", "--fixed", str(files["fixed"]), "--moving", str(files["moving"])]
    common += ["--fixed_modality", "mri", "--moving_modality", "mri", "--model", str(model), "--device", "cpu"]
    common += ["--io_iterations", str(STEPS), "--io_lr", str(LR), "--io_sim", "lncc"]

    def dice_after(name: str, *extra: str) -> float:
        out = tmp_path / f"{name}.nii.gz"
        assert main([*common, "--transform_out", str(tmp_path / f"{name}.h5"), *extra]) == 0
        assert (
            main(
                ["warp", "--fixed", str(files["fseg"]), "--moving", str(files["mseg"])]
                + ["--transform", str(tmp_path / f"{name}.h5"), "--warped-moving-out", str(out)]
            )
            == 0
        )
        warped = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        return metrics.mean_dice(seg_fixed[0, 0].numpy(), warped, labels=[1])

    without = dice_after("plain")
    segs = ["--fixed_segmentation", str(files["fseg"]), "--moving_segmentation", str(files["mseg"])]
    with_seg = dice_after("guided", *segs, "--dice_loss_weight", str(WEIGHT))
    assert with_seg > without + 0.1, (without, with_seg)

    capsys.readouterr()
    code = main([*common, "--transform-out", str(tmp_path / "bad.h5"), "--fixed-segmentation", str(files["fseg"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--fixed-segmentation" in err[0]
    assert not (tmp_path / "bad.h5").exists()
    code = main([*common, "--transform-out", str(tmp_path / "bad.h5"), "--dice-loss-weight", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--dice-loss-weight" in err[0]


def test_pipeline_network_method_uses_label_maps(tmp_path, synthetic_pair):
    """``evaluation.io_dice_weight > 0``: the network methods' IO uses the test scans' label maps (here from the
    data stage's volumes; the route through the images is the command line's, tested above)."""
    from mgicon.evaluate.methods import NetworkMethod
    from mgicon.evaluate.scoring import pair_dice
    from mgicon.records import ScanRecord

    moving, fixed, seg_moving, seg_fixed = synthetic_pair
    scans = []
    for name, image, seg in (("moving", moving, seg_moving), ("fixed", fixed, seg_fixed)):
        _write(image[0, 0].numpy(), tmp_path / f"{name}.nii.gz")
        _write(seg[0, 0].numpy(), tmp_path / f"{name}_seg.nii.gz", label=True)
        files = {"image": str(tmp_path / f"{name}.nii.gz"), "label": str(tmp_path / f"{name}_seg.nii.gz")}
        # the data stage's volumes on the network grid: here the files themselves
        files.update(network_image=files["image"], network_label=files["label"])
        scans.append(ScanRecord("toy", name, "0", "t1w", **files))
    model = tmp_path / "tiny.pt"
    save_checkpoint(build_network("tiny", input_shape=SHAPE), model)
    dice, weight_io = {}, 10 * WEIGHT  # 1 − LNCC² pulls harder than LNCC towards the (uninformative) intensities
    for weight in (0.0, weight_io):
        method = NetworkMethod("tiny", model, io_iterations=STEPS, io_lr=LR, io_dice_weight=weight)
        registered = method.register(scans[0], scans[1], masked=False, io="io-lncc2")
        dice[weight] = pair_dice(registered.transform, scans[1].label, scans[0].label, [1])
    assert dice[weight_io] > dice[0.0] + 0.1, dice
    assert NetworkMethod("tiny", model, io_dice_weight=WEIGHT).fingerprint != NetworkMethod("tiny", model).fingerprint
