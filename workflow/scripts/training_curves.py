"""Rule ``training_curves``: every variant's similarity and GradICON term over its training (from MLflow)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.tables.curves import variant_curves

    sm = snakemake  # noqa: F821
    variant_curves(sm.params.config, dict(zip(sm.params.variants, sm.input.runs)), sm.output[0])
