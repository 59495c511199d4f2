"""Rule ``claims``: the paper's findings checked on the run's evaluation CSVs (mgicon.tables.claims)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.tables import write_claims

    sm = snakemake  # noqa: F821
    for path in write_claims(
        list(sm.input), sm.params.config, sm.output.md, sm.output.csv, seed=int(sm.params.config["seed"])
    ):
        print(f"wrote {path}")
