"""Seconds per evaluated pair: w/o IO, IO (1 − LNCC², MIND-SSC) and SyN, through the pipeline's evaluation path.

Registration seconds as the evaluation CSVs record them (scoring excluded), plus the whole pair (registration +
Dice + mTRE + % J<0 at the original resolution).  Images: the synthetic lung pair (inhale/exhale CT, landmarks,
labels) generated at ``--size``³ voxels.  Networks: random non-trivial weights of the ``--preset`` at ``--size``³
(the default: the demo's ``tiny`` at 40³; the paper: ``--preset paper --size 175``).  IO at 175³ on a CPU takes
about a minute per step, so ``--io-steps`` can be lowered: the JSON then also reports seconds per step and the
50-step projection, labelled as such.

    python benchmarks/evaluate.py                                   # the demo's setting
    python benchmarks/evaluate.py --preset paper --size 175 --io-steps 2 --out results/benchmarks/evaluate-175.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402

from mgicon.data.build import PATH_COLUMNS  # noqa: E402
from mgicon.data.preprocess import preprocess_rows  # noqa: E402
from mgicon.data.synthetic import generate_dataset  # noqa: E402
from mgicon.evaluate import make_method  # noqa: E402
from mgicon.evaluate.scoring import score  # noqa: E402
from mgicon.io import itk as itkio  # noqa: E402
from mgicon.network.checkpoint import save_checkpoint  # noqa: E402
from mgicon.network.model import build_network  # noqa: E402
from mgicon.records import ScanRecord  # noqa: E402
from mgicon.testing import randomize_weights  # noqa: E402
from mgicon.vocabulary import IO_SETTINGS, NETWORK, NOIO, SYN  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=40, help="network grid and synthetic image size per axis")
    parser.add_argument("--io-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-syn", action="store_true")
    parser.add_argument("--out", default="results/benchmarks/evaluate.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.size
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        rows = generate_dataset(
            "syn-lung", root, {"syn-lung": {"size": [n, n, n], "subjects": 2, "n_test": 1, "landmarks": 30}}, seed=0
        )
        rows = [{**r, **{c: str(root / r[c]) for c in PATH_COLUMNS if r.get(c)}} for r in rows]
        rows = preprocess_rows([r for r in rows if r["subject"] == "sub-01"], (n, n, n), root / "network")
        print(f"synthetic pair at {n}³: {time.perf_counter() - t:.1f} s to generate")
        moving, fixed = (
            ScanRecord.from_row(next(r for r in rows if r["timepoint"] == tp)) for tp in ("exhale", "inhale")
        )
        net = randomize_weights(build_network(args.preset, (n, n, n)), seed=0, last_std=0.02)
        save_checkpoint(net, root / "net.pt")
        del net
        methods = [(io, NETWORK, io) for io in IO_SETTINGS]
        if not args.skip_syn:
            methods.append((SYN, SYN, NOIO))
        results = []
        for label, kind, io in methods:
            options = (
                {"checkpoint": root / "net.pt", "device": args.device, "io_iterations": args.io_steps}
                if kind == NETWORK
                else {"deterministic": False, "threads": args.threads}
            )
            method = make_method(label, kind, **options)
            fixed_image = itkio.read_image(fixed.image)
            reg_times, pair_times = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = method.register(moving, fixed, False, io)
                score(result.transform, fixed, moving, fixed_image)
                pair_times.append(time.perf_counter() - start)
                reg_times.append(result.seconds)
            row = {
                "setting": label,
                "registration_s": statistics.median(reg_times),
                "pair_s": statistics.median(pair_times),
                "repeats": args.repeats,
            }
            if io != NOIO:
                row["io_steps"] = args.io_steps
                row["per_io_step_s"] = row["registration_s"] / max(1, args.io_steps)
                row["projected_50_steps_s"] = row["per_io_step_s"] * 50
            results.append(row)
            print(row, flush=True)
            del method
    write_json(
        {"preset": args.preset, "size": n, "device": args.device, "threads": args.threads, "results": results}, args.out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
