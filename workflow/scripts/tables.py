"""Rule ``tables``: Tables 2–5 in the paper's layout from the evaluation CSVs, and the published values beside
them (mgicon.tables)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.data.manifest import read_csv
    from mgicon.tables import build_tables, write_published_vs_reproduced

    sm = snakemake  # noqa: F821
    written = build_tables(list(sm.input), sm.params.config, sm.params.out_dir, seed=int(sm.params.config["seed"]))
    for path in written:
        print(f"wrote {path}")
    write_published_vs_reproduced(read_csv(sm.output.summary), sm.output.published)
    print(f"wrote {sm.output.published}")
