"""Rule ``learn2reg_split``: a Learn2Reg submission of a dataset of the config (mgicon.learn2reg.submission_job)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    import torch

    from mgicon.learn2reg import submission_job

    sm = snakemake  # noqa: F821
    torch.set_num_threads(max(1, sm.threads))
    submission_job(
        sm.params.config,
        sm.wildcards.dataset,
        sm.wildcards.split,
        sm.output.fields,
        sm.output.zip,
        checkpoint=sm.input.get("checkpoint"),
        log=lambda line: print(line, flush=True),
    )
