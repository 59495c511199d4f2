"""Rule ``figure_panels``: fixed, moving, warped, grid and Jacobian of one test pair per method (Fig. 1–2)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.tables.panels import example_panels

    sm = snakemake  # noqa: F821
    example_panels(
        sm.params.config,
        sm.wildcards.dataset,
        dict(zip(sm.params.methods, sm.input.examples)),
        sm.input.pairs,
        sm.input.preprocessed,
        sm.output[0],
    )
