"""How a training job is launched: in this process, or under ``torchrun`` with one process per device.

A job is one stage of one variant (the arguments of :func:`mgicon.train.job.run_stage`).  With
``training.devices: 1`` it runs in the calling process.  With more, the job is written to ``{out_dir}/job.json``
(:class:`TrainJob` as JSON: ``{"config", "variant", "stage", "out_dir", "preprocessed", "pair_lists",
"init_from"}``) and ``torchrun --standalone`` starts ``devices`` processes of ``python -m mgicon.train job.json``
on this node, which share the job's CPU threads equally (``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mgicon.config import setting
from mgicon.fsutil import atomic_write_text

JOB_FILE = "job.json"


@dataclass(frozen=True)
class TrainJob:
    """One training stage of one variant and the files it reads; ``out_dir`` receives its checkpoints."""

    config: dict[str, Any]  # the job's slice of the resolved pipeline config
    variant: str
    stage: str
    out_dir: str
    preprocessed: Mapping[str, str] = field(default_factory=dict)  # dataset -> its preprocessed.csv
    pair_lists: Mapping[str, str] = field(default_factory=dict)  # dataset -> its pair list of the stage's data
    init_from: str | None = None  # the checkpoint the stage starts from (stage 2, finetuning)

    def run(self, progress: bool = True) -> Path:
        """Train the stage in this process (one rank of it under torchrun); returns ``final.pt``."""
        from mgicon.train.job import run_stage

        return run_stage(
            self.config,
            self.variant,
            self.stage,
            self.out_dir,
            self.preprocessed,
            self.pair_lists,
            self.init_from,
            progress=progress,
        )


def write_job(job: TrainJob, path: str | os.PathLike) -> Path:
    """Write ``job`` as the JSON file :func:`read_job` (and so ``python -m mgicon.train``) reads."""
    atomic_write_text(path, json.dumps(asdict(job)))
    return Path(path)


def read_job(path: str | os.PathLike) -> TrainJob:
    """The job of a file written by :func:`write_job`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return TrainJob(**data)


def torchrun_command(job_file: str | os.PathLike, devices: int) -> list[str]:
    """``torchrun`` (beside this interpreter) starting ``devices`` processes of ``python -m mgicon.train``."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun), "--standalone", f"--nproc_per_node={devices}", "-m", "mgicon.train", str(job_file)]


def launch(job: TrainJob, threads: int, progress: bool = False) -> None:
    """Run ``job`` on ``training.devices`` devices with ``threads`` CPU threads in all.

    Raises:
        subprocess.CalledProcessError: a torchrun launch whose processes failed.
    """
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = int(setting(job.config, "training.devices"))
    if devices <= 1:
        job.run(progress=progress)
        return
    job_file = write_job(job, out_dir / JOB_FILE)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // devices))}
    subprocess.run(torchrun_command(job_file, devices), check=True, env=env)
