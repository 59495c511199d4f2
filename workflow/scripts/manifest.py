"""Rule ``manifest``: a dataset's images as manifest rows (mgicon.data.build.build_manifest)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

from mgicon.data.build import build_manifest  # noqa: E402

with logged(snakemake):  # noqa: F821
    build_manifest(snakemake.wildcards.dataset, snakemake.params.config, snakemake.output[0])  # noqa: F821
