"""Rule ``preprocess``: normalised, network-shape volumes of a dataset (mgicon.data.build.preprocess_dataset)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

from mgicon.data.build import preprocess_dataset  # noqa: E402

with logged(snakemake):  # noqa: F821
    preprocess_dataset(
        snakemake.wildcards.dataset,
        snakemake.params.config,
        snakemake.input[0],
        snakemake.output[0],  # noqa: F821
    )
