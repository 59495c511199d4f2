"""Rule ``model``: a variant's final checkpoint (its last stage's weights) and its MLflow run ids."""

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake is injected)
from _log import logged  # noqa: E402

with logged(snakemake):  # noqa: F821
    from mgicon.fsutil import atomic_path, atomic_write_text

    final = Path(snakemake.input[0])  # noqa: F821
    out = Path(snakemake.output.checkpoint)  # noqa: F821
    with atomic_path(out) as tmp:
        shutil.copyfile(final, tmp)
    stages = {}
    for run_file in sorted(final.parent.parent.glob("*/mlflow_run.json")):
        stages[run_file.parent.name] = json.loads(run_file.read_text(encoding="utf-8"))
    last = json.loads((final.parent / "mlflow_run.json").read_text(encoding="utf-8"))
    record = {"run_id": last["run_id"], "tracking_uri": last["tracking_uri"], "checkpoint": str(out), "stages": stages}
    atomic_write_text(snakemake.output.run, json.dumps(record, indent=2))  # noqa: F821
