"""Training step cost: seconds per optimisation step, same machine, size, weights and batch, in one run.

Rows: upstream's step (``--preset paper`` only: its training scripts' ``GradientICONSparse`` forward with BatchNorm in
training mode, backward, Adam); ours with every sampling through PyTorch's ``F.grid_sample`` (``native``: mgicon
before :mod:`mgicon.trilinear`); ours as it runs (``mgicon``).  Ours is :func:`mgicon.train.train_step` on a fixed
in-memory batch (no augmentation, so that only the step is timed).  The timed runs of the rows alternate, so that a
load change on a shared machine hits every row alike.  On CUDA also bf16 autocast.

    .venv/bin/python benchmarks/train.py --demo                                     # the demo's network and batch
    .venv/bin/python benchmarks/train.py --size 96 --batch 2 --repeats 3            # the paper's network, CPU
    .venv/bin/python benchmarks/train.py --device cuda --size 175 --batch 4          # one GPU

``--demo`` takes the preset, grid and batch of config/config.yaml, one thread (as its training jobs), stages 1 and 2.
``--reference REV`` adds the step of another git revision, timed in a child process on a temporary worktree, its
rounds alternating with the others (``--reference d61114a``: before the step got cheaper).
Writes ``results/benchmarks/train.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if "--serve" in sys.argv:  # a child timing another checkout's mgicon (--reference): import that one
    sys.path.insert(0, sys.argv[sys.argv.index("--serve") + 1])
sys.path.insert(1, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import sync, write_json  # noqa: E402

from mgicon.data.sampler import Sample  # noqa: E402
from mgicon.testing import smooth_volume  # noqa: E402
from mgicon.train.data import Batch  # noqa: E402
from mgicon.train.loop import PairModel, TrainConfig, build_model, train_step  # noqa: E402


class FixedData:
    """A stand-in for TrainingData that serves the same in-memory batch every step."""

    def __init__(self, shape: tuple[int, int, int], batch: int):
        a = smooth_volume(shape, 1, batch=batch)
        b = smooth_volume(shape, 2, batch=batch)
        sample = Sample("bench", ("a", "0"), ("b", "0"), ("t1w", "t1w"), ("t1w", "t1w"))
        self._batch = Batch(a, b, a, b, [sample] * batch)

    def batch(self, step: int, size: int) -> Batch:
        return self._batch


def _ours(network: dict, batch: int, device: torch.device, bf16: bool, lncc_sigma: float | None):
    cfg = TrainConfig(
        network=network,
        similarity="lncc2",
        batch_size=batch,
        augment=False,
        bf16=bf16,
        channels_last=True,
        device=str(device),
        **({"lncc_sigma": lncc_sigma} if lncc_sigma else {}),
    )
    net = build_model(cfg).to(device).train()
    model, optimizer = PairModel(net), torch.optim.Adam(net.parameters(), lr=cfg.lr)
    return lambda data: train_step(model, optimizer, data, cfg, 0)


def _upstream(shape, data: FixedData, device: torch.device):
    import icon_registration as icon
    import unigradicon

    up = unigradicon.make_network([1, 1, *shape], include_last_step=True, loss_fn=icon.losses.SquaredLNCC(sigma=5))
    up = up.to(device).train()
    opt = torch.optim.Adam(up.parameters(), lr=5e-5)
    a, b = data._batch.input_A.to(device), data._batch.input_B.to(device)

    def step(_data):
        opt.zero_grad()
        up(a, b).all_loss.backward()
        opt.step()
        up.clean()

    return step


def _native():
    """mgicon's switch to PyTorch's sampling (:func:`mgicon.maps.native_sampling`)."""
    from mgicon.maps import native_sampling

    return native_sampling()


class Reference:
    """Steps of another revision's mgicon, timed in a child process: ``git worktree`` of ``rev`` in a temporary
    folder, the child started with this script's ``--serve``; each call runs one step there and returns its
    seconds."""

    def __init__(self, rev: str, argv: list[str]):
        self.folder = Path(tempfile.mkdtemp(prefix="mgicon-reference-"))
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(self.folder), rev],
            check=True,
            capture_output=True,
        )
        self.child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.folder), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=self.folder,
        )

    def __call__(self, _data) -> float:
        self.child.stdin.write("step\n")
        self.child.stdin.flush()
        return float(self.child.stdout.readline())

    def close(self) -> None:
        self.child.stdin.close()
        self.child.wait()
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(self.folder)], check=False)


def _serve(step, data) -> None:
    """The child of :class:`Reference`: one timed step per line read, its seconds printed."""
    for line in sys.stdin:
        if line.strip() == "step":
            start = time.perf_counter()
            step(data)
            print(time.perf_counter() - start, flush=True)


def measure(rows: dict, data: FixedData, repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds per step of each row: one untimed step each, then ``repeats`` rounds of one timed step per row."""
    times: dict[str, list[float]] = {name: [] for name in rows}
    for round_ in range(repeats + 1):
        for name, (step, native) in rows.items():
            if isinstance(step, Reference):
                seconds = step(data)
            else:
                with _native() if native else contextlib.nullcontext():
                    sync(device)
                    start = time.perf_counter()
                    step(data)
                    sync(device)
                seconds = time.perf_counter() - start
            if round_:
                times[name].append(seconds)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true", help="the demo's preset, grid and batch; one thread")
    parser.add_argument("--config", default="config/config.yaml", help="the config --demo reads")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reference", metavar="REV", help="also time the step of this git revision (e.g. HEAD~3)")
    parser.add_argument("--stage", choices=["1", "2"], help="only this stage (--demo times both)")
    parser.add_argument("--lncc-sigma", type=float, help="LNCC window σ in voxels (default the schema's)")
    parser.add_argument("--serve", metavar="CHECKOUT", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="results/benchmarks/train.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    stages = [True]
    lncc_sigma = args.lncc_sigma
    if args.demo:
        from mgicon.config import load as load_config

        config = load_config(args.config)
        args.preset, shape = config["network"]["preset"], tuple(config["network"]["input_shape"])
        args.batch, lncc_sigma = config["training"]["batch_size"], config["training"]["lncc_sigma"]
        args.threads = args.threads or config["training"]["threads"]
        stages = [False, True]
    else:
        shape = (args.size,) * 3
    if args.stage:
        stages = [args.stage == "2"]
    if args.threads:
        torch.set_num_threads(args.threads)
    data = FixedData(shape, args.batch)
    if args.serve:
        network = {"preset": args.preset, "input_shape": list(shape), "include_last_step": stages[0]}
        _serve(_ours(network, args.batch, device, False, lncc_sigma), data)
        return 0
    report = []
    for last_step in stages:
        stage = "stage2" if last_step else "stage1"
        network = {"preset": args.preset, "input_shape": list(shape), "include_last_step": last_step}
        rows = {}
        reference = None
        if args.reference:
            child = ["--preset", args.preset, "--batch", str(args.batch), "--stage", stage[-1]]
            child += ["--threads", str(torch.get_num_threads()), "--size", str(shape[0])]
            reference = Reference(args.reference, child + (["--lncc-sigma", str(lncc_sigma)] if lncc_sigma else []))
            rows[f"mgicon@{args.reference}"] = (reference, False)
        if args.preset == "paper" and last_step:
            rows["upstream"] = (_upstream(shape, data, device), False)
        if device.type == "cpu":
            rows["mgicon[native sampling]"] = (_ours(network, args.batch, device, False, lncc_sigma), True)
        rows["mgicon"] = (_ours(network, args.batch, device, False, lncc_sigma), False)
        if device.type == "cuda":
            rows["mgicon[bf16]"] = (_ours(network, args.batch, device, True, lncc_sigma), False)
        try:
            times = measure(rows, data, args.repeats, device)
        finally:
            if reference is not None:
                reference.close()
        base = statistics.median(times["mgicon"])
        print(
            f"{args.preset} {stage}, {'x'.join(map(str, shape))}, batch {args.batch}, {args.device}, "
            f"{torch.get_num_threads()} thread(s)"
        )
        for name, t in times.items():
            median = statistics.median(t)
            row = {"stage": stage, "impl": name, "times": t, "median_s": median, "pairs_per_s": args.batch / median}
            row["relative_to_mgicon"] = median / base
            report.append(row)
            print(f"{name:>24}: {median:.3f} s/step  {row['pairs_per_s']:.2f} pairs/s  {median / base:.2f}x mgicon's")
    write_json(
        {"preset": args.preset, "shape": list(shape), "batch": args.batch, "device": args.device, "rows": report},
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
