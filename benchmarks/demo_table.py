"""The README's demo table from a run's ``results/tables/summary.csv``: every column without IO (mean over its pairs)
for the identity, SyN and every variant, and the fraction of SyN's gain over the identity that the final
multiGradICON reaches; then each network's gain from IO on the pairs IO registered (from ``claims.csv``).

    python benchmarks/demo_table.py [results/tables/summary.csv]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgicon.tables.layout import method_label  # noqa: E402
from mgicon.vocabulary import (  # noqa: E402
    IDENTITY,
    LANDMARKS,
    METRIC_LABELS,
    NEGATIVE_JACOBIAN,
    NOIO,
    SYN,
)

BASELINES = (IDENTITY, SYN)
FINAL = "multigradicon"
IO_FINDING = "io-improves"  # its name in mgicon/tables/data/findings.yaml


def _fmt(value: float, metric: str) -> str:
    return "–" if pd.isna(value) else (f"{value:.2f}" if metric == LANDMARKS else f"{value:.1f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    summary_path = Path(argv[0] if argv else "results/tables/summary.csv")
    summary = pd.read_csv(summary_path)
    summary = summary[summary.metric != NEGATIVE_JACOBIAN]
    keys = ["table", "dataset", "column_label", "metric"]
    noio = summary[summary.io == NOIO].pivot_table(index=keys, columns="method", values="mean", sort=False)
    methods = [*BASELINES, *[m for m in summary.method.unique() if m not in BASELINES]]
    head = ["table", "dataset", "pair", "metric", *[method_label(m) for m in methods], "share of SyN's gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (table, dataset, label, metric), row in noio.iterrows():
        gain = row.get(FINAL, float("nan")) - row["identity"]
        share = gain / (row["syn"] - row["identity"]) if row["syn"] != row["identity"] else float("nan")
        cells = [
            table,
            dataset,
            label,
            METRIC_LABELS[metric],
            *[_fmt(row.get(m), metric) for m in methods],
            "–" if pd.isna(share) else f"{100 * share:.0f} %",
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    print("\n".join(lines))
    # IO registers a subset of the pairs (evaluation.io_max_pairs): compared on those pairs, as the claims check
    # `io-improves` does (results/tables/claims.csv, beside summary.csv)
    claims = pd.read_csv(summary_path.with_name("claims.csv"))
    io = claims[claims.finding == IO_FINDING]
    print()
    print("| method | IO | columns where IO beats the same network w/o IO on the same pairs |")
    print("|---|---|---|")
    for (method, setting), rows in io.groupby(["a", "a_io"], sort=False):
        print(f"| {method_label(method)} | {setting} | {int((rows.holds == 'yes').sum())} of {len(rows)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
