"""Rule ``summary_plot``: one table's main metrics as bar charts with their 95 % intervals."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.data.manifest import read_csv
    from mgicon.tables.figures import summary_plot

    sm = snakemake  # noqa: F821
    n = sm.wildcards.n
    rows = [r for r in read_csv(sm.input[0]) if str(r["table"]) == str(n)]
    summary_plot(rows, sm.output[0], title=f"Table {n}")
