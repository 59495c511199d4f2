"""``results/summary.md``: what a pipeline run produced and where, and one MLflow run holding the tables and figures
as artifacts (so the tracking UI shows them next to the training and evaluation runs)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from mgicon.data.manifest import read_csv
from mgicon.fsutil import atomic_path


def _table_preview(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").rstrip().splitlines() if path.is_file() else []


def write_summary(
    config: Mapping[str, Any],
    tables: Sequence[str],
    figures: Sequence[str],
    models: Sequence[str],
    experiment_json: str | os.PathLike,
    out: str | os.PathLike,
) -> Path:
    """Write the Markdown summary and log the tables and figures to an MLflow run named ``summary``."""
    from mgicon.tracking import config_tracker

    experiment = json.loads(Path(experiment_json).read_text(encoding="utf-8"))
    evaluation = config.get("evaluation", {})
    lines = [
        "# mgicon run summary",
        "",
        f"- variants trained: {', '.join(config.get('variants', {})) or 'none'} ({len(models)} checkpoints)",
        f"- evaluation: baselines {', '.join(evaluation.get('baselines', []))}; IO settings "
        f"{', '.join(evaluation.get('io', []))}; {evaluation.get('io_iterations')} IO steps at lr "
        f"{evaluation.get('io_lr')}",
        f"- MLflow: experiment `{experiment['name']}` ({experiment['experiment_id']}) at `{experiment['tracking_uri']}`"
        f" — browse with `mlflow ui --backend-store-uri {experiment['tracking_uri']}`",
        "",
    ]
    claims = next((Path(p) for p in tables if Path(p).name == "claims.md"), None)
    if claims is not None and claims.is_file():
        head = claims.read_text(encoding="utf-8").split("\n## ", 1)[0].splitlines()[1:]
        lines += [f"## The paper's findings (`{claims}`)", *head, ""]
    for path in map(Path, tables):
        if path.suffix == ".md" and path.name.startswith("table"):
            lines += [f"## {path.stem.replace('table', 'Table ')} (`{path}`)", "", *_table_preview(path), ""]
    summary_csv = next((Path(p) for p in tables if Path(p).name == "summary.csv"), None)
    if summary_csv is not None:
        rows = read_csv(summary_csv)
        lines += [f"Summary cells: {len(rows)} (`{summary_csv}`).", ""]
    if figures:
        lines += ["## Figures", "", *[f"- `{p}`" for p in figures], ""]
    with atomic_path(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    tracker = config_tracker(
        config,
        "summary",
        params={"variants": list(config.get("variants", {})), "evaluation": dict(evaluation)},
        tags={"job": "summary"},
    )
    for folder, paths in (("tables", tables), ("figures", figures)):
        for path in paths:
            tracker.log_artifact(path, folder)
    tracker.log_artifact(out)
    tracker.end()
    return Path(out)
