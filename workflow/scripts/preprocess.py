"""Rule ``preprocess``: normalised, network-shape volumes of a dataset (mgicon.data.build.build_preprocessed)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

from mgicon.data.build import build_preprocessed  # noqa: E402

with logged(snakemake):  # noqa: F821
    build_preprocessed(
        snakemake.wildcards.dataset,
        snakemake.params.config,
        snakemake.input[0],
        snakemake.output[0],  # noqa: F821
    )
