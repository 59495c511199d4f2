"""Tables 2–5 of the paper, reproduced from the evaluation CSVs, and compared with the published values.

* :func:`build_tables`: evaluation CSVs (``results/eval/{method}/{io}/{dataset}.csv``) → ``summary.csv`` (long
  form, :data:`mgicon.tables.layout.SUMMARY_COLUMNS`) and ``table{n}.csv/.md/.tex`` for every table number the
  config gives at least one column.
* :func:`write_claims`: the paper's findings checked on the evaluation CSVs (:mod:`mgicon.tables.claims`) →
  ``claims.md`` and ``claims.csv``.
* :func:`write_published_vs_reproduced`: a Markdown report joining the summary with the published cells
  (:mod:`mgicon.tables.published`) on ``(dataset, moving_modality, fixed_modality, masked, metric, io, method)``.

Values are in the tables' units throughout: DICE(%) (percent), mTRE (mm), % J<0 (percent).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mgicon.data.manifest import write_csv
from mgicon.records import EvalRecord, read_records
from mgicon.tables.layout import (
    SUMMARY_COLUMNS,
    Column,
    columns_from_config,
    io_label,
    method_label,
    read_summary_rows,
    summarize,
    summary_csv_rows,
)
from mgicon.tables.published import published_values
from mgicon.tables.render import cell_text, format_number, render_table, write_text
from mgicon.vocabulary import METRIC_LABELS, PAPER_VARIANTS

__all__ = [
    "Column",
    "build_tables",
    "columns_from_config",
    "published_values",
    "read_eval_csvs",
    "summarize",
    "write_claims",
    "write_published_vs_reproduced",
]

JOIN_KEY = ("dataset", "moving_modality", "fixed_modality", "masked", "metric", "io", "method")


def read_eval_csvs(paths: Iterable[str | os.PathLike]) -> list[EvalRecord]:
    """The records of every evaluation CSV (each must have :data:`~mgicon.vocabulary.EVAL_COLUMNS`)."""
    records: list[EvalRecord] = []
    for path in paths:
        records.extend(read_records(path, EvalRecord))
    return records


def build_tables(
    eval_csvs: Iterable[str | os.PathLike], config: Mapping[str, Any], out_dir: str | os.PathLike, seed: int = 0
) -> list[Path]:
    """Write ``summary.csv`` and every table with at least one column into ``out_dir``; returns the paths."""
    out_dir = Path(out_dir)
    columns = columns_from_config(config)
    variants = tuple(config.get("variants") or PAPER_VARIANTS)
    summary = summarize(read_eval_csvs(eval_csvs), columns, seed=seed, variants=variants)
    write_csv(summary_csv_rows(summary), out_dir / "summary.csv", SUMMARY_COLUMNS)
    written = [out_dir / "summary.csv"]
    for table in sorted({c.table for c in columns}):
        written += render_table(summary, columns, table, out_dir, variants)
    return written


def write_claims(
    eval_csvs: Iterable[str | os.PathLike],
    config: Mapping[str, Any],
    md_path: str | os.PathLike,
    csv_path: str | os.PathLike,
    seed: int = 0,
) -> list[Path]:
    """Check the paper's findings on the evaluation CSVs (and on the published cells where the config's datasets
    and columns have them); write ``claims.md`` and ``claims.csv``."""
    from mgicon.tables.claims import CLAIM_COLUMNS, claim_rows, evaluate_findings, render_markdown

    results = evaluate_findings(read_eval_csvs(eval_csvs), columns_from_config(config), published_values(), seed=seed)
    with_published = any(c.published for r in results for check in r.checks for c in check.comparisons)
    write_csv(claim_rows(results), csv_path, CLAIM_COLUMNS)
    return [write_text(md_path, render_markdown(results, with_published)), Path(csv_path)]


# ----------------------------------------------------------------------------------- published vs reproduced
def _key(row: Mapping[str, Any]) -> tuple:
    return tuple(bool(row[k]) if k == "masked" else row[k] for k in JOIN_KEY)


def _md(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _pair(row: Mapping[str, Any]) -> str:
    return f"{row['dataset']} {row['column_label']}"


def write_published_vs_reproduced(summary_rows: Iterable[Mapping[str, Any]], out_path: str | os.PathLike) -> Path:
    """Markdown: every published cell with a reproduced counterpart (published, reproduced, difference), then
    the published cells without one and the reproduced cells without a published value, grouped by column."""
    reproduced = {_key(r): r for r in read_summary_rows(summary_rows)}
    published = published_values()
    matched = [(p, reproduced[_key(p)]) for p in published if _key(p) in reproduced]
    published_keys = {_key(p) for p in published}
    lines = [
        "# Published vs reproduced (Tables 2–5)",
        "",
        "Published: the paper's value as printed (`mgicon/tables/data/published.csv`). Reproduced: mean [95% "
        "bootstrap CI] over n registered pairs. Difference: reproduced − published, in the table's units (DICE(%), "
        "mTRE in mm, % J<0 in percent). Cells join on dataset, modality pair, masking, metric, IO and method.",
        "",
        f"## Cells with a published and a reproduced value ({len(matched)})",
        "",
    ]
    if matched:
        lines += [
            _md(["Table", "Column", "Metric", "IO", "Method", "Published", "Reproduced", "n", "Difference", "Note"]),
            "|" + "---|" * 10,
        ]
        for p, r in matched:
            diff = r["mean"] - p["value"]
            lines.append(
                _md(
                    [
                        p["table"],
                        _pair(p),
                        METRIC_LABELS[p["metric"]],
                        io_label(p["io"]),
                        method_label(p["method"]),
                        p["value_text"],
                        cell_text(r),
                        r["n"],
                        format_number(p["metric"], diff, signed=True) or "–",
                        p["note"],
                    ]
                )
            )
    else:
        lines.append("None.")
    lines += _unmatched(
        "Published cells without a reproduced value", (p for p in published if _key(p) not in reproduced)
    )
    lines += _unmatched(
        "Reproduced cells without a published value", (r for key, r in reproduced.items() if key not in published_keys)
    )
    return write_text(out_path, "\n".join(lines) + "\n")


def _unmatched(title: str, cells: Iterable[Mapping[str, Any]]) -> list[str]:
    """A Markdown section counting ``cells`` (published or reproduced) per table and column."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["table"], _pair(c)), []).append(c)
    count = sum(len(v) for v in groups.values())
    lines = ["", f"## {title} ({count})", ""]
    if not groups:
        return lines + ["None."]
    lines += [_md(["Table", "Column", "Metrics", "Cells"]), "|---|---|---|---|"]
    for (table, pair), members in groups.items():
        metrics = ", ".join(dict.fromkeys(METRIC_LABELS[c["metric"]] for c in members))
        lines.append(_md([table, pair, metrics, len(members)]))
    return lines
