"""Rule ``summary``: ``results/summary.md`` (what ran, where its outputs are) and one MLflow run holding the
tables and figures as artifacts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.tables.summary import write_summary

    sm = snakemake  # noqa: F821
    write_summary(
        sm.params.config, sm.input.tables, sm.input.figures, sm.input.models, sm.input.experiment, sm.output[0]
    )
