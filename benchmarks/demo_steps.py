"""How the demo's scores move with its training recipe: the learning curve of one variant's stage 1 on the demo's
data (config/config.yaml, with ``--set key=value`` overrides in YAML).  It trains to each of ``--steps`` (a
comma-separated list, resuming from the previous count: the same weights as one run to the largest) and scores the
network without IO on every test dataset, per modality pair, beside the unregistered scores.  Needs the data stage
of the demo (``results/data``, ``results/pairs``).

    python benchmarks/demo_steps.py --variant multigradicon-f --steps 50,100,150,300
    python benchmarks/demo_steps.py --steps 300 --set training.batch_size=2 --set training.lncc_sigma=5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_json  # noqa: E402

from mgicon.config import load as load_config  # noqa: E402
from mgicon.data.build import read_preprocessed  # noqa: E402
from mgicon.data.registry import load_registry  # noqa: E402
from mgicon.evaluate import make_method  # noqa: E402
from mgicon.evaluate.runner import evaluate_pairs, select_pairs  # noqa: E402
from mgicon.records import PairRecord, ScanRecord, parse_rows, read_records  # noqa: E402
from mgicon.train.job import run_stage  # noqa: E402
from mgicon.vocabulary import NOIO  # noqa: E402


def _scores(method, registry, config, results: Path, tmp: str) -> dict[str, dict[str, float]]:
    """Mean trained and unregistered score per test dataset and modality pair (and masking), without IO."""
    scores: dict[str, list[tuple[float, float]]] = {}
    for name, spec in registry.items():
        if "test" not in spec.stages:
            continue
        pairs = select_pairs(
            read_records(results / "pairs" / "test" / f"{name}.csv", PairRecord),
            spec,
            config["evaluation"]["max_pairs"],
        )
        preprocessed = results / "data" / name / "preprocessed.csv"
        scans = parse_rows(read_preprocessed(preprocessed), ScanRecord, preprocessed)
        records = evaluate_pairs(method, NOIO, spec, pairs, scans, Path(tmp) / f"{name}.csv")
        metric = spec.evaluation["metric"]
        for record in records:
            pair = record.pair
            group = f"{name} {pair.moving_modality}/{pair.fixed_modality}" + (" masked" if pair.masked else "")
            scores.setdefault(group, []).append((record.value(metric), record.initial(metric)))
    return {
        g: {"trained": sum(a for a, _ in v) / len(v), "identity": sum(b for _, b in v) / len(v), "pairs": len(v)}
        for g, v in scores.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--variant", default="multigradicon-f")
    parser.add_argument("--steps", default="50,100,150", help="step counts to score at, e.g. 50,100,200")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted path, YAML value), e.g. training.axis_permutation=true",
    )
    parser.add_argument("--out", default="results/benchmarks/demo_steps.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides: dict = {}
    for item in args.set:
        key, _, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    config = load_config(args.config, overrides=overrides)
    results = Path(config["results"])
    registry = load_registry(config["datasets"])
    counts = sorted({int(s) for s in args.steps.split(",")})
    curve = []
    with tempfile.TemporaryDirectory() as tmp:
        config["tracking"] = {"uri": f"sqlite:///{tmp}/mlflow.db"}
        names = [n for n, spec in registry.items() if "pretrain" in spec.stages]
        seconds = 0.0
        for steps in counts:
            config["training"]["steps"]["stage1"] = steps
            start = time.perf_counter()
            final = run_stage(
                config,
                args.variant,
                "stage1",
                Path(tmp) / "stage1",
                {n: results / "data" / n / "preprocessed.csv" for n in names},
                {n: results / "pairs" / "pretrain" / f"{n}.csv" for n in names},
                progress=False,
            )
            seconds += time.perf_counter() - start
            scores = _scores(make_method(args.variant, "network", checkpoint=final), registry, config, results, tmp)
            curve.append({"steps": steps, "train_seconds": seconds, "scores": scores})
            print(f"{steps} steps, {seconds:.0f} s of training", flush=True)
    groups = list(curve[0]["scores"])
    print(f"{'':32s} {'identity':>9s}" + "".join(f"{c['steps']:>9d}" for c in curve))
    for group in groups:
        row = "".join(f"{c['scores'][group]['trained']:9.3f}" for c in curve)
        print(f"{group:32s} {curve[0]['scores'][group]['identity']:9.3f}{row}")
    write_json({"variant": args.variant, "overrides": args.set, "curve": curve}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
