"""Rendering of one paper table from the summary: ``table{n}.csv`` (wide), ``table{n}.md`` and ``table{n}.tex``.

Layout as in the paper: rows ``(io, method)`` grouped by IO block, the IO label on a block's first row; two header
rows (dataset + modality pair, then the metrics).  Cells are ``mean [low, high]`` (95% percentile-bootstrap CI of
the mean): DICE(%) with one decimal, mTRE with two, % J<0 as ``1.2e-3`` (or ``0``).  **Bold**: the best mean of the
column; † : worse than the best at p < 0.05 (two-sided paired Wilcoxon signed-rank test on the pairs both scored).
The wide CSV holds the means only (6 significant digits), one column per (dataset, pair, metric).  Every file is
written atomically (temporary file, then rename).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mgicon.data.manifest import write_csv
from mgicon.fsutil import atomic_write_text
from mgicon.tables.layout import (
    JACOBIAN,
    METRIC_LABELS,
    PAPER_VARIANTS,
    Column,
    io_label,
    method_label,
    row_key,
)

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
    if metric == JACOBIAN:
        if value == 0:
            return "0"
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{sign}{mantissa}e{int(exponent)}"
    return f"{sign}{value:.1f}" if metric == "dice" else f"{sign}{value:.2f}"


def cell_text(row: Mapping[str, Any]) -> str:
    """``mean [low, high]`` of a summary row (no emphasis)."""
    m = row["metric"]
    return f"{format_number(m, row['mean'])} [{format_number(m, row['ci_low'])}, {format_number(m, row['ci_high'])}]"


def significantly_worse(row: Mapping[str, Any]) -> bool:
    p = row.get("p_vs_best", math.nan)
    return not row["best"] and p is not None and not math.isnan(p) and p < ALPHA


# --------------------------------------------------------------------------------------------------- table model
def _index(summary: Iterable[Mapping[str, Any]], table: int) -> dict[tuple, Mapping[str, Any]]:
    fields = ("dataset", "moving_modality", "fixed_modality", "masked", "metric", "io", "method")
    return {tuple(bool(r[f]) if f == "masked" else r[f] for f in fields): r for r in summary if r["table"] == table}


def _rows(index: Mapping[tuple, Any], variants: Sequence[str]) -> list[tuple[str, str]]:
    keys = {(k[5], k[6]) for k in index}
    return sorted(keys, key=lambda k: row_key(k[0], k[1], variants))


def _cells(index: Mapping[tuple, Mapping[str, Any]], columns: Sequence[Column], io: str, method: str
           ) -> list[Mapping[str, Any] | None]:
    """One row's summary cells, column by column and metric by metric (None: no value)."""
    cells = []
    for col in columns:
        for metric in col.metrics:
            r = index.get(_cell_key(col, metric, io, method))
            cells.append(None if r is None or math.isnan(r["mean"]) else r)
    return cells


def _cell_key(col: Column, metric: str, io: str, method: str) -> tuple:
    return col.dataset, col.moving, col.fixed, col.masked, metric, io, method


def wide_header(columns: Sequence[Column]) -> list[str]:
    return ["io", "method"] + [f"{c.dataset} {c.label} {METRIC_LABELS[m]}" for c in columns for m in c.metrics]


# ------------------------------------------------------------------------------------------------------- writers
def write_wide_csv(index: Mapping[tuple, Mapping[str, Any]], columns: Sequence[Column], rows, path: Path) -> Path:
    header = wide_header(columns)
    out = []
    for io, method in rows:
        values = ["" if r is None else f"{r['mean']:.6g}" for r in _cells(index, columns, io, method)]
        out.append(dict(zip(header, [io, method, *values])))
    write_csv(out, path, header)
    return path


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(index: Mapping[tuple, Mapping[str, Any]], columns: Sequence[Column], rows, table: int) -> str:
    lines = [f"**Table {table}** (reproduced): {CAPTION}", ""]
    head = ["IO", "Method"]
    for col in columns:
        head += [_md_escape(f"{col.dataset} {col.label}"), ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    lines.append("| | | " + " | ".join(METRIC_LABELS[m] for c in columns for m in c.metrics) + " |")
    previous_io = None
    for io, method in rows:
        cells = [io_label(io) if io != previous_io else "", _md_escape(method_label(method))]
        previous_io = io
        for r in _cells(index, columns, io, method):
            if r is None:
                cells.append("–")
                continue
            text = cell_text(r)
            cells.append(f"**{text}**" if r["best"] else text + ("†" if significantly_worse(r) else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "²": r"$^2$", "<": r"$<$", ">": r"$>$",
    "†": r"$^\dagger$",
    "×": r"$\times$", "−": "-", "–": "--",
}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters (and ², <, †, × as math) so that any label compiles."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def latex(index: Mapping[tuple, Mapping[str, Any]], columns: Sequence[Column], rows, table: int) -> str:
    spec = "ll" + "".join("|cc" for _ in columns)
    lines = [
        f"% Table {table}, reproduced (written by mgicon.tables)",
        r"\begin{table}",
        r"\centering",
        rf"\caption{{Table {table} (reproduced): {tex_escape(CAPTION)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\hline",
        " & & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{tex_escape(f'{c.dataset} {c.label}')}}}" for c in columns)
        + r" \\",
        " & & " + " & ".join(tex_escape(METRIC_LABELS[m]) for c in columns for m in c.metrics) + r" \\",
    ]
    previous_io = None
    for io, method in rows:
        if io != previous_io:
            lines.append(r"\hline")
        cells = [tex_escape(io_label(io)) if io != previous_io else "", tex_escape(method_label(method))]
        previous_io = io
        for r in _cells(index, columns, io, method):
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
    summary: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    table: int,
    out_dir: str | os.PathLike,
    variants: Sequence[str] = PAPER_VARIANTS,
) -> list[Path]:
    """Write ``table{n}.csv``, ``.md`` and ``.tex`` for the ``columns`` of table ``table``; returns the paths."""
    out_dir = Path(out_dir)
    cols = [c for c in columns if c.table == table]
    index = _index(summary, table)
    rows = _rows(index, variants)
    return [
        write_wide_csv(index, cols, rows, out_dir / f"table{table}.csv"),
        write_text(out_dir / f"table{table}.md", markdown(index, cols, rows, table)),
        write_text(out_dir / f"table{table}.tex", latex(index, cols, rows, table)),
    ]
