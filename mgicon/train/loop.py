"""The GradICON training loop: Eq. (3)/(4), Adam, two-stage schedule and finetuning, resumable, optionally DDP.

Optional terms of upstream 1.0.6's finetuning: ``loss_function_masking`` restricts ``sim(A∘Φ_AB, B)`` to B's mask
and ``sim(B∘Φ_BA, A)`` to A's; ``dice_loss_weight`` w adds ``w·(Dice(S_A∘Φ_AB, S_B) + Dice(S_B∘Φ_BA, S_A))``, the
soft Dice losses of the label maps' shared classes (:func:`mgicon.losses.label_dice_loss`).

The config schema's defaults are upstream's hyperparameters (Adam lr 5e-5, λ = 1.5, 4 pairs per device, BatchNorm
in training mode).
A global batch is split into micro-batches of ``device_batch`` pairs; a single process runs them one after the other
and averages their gradients, ``N`` DDP processes run one share each — the same computation, BatchNorm statistics
per micro-batch included (upstream's ``DataParallel`` also normalises per device chunk).

Randomness is a pure function of ``(seed, step)``: pair draws, augmentation and the GradICON points.  A checkpoint
(``latest.pt``, written atomically every ``checkpoint_every`` steps) holds weights, optimizer state, step and the RNG
states, and carries the network config; a restarted job resumes from it and ends with the same weights as an
uninterrupted one (CPU, deterministic algorithms).
"""

from __future__ import annotations

import math
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from mgicon.config import schema_default
from mgicon.losses import (
    GRADICON_LAMBDA,
    get_similarity,
    gradicon_noise,
    label_dice_loss,
    objective_from_maps,
    shared_one_hot,
)
from mgicon.maps import DisplacementChain
from mgicon.metrics import negative_jacobian_percent
from mgicon.network.checkpoint import load_checkpoint, save_checkpoint
from mgicon.network.inference import autocast_context
from mgicon.network.model import RegistrationNetwork
from mgicon.network.presets import NetworkConfig, network_config
from mgicon.network.unet import UNet
from mgicon.train.augment import augment_pair
from mgicon.train.data import TrainingData
from mgicon.vocabulary import GRADICON_TERM, SIMILARITY_TERM


def _schema(key: str):
    """A field whose default is the config schema's ``training.KEY`` (the one place defaults live)."""
    return field(default_factory=lambda: schema_default(f"training.{key}"))


@dataclass
class TrainConfig:
    """One training job (one stage of one variant); defaults are the config schema's ``training`` section."""

    network: Mapping[str, Any]
    similarity: str = field(default_factory=lambda: schema_default("variants.*.similarity"))
    lmbda: float = GRADICON_LAMBDA
    lncc_sigma: float = _schema("lncc_sigma")
    lr: float = _schema("lr")
    batch_size: int = _schema("batch_size")
    device_batch: int | None = _schema("device_batch")
    steps: int = field(default_factory=lambda: schema_default("training.steps.stage1"))
    checkpoint_every: int = _schema("checkpoint_every")
    bn_recalibration: int = _schema("bn_recalibration")
    log_every: int = _schema("log_every")
    augment: bool = _schema("augment")
    axis_permutation: bool = _schema("axis_permutation")
    affine_std: float = _schema("affine_std")
    seed: int = field(default_factory=lambda: schema_default("seed"))
    bf16: bool = _schema("bf16")
    channels_last: bool = _schema("channels_last")
    device: str = _schema("device")
    dice_loss_weight: float = field(default_factory=lambda: schema_default("variants.*.dice_loss_weight"))
    loss_function_masking: bool = field(default_factory=lambda: schema_default("variants.*.loss_function_masking"))
    init_from: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class PairModel(nn.Module):
    """``(Φ[A,B], Φ[B,A])`` as tuples of displacement fields, in one forward call (what DDP wraps)."""

    def __init__(self, net: RegistrationNetwork):
        super().__init__()
        self.net = net

    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return tuple(self.net(a, b).fields), tuple(self.net(b, a).fields)


def _seeded(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash(tuple(parts)) % (2**63))


def build_model(cfg: TrainConfig) -> RegistrationNetwork:
    """The network of ``cfg``, initialised from ``init_from`` when given (stage 1 → ``netPhi`` of stage 2, or a
    checkpoint of the same layout for finetuning)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        net = RegistrationNetwork(network_config(cfg.network))
    if cfg.init_from:
        source = load_checkpoint(cfg.init_from)
        src_cfg: NetworkConfig = source["config"]
        if src_cfg.include_last_step == net.config.include_last_step:
            net.load_state_dict(source["state_dict"])
        elif not src_cfg.include_last_step and net.config.include_last_step:
            net.netPhi.load_state_dict(source["state_dict"])  # stage 1 (3 U-Nets) → stage 2's first three
        else:
            raise ValueError(f"{cfg.init_from}: cannot initialise a stage-1 network from a stage-2 checkpoint")
    for unet in net.modules():
        if isinstance(unet, UNet):
            unet.channels_last = cfg.channels_last
    return net


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _micro_batch(cfg: TrainConfig, world: int) -> int:
    """Pairs per forward call: ``device_batch``, else this process's share of the global batch."""
    return cfg.device_batch or max(1, cfg.batch_size // world)


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingData, cfg: TrainConfig, step: int
) -> dict[str, Any]:
    """One optimisation step on the global batch of ``step``; returns the objective's parts (this process's mean)
    and, under ``samples``, what was drawn."""
    rank, world = _rank_world()
    device = torch.device(cfg.device)
    micro = _micro_batch(cfg, world)
    chunks = math.ceil(cfg.batch_size / micro)
    if chunks % world:
        raise ValueError(f"batch {cfg.batch_size} in micro-batches of {micro} does not split over {world} processes")
    batch = data.batch(step, cfg.batch_size)
    # per side: network input, loss image, then the loss mask and the one-hot label maps when asked for; an
    # augmentation moves all of a side's channels together
    side_A, side_B = [batch.input_A, batch.loss_A], [batch.input_B, batch.loss_B]
    masked = cfg.loss_function_masking
    if masked:
        side_A.append(batch.mask_A)
        side_B.append(batch.mask_B)
    valid = None
    if cfg.dice_loss_weight > 0:
        one_A, one_B, valid = shared_one_hot(batch.seg_A, batch.seg_B)
        side_A.append(one_A)
        side_B.append(one_B)
    side_A, side_B = torch.cat(side_A, dim=1), torch.cat(side_B, dim=1)
    if cfg.augment:
        side_A, side_B = augment_pair(side_A, side_B, _seeded(cfg.seed, step, 1), cfg.affine_std, cfg.axis_permutation)
    labels_from = 3 if masked else 2
    shape = tuple(side_A.shape[2:])
    similarity = get_similarity(cfg.similarity, cfg.lncc_sigma)
    mine = list(range(rank, chunks, world))
    optimizer.zero_grad(set_to_none=True)
    totals = {"total": 0.0, SIMILARITY_TERM: 0.0, GRADICON_TERM: 0.0, "folds_percent": 0.0}
    if valid is not None:
        totals["dice"] = 0.0
    for c in mine:
        part = slice(c * micro, (c + 1) * micro)
        a, b = side_A[part].to(device), side_B[part].to(device)
        noise = gradicon_noise(shape, _seeded(cfg.seed, step, 2, c)).to(device)
        with autocast_context(device, cfg.bf16):
            fields_AB, fields_BA = model(a[:, :1], b[:, :1])
        terms = objective_from_maps(
            DisplacementChain(fields_AB),
            DisplacementChain(fields_BA),
            a[:, :1],
            b[:, :1],
            similarity,
            cfg.lmbda,
            loss_A=a[:, 1:2],
            loss_B=b[:, 1:2],
            mask_A=(a[:, 2:3] > 0.5).float() if masked else None,
            mask_B=(b[:, 2:3] > 0.5).float() if masked else None,
            noise=noise,
        )
        total = terms.total
        if valid is not None:
            dice = label_dice_loss(
                terms.phi_AB, terms.phi_BA, a[:, labels_from:], b[:, labels_from:], valid[part].to(device)
            )
            total = total + cfg.dice_loss_weight * dice
            totals["dice"] += dice.item() / len(mine)
        (total / len(mine)).backward()
        totals["total"] += total.item() / len(mine)
        totals[SIMILARITY_TERM] += terms.similarity.item() / len(mine)
        totals[GRADICON_TERM] += terms.gradicon.item() / len(mine)
        totals["folds_percent"] += negative_jacobian_percent(terms.phi_BA) / len(mine)
    optimizer.step()
    totals["samples"] = batch.samples
    return totals


def recalibrate_batchnorm(model: nn.Module, data: TrainingData, cfg: TrainConfig) -> None:
    """Re-estimate every BatchNorm layer's running statistics as the plain mean over ``cfg.bn_recalibration`` batches
    (drawn after the last step: steps ``cfg.steps``, ``cfg.steps + 1``, …), without changing any weight.

    Why: evaluation normalises with the running statistics, an exponential average (momentum 0.1) that lags the
    weights; after few steps — a new U-Net in stage 2 — it still remembers the first ones.  Re-estimating them over
    batches seen by the final weights (as SWA's ``update_bn``) makes the network as good in eval mode as in training.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if cfg.bn_recalibration <= 0 or not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    device = torch.device(cfg.device)
    micro = _micro_batch(cfg, _rank_world()[1])  # the forward calls of training, each process all of them
    was_training = model.training
    model.train()
    with torch.no_grad():
        for n in range(cfg.bn_recalibration):
            step = cfg.steps + n
            batch = data.batch(step, cfg.batch_size)
            a, b = batch.input_A, batch.input_B
            if cfg.augment:  # as train_step augments the inputs of this step
                a, b = augment_pair(a, b, _seeded(cfg.seed, step, 1), cfg.affine_std, cfg.axis_permutation)
            for start in range(0, cfg.batch_size, micro):
                part = slice(start, start + micro)
                with autocast_context(device, cfg.bf16):
                    model(a[part].to(device), b[part].to(device))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


SAMPLE_COLUMNS = ("step", "dataset", "moving", "fixed", "input_moving", "input_fixed", "loss_moving", "loss_fixed")


def _record_samples(path: Path, step: int, samples) -> None:
    """Append the draws of ``step`` to ``samples.csv`` (the record the B/F/R checks read)."""
    import csv

    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(SAMPLE_COLUMNS)
        for s in samples:
            writer.writerow(
                [step, s.dataset, "/".join(s.moving), "/".join(s.fixed), *s.input_modalities, *s.loss_modalities]
            )


def _truncate_samples(path: Path, start: int) -> None:
    """On resume, drop draws recorded after the checkpoint (they will be drawn again, identically)."""
    import csv

    from mgicon.fsutil import atomic_open

    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) < start]
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(keep)


def _save(path: Path, net: RegistrationNetwork, optimizer, step: int, cfg: TrainConfig, **extra) -> None:
    save_checkpoint(
        net,
        path,
        optimizer=optimizer.state_dict(),
        step=step,
        train_config=asdict(cfg),
        rng={"torch": torch.get_rng_state()},
        **extra,
    )


def train(
    cfg: TrainConfig,
    data: TrainingData,
    out_dir: str | os.PathLike,
    tracker=None,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> Path:
    """Train for ``cfg.steps`` steps, resuming from ``out_dir/latest.pt``; writes ``out_dir/final.pt``.

    ``stop_after`` ends the job after that many steps of this call (a simulated kill, for tests).  Under
    ``torch.distributed`` only rank 0 logs and writes.
    """
    from mgicon.tracking import NullTracker

    out_dir = Path(out_dir)
    rank, world = _rank_world()
    tracker = tracker if (tracker is not None and rank == 0) else NullTracker()
    torch.manual_seed(cfg.seed)
    net = build_model(cfg).to(cfg.device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start = 0
    latest = out_dir / "latest.pt"
    if latest.is_file():
        state = load_checkpoint(latest, map_location=cfg.device)
        net.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if rank == 0:
            print(f"resuming {out_dir} from its checkpoint at step {start} of {cfg.steps}", flush=True)
    if rank == 0:
        _truncate_samples(out_dir / "samples.csv", start)
    model: nn.Module = PairModel(net)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {out_dir.name}", unit="step", dynamic_ncols=True)
    t0, done = time.perf_counter(), 0
    for step in range(start, cfg.steps):
        if stop_after is not None and done >= stop_after:
            return latest
        metrics = train_step(model, optimizer, data, cfg, step)
        samples = metrics.pop("samples")
        if rank == 0:
            _record_samples(out_dir / "samples.csv", step, samples)
        done += 1
        rate = done * cfg.batch_size / (time.perf_counter() - t0)
        metrics["pairs_per_s"] = rate
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            metrics["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            if torch.cuda.is_available() and cfg.device.startswith("cuda"):
                metrics["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            tracker.log_metrics(metrics, step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['total']:.4f}", pairs_s=f"{rate:.2f}")
        if on_step is not None:
            on_step(step, metrics)
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            _save(latest, net, optimizer, step + 1, cfg)
    if bar is not None:
        bar.close()
    recalibrate_batchnorm(PairModel(net), data, cfg)
    final = out_dir / "final.pt"
    if rank == 0:
        _save(final, net, optimizer, cfg.steps, cfg)
        tracker.flush()
    return final
