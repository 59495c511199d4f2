"""Rule ``pair_weights``: a stage's weights table (mgicon.data.build.build_weights)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

from mgicon.data.build import build_weights  # noqa: E402

with logged(snakemake):  # noqa: F821
    lists = dict(zip(snakemake.params.datasets, snakemake.input))  # noqa: F821
    build_weights(snakemake.wildcards.stage, snakemake.params.config, lists, snakemake.output[0])  # noqa: F821
