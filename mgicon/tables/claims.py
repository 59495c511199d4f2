"""The paper's findings checked on the reproduced tables (and, where published, on the paper's own cells).

The findings are data (``data/findings.yaml``: an id, the paper's words and where they stand, and the checks that
the words imply on table cells); this module evaluates them on the per-pair evaluation rows of a run.

Conventions:

* A *side* of a comparison is a method (or a group of methods) at one IO setting.  Its value on a pair is the
  method's value in the table's unit (:func:`~mgicon.tables.layout.pair_values`); a group's is the mean over its
  methods, on the pairs every one of them scored.  Means, 95 % bootstrap intervals and the paired Wilcoxon test
  (:mod:`mgicon.tables.stats`) are taken over the pairs both sides scored.
* ``difference`` is a − b in the table's unit, ``gain`` the same signed so that positive means a is better (Dice
  up, mTRE down).  PASS and FAIL are decided on the means (with the check's margin or tolerance); the paired test
  is reported beside them, not used: the demo's few test pairs cannot reach significance.
* A check's quantifier (*all*, *most*) applies to the comparisons of each a-side on its own (each method of an
  ``each`` group, each IO setting of ``any-io``); the check holds when it holds for every a-side.
* A finding PASSes when each of its checks does, FAILs when one fails, and is n.a. when a check has no comparable
  column (a method, an IO setting or a table that the run does not have).
* Published cells (:func:`mgicon.tables.published.published_values`) are checked the same way on their printed
  means, without intervals or tests; the groups' means are the means of the published methods' cells.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from mgicon.records import EvalRecord
from mgicon.tables.layout import (
    LOWER_IS_BETTER,
    Column,
    group_pairs,
    io_label,
    method_label,
    metric_values,
    pair_values,
    paired,
)
from mgicon.tables.stats import bootstrap_ci, paired_test
from mgicon.vocabulary import DICE, IO_OPTIMIZED, LANDMARKS, METRIC_LABELS

FINDINGS_FILE = Path(__file__).with_name("data") / "findings.yaml"
PASS, FAIL, NA = "PASS", "FAIL", "n.a."
RELATIONS = ("better", "worse", "not_better", "not_worse", "close")
QUANTIFIERS = ("all", "most")
ANY_IO = "any-io"
SAME = "same"
FAT_WATER = frozenset({"fat", "water"})
CLAIM_COLUMNS = (
    "finding",
    "status",
    "published_status",
    "check",
    "check_status",
    "table",
    "dataset",
    "column_label",
    "metric",
    "a",
    "a_io",
    "b",
    "b_io",
    "n",
    "a_mean",
    "a_ci_low",
    "a_ci_high",
    "b_mean",
    "b_ci_low",
    "b_ci_high",
    "difference",
    "p_value",
    "holds",
    "published_a",
    "published_b",
    "published_holds",
)


@dataclass(frozen=True)
class Side:
    methods: tuple[str, ...]
    io: str
    label: str


@dataclass(frozen=True)
class Check:
    a: Mapping[str, Any]
    b: Mapping[str, Any]
    relation: str
    quantifier: str = "all"
    margin: Mapping[str, float] = field(default_factory=dict)
    tolerance: Mapping[str, float] = field(default_factory=dict)
    columns: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    id: str
    source: str
    words: str
    claim: str
    checks: tuple[Check, ...]


@dataclass
class Comparison:
    """One comparison of two sides on one column and metric."""

    column: Column
    metric: str
    a: Side
    b: Side
    n: int = 0
    a_mean: float = math.nan
    a_ci: tuple[float, float] = (math.nan, math.nan)
    b_mean: float = math.nan
    b_ci: tuple[float, float] = (math.nan, math.nan)
    p_value: float = math.nan
    holds: bool | None = None
    published: tuple[float, float] | None = None
    published_holds: bool | None = None

    @property
    def difference(self) -> float:
        return self.a_mean - self.b_mean


@dataclass
class CheckResult:
    check: Check
    comparisons: list[Comparison]
    status: str
    published_status: str


@dataclass
class FindingResult:
    finding: Finding
    checks: list[CheckResult]
    status: str
    published_status: str


# ------------------------------------------------------------------------------------------------ the findings
def _check(raw: Mapping[str, Any], where: str) -> Check:
    unknown = set(raw) - {"a", "b", "relation", "quantifier", "margin", "tolerance", "columns"}
    if unknown:
        raise ValueError(f"{where}: unknown check key(s) {sorted(unknown)}")
    if raw.get("relation") not in RELATIONS:
        raise ValueError(f"{where}: relation must be one of {RELATIONS}, got {raw.get('relation')!r}")
    if raw.get("quantifier", "all") not in QUANTIFIERS:
        raise ValueError(f"{where}: quantifier must be one of {QUANTIFIERS}, got {raw.get('quantifier')!r}")
    return Check(
        a=dict(raw["a"]),
        b=dict(raw["b"]),
        relation=raw["relation"],
        quantifier=raw.get("quantifier", "all"),
        margin=dict(raw.get("margin") or {}),
        tolerance=dict(raw.get("tolerance") or {}),
        columns=dict(raw.get("columns") or {}),
    )


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict[str, tuple[str, ...]], tuple[Finding, ...]]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    groups = {k: tuple(v) for k, v in (data.get("groups") or {}).items()}
    findings = []
    for raw in data["findings"]:
        where = f"{path}: finding {raw.get('id', '?')}"
        checks = tuple(_check(c, f"{where}, check {i + 1}") for i, c in enumerate(raw["checks"]))
        findings.append(Finding(raw["id"], raw["source"], " ".join(raw["words"].split()), raw["claim"], checks))
    ids = [f.id for f in findings]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: finding ids repeat")
    return groups, tuple(findings)


def load_findings(path: str | os.PathLike = FINDINGS_FILE) -> tuple[dict[str, tuple[str, ...]], tuple[Finding, ...]]:
    """``(groups, findings)`` of a findings file (default: the package's ``data/findings.yaml``)."""
    return _load(str(path))


# ------------------------------------------------------------------------------------------------- selection
def column_selected(column: Column, selector: Mapping[str, Any]) -> bool:
    """Whether ``column`` is one of those a check's ``columns`` selector names (see ``data/findings.yaml``)."""
    if "tables" in selector and column.table not in selector["tables"]:
        return False
    mono = column.moving == column.fixed
    if selector.get("pair") == "monomodal" and not mono:
        return False
    if selector.get("pair") == "multimodal" and mono:
        return False
    if "involves" in selector and not ({column.moving, column.fixed} & set(selector["involves"])):
        return False
    fat_water = {column.moving, column.fixed} == FAT_WATER
    if selector.get("fat_water") == "only" and not fat_water:
        return False
    if selector.get("fat_water") == "exclude" and fat_water:
        return False
    return True


def _sides(check: Check, groups: Mapping[str, Sequence[str]], present: set[str]) -> list[tuple[Side, Side]]:
    """The (a, b) side pairs of a check, restricted to the methods the run has."""

    def methods(spec: Mapping[str, Any]) -> tuple[str, ...]:
        if "group" in spec:
            return tuple(m for m in groups[spec["group"]] if m in present)
        return (spec["method"],) if spec["method"] in present or spec["method"] == SAME else ()

    def label(spec: Mapping[str, Any], chosen: Sequence[str]) -> str:
        if "group" in spec and len(chosen) != 1:
            return f"{spec['group']} ({', '.join(method_label(m) for m in chosen)})"
        return method_label(chosen[0])

    ios_a = list(IO_OPTIMIZED) if check.a["io"] == ANY_IO else [check.a["io"]]
    chosen_a = methods(check.a)
    chosen_b = methods(check.b)
    if not chosen_a or not chosen_b:
        return []
    out = []
    singles = [(m,) for m in chosen_a] if check.a.get("each") else [chosen_a]
    same = check.b.get("method") == SAME
    for io in ios_a:
        for a_methods in singles:
            a = Side(a_methods, io, label(check.a, a_methods))
            b = (
                Side(a_methods, check.b["io"], a.label)
                if same
                else Side(chosen_b, check.b["io"], label(check.b, chosen_b))
            )
            out.append((a, b))
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def _holds(relation: str, gain: float, metric: str, check: Check) -> bool:
    """Whether ``relation`` holds for ``gain`` (a's advantage over b, in the table's unit)."""
    margin = float(check.margin.get(metric, 0.0))
    tolerance = float(check.tolerance.get(metric, 0.0))
    return {
        "better": gain > margin,
        "worse": gain < -margin,
        "not_better": gain <= margin,
        "not_worse": gain >= -tolerance,
        "close": abs(gain) <= tolerance,
    }[relation]


def _gain(difference: float, metric: str) -> float:
    return -difference if LOWER_IS_BETTER.get(metric, False) else difference


def _side_values(by_row: Mapping[tuple[str, str], pd.DataFrame], side: Side, metric: str) -> pd.Series:
    """Per-pair values of a side, by pair key (the mean over its methods on the pairs all of them scored)."""
    per_method = [metric_values(by_row.get((side.io, m)), metric) for m in side.methods]
    if not per_method or any(v.empty for v in per_method):
        return pd.Series(dtype=float)
    common = pd.concat(per_method, axis=1, join="inner")
    return pd.Series([float(np.mean(v)) for v in common.to_numpy()], index=common.index, dtype=float)


def _published_mean(published: Mapping[tuple, float], column: Column, metric: str, side: Side) -> float:
    values = [
        published.get((column.dataset, column.moving, column.fixed, column.masked, metric, side.io, m))
        for m in side.methods
    ]
    if not values or any(v is None for v in values):
        return math.nan
    return float(np.mean(values))


def _status(holds: Sequence[bool], quantifier: str) -> str:
    if not holds:
        return NA
    ok = all(holds) if quantifier == "all" else sum(holds) > len(holds) / 2
    return PASS if ok else FAIL


def _per_side_status(comparisons: Sequence[Comparison], quantifier: str, published: bool) -> str:
    """The quantifier applies to each a-side (a method of an ``each`` group, an IO setting of ``any-io``) on its
    own, and the check holds when it holds for every a-side that has a comparison."""
    sides: dict[Side, list[bool]] = {}
    for c in comparisons:
        holds = c.published_holds if published else c.holds
        if holds is not None:
            sides.setdefault(c.a, []).append(holds)
    return _combine([_status(h, quantifier) for h in sides.values()])


def _combine(statuses: Sequence[str]) -> str:
    if NA in statuses or not statuses:
        return NA
    return PASS if all(s == PASS for s in statuses) else FAIL


def evaluate_findings(
    records: Iterable[EvalRecord],
    columns: Sequence[Column],
    published: Iterable[Mapping[str, Any]] = (),
    findings_file: str | os.PathLike = FINDINGS_FILE,
    seed: int = 0,
) -> list[FindingResult]:
    """Every finding of ``findings_file`` on the run's evaluation records (and on the published cells, if given)."""
    groups, findings = load_findings(findings_file)
    grouped = group_pairs(pair_values(records))
    present = {method for rows in grouped.values() for _, method in rows}
    published_cells = {
        (
            p["dataset"],
            p["moving_modality"],
            p["fixed_modality"],
            bool(p["masked"]),
            p["metric"],
            p["io"],
            p["method"],
        ): float(p["value"])
        for p in published
    }
    published_methods = {key[-1] for key in published_cells}
    results = []
    for finding in findings:
        check_results = []
        for check in finding.checks:
            comparisons: list[Comparison] = []
            for a, b in _sides(check, groups, present | published_methods):
                for column in columns:
                    if not column_selected(column, check.columns):
                        continue
                    comparisons.append(_compare(grouped, published_cells, column, a, b, check, seed))
            comparisons = [c for c in comparisons if c.holds is not None or c.published_holds is not None]
            status = _per_side_status(comparisons, check.quantifier, published=False)
            published_status = _per_side_status(comparisons, check.quantifier, published=True)
            check_results.append(CheckResult(check, comparisons, status, published_status))
        results.append(
            FindingResult(
                finding,
                check_results,
                _combine([c.status for c in check_results]),
                _combine([c.published_status for c in check_results]),
            )
        )
    return results


def _compare(grouped, published_cells, column: Column, a: Side, b: Side, check: Check, seed: int) -> Comparison:
    metric = column.metric
    out = Comparison(column, metric, a, b)
    by_row = grouped.get((column.dataset, column.moving, column.fixed, column.masked), {})
    both = paired(_side_values(by_row, a, metric), _side_values(by_row, b, metric))
    if len(both):
        xa, xb = both["a"].to_numpy(), both["b"].to_numpy()
        out.n = len(both)
        out.a_mean, out.b_mean = float(np.mean(xa)), float(np.mean(xb))
        out.a_ci, out.b_ci = bootstrap_ci(xa, seed=seed), bootstrap_ci(xb, seed=seed)
        out.p_value = paired_test(xa, xb)
        out.holds = _holds(check.relation, _gain(out.difference, metric), metric, check)
    pa = _published_mean(published_cells, column, metric, a)
    pb = _published_mean(published_cells, column, metric, b)
    if not (math.isnan(pa) or math.isnan(pb)):
        out.published = (pa, pb)
        out.published_holds = _holds(check.relation, _gain(pa - pb, metric), metric, check)
    return out


# ------------------------------------------------------------------------------------------------- rendering
def _num(value: float, metric: str) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:.2f}" if metric == LANDMARKS else f"{value:.1f}"


def _flag(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "no")


def claim_rows(results: Sequence[FindingResult]) -> list[dict[str, Any]]:
    """Long form: one row per comparison (:data:`CLAIM_COLUMNS`); a finding without any, one row of its status."""
    rows = []
    for r in results:
        base = {"finding": r.finding.id, "status": r.status, "published_status": r.published_status}
        if not any(c.comparisons for c in r.checks):
            rows.append({**base, "check": "", "check_status": NA})
        for i, check in enumerate(r.checks, 1):
            for c in check.comparisons:
                rows.append(
                    {
                        **base,
                        "check": i,
                        "check_status": check.status,
                        "table": c.column.table,
                        "dataset": c.column.dataset,
                        "column_label": c.column.label,
                        "metric": c.metric,
                        "a": ";".join(c.a.methods),
                        "a_io": c.a.io,
                        "b": ";".join(c.b.methods),
                        "b_io": c.b.io,
                        "n": c.n,
                        "a_mean": c.a_mean,
                        "a_ci_low": c.a_ci[0],
                        "a_ci_high": c.a_ci[1],
                        "b_mean": c.b_mean,
                        "b_ci_low": c.b_ci[0],
                        "b_ci_high": c.b_ci[1],
                        "difference": c.difference,
                        "p_value": c.p_value,
                        "holds": _flag(c.holds),
                        "published_a": c.published[0] if c.published else "",
                        "published_b": c.published[1] if c.published else "",
                        "published_holds": _flag(c.published_holds),
                    }
                )
    return [{k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()} for row in rows]


def _cell(mean: float, ci: tuple[float, float], metric: str) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(ci[0]) or ci[0] == ci[1]:
        return _num(mean, metric)
    return f"{_num(mean, metric)} [{_num(ci[0], metric)}, {_num(ci[1], metric)}]"


def render_markdown(results: Sequence[FindingResult], with_published: bool = False) -> str:
    """``claims.md``: a summary table of the findings, then per finding its checks' comparisons."""
    counts = {s: sum(r.status == s for r in results) for s in (PASS, FAIL, NA)}
    lines = [
        "# The paper's findings, checked on this run",
        "",
        f"{counts[PASS]} PASS, {counts[FAIL]} FAIL, {counts[NA]} n.a. of {len(results)} findings "
        "(`mgicon/tables/data/findings.yaml`). A finding PASSes when each of its checks holds on the means "
        "(quantifier *all*: every comparison; *most*: more than half); p is the paired Wilcoxon test over the pairs "
        "both sides registered, reported but not required (few test pairs cannot reach significance). Units: "
        f"{METRIC_LABELS[DICE]} points, {METRIC_LABELS[LANDMARKS]} mm.",
        "",
        "| finding | source | claim | status |" + (" published cells |" if with_published else ""),
        "|---|---|---|---|" + ("---|" if with_published else ""),
    ]
    for r in results:
        lines.append(
            f"| {r.finding.id} | {r.finding.source} | {r.finding.claim} | **{r.status}** |"
            + (f" {r.published_status} |" if with_published else "")
        )
    for r in results:
        lines += [
            "",
            f"## {r.finding.id}: {r.status}",
            "",
            f"> {r.finding.words} ({r.finding.source})",
            "",
            f"Checked: {r.finding.claim}.",
        ]
        for i, check in enumerate(r.checks, 1):
            spec = check.check
            tolerant = spec.relation in ("close", "not_worse")
            limit = spec.tolerance if tolerant else spec.margin
            limits = ", ".join(f"{METRIC_LABELS[k]} {v:g}" for k, v in limit.items()) or "0"
            lines += [
                "",
                f"Check {i}: a {spec.relation.replace('_', ' ')} b ({spec.quantifier} comparisons per "
                f"a; {'tolerance' if tolerant else 'margin'} {limits}): "
                f"**{check.status}**" + (f" (published cells: {check.published_status})" if with_published else ""),
                "",
            ]
            if not check.comparisons:
                lines.append("No comparable column in this run.")
                continue
            head = [
                "table",
                "column",
                "metric",
                "a",
                "b",
                "n",
                "a mean [95% CI]",
                "b mean [95% CI]",
                "a − b",
                "p",
                "holds",
            ]
            if with_published:
                head += ["published a", "published b", "holds (published)"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for c in check.comparisons:
                cells = [
                    c.column.table,
                    f"{c.column.dataset} {c.column.label}",
                    METRIC_LABELS[c.metric],
                    f"{c.a.label}, {io_label(c.a.io)}",
                    f"{c.b.label}, {io_label(c.b.io)}",
                    c.n,
                    _cell(c.a_mean, c.a_ci, c.metric),
                    _cell(c.b_mean, c.b_ci, c.metric),
                    _num(c.difference, c.metric),
                    "" if math.isnan(c.p_value) else f"{c.p_value:.3g}",
                    _flag(c.holds),
                ]
                if with_published:
                    cells += [
                        _num(c.published[0], c.metric) if c.published else "",
                        _num(c.published[1], c.metric) if c.published else "",
                        _flag(c.published_holds),
                    ]
                lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = [
    "CLAIM_COLUMNS",
    "FAIL",
    "NA",
    "PASS",
    "Finding",
    "FindingResult",
    "claim_rows",
    "column_selected",
    "evaluate_findings",
    "load_findings",
    "render_markdown",
]
