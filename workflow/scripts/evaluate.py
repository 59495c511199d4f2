"""Rules ``evaluate`` and ``baseline``: one method in one IO setting on every test dataset
(mgicon.evaluate.job.run_evaluation)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    import os

    from mgicon.config import syn_threads
    from mgicon.vocabulary import SYN

    sm = snakemake  # noqa: F821
    if sm.wildcards.method == SYN:  # ANTs reads its thread count once, at its first use in a process
        syn = sm.params.config["evaluation"]["syn"]
        threads = syn_threads(syn["deterministic"], syn["threads"], sm.threads)
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import torch

    from mgicon.evaluate.job import DatasetFiles, run_evaluation

    torch.set_num_threads(max(1, sm.threads))
    names = sm.params.datasets
    files = {
        name: DatasetFiles(pairs, pre, csv, example)
        for name, pairs, pre, csv, example in zip(
            names, sm.input.pairs, sm.input.preprocessed, sm.output.csv, sm.output.example
        )
    }
    run_evaluation(
        sm.params.config,
        sm.wildcards.method,
        sm.wildcards.io,
        files,
        sm.input.get("checkpoint"),
        log=lambda line: print(line, flush=True),
    )
