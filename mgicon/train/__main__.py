"""``python -m mgicon.train`` (or under ``torchrun``): run one training stage of a variant from a JSON job file.

The job file holds ``{"config": ..., "variant": ..., "stage": ..., "out_dir": ..., "preprocessed": {...},
"pair_lists": {...}, "init_from": ...}`` as the Snakemake rule writes it.  Under torchrun the process group is
initialised from the environment (NCCL on GPUs, gloo on CPU) and each rank trains on its share of the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgicon.train", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="JSON job file")
    args = parser.parse_args(argv)
    with open(args.job) as fh:
        job = json.load(fh)
    import torch

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            job["config"].setdefault("training", {})["device"] = f"cuda:{local}"
    from mgicon.train.job import run_stage

    try:
        run_stage(job["config"], job["variant"], job["stage"], job["out_dir"], job["preprocessed"], job["pair_lists"],
                  job.get("init_from"))
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
