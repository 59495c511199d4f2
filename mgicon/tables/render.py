"""Rendering of one paper table from the summary: ``table{n}.csv`` (wide), ``table{n}.md`` and ``table{n}.tex``.

Layout as in the paper: rows ``(io, method)`` grouped by IO block, the IO label on a block's first row; two header
rows (dataset + modality pair, then the metrics).  Cells are ``mean [low, high]`` (95% percentile-bootstrap CI of
the mean): DICE(%) with one decimal, mTRE with two, % J<0 as ``1.2e-3`` (or ``0``).  **Bold**: the best mean of the
column; † : worse than the best at p < 0.05 (two-sided paired Wilcoxon signed-rank test on the pairs both scored).
The wide CSV holds the means only (6 significant digits), one column per (dataset, pair, metric).  Every file is
written atomically (temporary file, then rename).

The table model is a pandas grid of the long-form summary (:func:`table_grid`: the summary unstacked to one row per
``(io, method)`` and one column per cell); the Markdown and LaTeX lines are joined here, as pandas' ``to_markdown``
and ``to_latex`` cannot write the paper's two header rows, IO blocks and emphasis.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from mgicon.data.manifest import write_csv
from mgicon.fsutil import atomic_write_text
from mgicon.tables.layout import Column, io_label, method_label, row_key
from mgicon.vocabulary import DICE, METRIC_LABELS, NEGATIVE_JACOBIAN, PAPER_VARIANTS

ALPHA = 0.05
CAPTION = (
    "mean [95% bootstrap CI] over registered pairs; DICE(%) = 100 × mean Dice, mTRE in mm, "
    "% J<0 = percent of voxels with a negative Jacobian determinant. Bold: best in the column; "
    "†: worse than the best at p < 0.05 (two-sided paired Wilcoxon signed-rank test)."
)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically (:func:`mgicon.fsutil.atomic_write_text`); return the path."""
    atomic_write_text(path, text)
    return Path(path)


# ------------------------------------------------------------------------------------------------ number formats
def format_number(metric: str, value: float, signed: bool = False) -> str:
    """A value in the paper's style: DICE(%) ``76.2``, mTRE ``2.26``, % J<0 ``9.3e-5`` / ``0``."""
    if value is None or math.isnan(value):
        return ""
    sign = "+" if signed and value > 0 else ""
    if metric == NEGATIVE_JACOBIAN:
        if value == 0:
            return "0"
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{sign}{mantissa}e{int(exponent)}"
    return f"{sign}{value:.1f}" if metric == DICE else f"{sign}{value:.2f}"


def cell_text(row: Mapping[str, Any]) -> str:
    """``mean [low, high]`` of a summary row (no emphasis)."""
    m = row["metric"]
    return f"{format_number(m, row['mean'])} [{format_number(m, row['ci_low'])}, {format_number(m, row['ci_high'])}]"


def significantly_worse(row: Mapping[str, Any]) -> bool:
    p = row.get("p_vs_best", math.nan)
    return not row["best"] and p is not None and not math.isnan(p) and p < ALPHA


# --------------------------------------------------------------------------------------------------- table model
#: the summary fields a cell shows, and the summary columns that name a cell
FIELDS = ("mean", "ci_low", "ci_high", "best", "p_vs_best")
CELL = ("dataset", "moving_modality", "fixed_modality", "masked", "metric")


def table_grid(
    summary: pd.DataFrame, columns: Sequence[Column], table: int, variants: Sequence[str] = PAPER_VARIANTS
) -> pd.DataFrame:
    """Table ``table`` of the long-form summary: index ``(io, method)`` in row order (every row the table's summary
    has), columns ``(field, *CELL)`` for each of :data:`FIELDS` and each cell of ``columns``, in column order (NaN:
    the row has no value there)."""
    mine = summary[summary["table"] == table]
    rows = sorted(set(zip(mine["io"], mine["method"])), key=lambda k: row_key(k[0], k[1], variants))
    cells = [(f, c.dataset, c.moving, c.fixed, c.masked, m) for f in FIELDS for c in columns for m in c.metrics]
    index = pd.MultiIndex.from_tuples(rows, names=["io", "method"])
    header = pd.MultiIndex.from_tuples(cells, names=["field", *CELL])
    if mine.empty:
        return pd.DataFrame(index=index, columns=header, dtype=float)
    wide = mine.set_index(["io", "method", *CELL])[list(FIELDS)].unstack(list(CELL))
    return wide.reindex(index=index, columns=header)


def _cells(grid: pd.DataFrame, io: str, method: str) -> list[dict[str, Any] | None]:
    """One row's cells, column by column and metric by metric: the summary fields, or None (no value)."""
    row = grid.loc[(io, method)]
    out: list[dict[str, Any] | None] = []
    for cell in grid["mean"].columns:
        values = {f: row[(f, *cell)] for f in FIELDS}
        out.append(None if pd.isna(values["mean"]) else {**values, "metric": cell[-1]})
    return out


def wide_header(columns: Sequence[Column]) -> list[str]:
    return ["io", "method"] + [f"{c.dataset} {c.label} {METRIC_LABELS[m]}" for c in columns for m in c.metrics]


# ------------------------------------------------------------------------------------------------------- writers
def write_wide_csv(grid: pd.DataFrame, columns: Sequence[Column], path: Path) -> Path:
    """The means of :func:`table_grid`, one column per :func:`wide_header` (empty: no value)."""
    header = wide_header(columns)
    means = grid["mean"].map(lambda v: "" if pd.isna(v) else f"{v:.6g}")
    out = [dict(zip(header, [io, method, *values])) for (io, method), values in zip(means.index, means.to_numpy())]
    write_csv(out, path, header)
    return path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(grid: pd.DataFrame, columns: Sequence[Column], table: int) -> str:
    lines = [f"**Table {table}** (reproduced): {CAPTION}", ""]
    head = ["IO", "Method"]
    for col in columns:
        head += [_md_escape(f"{col.dataset} {col.label}"), ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    lines.append("| | | " + " | ".join(METRIC_LABELS[m] for c in columns for m in c.metrics) + " |")
    previous_io = None
    for io, method in grid.index:
        cells = [io_label(io) if io != previous_io else "", _md_escape(method_label(method))]
        previous_io = io
        for r in _cells(grid, io, method):
            if r is None:
                cells.append("–")
                continue
            text = cell_text(r)
            cells.append(f"**{text}**" if r["best"] else text + ("†" if significantly_worse(r) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "²": r"$^2$",
    "<": r"$<$",
    ">": r"$>$",
    "†": r"$^\dagger$",
    "×": r"$\times$",
    "−": "-",
    "–": "--",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and ², <, †, × as math) so that any label compiles."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(grid: pd.DataFrame, columns: Sequence[Column], table: int) -> str:
    spec = "ll" + "".join("|cc" for _ in columns)
    lines = [
        f"% Table {table}, reproduced (written by mgicon.tables)",
        r"\begin{table}",
        r"\centering",
        rf"\caption{{Table {table} (reproduced): {tex_escape(CAPTION)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        " & & "
        + " & ".join(rf"\multicolumn{{2}}{{c}}{{{tex_escape(f'{c.dataset} {c.label}')}}}" for c in columns)
        + r" \\",
        " & & " + " & ".join(tex_escape(METRIC_LABELS[m]) for c in columns for m in c.metrics) + r" \\",
    ]
    previous_io = None
    for io, method in grid.index:
        if io != previous_io:
            lines.append(r"\hline")
        cells = [tex_escape(io_label(io)) if io != previous_io else "", tex_escape(method_label(method))]
        previous_io = io
        for r in _cells(grid, io, method):
            if r is None:
                cells.append("--")
                continue
            text = tex_escape(cell_text(r))
            dagger = r"$^\dagger$" if significantly_worse(r) else ""
            cells.append(rf"\textbf{{{text}}}" if r["best"] else text + dagger)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render_table(
    summary: pd.DataFrame,
    columns: Sequence[Column],
    table: int,
    out_dir: str | os.PathLike,
    variants: Sequence[str] = PAPER_VARIANTS,
) -> list[Path]:
    """Write ``table{n}.csv``, ``.md`` and ``.tex`` for the ``columns`` of table ``table`` from the long-form
    ``summary`` (:func:`mgicon.tables.layout.summarize`); returns the paths."""
    out_dir = Path(out_dir)
    cols = [c for c in columns if c.table == table]
    grid = table_grid(summary, cols, table, variants)
    return [
        write_wide_csv(grid, cols, out_dir / f"table{table}.csv"),
        write_text(out_dir / f"table{table}.md", markdown(grid, cols, table)),
        write_text(out_dir / f"table{table}.tex", latex(grid, cols, table)),
    ]
