"""Rule ``train_stage``: one stage of one variant (mgicon.train.job.run_stage), under torchrun when the config
asks for several devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    sm = snakemake  # noqa: F821
    config, stage = sm.params.config, sm.wildcards.stage
    names = [Path(p).parent.name for p in sm.input.preprocessed]
    out_dir = Path(sm.output[0]).parent
    job = {
        "config": config, "variant": sm.wildcards.variant, "stage": stage, "out_dir": str(out_dir),
        "preprocessed": dict(zip(names, sm.input.preprocessed)),
        "pair_lists": dict(zip(names, sm.input.pairs)),
        "init_from": sm.input.get("init"),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = int(config["training"]["devices"])
    if devices > 1:
        from mgicon.fsutil import atomic_write_text

        atomic_write_text(out_dir / "job.json", json.dumps(job))
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc_per_node={devices}", "-m", "mgicon.train", str(out_dir / "job.json")]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(max(1, sm.threads // devices))})
    else:
        from mgicon.train.job import run_stage

        run_stage(config, job["variant"], stage, out_dir, job["preprocessed"], job["pair_lists"], job["init_from"],
                  progress=False)
