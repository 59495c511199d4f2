"""mgicon.tables: the published values, the statistics, and the reproduced tables against hand-written ones."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mgicon.data.manifest import read_csv, write_csv
from mgicon.tables import build_tables, columns_from_config, published_values, write_published_vs_reproduced
from mgicon.tables.layout import Column, method_label
from mgicon.tables.render import CAPTION, format_number, tex_escape
from mgicon.tables.stats import bootstrap_ci, paired_test
from mgicon.vocabulary import EVAL_COLUMNS
from tests.paths import CONFIGS, load_yaml

# ------------------------------------------------------------------------------------------------ published data


def _published(table, dataset, pair, masked, metric, io, method):
    moving, fixed = pair.split("/")
    hits = [
        r
        for r in published_values(table)
        if (r["dataset"], r["moving_modality"], r["fixed_modality"], r["masked"], r["metric"], r["io"], r["method"])
        == (dataset, moving, fixed, masked, metric, io, method)
    ]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize(
    "table, dataset, pair, masked, metric, io, method, printed",
    [
        (2, "Dirlab-COPDGene", "ct/ct", True, "landmarks", "noio", "syn", "8.20"),
        (2, "Dirlab-COPDGene", "ct/ct", True, "landmarks", "noio", "unigradicon", "2.26"),
        (2, "Dirlab-COPDGene", "ct/ct", False, "landmarks", "noio", "syn", "15.18"),
        (2, "HCP-test", "t1w/t1w", False, "dice", "io-lncc2", "multigradicon", "78.2"),
        (2, "L2R-Abdomen", "ct/ct", False, "negative_jacobian_percent", "io-lncc2", "unigradicon", "9.4e-1"),
        (2, "OAI-test", "dess/dess", False, "dice", "io-mind", "multigradicon", "67.5"),
        (3, "BratsReg", "t1ce/t1ce", False, "landmarks", "io-mind", "multigradicon-f", "2.18"),
        (3, "BratsReg", "t1w/t1w", False, "landmarks", "io-mind", "unigradicon", "2.70"),  # shifted label
        (3, "UKBiobank-test", "fat/fat", False, "dice", "noio", "syn", "43.7"),
        (4, "L2R-NLST-val", "ct/ct", False, "landmarks", "io-lncc2", "unigradicon", "1.77"),
        (4, "L2R-NLST-val", "ct/ct", False, "landmarks", "noio", "multigradicon", "2.25"),  # shifted label
        (4, "L2R-NLST-val", "ct/ct", False, "landmarks", "io-mind", "multigradicon", "1.93"),  # unlabelled row
        (4, "Pancreatic-CT-CBCT-SEG-test", "ct/cbct", False, "dice", "io-lncc2", "multigradicon", "82.4"),
        (5, "HCP-test", "t1w/t2w", False, "dice", "noio", "multigradicon-f", "70.4"),
        (5, "HCP-test", "t1w/t2w", False, "dice", "io-mind", "unigradicon", "39.8"),
        (5, "BratsReg", "t2w/t1ce", False, "landmarks", "io-lncc2", "unigradicon", "11.09"),
        (5, "BratsReg", "t1ce/flair", False, "landmarks", "io-mind", "multigradicon", "2.79"),
    ],
)
def test_published_spot_checks(table, dataset, pair, masked, metric, io, method, printed):
    row = _published(table, dataset, pair, masked, metric, io, method)
    assert row["value_text"] == printed and row["value"] == float(printed)


def test_published_shape_and_notes():
    rows = published_values()
    # 19 rows per table (SyN + 3 × 6 models) × printed values per row: 10, 14, 10, 14
    assert {t: len(published_values(t)) for t in (2, 3, 4, 5)} == {2: 190, 3: 266, 4: 190, 5: 266}
    keys = [
        (r["dataset"], r["moving_modality"], r["fixed_modality"], r["masked"], r["metric"], r["io"], r["method"])
        for r in rows
    ]
    assert len(set(keys)) == len(keys)
    assert {r["method"] for r in rows if r["io"] != "noio"}.isdisjoint({"syn"})
    typo = _published(4, "L2R-NLST-val", "ct/ct", False, "negative_jacobian_percent", "noio", "syn")
    assert typo["value"] == 0.98 and "9.8-e1" in typo["note"]
    thorax = [r for r in rows if r["dataset"] == "L2R-ThoraxCBCT-val"]
    assert {r["metric"] for r in thorax} == {"dice", "negative_jacobian_percent"}
    assert all("mTRE" in r["note"] for r in thorax if r["metric"] == "dice")
    # Table 5's Abdomen MR/CT and UK Biobank columns are not in the text: nothing is shipped for them
    assert {r["dataset"] for r in published_values(5)} == {"HCP-test", "BratsReg"}


# ------------------------------------------------------------------------------------------------------- stats


def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(1)
    small, large = rng.normal(5.0, 1.0, 10), rng.normal(5.0, 1.0, 1000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3  # width ∝ 1/√n: √100 = 10
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert bootstrap_ci(small, level=0.5)[1] - bootstrap_ci(small, level=0.5)[0] < hi_s - lo_s


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([2.5] * 7) == (2.5, 2.5)  # constant sample: zero width
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert bootstrap_ci([1.0, math.nan, 3.0]) == bootstrap_ci([1.0, 3.0])
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_paired_test_known_cases():
    assert paired_test([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(paired_test([1.0], [2.0]))
    assert math.isnan(paired_test([1.0, math.nan], [2.0, 3.0]))
    # exact two-sided signed-rank: all n differences of one sign → p = 2 / 2**n
    assert paired_test([1, 2, 3, 4, 5, 6], [0] * 6) == pytest.approx(2 / 2**6)
    assert paired_test([0] * 10, list(range(1, 11))) == pytest.approx(2 / 2**10)
    assert paired_test([1, -2, 3, -4], [0] * 4) == pytest.approx(paired_test([-1, 2, -3, 4], [0] * 4))
    assert paired_test([1, -2, 3, -4], [0] * 4) > 0.5
    with pytest.raises(ValueError):
        paired_test([1, 2], [1])


# ------------------------------------------------------------------------------------------------------ layout

CONFIG = {
    "variants": {"multigradicon": {}, "unigradicon": {}},  # config order: multiGradICON before uniGradICON
    "datasets": {
        "lung": {
            "region": "Lung",
            "modalities": ["ct"],
            "pairing": "intra",
            "stages": ["test"],
            "evaluation": {"metric": "landmarks", "masked": [True, False]},
            "table": 2,
        },
        "brain": {
            "region": "Brain",
            "modalities": ["t1w", "t2w"],
            "pairing": "inter",
            "stages": ["test"],
            "evaluation": {"metric": "dice", "tables": {"t1w/t2w": 5}},
            "table": 2,
            "test_modality_pairs": [["t1w", "t1w"], ["t1w", "t2w"]],
        },
        "train-only": {
            "region": "Knee",
            "modalities": ["dess"],
            "pairing": "inter",
            "stages": ["pretrain"],
            "table": 2,
        },
    },
}


def _eval_rows(method, io, dataset, moving, fixed, masked, values, jacobians):
    """One eval row per pair ``p{i}``; ``values`` are Dice fractions for brain, mTRE (mm) for lung."""
    rows = []
    for i, (v, j) in enumerate(zip(values, jacobians)):
        dice = dataset == "brain"
        rows.append(
            {
                "method": method,
                "io": io,
                "dataset": dataset,
                "moving_subject": f"p{i}",
                "moving_timepoint": "exp" if not dice else "0",
                "moving_modality": moving,
                "fixed_subject": f"p{i}" if not dice else f"q{i}",
                "fixed_timepoint": "insp" if not dice else "0",
                "fixed_modality": fixed,
                "masked": "1" if masked else "0",
                "metric": "dice" if dice else "landmarks",
                "dice": v if dice else "",
                "mtre": "" if dice else v,
                "negative_jacobian_percent": j,
                "initial_dice": "",
                "initial_mtre": "",
                "seconds": "0.1",
            }
        )
    return rows


def _write_eval(tmp_path):
    spec = [
        # lung CT/CT (masked): 6 pairs, constant values → exact CIs; identity is worse in every pair (p = 2/64)
        ("identity", "noio", "lung", "ct", "ct", True, [10] * 6, [0] * 6),
        ("unigradicon", "noio", "lung", "ct", "ct", True, [2] * 6, [0.001] * 6),
        ("unigradicon", "io-lncc2", "lung", "ct", "ct", True, [2] * 6, [0] * 6),
        # lung CT/CT: one method, two pairs
        ("unigradicon", "noio", "lung", "ct", "ct", False, [4, 6], [0, 0]),
        # brain T1w/T1w (table 2), two pairs
        ("identity", "noio", "brain", "t1w", "t1w", False, [0.5, 0.7], [0, 0]),
        ("syn", "noio", "brain", "t1w", "t1w", False, [0.7, 0.9], [0, 0]),
        ("unigradicon", "noio", "brain", "t1w", "t1w", False, [0.6, 0.8], [0.002, 0.004]),
        ("multigradicon", "noio", "brain", "t1w", "t1w", False, [0.75, 0.75], [0.01, 0.03]),
        ("released-unigradicon", "noio", "brain", "t1w", "t1w", False, [0.65, 0.65], [0, 0]),
        # brain T1w/T2w (table 5 by the override)
        ("unigradicon", "noio", "brain", "t1w", "t2w", False, [0.1, 0.2], [0.0001, 0.0003]),
        ("multigradicon", "noio", "brain", "t1w", "t2w", False, [0.6, 0.8], [0, 0]),
        # a pair no column shows (T2w/T2w is not a test pair) is ignored
        ("multigradicon", "noio", "brain", "t2w", "t2w", False, [0.9], [0]),
    ]
    paths = []
    for k, (method, io, dataset, *rest) in enumerate(spec):
        path = tmp_path / "eval" / method / io / f"{dataset}-{k}.csv"
        write_csv(_eval_rows(method, io, dataset, *rest), path, EVAL_COLUMNS)
        paths.append(path)
    return paths


def test_columns_from_config():
    assert columns_from_config(CONFIG) == [
        Column(2, "lung", "ct", "ct", True, "landmarks"),
        Column(2, "lung", "ct", "ct", False, "landmarks"),
        Column(2, "brain", "t1w", "t1w", False, "dice"),
        Column(5, "brain", "t1w", "t2w", False, "dice"),
    ]
    assert [c.label for c in columns_from_config(CONFIG)] == ["CT/CT (masked)", "CT/CT", "T1w/T1w", "T1w/T2w"]
    assert method_label("released-multigradicon") == "multiGradICON (released)" and method_label("foo") == "foo"


def test_column_order_is_a_config_choice():
    ordered = {**CONFIG, "evaluation": {"column_order": {2: ["brain"]}}}
    assert [(c.table, c.dataset, c.label) for c in columns_from_config(ordered)] == [
        (2, "brain", "T1w/T1w"),
        (2, "lung", "CT/CT (masked)"),
        (2, "lung", "CT/CT"),
        (5, "brain", "T1w/T2w"),
    ]
    # keys as JSON would have them, and an empty order: config order
    as_json = {**CONFIG, "evaluation": {"column_order": {"2": ["brain", "lung"]}}}
    assert columns_from_config(as_json)[0].dataset == "brain"
    assert columns_from_config({**CONFIG, "evaluation": {"column_order": {}}}) == columns_from_config(CONFIG)
    with pytest.raises(ValueError, match=r"column_order\[5\]: lung has no column in table 5"):
        columns_from_config({**CONFIG, "evaluation": {"column_order": {5: ["lung"]}}})


def test_published_columns_join_the_paper_config():
    """Every published column has a reproduced counterpart in config/paper.yaml but ThoraxCBCT's (headed mTRE,
    holding Dice-like values: stored as dice, while the config scores ThoraxCBCT's landmarks)."""
    config = load_yaml(CONFIGS / "paper.yaml")
    reproduced = {
        (c.table, c.dataset, c.moving, c.fixed, c.masked, m) for c in columns_from_config(config) for m in c.metrics
    }
    published = {
        (r["table"], r["dataset"], r["moving_modality"], r["fixed_modality"], r["masked"], r["metric"])
        for r in published_values()
    }
    assert len(published) == 48
    assert published - reproduced == {(4, "L2R-ThoraxCBCT-val", "ct", "cbct", False, "dice")}  # BraTS-Reg's join


TABLE2_CSV = """\
io,method,lung CT/CT (masked) mTRE,lung CT/CT (masked) % J<0,lung CT/CT mTRE,lung CT/CT % J<0,brain T1w/T1w DICE(%),brain T1w/T1w % J<0
noio,identity,10,0,,,60,0
noio,syn,,,,,80,0
noio,multigradicon,,,,,75,0.02
noio,unigradicon,2,0.001,5,0,70,0.003
noio,released-unigradicon,,,,,65,0
io-lncc2,unigradicon,2,0,,,,
"""

TABLE5_CSV = """\
io,method,brain T1w/T2w DICE(%),brain T1w/T2w % J<0
noio,multigradicon,70,0
noio,unigradicon,15,0.0002
"""

TABLE2_MD = f"""\
**Table 2** (reproduced): {CAPTION}

| IO | Method | lung CT/CT (masked) |  | lung CT/CT |  | brain T1w/T1w |  |
|---|---|---|---|---|---|---|---|
| | | mTRE | % J<0 | mTRE | % J<0 | DICE(%) | % J<0 |
| w/o IO | Identity (unregistered) | 10.00 [10.00, 10.00]† | **0 [0, 0]** | – | – | 60.0 [50.0, 70.0] | **0 [0, 0]** |
|  | SyN | – | – | – | – | **80.0 [70.0, 90.0]** | **0 [0, 0]** |
|  | multiGradICON | – | – | – | – | 75.0 [75.0, 75.0] | 2.0e-2 [1.0e-2, 3.0e-2] |
|  | uniGradICON | **2.00 [2.00, 2.00]** | 1.0e-3 [1.0e-3, 1.0e-3]† | **5.00 [4.00, 6.00]** | **0 [0, 0]** | 70.0 [60.0, 80.0] | 3.0e-3 [2.0e-3, 4.0e-3] |
|  | uniGradICON (released) | – | – | – | – | 65.0 [65.0, 65.0] | **0 [0, 0]** |
| 1-LNCC² | uniGradICON | **2.00 [2.00, 2.00]** | **0 [0, 0]** | – | – | – | – |
"""


def test_build_tables_matches_hand_written(tmp_path):
    out = tmp_path / "tables"
    written = build_tables(_write_eval(tmp_path), CONFIG, out)
    assert [p.name for p in written] == [
        "summary.csv",
        "table2.csv",
        "table2.md",
        "table2.tex",
        "table5.csv",
        "table5.md",
        "table5.tex",
    ]
    assert (out / "table2.csv").read_text(encoding="utf-8") == TABLE2_CSV
    assert (out / "table5.csv").read_text(encoding="utf-8") == TABLE5_CSV
    assert (out / "table2.md").read_text(encoding="utf-8") == TABLE2_MD
    assert not list(out.glob(".*.tmp"))

    tex = (out / "table2.tex").read_text(encoding="utf-8")
    assert r"\multicolumn{2}{c}{lung CT/CT (masked)}" in tex and r"\% J$<$0" in tex and "DICE(\\%)" in tex
    assert r"1-LNCC$^2$" in tex and r"10.00 [10.00, 10.00]$^\dagger$" in tex and r"\textbf{80.0 [70.0, 90.0]}" in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    assert not re.search(r"(?<!\\)%(?! Table)", tex.split("\n", 1)[1])  # every % escaped (but the comment line)

    summary = {(r["column_label"], r["metric"], r["io"], r["method"]): r for r in read_csv(out / "summary.csv")}
    ident = summary[("CT/CT (masked)", "landmarks", "noio", "identity")]
    assert ident["n"] == "6" and ident["best"] == "0" and float(ident["p_vs_best"]) == pytest.approx(2 / 64)
    assert summary[("CT/CT (masked)", "landmarks", "io-lncc2", "unigradicon")]["best"] == "1"
    assert summary[("CT/CT (masked)", "landmarks", "io-lncc2", "unigradicon")]["p_vs_best"] == ""
    assert summary[("T1w/T1w", "dice", "noio", "identity")]["masked"] == "0"


def test_format_and_escape():
    assert format_number("negative_jacobian_percent", 9.3e-5) == "9.3e-5"
    assert format_number("negative_jacobian_percent", 0.0) == "0"
    assert format_number("dice", 76.25) == "76.2" and format_number("landmarks", 2.255) in ("2.25", "2.26")
    assert format_number("landmarks", 0.5, signed=True) == "+0.50" and format_number("dice", math.nan) == ""
    assert tex_escape("a_b 50% x² <#&>") == r"a\_b 50\% x$^2$ $<$\#\&$>$"


# ------------------------------------------------------------------------------------- published vs reproduced


def test_published_vs_reproduced(tmp_path):
    base = {
        "table": 2,
        "dataset": "Dirlab-COPDGene",
        "column_label": "CT/CT (masked)",
        "moving_modality": "ct",
        "fixed_modality": "ct",
        "masked": True,
        "metric": "landmarks",
        "io": "noio",
    }
    summary = [
        {
            **base,
            "method": "unigradicon",
            "n": 10,
            "mean": 2.5,
            "ci_low": 2.0,
            "ci_high": 3.0,
            "best": True,
            "p_vs_best": math.nan,
        },
        {
            **base,
            "method": "identity",
            "n": 10,
            "mean": 20.0,
            "ci_low": 18.0,
            "ci_high": 22.0,
            "best": False,
            "p_vs_best": 0.001,
        },
    ]
    text = write_published_vs_reproduced(summary, tmp_path / "pvr.md").read_text(encoding="utf-8")
    assert "## Cells with a published and a reproduced value (1)" in text
    row = "| 2 | Dirlab-COPDGene CT/CT (masked) | mTRE | w/o IO | uniGradICON | 2.26 | 2.50 [2.00, 3.00] | 10 | +0.24 |"
    assert row in text
    assert "## Published cells without a reproduced value (911)" in text
    assert "## Reproduced cells without a published value (1)" in text
    assert "| 2 | Dirlab-COPDGene CT/CT (masked) | mTRE | 1 |" in text

    # CSV strings (summary.csv as read back) join the same way
    as_csv = [
        {k: ("1" if v is True else "0" if v is False else "" if v != v else str(v)) for k, v in r.items()}
        for r in summary
    ]
    assert write_published_vs_reproduced(as_csv, tmp_path / "pvr2.md").read_text(encoding="utf-8") == text
