"""Training throughput against upstream: pairs per second of one optimisation step, same machine, size and weights.

Upstream's step (its training scripts): BatchNorm in training mode, ``GradientICONSparse`` forward on the batch
(both directions, 1 − LNCC², GradICON), backward, Adam.  Ours: :func:`mgicon.train.train_step` on the same global
batch (no augmentation on either side, so that only the step itself is timed).  On CUDA also with bf16 autocast
and channels-last activations.

    .venv/bin/python benchmarks/train.py --size 96 --batch 2 --repeats 3            # CPU
    .venv/bin/python benchmarks/train.py --device cuda --size 175 --batch 4          # one GPU

Writes ``results/benchmarks/train.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import timed, write_json  # noqa: E402

from mgicon.data.sampler import Sample  # noqa: E402
from mgicon.testing import smooth_volume  # noqa: E402
from mgicon.train.data import Batch  # noqa: E402
from mgicon.train.loop import PairModel, TrainConfig, build_model, train_step  # noqa: E402


class FixedData:
    """A stand-in for TrainingData that serves the same in-memory batch every step."""

    def __init__(self, n: int, batch: int):
        a = smooth_volume((n, n, n), 1, batch=batch)
        b = smooth_volume((n, n, n), 2, batch=batch)
        sample = Sample("bench", ("a", "0"), ("b", "0"), ("t1w", "t1w"), ("t1w", "t1w"))
        self._batch = Batch(a, b, a, b, [sample] * batch)

    def batch(self, step: int, size: int) -> Batch:
        return self._batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/benchmarks/train.json")
    args = parser.parse_args(argv)
    import icon_registration as icon
    import unigradicon

    device = torch.device(args.device)
    n = args.size
    data = FixedData(n, args.batch)
    a, b = data._batch.input_A.to(device), data._batch.input_B.to(device)
    rows = []

    up = unigradicon.make_network([1, 1, n, n, n], include_last_step=True, loss_fn=icon.losses.SquaredLNCC(sigma=5))
    up = up.to(device).train()
    opt = torch.optim.Adam(up.parameters(), lr=5e-5)

    def upstream_step():
        opt.zero_grad()
        up(a, b).all_loss.backward()
        opt.step()
        up.clean()

    t = timed(upstream_step, args.repeats, device)
    rows.append({"impl": "upstream", "times": t})
    up = opt = None  # free them before our runs (closures above still name them)
    variants = [("fp32", False, False), ("fp32+cl", False, True)]
    if device.type == "cuda":
        variants += [("bf16", True, False), ("bf16+cl", True, True)]
    for name, bf16, cl in variants:
        cfg = TrainConfig(
            network={"preset": "paper", "input_shape": [n, n, n]},
            similarity="lncc2",
            batch_size=args.batch,
            augment=False,
            bf16=bf16,
            channels_last=cl,
            device=str(device),
        )
        net = build_model(cfg).to(device).train()
        model = PairModel(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        t = timed(lambda: train_step(model, optimizer, data, cfg, 0), args.repeats, device)
        rows.append({"impl": f"mgicon[{name}]", "times": t})
        net = model = optimizer = None
    base = statistics.median(rows[0]["times"])
    print(f"size {n}³, batch {args.batch}, device {args.device}, {torch.get_num_threads()} threads")
    for row in rows:
        row["median_s"] = statistics.median(row["times"])
        row["pairs_per_s"] = args.batch / row["median_s"]
        row["speedup_vs_upstream"] = base / row["median_s"]
        print(
            f"{row['impl']:>18}: {row['median_s']:.2f} s/step  {row['pairs_per_s']:.3f} pairs/s  "
            f"{row['speedup_vs_upstream']:.2f}x"
        )
    write_json({"size": n, "batch": args.batch, "device": args.device, "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
