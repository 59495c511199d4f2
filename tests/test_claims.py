"""The paper's findings as data, checked on hand-built evaluation rows whose verdicts are known."""

import csv

import pytest

from mgicon.records import EvalRecord
from mgicon.tables import write_claims
from mgicon.tables.claims import FAIL, NA, PASS, column_selected, evaluate_findings, load_findings
from mgicon.tables.layout import Column, columns_from_config

DATASETS = {
    "brain": {
        "region": "Brain",
        "modalities": ["t1w", "t2w"],
        "pairing": "inter",
        "stages": ["test"],
        "table": 2,
        "evaluation": {"metric": "dice", "tables": {"t1w/t2w": 5}},
        "test_modality_pairs": [["t1w", "t1w"], ["t1w", "t2w"]],
        "source": {"kind": "synthetic"},
    },
    "dixon": {
        "region": "Body",
        "modalities": ["fat", "water"],
        "pairing": "inter",
        "stages": ["test"],
        "table": 5,
        "evaluation": {"metric": "dice"},
        "test_modality_pairs": [["water", "fat"]],
        "source": {"kind": "synthetic"},
    },
    "lung": {
        "region": "Lung",
        "modalities": ["ct"],
        "pairing": "intra",
        "stages": ["test"],
        "table": 4,
        "evaluation": {"metric": "landmarks"},
        "source": {"kind": "synthetic"},
    },
}
CONFIG = {"datasets": DATASETS}
PAIRS = [("s1", "s2"), ("s2", "s1"), ("s1", "s3")]


def _rows(method, io, dataset, moving, fixed, values, metric="dice"):
    """Eval records of one method on one column: ``values`` per pair (Dice in %, mTRE in mm)."""
    out = []
    for (m, f), v in zip(PAIRS, values):
        out.append(
            EvalRecord.from_row(
                {
                    "method": method,
                    "io": io,
                    "dataset": dataset,
                    "moving_subject": m,
                    "moving_timepoint": "",
                    "moving_modality": moving,
                    "fixed_subject": f,
                    "fixed_timepoint": "",
                    "fixed_modality": fixed,
                    "masked": "0",
                    "dice": "" if metric != "dice" else str(v / 100),
                    "mtre": str(v) if metric != "dice" else "",
                    "negative_jacobian_percent": "0",
                }
            )
        )
    return out


def _study(uni_t2w, multi_t2w, fat_water_network, lung_network):
    """Identity and one uni and one multi network on every column, w/o IO; the arguments set the contested cells."""
    rows = []
    for method, t2w in (("unigradicon", uni_t2w), ("multigradicon", multi_t2w)):
        rows += _rows(method, "noio", "brain", "t1w", "t1w", [70, 72, 71])
        rows += _rows(method, "noio", "brain", "t1w", "t2w", t2w)
        rows += _rows(method, "noio", "dixon", "water", "fat", fat_water_network)
        rows += _rows(method, "noio", "lung", "ct", "ct", lung_network, metric="landmarks")
    rows += _rows("identity", "noio", "brain", "t1w", "t1w", [60, 60, 60])
    rows += _rows("identity", "noio", "brain", "t1w", "t2w", [60, 60, 60])
    rows += _rows("identity", "noio", "dixon", "water", "fat", [80, 80, 80])
    rows += _rows("identity", "noio", "lung", "ct", "ct", [10, 10, 10], metric="landmarks")
    return rows


def _status(results, finding):
    return next(r for r in results if r.finding.id == finding)


CASES = [
    # finding, (uni T1w/T2w, multi T1w/T2w, fat/water network, lung network mTRE), expected status
    ("tab5-multi-beats-uni-multimodal", ([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 5, 5]), PASS),
    ("tab5-multi-beats-uni-multimodal", ([66, 67, 65], [40, 42, 41], [50, 50, 50], [5, 5, 5]), FAIL),
    ("dixon-fat-water-fails", ([40, 42, 41], [65, 66, 64], [50, 52, 48], [5, 5, 5]), PASS),
    ("dixon-fat-water-fails", ([40, 42, 41], [65, 66, 64], [85, 86, 84], [5, 5, 5]), FAIL),
    ("tab4-unseen-generalize", ([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 6, 7]), PASS),
    ("tab4-unseen-generalize", ([40, 42, 41], [65, 66, 64], [50, 50, 50], [12, 11, 13]), FAIL),  # mTRE: lower wins
    # no IO rows, no erratum variant in this run: those findings cannot be checked
    ("io-improves", ([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 5, 5]), NA),
    ("erratum-bug", ([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 5, 5]), NA),
]


@pytest.mark.parametrize("finding, cells, expected", CASES)
def test_finding_passes_or_fails_as_the_hand_built_cells_say(finding, cells, expected):
    results = evaluate_findings(_study(*cells), columns_from_config(CONFIG))
    assert _status(results, finding).status == expected


def test_comparison_reports_means_intervals_and_the_paired_test():
    rows = _study([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 5, 5])
    results = evaluate_findings(rows, columns_from_config(CONFIG))
    (check,) = _status(results, "tab5-multi-beats-uni-multimodal").checks
    (c,) = check.comparisons  # the one multimodal Table 5 column that is not fat/water: brain T1w/T2w
    assert (c.column.dataset, c.column.moving, c.column.fixed) == ("brain", "t1w", "t2w")
    assert c.a.methods == ("multigradicon",) and c.b.methods == ("unigradicon",)
    assert c.n == 3 and c.a_mean == pytest.approx(65.0) and c.b_mean == pytest.approx(41.0)
    assert c.a_ci[0] <= 65.0 <= c.a_ci[1] and c.a_ci[0] >= 64.0 and c.a_ci[1] <= 66.0
    assert c.p_value == pytest.approx(0.25)  # Wilcoxon, 3 pairs all one way: the smallest two-sided p


@pytest.mark.parametrize("mind_gain, expected", [(5, PASS), (-5, FAIL)])
def test_io_finding_compares_each_network_with_itself_per_io_setting(mind_gain, expected):
    rows = _study([40, 42, 41], [65, 66, 64], [50, 50, 50], [5, 5, 5])
    for io, gain in (("io-lncc2", 5), ("io-mind", mind_gain)):
        for method, t2w in (("unigradicon", [40, 42, 41]), ("multigradicon", [65, 66, 64])):
            rows += _rows(method, io, "brain", "t1w", "t1w", [70 + gain, 72 + gain, 71 + gain])
            rows += _rows(method, io, "brain", "t1w", "t2w", [v + gain for v in t2w])
    results = evaluate_findings(rows, columns_from_config(CONFIG))
    (check,) = _status(results, "io-improves").checks
    assert {(c.a.methods, c.a.io) for c in check.comparisons} == {
        ((m,), io) for m in ("unigradicon", "multigradicon") for io in ("io-lncc2", "io-mind")
    }
    assert all(c.b.methods == c.a.methods and c.b.io == "noio" for c in check.comparisons)
    assert len(check.comparisons) == 8  # the two brain columns; the others have no IO rows
    assert check.status == expected  # "most" per network and IO setting: one setting losing everywhere fails it


def test_column_selectors():
    cases = [
        (Column(5, "d", "water", "fat", False, "dice"), {"fat_water": "only"}, True),
        (Column(5, "d", "fat", "water", False, "dice"), {"fat_water": "exclude"}, False),
        (Column(5, "d", "t1w", "t2w", False, "dice"), {"tables": [5], "pair": "multimodal", "involves": ["t2w"]}, True),
        (Column(2, "d", "t1w", "t2w", False, "dice"), {"tables": [5]}, False),
        (Column(3, "d", "t2w", "t2w", False, "dice"), {"pair": "multimodal"}, False),
    ]
    for column, selector, expected in cases:
        assert column_selected(column, selector) is expected, (column, selector)


def test_package_findings_cover_the_paper(tmp_path):
    _, findings = load_findings()
    ids = {f.id for f in findings}
    assert len(findings) >= 8
    assert {
        "tab2-mono-both-saw",
        "tab3-mono-multi-saw",
        "tab4-unseen-generalize",
        "tab5-multi-beats-uni-multimodal",
        "loss-randomization",
        "io-improves",
        "dixon-fat-water-fails",
        "erratum-bug",
    } <= ids
    paths = write_claims([], CONFIG, tmp_path / "claims.md", tmp_path / "claims.csv")
    assert [p.name for p in paths] == ["claims.md", "claims.csv"]
    rows = list(csv.DictReader(open(tmp_path / "claims.csv", encoding="utf-8")))
    assert {r["finding"] for r in rows} == ids and all(r["status"] == NA for r in rows)
    assert "0 PASS, 0 FAIL" in (tmp_path / "claims.md").read_text(encoding="utf-8")


def test_published_cells_are_checked_the_same_way_without_run_rows():
    published = [
        {
            "dataset": "brain",
            "moving_modality": "t1w",
            "fixed_modality": "t2w",
            "masked": False,
            "metric": "dice",
            "io": "noio",
            "method": method,
            "value": value,
        }
        for method, value in (("unigradicon", 20.0), ("multigradicon-f", 70.0), ("multigradicon-b", 60.0))
    ]
    results = evaluate_findings([], columns_from_config(CONFIG), published)
    tab5 = _status(results, "tab5-multi-beats-uni-multimodal")
    assert tab5.status == NA and tab5.published_status == PASS
    (c,) = tab5.checks[0].comparisons
    assert c.published == (pytest.approx(65.0), 20.0)  # multi: the mean of the published multi cells
    randomization = _status(results, "loss-randomization")
    assert randomization.published_status == PASS  # F 70 ≥ B 60; R has no published cell here


def test_the_papers_own_cells_support_every_finding_they_can_check():
    """The findings file states the paper's claims: on config/paper.yaml's columns its published cells pass each
    finding that has published cells on both sides (the others need an identity row or the Erratum's variant,
    which the paper does not print)."""
    from mgicon.tables import published_values
    from tests.paths import CONFIGS, load_yaml

    config = load_yaml(CONFIGS / "paper.yaml")
    results = {
        r.finding.id: r.published_status for r in evaluate_findings([], columns_from_config(config), published_values())
    }
    assert {k for k, v in results.items() if v == PASS} == {
        "tab2-mono-both-saw",
        "tab3-mono-multi-saw",
        "tab5-multi-beats-uni-multimodal",
        "tab5-uni-fails-t2w-with-io",
        "loss-randomization",
        "io-improves",
    }
    assert {k for k, v in results.items() if v == NA} == {
        "tab4-unseen-generalize",
        "dixon-fat-water-fails",
        "erratum-bug",
    }
