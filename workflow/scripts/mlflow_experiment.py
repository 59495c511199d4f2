"""Rule ``mlflow_experiment``: create the MLflow experiment once, before any job logs to it."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.tracking import ensure_experiment

    record = ensure_experiment(snakemake.params.config)  # noqa: F821
    print(f"MLflow experiment {record['name']} ({record['experiment_id']}) at {record['tracking_uri']}")
    out = Path(snakemake.output[0])  # noqa: F821
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out)
