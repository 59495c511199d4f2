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
* Evaluation rows are :class:`~mgicon.records.EvalRecord` of ``results/eval/{method}/{io}/{dataset}.csv`` (None =
  not available), held per pair in a pandas frame (:func:`pair_values`); a registered pair is identified by
  :data:`~mgicon.vocabulary.PAIR_KEY` (column ``pair``), which pairs the methods for the significance test.
* Means are ``np.mean`` of a row's pairs in first-evaluated order (pandas groups and joins, numpy sums, so the cells
  are those of the former hand-written grouping to the last bit); the summary is a pandas frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from mgicon.config import setting
from mgicon.data.registry import load_registry
from mgicon.records import EvalRecord, parse_bool, parse_float
from mgicon.tables.stats import bootstrap_ci, paired_test
from mgicon.vocabulary import (
    CELL_KEY,
    DICE,
    GROUND_TRUTH,
    IDENTITY,
    IO_LABELS,
    IO_SETTINGS,
    LANDMARKS,
    METHOD_LABELS,
    METRIC_COLUMNS,
    NEGATIVE_JACOBIAN,
    PAIR_KEY,
    PAPER_VARIANTS,
    RELEASED_LABEL,
    RELEASED_MODELS,
    RELEASED_PREFIX,
    SYN,
    TEST,
)

#: eval-CSV field holding each metric, and the factor to the table's unit
METRIC_FIELDS = {m: (METRIC_COLUMNS[m], {DICE: 100.0}.get(m, 1.0)) for m in METRIC_COLUMNS}
LOWER_IS_BETTER = {DICE: False, LANDMARKS: True, NEGATIVE_JACOBIAN: True}

MODALITY_LABELS = {
    "ct": "CT",
    "cbct": "CBCT",
    "t1w": "T1w",
    "t2w": "T2w",
    "t2": "T2",
    "t1ce": "T1ce",
    "flair": "FLAIR",
    "dess": "DESS",
    "mr": "MR",
    "mri": "MR",
    "fat": "FDIXON",
    "water": "WDIXON",
    "fa": "FA",
    "md": "MD",
}
SUMMARY_COLUMNS = (
    *CELL_KEY,
    "n",
    "mean",
    "ci_low",
    "ci_high",
    "best",
    "p_vs_best",
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
        return self.metric, NEGATIVE_JACOBIAN


def modality_label(name: str) -> str:
    return MODALITY_LABELS.get(name, name)


def io_label(io: str) -> str:
    return IO_LABELS.get(io, io)


def method_label(method: str) -> str:
    """Display name; ``released-x`` → ``<x's display> (released)``; unknown names as they are."""
    if method.startswith(RELEASED_PREFIX):
        return RELEASED_LABEL.format(method_label(method[len(RELEASED_PREFIX) :]))
    return METHOD_LABELS.get(method, method)


def columns_from_config(config: Mapping[str, Any]) -> list[Column]:
    """Every column group of the config's test datasets.

    Config order of datasets, then modality pairs, then masking.  With ``evaluation.column_order`` (config/paper.yaml
    gives the paper's printed order) the columns are grouped by table number instead, and within a table listed
    there the listed datasets come first, in that order, then the unlisted ones in config order.  A listed dataset
    without a column in that table is an error (a misspelt name would otherwise be ignored silently).
    """
    columns = []
    for spec in load_registry(config.get("datasets", {})).values():
        if TEST not in spec.stages:
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
    methods = [IDENTITY, GROUND_TRUTH, SYN, *variants]
    released = [f"{RELEASED_PREFIX}{v}" for v in RELEASED_MODELS]
    io_rank = IO_SETTINGS.index(io) if io in IO_SETTINGS else len(IO_SETTINGS)
    if method in methods:
        m_rank = (0, methods.index(method), "")
    elif method in released:
        m_rank = (1, released.index(method), "")
    elif method.startswith(RELEASED_PREFIX):
        m_rank = (2, 0, method)
    else:
        m_rank = (3, 0, method)
    return io_rank, io, m_rank


#: the columns of :func:`pair_values` naming a column group, and a table row
WHERE = ("dataset", "moving_modality", "fixed_modality", "masked")
ROW = ("io", "method")


def _table_unit(record: EvalRecord, metric: str) -> float:
    value = getattr(record, METRIC_FIELDS[metric][0])
    return math.nan if value is None else METRIC_FIELDS[metric][1] * value


def pair_values(records: Iterable[EvalRecord]) -> pd.DataFrame:
    """Per-pair results in the tables' units: one row per ``(io, method, pair)``; columns ``io, method``, the
    :data:`~mgicon.vocabulary.PAIR_KEY` columns, ``pair`` (the key as a tuple) and one per metric (NaN: not
    available).  A pair evaluated twice in one setting keeps its last record, in its first record's place."""
    frame = pd.DataFrame(
        [
            {
                "io": r.io,
                "method": r.method,
                **dict(zip(PAIR_KEY, r.pair.key)),
                "pair": r.pair.key,
                **{m: _table_unit(r, m) for m in METRIC_FIELDS},
            }
            for r in records
        ],
        columns=[*ROW, *PAIR_KEY, "pair", *METRIC_FIELDS],
    )
    keys = [*ROW, "pair"]
    first = frame.groupby(keys, sort=False).ngroup().to_numpy()
    last = ~frame.duplicated(keys, keep="last").to_numpy()
    return frame[last].iloc[np.argsort(first[last], kind="stable")].reset_index(drop=True)


def group_pairs(frame: pd.DataFrame) -> dict[tuple, dict[tuple[str, str], pd.DataFrame]]:
    """:func:`pair_values` by column group and row: ``{(dataset, moving, fixed, masked): {(io, method): its pairs,
    indexed by pair key}}``, in first-evaluated order."""
    groups: dict[tuple, dict[tuple[str, str], pd.DataFrame]] = {}
    for (dataset, moving, fixed, masked, io, method), rows in frame.groupby([*WHERE, *ROW], sort=False):
        groups.setdefault((dataset, moving, fixed, bool(masked)), {})[(io, method)] = rows.set_index("pair")
    return groups


def metric_values(rows: pd.DataFrame | None, metric: str) -> pd.Series:
    """One row's values of ``metric`` in table units, by pair key, where available (``rows``: from
    :func:`group_pairs`; None: the row has no pairs)."""
    return pd.Series(dtype=float) if rows is None else rows[metric].dropna()


def _best_flags(means: list[float], metric: str) -> list[bool]:
    finite = [m for m in means if not math.isnan(m)]
    if not finite:
        return [False] * len(means)
    target = min(finite) if LOWER_IS_BETTER.get(metric, True) else max(finite)
    return [not math.isnan(m) and math.isclose(m, target, rel_tol=1e-9, abs_tol=1e-12) for m in means]


def paired(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """The pairs both ``a`` and ``b`` (values by pair key) have, in pair-key order: columns ``a``, ``b``."""
    return pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").sort_index()


def _p_against(values: pd.Series, best: pd.Series) -> float:
    """Paired test on the pairs both rows scored."""
    both = paired(values, best)
    return paired_test(both["a"].to_numpy(), both["b"].to_numpy())


def summarize(
    records: Iterable[EvalRecord],
    columns: Sequence[Column],
    seed: int = 0,
    variants: Sequence[str] = PAPER_VARIANTS,
) -> pd.DataFrame:
    """Long-form summary: one row per (column, metric, io, method) with data (:data:`SUMMARY_COLUMNS`).

    ``best`` marks the best mean of its column and metric over all rows (ties allowed); ``p_vs_best`` is the paired
    test against the first best row (NaN on best rows and where fewer than two pairs match).
    """
    groups = group_pairs(pair_values(records))
    out: list[dict[str, Any]] = []
    for col in columns:
        by_row = groups.get((col.dataset, col.moving, col.fixed, col.masked), {})
        keys = sorted(by_row, key=lambda k: row_key(k[0], k[1], variants))
        for metric in col.metrics:
            values = {k: metric_values(by_row[k], metric) for k in keys}
            present = [k for k in keys if not values[k].empty]
            means = [float(np.mean(values[k].to_numpy())) for k in present]
            flags = _best_flags(means, metric)
            reference = next((k for k, f in zip(present, flags) if f), None)
            for k, mean, is_best in zip(present, means, flags):
                low, high = bootstrap_ci(values[k].to_numpy(), seed=seed)
                p = math.nan if is_best or reference is None else _p_against(values[k], values[reference])
                out.append(
                    {
                        "table": col.table,
                        "dataset": col.dataset,
                        "column_label": col.label,
                        "moving_modality": col.moving,
                        "fixed_modality": col.fixed,
                        "masked": col.masked,
                        "metric": metric,
                        "io": k[0],
                        "method": k[1],
                        "n": len(values[k]),
                        "mean": mean,
                        "ci_low": low,
                        "ci_high": high,
                        "best": is_best,
                        "p_vs_best": p,
                    }
                )
    return pd.DataFrame(out, columns=list(SUMMARY_COLUMNS))


def summary_csv_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """Summary rows as CSV fields: bools as ``1``/``0``, NaN as empty, numbers as ``repr``."""

    def field(v: Any) -> Any:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, float) and math.isnan(v):
            return ""
        return v

    return [{k: field(v) for k, v in row.items()} for row in summary.to_dict("records")]


def read_summary_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Summary rows from CSV strings (or already typed) → typed rows (NaN where a number is empty)."""
    out = []
    for row in rows:
        r = dict(row)
        r["table"] = int(r["table"])
        r["masked"], r["best"] = parse_bool(r["masked"], "masked"), parse_bool(r.get("best", False), "best")
        r["n"] = int(r["n"])
        for k in ("mean", "ci_low", "ci_high", "p_vs_best"):
            value = parse_float(r.get(k), k)
            r[k] = math.nan if value is None else value
        out.append(r)
    return out
