"""Engine speed against upstream: inference (one direction) and one IO step, same machine, weights and inputs.

Upstream's registration path (``icon_registration.itk_wrapper.register_pair`` without IO) evaluates the full
``GradientICONSparse`` forward: both directions, the similarity and the GradICON term.  Ours computes only
``phi_AB``.  An IO step is zero_grad → objective → backward → Adam on all weights, on both sides.

    .venv/bin/python benchmarks/engine.py --sizes 96 175 --repeats 3            # CPU
    .venv/bin/python benchmarks/engine.py --device cuda --sizes 175 --repeats 5  # GPU, adds bf16/channels-last

Prints a table of medians (seconds) and ratios (upstream / ours) and writes ``results/benchmarks/engine.json``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import timed, write_json  # noqa: E402

import mgicon  # noqa: E402
from mgicon import losses  # noqa: E402
from mgicon.network.inference import channels_last_mode  # noqa: E402
from mgicon.optimize import io_step  # noqa: E402
from mgicon.testing import randomize_weights, smooth_volume  # noqa: E402


def bench_size(n: int, repeats: int, device: torch.device, io: bool, variants: list[str]) -> list[dict]:
    import icon_registration as icon
    import unigradicon

    up = unigradicon.make_network([1, 1, n, n, n], include_last_step=True, loss_fn=icon.losses.SquaredLNCC(sigma=5))
    randomize_weights(up.regis_net, seed=1)
    up = up.to(device).eval()
    ours = mgicon.build_network("paper", input_shape=(n, n, n))
    ours.load_state_dict(up.regis_net.state_dict())
    ours = ours.to(device).eval()
    a = smooth_volume((n,) * 3, 1).to(device)
    b = smooth_volume((n,) * 3, 2).to(device)
    rows = []

    def upstream_register():
        with torch.no_grad():
            up(a, b)  # computes phi_AB_vectorfield (and phi_BA, the similarity and GradICON)

    up_t = timed(upstream_register, repeats, device)
    rows.append({"size": n, "task": "register", "impl": "upstream", "times": up_t})
    for variant in variants:
        kw = {"bf16": "bf16" in variant, "channels_last": "cl" in variant}
        t = timed(lambda: mgicon.predict_map(ours, a, b, **kw), repeats, device)
        rows.append({"size": n, "task": "register", "impl": f"mgicon[{variant}]", "times": t})
    up.clean()
    gc.collect()

    if io:
        opt_up = torch.optim.Adam(up.parameters(), lr=2e-5)

        def upstream_step():
            opt_up.zero_grad()
            loss = up(a, b)
            loss.all_loss.backward()
            opt_up.step()
            up.clean()

        rows.append({"size": n, "task": "io_step", "impl": "upstream", "times": timed(upstream_step, repeats, device)})
        opt_up = None
        up.zero_grad(set_to_none=True)
        gc.collect()
        for variant in variants:
            kw_cl = "cl" in variant
            opt = torch.optim.Adam(ours.parameters(), lr=2e-5)
            gen = torch.Generator().manual_seed(0)

            def our_step():
                with channels_last_mode(ours, kw_cl):
                    io_step(ours, opt, a, b, losses.squared_lncc, 1.5, gen, bf16="bf16" in variant)

            rows.append(
                {"size": n, "task": "io_step", "impl": f"mgicon[{variant}]", "times": timed(our_step, repeats, device)}
            )
            del opt
            ours.zero_grad(set_to_none=True)
            gc.collect()
    up = ours = None  # free both networks before the next size (closures above still name them)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 175])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-io", action="store_true", help="skip the IO-step comparison")
    parser.add_argument("--out", default="results/benchmarks/engine.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    variants = ["fp32", "fp32+cl"]
    if device.type == "cuda":
        variants += ["bf16", "bf16+cl"]
    rows = []
    for n in args.sizes:
        rows += bench_size(n, args.repeats, device, not args.no_io, variants)
    for row in rows:
        row["median_s"] = statistics.median(row["times"])
    print(f"{'size':>5} {'task':>9} {'impl':>22} {'median s':>9} {'upstream/ours':>14}")
    for row in rows:
        base = next(
            r for r in rows if r["size"] == row["size"] and r["task"] == row["task"] and r["impl"] == "upstream"
        )
        ratio = base["median_s"] / row["median_s"]
        row["speedup_vs_upstream"] = ratio
        print(f"{row['size']:>5} {row['task']:>9} {row['impl']:>22} {row['median_s']:>9.3f} {ratio:>13.2f}x")
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    write_json(info, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
