"""The tables' layout (columns from the config, rows from the evaluation) and their long-form summary.

Conventions (shared by :mod:`mgicon.tables.render` and :mod:`mgicon.tables`):

* A :class:`Column` is one column *group* of a paper table: a test dataset, a (moving, fixed) modality pair and a
  masking setting, with two metrics: the dataset's own (``dice`` or ``landmarks``) and
  ``negative_jacobian_percent``.
* Columns come in config order (datasets, then modality pairs, then masking), or, when the top-level
  ``evaluation.column_order`` gives tables' dataset orders, by table in those orders (:func:`columns_from_config`).
* A row is ``(io, method)``: IO blocks in the order ``noio, io-lncc2, io-mind``, methods ``identity,
  ground-truth, syn``, the config's variants in config order, ``released-*``, then anything else alphabetically.
* Summary values are in the tables' units: DICE(%) = 100 × mean Dice fraction, mTRE in mm, % J<0 in percent.
* Evaluation rows are those of ``results/eval/{method}/{io}/{dataset}.csv`` (strings; empty = not available); a
  registered pair is identified by :data:`PAIR_KEY`, which pairs the methods for the significance test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from mgicon.config import setting
from mgicon.data.registry import load_registry
from mgicon.tables.stats import bootstrap_ci, paired_test

JACOBIAN = "negative_jacobian_percent"
METRIC_LABELS = {"dice": "DICE(%)", "landmarks": "mTRE", JACOBIAN: "% J<0"}
#: eval-CSV field holding each metric, and the factor to the table's unit
METRIC_FIELDS = {"dice": ("dice", 100.0), "landmarks": ("mtre", 1.0), JACOBIAN: (JACOBIAN, 1.0)}
LOWER_IS_BETTER = {"dice": False, "landmarks": True, JACOBIAN: True}

IO_ORDER = ("noio", "io-lncc2", "io-mind")
IO_LABELS = {"noio": "w/o IO", "io-lncc2": "1-LNCC²", "io-mind": "MIND-SSC"}
PAPER_VARIANTS = (
    "unigradicon", "unigradicon-lncc2", "multigradicon-b", "multigradicon-f", "multigradicon-r", "multigradicon",
)
METHOD_LABELS = {
    "identity": "Identity (unregistered)",
    "ground-truth": "Ground truth (synthetic)",
    "syn": "SyN",
    "unigradicon": "uniGradICON",
    "unigradicon-lncc2": "uniGradICON-LNCC²",
    "multigradicon-b": "multiGradICON-B",
    "multigradicon-f": "multiGradICON-F",
    "multigradicon-r": "multiGradICON-R",
    "multigradicon": "multiGradICON",
    "multigradicon-f-erratum": "multiGradICON-F (Erratum's bug)",
}
MODALITY_LABELS = {
    "ct": "CT", "cbct": "CBCT", "t1w": "T1w", "t2w": "T2w", "t2": "T2", "t1ce": "T1ce", "flair": "FLAIR",
    "dess": "DESS", "mr": "MR", "mri": "MR", "fat": "FDIXON", "water": "WDIXON", "fa": "FA", "md": "MD",
}
PAIR_KEY = (
    "dataset", "moving_subject", "moving_timepoint", "moving_modality",
    "fixed_subject", "fixed_timepoint", "fixed_modality", "masked",
)
EVAL_COLUMNS = (
    "method", "io", *PAIR_KEY, "dice", "mtre", JACOBIAN,
)
SUMMARY_COLUMNS = (
    "table", "dataset", "column_label", "moving_modality", "fixed_modality", "masked", "metric", "io", "method",
    "n", "mean", "ci_low", "ci_high", "best", "p_vs_best",
)


@dataclass(frozen=True)
class Column:
    """One column group: dataset × (moving, fixed) modality pair × masking, shown with two metrics."""

    table: int
    dataset: str
    moving: str
    fixed: str
    masked: bool
    metric: str  # the dataset's metric: "dice" or "landmarks"

    @property
    def label(self) -> str:
        """The pair's heading, e.g. ``T1w/T2w`` or ``CT/CT (masked)``."""
        return f"{modality_label(self.moving)}/{modality_label(self.fixed)}" + (" (masked)" if self.masked else "")

    @property
    def metrics(self) -> tuple[str, str]:
        return self.metric, JACOBIAN


def modality_label(name: str) -> str:
    return MODALITY_LABELS.get(name, name)


def io_label(io: str) -> str:
    return IO_LABELS.get(io, io)


def method_label(method: str) -> str:
    """Display name; ``released-x`` → ``<x's display> (released)``; unknown names as they are."""
    if method.startswith("released-"):
        return f"{method_label(method[len('released-'):])} (released)"
    return METHOD_LABELS.get(method, method)


def as_bool(value: Any) -> bool:
    """``masked``/``best`` fields: bools, or the CSV strings ``1``/``0`` (``true``/``false`` accepted)."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def as_float(value: Any) -> float:
    """A CSV field as a float; empty or None → NaN."""
    if value is None or value == "":
        return math.nan
    return float(value)


def columns_from_config(config: Mapping[str, Any]) -> list[Column]:
    """Every column group of the config's test datasets.

    Config order of datasets, then modality pairs, then masking.  With ``evaluation.column_order`` (configs/paper.yaml
    gives the paper's printed order) the columns are grouped by table number instead, and within a table listed
    there the listed datasets come first, in that order, then the unlisted ones in config order.  A listed dataset
    without a column in that table is an error (a misspelt name would otherwise be ignored silently).
    """
    columns = []
    for spec in load_registry(config.get("datasets", {})).values():
        if "test" not in spec.stages:
            continue
        evaluation = spec.evaluation
        overrides = evaluation.get("tables") or {}
        metric = evaluation["metric"]
        for moving, fixed in spec.modality_pairs():
            table = overrides.get(f"{moving}/{fixed}", spec.table)
            if table is None:
                continue
            for masked in evaluation["masked"]:
                columns.append(Column(int(table), spec.name, moving, fixed, bool(masked), metric))
    order = {int(t): list(names) for t, names in setting(config, "evaluation.column_order").items()}
    for table, names in order.items():
        present = {c.dataset for c in columns if c.table == table}
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ValueError(
                f"evaluation.column_order[{table}]: {', '.join(unknown)} has no column in table {table} "
                f"(its columns: {', '.join(sorted(present)) or 'none'})"
            )

    def rank(column: Column) -> int:
        names = order.get(column.table, [])
        return names.index(column.dataset) if column.dataset in names else len(names)

    if not order:
        return columns
    # stable: unlisted datasets, and a dataset's own columns, keep config order
    return sorted(columns, key=lambda c: (c.table, rank(c)))


def row_key(io: str, method: str, variants: Sequence[str] = PAPER_VARIANTS) -> tuple:
    """Sort key of a row ``(io, method)`` (see the module conventions)."""
    methods = ["identity", "ground-truth", "syn", *variants]
    released = [f"released-{v}" for v in ("unigradicon", "multigradicon")]
    io_rank = IO_ORDER.index(io) if io in IO_ORDER else len(IO_ORDER)
    if method in methods:
        m_rank = (0, methods.index(method), "")
    elif method in released:
        m_rank = (1, released.index(method), "")
    elif method.startswith("released-"):
        m_rank = (2, 0, method)
    else:
        m_rank = (3, 0, method)
    return io_rank, io, m_rank


def _group(eval_rows: Iterable[Mapping[str, str]]) -> dict[tuple, dict[tuple[str, str], dict[tuple, Mapping]]]:
    """Eval rows → ``{(dataset, moving, fixed, masked): {(io, method): {pair key: row}}}`` (last row wins)."""
    groups: dict[tuple, dict[tuple[str, str], dict[tuple, Mapping]]] = {}
    for row in eval_rows:
        masked = as_bool(row.get("masked", "0"))
        where = (row["dataset"], row["moving_modality"], row["fixed_modality"], masked)
        pair = tuple(row.get(k, "") for k in PAIR_KEY[:-1]) + (masked,)
        groups.setdefault(where, {}).setdefault((row["io"], row["method"]), {})[pair] = row
    return groups


def _values(rows: Mapping[tuple, Mapping], metric: str) -> dict[tuple, float]:
    """``{pair key: value in table units}`` of the pairs where ``metric`` is available."""
    field, scale = METRIC_FIELDS[metric]
    out = {}
    for pair, row in rows.items():
        v = as_float(row.get(field))
        if not math.isnan(v):
            out[pair] = scale * v
    return out


def _best_flags(means: list[float], metric: str) -> list[bool]:
    finite = [m for m in means if not math.isnan(m)]
    if not finite:
        return [False] * len(means)
    target = min(finite) if LOWER_IS_BETTER.get(metric, True) else max(finite)
    return [not math.isnan(m) and math.isclose(m, target, rel_tol=1e-9, abs_tol=1e-12) for m in means]


def _p_against(values: Mapping[tuple, float], best: Mapping[tuple, float]) -> float:
    """Paired test on the pairs both rows scored."""
    common = sorted(set(values) & set(best))
    return paired_test([values[k] for k in common], [best[k] for k in common])


def summarize(
    eval_rows: Iterable[Mapping[str, str]],
    columns: Sequence[Column],
    seed: int = 0,
    variants: Sequence[str] = PAPER_VARIANTS,
) -> list[dict[str, Any]]:
    """Long-form summary: one row per (column, metric, io, method) with data (:data:`SUMMARY_COLUMNS`).

    ``best`` marks the best mean of its column and metric over all rows (ties allowed); ``p_vs_best`` is the paired
    test against the first best row (NaN on best rows and where fewer than two pairs match).
    """
    groups = _group(eval_rows)
    out: list[dict[str, Any]] = []
    for col in columns:
        by_row = groups.get((col.dataset, col.moving, col.fixed, col.masked), {})
        keys = sorted(by_row, key=lambda k: row_key(k[0], k[1], variants))
        for metric in col.metrics:
            values = {k: _values(by_row[k], metric) for k in keys}
            present = [k for k in keys if values[k]]
            means = [float(np.mean(list(values[k].values()))) for k in present]
            flags = _best_flags(means, metric)
            reference = next((k for k, f in zip(present, flags) if f), None)
            for k, mean, is_best in zip(present, means, flags):
                low, high = bootstrap_ci(list(values[k].values()), seed=seed)
                p = math.nan if is_best or reference is None else _p_against(values[k], values[reference])
                out.append({
                    "table": col.table, "dataset": col.dataset, "column_label": col.label,
                    "moving_modality": col.moving, "fixed_modality": col.fixed, "masked": col.masked,
                    "metric": metric, "io": k[0], "method": k[1], "n": len(values[k]),
                    "mean": mean, "ci_low": low, "ci_high": high, "best": is_best, "p_vs_best": p,
                })
    return out


def summary_csv_rows(summary: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows as CSV fields: bools as ``1``/``0``, NaN as empty."""
    def field(v: Any) -> Any:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, float) and math.isnan(v):
            return ""
        return v

    return [{k: field(v) for k, v in row.items()} for row in summary]


def read_summary_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows from CSV strings (or already typed) → typed rows."""
    out = []
    for row in rows:
        r = dict(row)
        r["table"] = int(r["table"])
        r["masked"], r["best"] = as_bool(r["masked"]), as_bool(r.get("best", False))
        r["n"] = int(r["n"])
        for k in ("mean", "ci_low", "ci_high", "p_vs_best"):
            r[k] = as_float(r.get(k))
        out.append(r)
    return out
