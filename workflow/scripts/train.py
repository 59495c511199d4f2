"""Rule ``train_stage``: one stage of one variant (mgicon.train.launch), under torchrun when the config asks for
several devices."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.train.launch import TrainJob, launch
    from mgicon.weights import resolve_model

    sm = snakemake  # noqa: F821
    names = [Path(p).parent.name for p in sm.input.preprocessed]  # results/data/{dataset}/preprocessed.csv
    job = TrainJob(
        config=sm.params.config,
        variant=sm.wildcards.variant,
        stage=sm.wildcards.stage,
        out_dir=str(Path(sm.output[0]).parent),
        preprocessed=dict(zip(names, sm.input.preprocessed)),
        pair_lists=dict(zip(names, sm.input.pairs)),
        init_from=sm.input.get("init") or (str(resolve_model(sm.params.init_model)) if sm.params.init_model else None),
    )
    launch(job, threads=sm.threads)
