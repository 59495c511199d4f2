"""``python -m mgicon.train`` (or under ``torchrun``): run one training stage of a variant from a JSON job file.

The job file is a :class:`mgicon.train.launch.TrainJob` written by :func:`mgicon.train.launch.launch`.  Under
torchrun the process group is initialised from the environment (NCCL on GPUs, gloo on CPU) and each rank trains
on its share of the batch.
"""

from __future__ import annotations

import argparse
import os
import sys

from mgicon.train.launch import read_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mgicon.train", description=__doc__.splitlines()[0])
    parser.add_argument("job", help="JSON job file")
    args = parser.parse_args(argv)
    job = read_job(args.job)
    import torch

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if backend == "nccl":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            job.config.setdefault("training", {})["device"] = f"cuda:{local}"
    try:
        job.run()
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
