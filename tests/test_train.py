"""Training: learning on the synthetic suite, exact resume, DDP = one process, stage transfer, B/F/R records,
MLflow runs."""

import csv
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import mgicon
from mgicon.data import build
from mgicon.data.registry import load_registry, stage_weights
from mgicon.network import save_checkpoint
from mgicon.tracking import Tracker, TrackingError
from mgicon.train import TrainConfig, TrainingData, build_model, train, train_step
from mgicon.train.data import Batch
from mgicon.train.loop import PairModel

SHAPE = [24, 24, 24]
NETWORK = {"preset": "tiny", "input_shape": SHAPE, "down_channels": [4, 8, 16], "up_channels": [4, 8, 16]}
DATASETS = {
    "syn-brain": {
        "region": "Brain",
        "modalities": ["t1w", "t2w", "flair"],
        "pairing": "inter",
        "stages": ["pretrain", "test"],
        "label_randomization": True,
        "source": {"kind": "synthetic"},
    },
}


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    """A micro synthetic data stage: preprocessed volumes and pair lists for pretraining and testing."""
    root = tmp_path_factory.mktemp("data")
    config = {
        "seed": 0,
        "resources": str(root / "resources"),
        "network": NETWORK,
        "datasets": DATASETS,
        "synthetic": {"size": [24, 28, 24], "subjects": 6, "n_test": 2},
    }
    paths = {}
    for name in DATASETS:
        data = root / "results" / "data" / name
        build.build_manifest(name, config, data / "manifest.csv")
        build.build_preprocessed(name, config, data / "manifest.csv", data / "preprocessed.csv")
        for stage in ("pretrain", "test"):
            build.build_pair_list(
                stage, name, config, data / "preprocessed.csv", root / "pairs" / stage / f"{name}.csv"
            )
        paths[name] = data / "preprocessed.csv"
    return config, root, paths


def _data(stage_data, mode="B", modalities="all", stage="pretrain", inputs_from_loss=False):
    config, root, paths = stage_data
    registry = load_registry(config["datasets"])
    weights = stage_weights(registry, stage)
    lists = {n: root / "pairs" / stage / f"{n}.csv" for n in weights}
    return TrainingData(stage, registry, weights, paths, lists, mode, modalities, inputs_from_loss=inputs_from_loss)


def _config(**kw):
    base = dict(
        network={**NETWORK, "include_last_step": True},
        similarity="lncc",
        batch_size=2,
        lr=1e-3,
        steps=6,
        checkpoint_every=2,
        log_every=1,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


def _dice_on_test_pairs(net, data_stage):
    """Mean Dice (labels warped by the predicted maps, nearest) and identity Dice on the held-out t1w pairs."""
    _, root, paths = data_stage
    rows = {(r["subject"], r["modality"]): r for r in build.read_preprocessed(paths["syn-brain"])}
    pairs = {
        (p["moving_subject"], p["fixed_subject"])
        for p in csv.DictReader(open(root / "pairs" / "test" / "syn-brain.csv"))
    }

    def load(path):
        return torch.from_numpy(mgicon.io.itk.to_array(mgicon.io.itk.read_image(path)).astype(np.float32))[None, None]

    scores, identity = [], []
    for m, f in sorted(pairs):
        a, b = load(rows[(m, "t1w")]["network_image"]), load(rows[(f, "t1w")]["network_image"])
        la, lb = load(rows[(m, "t1w")]["network_label"]), load(rows[(f, "t1w")]["network_label"])
        phi = mgicon.predict_map(net, a, b)
        warped = F.grid_sample(la, (phi.flip(1) * 2 - 1).permute(0, 2, 3, 4, 1), mode="nearest", align_corners=True)
        scores.append(mgicon.metrics.mean_dice(lb[0, 0].numpy(), warped[0, 0].numpy()))
        identity.append(mgicon.metrics.mean_dice(lb[0, 0].numpy(), la[0, 0].numpy()))
    return float(np.mean(scores)), float(np.mean(identity))


def test_training_lowers_the_loss_and_beats_identity_on_held_out_pairs(stage_data, tmp_path):
    data = _data(stage_data, modalities="first")
    losses = []
    cfg = _config(steps=150, checkpoint_every=150, lr=2e-3, batch_size=4)
    final = train(cfg, data, tmp_path, progress=False, on_step=lambda s, m: losses.append(m["similarity"]))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.05
    dice, identity = _dice_on_test_pairs(mgicon.load_network(final), stage_data)
    assert dice > identity + 0.02, (dice, identity)


def test_killed_and_resumed_run_ends_with_the_same_weights(stage_data, tmp_path):
    data = _data(stage_data, mode="R")
    whole = torch.load(train(_config(), data, tmp_path / "whole", progress=False), weights_only=True)
    train(_config(), data, tmp_path / "killed", progress=False, stop_after=3)  # checkpoint at 2, killed after 3
    assert torch.load(tmp_path / "killed" / "latest.pt", weights_only=True)["step"] == 2
    resumed = torch.load(train(_config(), data, tmp_path / "killed", progress=False), weights_only=True)
    assert all(torch.equal(whole["state_dict"][k], resumed["state_dict"][k]) for k in whole["state_dict"])
    with open(tmp_path / "killed" / "samples.csv") as fh, open(tmp_path / "whole" / "samples.csv") as gh:
        assert fh.read() == gh.read()


@pytest.mark.parametrize("mode", ["B", "F", "R"])
def test_loop_records_the_intended_loss_randomization(stage_data, tmp_path, mode):
    train(_config(steps=25, batch_size=4, checkpoint_every=25), _data(stage_data, mode=mode), tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert len(rows) == 100
    same_input = np.mean([r["loss_moving"] == r["input_moving"] for r in rows])
    same_loss = np.mean([r["loss_moving"] == r["loss_fixed"] for r in rows])
    if mode == "B":
        assert same_input == 1.0
    elif mode == "F":
        assert same_loss == 1.0 and 0.15 < same_input < 0.55
    else:
        assert 0.15 < same_loss < 0.55 and 0.15 < same_input < 0.55


@pytest.mark.parametrize("mode", ["F", "R"])
def test_erratum_variant_feeds_the_loss_images_to_the_network(stage_data, tmp_path, mode):
    """The Erratum's bug on purpose: every recorded draw's network inputs are its loss images (under F: one modality
    per pair, so the network never sees a multimodal pair), and the batch tensors are those images."""
    data = _data(stage_data, mode=mode, inputs_from_loss=True)
    train(_config(steps=25, batch_size=4, checkpoint_every=25), data, tmp_path, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "samples.csv")))
    assert len(rows) == 100
    assert all((r["input_moving"], r["input_fixed"]) == (r["loss_moving"], r["loss_fixed"]) for r in rows)
    if mode == "F":
        assert all(r["input_moving"] == r["input_fixed"] for r in rows)
    batch = data.batch(3, 4)
    assert torch.equal(batch.input_A, batch.loss_A) and torch.equal(batch.input_B, batch.loss_B)
    # the same seed without the bug draws the same loss images but its own inputs, multimodal ones among them
    honest = _data(stage_data, mode=mode).batch(3, 4)
    assert [s.loss_modalities for s in honest.samples] == [s.loss_modalities for s in batch.samples]
    draws = [s for step in range(25) for s in _data(stage_data, mode=mode).batch(step, 4).samples]
    assert any(s.input_modalities[0] != s.input_modalities[1] for s in draws)
    assert any(s.input_modalities != s.loss_modalities for s in draws)


def test_batchnorm_recalibration_sets_running_means_to_the_mean_over_later_batches(stage_data, tmp_path):
    data = _data(stage_data, mode="F")
    plain_cfg = _config(steps=2, augment=False)
    plain = torch.load(train(plain_cfg, data, tmp_path / "plain", progress=False), weights_only=True)
    cfg = _config(steps=2, augment=False, bn_recalibration=3)
    recal = torch.load(train(cfg, data, tmp_path / "recal", progress=False), weights_only=True)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    for key, value in plain["state_dict"].items():  # weights as trained, only BatchNorm statistics re-estimated
        if not key.endswith(stats):
            assert torch.equal(value, recal["state_dict"][key]), key
    # the independent truth: each BatchNorm layer's input mean per call, averaged over the calls of steps 2..4
    net = build_model(plain_cfg)
    net.load_state_dict(plain["state_dict"])
    seen: dict[str, list[torch.Tensor]] = {}
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.register_forward_hook(
                lambda m, x, y, name=name: seen.setdefault(name, []).append(x[0].mean(dim=(0, 2, 3, 4)))
            )
    with torch.no_grad():
        for step in (2, 3, 4):
            batch = data.batch(step, cfg.batch_size)
            PairModel(net.train())(batch.input_A, batch.input_B)
    assert seen
    for name, means in seen.items():
        expected = torch.stack(means).mean(0)
        assert torch.allclose(recal["state_dict"][f"{name}.running_mean"], expected, atol=1e-5), name
        assert not torch.allclose(plain["state_dict"][f"{name}.running_mean"], expected, atol=1e-3), name


def test_stage_one_weights_move_into_stage_two(stage_data, tmp_path):
    stage1 = mgicon.testing.randomize_weights(
        mgicon.build_network("tiny", input_shape=SHAPE, include_last_step=False), 3
    )
    save_checkpoint(stage1, tmp_path / "stage1.pt")
    stage2 = build_model(_config(init_from=str(tmp_path / "stage1.pt")))
    assert stage2.config.include_last_step
    for key, value in stage1.state_dict().items():
        assert torch.equal(stage2.netPhi.state_dict()[key], value)
    a, b = mgicon.testing.smooth_volume(SHAPE, 1), mgicon.testing.smooth_volume(SHAPE, 2)
    # the new last step starts at zero: stage 2 begins exactly where stage 1 ended
    assert torch.allclose(mgicon.predict_map(stage2, a, b), mgicon.predict_map(stage1, a, b), atol=1e-6)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, stage_data, out):
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        cfg = _config(batch_size=4, device_batch=2)
        net = build_model(cfg).train()
        model = torch.nn.parallel.DistributedDataParallel(PairModel(net))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        train_step(model, optimizer, _data(stage_data, mode="R"), cfg, step=0)
        if rank == 0:
            torch.save({k: p.grad.clone() for k, p in net.named_parameters()}, out)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_processes_give_the_gradients_of_one(stage_data, tmp_path):
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), stage_data, str(out)), nprocs=2, join=True)
    ddp = torch.load(out, weights_only=True)
    cfg = _config(batch_size=4, device_batch=2)
    net = build_model(cfg).train()
    train_step(PairModel(net), torch.optim.SGD(net.parameters(), lr=0.0), _data(stage_data, mode="R"), cfg, step=0)
    for name, p in net.named_parameters():
        assert torch.allclose(p.grad, ddp[name], rtol=1e-4, atol=1e-7), name


def test_mlflow_run_has_params_metrics_and_run_file(stage_data, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _config(steps=3)
    tracker = Tracker(
        uri, "train-unit", params={"similarity": cfg.similarity, "lr": cfg.lr}, artifact_root=tmp_path / "art"
    )
    final = train(cfg, _data(stage_data), tmp_path / "model", tracker=tracker, progress=False)
    tracker.log_artifact(final.with_name("samples.csv"))
    tracker.write_run_file(tmp_path / "model" / "mlflow_run.json", checkpoint=str(final))
    tracker.end()
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "train-unit"
    assert run.data.params["similarity"] == "lncc"
    assert len(MlflowClient(uri).get_metric_history(tracker.run_id, "total")) == 3
    assert "pairs_per_s" in run.data.metrics and "folds_percent" in run.data.metrics
    assert '"run_id"' in (tmp_path / "model" / "mlflow_run.json").read_text(encoding="utf-8")


def test_a_resumed_run_that_the_store_lacks_becomes_a_new_run(tmp_path):
    """A job resumed against another (or a deleted and recreated) tracking store logs to a new run there."""
    first = Tracker(f"sqlite:///{tmp_path}/a.db", "job", params={"p": 1})
    first.end()
    other = Tracker(f"sqlite:///{tmp_path}/b.db", "job", params={"p": 1}, run_id=first.run_id)
    other.log_metrics({"loss": 0.5}, 0)
    other.end()
    assert other.run_id != first.run_id
    run = other.client.get_run(other.run_id)
    assert run.data.params == {"p": "1"} and run.data.metrics == {"loss": 0.5} and run.info.status == "FINISHED"
    again = Tracker(f"sqlite:///{tmp_path}/b.db", "job", run_id=other.run_id)  # present: the same run
    assert again.run_id == other.run_id


def test_unreachable_tracking_server_is_a_clear_error_at_start():
    with pytest.raises(TrackingError, match="127.0.0.1:9.*unreachable"):
        Tracker("http://127.0.0.1:9", "x")


class _FixedBatch:
    """A data source whose every batch is ``batch`` (train_step only asks ``data.batch``)."""

    def __init__(self, batch: Batch):
        self._batch = batch

    def batch(self, step: int, size: int) -> Batch:
        return self._batch


@pytest.mark.oracle
def test_masked_similarity_and_dice_term_of_a_training_step_equal_upstream():
    """upstream 1.0.6's GradientICONSparse with dice_loss_weight and loss_function_masking is the truth for the
    objective's similarity and Dice parts (its GradICON points are its own random draws, so the total is not)."""
    from tests.oracle import ours_from, upstream_network

    n, weight = 72, 2.0
    up = upstream_network(n, "lncc", seed=5, dice_loss_weight=weight, loss_function_masking=True)
    ours = ours_from(up, n)
    a, b = mgicon.testing.smooth_volume((n,) * 3, 1, batch=2), mgicon.testing.smooth_volume((n,) * 3, 2, batch=2)
    mask = (mgicon.testing.smooth_volume((n,) * 3, 3, batch=2) > 0.35).float()
    masks = [mask, 1 - mask]
    labels = [torch.floor(mgicon.testing.smooth_volume((n,) * 3, s, batch=2) * 3) for s in (5, 6)]  # labels 0-2
    labels[1][1][labels[1][1] == 2] = 0  # pair 1 shares one class only
    batch = Batch(a, b, a, b, [], labels[0], labels[1], masks[0], masks[1])
    cfg = _config(similarity="lncc", batch_size=2, augment=False, dice_loss_weight=weight, loss_function_masking=True)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.0)
    got = train_step(PairModel(ours), optimizer, _FixedBatch(batch), cfg, step=0)
    with torch.no_grad():
        expected = up(a, b, mask_A=masks[0], mask_B=masks[1], segmentation_A=labels[0], segmentation_B=labels[1])
    assert expected.dice_loss.item() > 0.05 and expected.similarity_loss.item() > 0.05
    assert got["dice"] == pytest.approx(expected.dice_loss.item(), rel=1e-5)
    assert got["similarity"] == pytest.approx(expected.similarity_loss.item(), rel=1e-5)
    unmasked = train_step(
        PairModel(ours), optimizer, _FixedBatch(batch), _config(similarity="lncc", batch_size=2, augment=False), 0
    )
    assert unmasked["similarity"] != pytest.approx(got["similarity"], rel=1e-3)  # the control: masks matter


def test_augmentation_shares_permutation_and_flip_and_keeps_each_side_aligned():
    from mgicon.train.augment import augment_pair

    vol = mgicon.testing.smooth_volume(SHAPE, 5, batch=3)
    side = torch.cat([vol, vol], dim=1)  # network input and loss image of one side
    out_A, out_B = augment_pair(side, side, torch.Generator().manual_seed(0), affine_std=0.0)
    assert torch.equal(out_A, out_B)  # no affine jitter: the pair shares its permutation and flips
    assert not torch.allclose(out_A, side)  # ... which did change the images
    assert torch.equal(out_A[:, 0], out_A[:, 1])  # input and loss image of a side stay aligned
    jit_A, jit_B = augment_pair(side, side, torch.Generator().manual_seed(0), affine_std=0.05)
    assert not torch.allclose(jit_A, jit_B) and torch.equal(jit_A[:, 0], jit_A[:, 1])
    kept_A, kept_B = augment_pair(side, side, torch.Generator().manual_seed(0), affine_std=0.0, permute=False)
    assert torch.allclose(kept_A, side, atol=1e-5) and torch.allclose(kept_B, side, atol=1e-5)  # axes kept


def test_a_multi_device_job_goes_to_torchrun_through_its_job_file(tmp_path, monkeypatch):
    """``launch`` writes the job file that ``python -m mgicon.train`` reads and starts one process per device."""
    import subprocess

    from mgicon.train import __main__ as entry
    from mgicon.train.launch import JOB_FILE, TrainJob, launch, read_job

    job = TrainJob(
        {"training": {"devices": 2}},
        "v",
        "stage2",
        str(tmp_path / "out"),
        {"d": "pre.csv"},
        {"d": "pairs.csv"},
        "stage1/final.pt",
    )
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, check, env: calls.append((cmd, env)))
    launch(job, threads=8)
    ((cmd, env),) = calls
    assert cmd[1:] == ["--standalone", "--nproc_per_node=2", "-m", "mgicon.train", str(tmp_path / "out" / JOB_FILE)]
    assert cmd[0].endswith("torchrun") and env["OMP_NUM_THREADS"] == "4"
    assert read_job(cmd[-1]) == job
    ran = []
    monkeypatch.setattr(TrainJob, "run", lambda self, progress=True: ran.append(self))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert entry.main([cmd[-1]]) == 0 and ran == [job]
