"""Rule ``mlflow_experiment``: create the MLflow experiment once, before any job logs to it."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.fsutil import atomic_write_text
    from mgicon.tracking import ensure_experiment

    record = ensure_experiment(snakemake.params.config)  # noqa: F821
    print(f"MLflow experiment {record['name']} ({record['experiment_id']}) at {record['tracking_uri']}")
    atomic_write_text(snakemake.output[0], json.dumps(record, indent=2))  # noqa: F821
