"""Rule ``pair_list``: one dataset's pairs in one stage (mgicon.data.build.build_pair_list)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

from mgicon.data.build import build_pair_list  # noqa: E402

with logged(snakemake):  # noqa: F821
    w = snakemake.wildcards  # noqa: F821
    build_pair_list(w.stage, w.dataset, snakemake.params.config, snakemake.input[0], snakemake.output[0])  # noqa: F821
