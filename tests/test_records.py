"""mgicon.records: rows as the pipeline writes them survive a round trip; a hand-built evaluation table's cells."""

from __future__ import annotations

import pytest

from mgicon.data.manifest import read_csv, write_csv
from mgicon.records import EvalRecord, PairRecord, RecordError, ScanRecord, read_records
from mgicon.tables import build_tables
from mgicon.tables.layout import pair_values, summarize
from mgicon.vocabulary import EVAL_COLUMNS

# rows exactly as the pipeline writes them: runner (repr floats, empty = None, seconds .4f), pair list, manifest
EVAL_ROWS = [
    {
        "method": "multigradicon",
        "io": "io-mind",
        "dataset": "syn-brain",
        "moving_subject": "sub-04",
        "moving_timepoint": "",
        "moving_modality": "t1w",
        "fixed_subject": "sub-05",
        "fixed_timepoint": "",
        "fixed_modality": "t2w",
        "masked": "0",
        "metric": "dice",
        "dice": "0.5569479495352185",
        "mtre": "",
        "negative_jacobian_percent": "0.0",
        "initial_dice": "0.5883106877049428",
        "initial_mtre": "",
        "seconds": "10.2761",
    },
    {
        "method": "syn",
        "io": "noio",
        "dataset": "syn-lung",
        "moving_subject": "s1",
        "moving_timepoint": "exp",
        "moving_modality": "ct",
        "fixed_subject": "s1",
        "fixed_timepoint": "insp",
        "fixed_modality": "ct",
        "masked": "1",
        "metric": "landmarks",
        "dice": "",
        "mtre": "2.2600000000000002",
        "negative_jacobian_percent": "1.2e-05",
        "initial_dice": "",
        "initial_mtre": "11.03",
        "seconds": "0.0000",
    },
]
PAIR_ROW = {
    "dataset": "syn-brain",
    "moving_subject": "sub-04",
    "moving_timepoint": "",
    "fixed_subject": "sub-05",
    "fixed_timepoint": "",
    "weight": "0.125",
    "moving_modality": "t1w",
    "fixed_modality": "t2w",
}
SCAN_ROW = {
    "dataset": "syn-brain",
    "subject": "sub-00",
    "timepoint": "",
    "modality": "t1w",
    "image": "a.nii.gz",
    "label": "l.nii.gz",
    "landmarks": "",
    "mask": "m.nii.gz",
    "split": "train",
    "gt_to_template": "t.nii.gz",
    "gt_from_template": "f.nii.gz",
    "network_image": "n.nii.gz",
    "network_label": "nl.nii.gz",
    "network_mask": "",
    "orientation": "RAI",
}


def test_rows_round_trip_through_their_records(tmp_path):
    records = [EvalRecord.from_row(r) for r in EVAL_ROWS]
    assert [r.to_row() for r in records] == EVAL_ROWS
    first, second = records
    assert first.mtre is None and first.dice == 0.5569479495352185 and first.pair.masked is False
    assert second.pair.masked is True and second.value("landmarks") == 2.2600000000000002
    assert second.initial("landmarks") == 11.03 and second.seconds == 0.0

    # a file written from the records is the file they were read from, byte for byte
    write_csv(EVAL_ROWS, tmp_path / "a.csv", EVAL_COLUMNS)
    write_csv([r.to_row() for r in read_records(tmp_path / "a.csv", EvalRecord)], tmp_path / "b.csv", EVAL_COLUMNS)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()

    pair = PairRecord.from_row(PAIR_ROW)
    assert pair.to_row() == PAIR_ROW and list(pair.to_row()) == list(PAIR_ROW)
    assert pair.weight == 0.125 and pair.scan_key("fixed") == ("sub-05", "", "t2w") and pair.multimodal
    masked = pair.with_masked(True)
    assert masked.to_row() == {**PAIR_ROW, "masked": "1"} and masked.key[-1] is True
    assert masked != pair and pair.with_masked(False) == pair  # equal: the same registration, whatever the weight

    scan = ScanRecord.from_row(SCAN_ROW)
    assert scan.to_row() == SCAN_ROW and list(scan.to_row()) == list(SCAN_ROW)
    assert scan.landmarks is None and scan.network_mask is None and scan.extra["gt_to_template"] == "t.nii.gz"
    assert scan.orientation == "RAI" and "orientation" not in scan.extra
    manifest_row = {k: SCAN_ROW[k] for k in ScanRecord.COLUMNS}
    assert ScanRecord.from_row(manifest_row).to_row() == manifest_row  # no network columns appear


def test_a_bad_field_names_the_file_the_line_and_the_column(tmp_path):
    rows = [EVAL_ROWS[0], {**EVAL_ROWS[1], "masked": "maybe"}]
    write_csv(rows, tmp_path / "eval.csv", EVAL_COLUMNS)
    with pytest.raises(RecordError, match=r"eval\.csv:3: masked: 'maybe' is not 1 or 0"):
        read_records(tmp_path / "eval.csv", EvalRecord)
    with pytest.raises(RecordError, match=r"x\.csv:7: dice: 'n/a' is not a number"):
        EvalRecord.from_row({**EVAL_ROWS[0], "dice": "n/a"}, "x.csv:7")
    with pytest.raises(RecordError, match="missing column"):
        PairRecord.from_row({"dataset": "d"}, "p.csv:2")
    with pytest.raises(RecordError, match="image: empty"):
        ScanRecord.from_row({**SCAN_ROW, "image": ""})


# ---------------------------------------------------------------------------------- a hand-built evaluation table

CONFIG = {
    "datasets": {
        "brain": {
            "region": "Brain",
            "modalities": ["t1w"],
            "pairing": "inter",
            "stages": ["test"],
            "evaluation": {"metric": "dice"},
            "table": 2,
        },
        "lung": {
            "region": "Lung",
            "modalities": ["ct"],
            "pairing": "intra",
            "stages": ["test"],
            "evaluation": {"metric": "landmarks"},
            "table": 2,
        },
    },
}


def _record(method, io, dataset, i, value, jacobian):
    """Pair ``p{i}`` of ``dataset``: ``value`` is a Dice fraction (brain) or an mTRE in mm (lung)."""
    modality = "t1w" if dataset == "brain" else "ct"
    pair = PairRecord(dataset, f"p{i}", "", modality, f"q{i}", "", modality)
    dice, mtre = (value, None) if dataset == "brain" else (None, value)
    return EvalRecord(method, io, pair, None, dice=dice, mtre=mtre, negative_jacobian_percent=jacobian)


def _evaluation():
    records = []
    for i, (d, j) in enumerate([(0.5, 0.0), (0.6, 0.0), (0.7, 0.0)]):
        records.append(_record("identity", "noio", "brain", i, d, j))
    for i, (d, j) in enumerate([(0.8, 0.1), (0.7, 0.2), (0.75, 0.3)]):
        records.append(_record("unigradicon", "noio", "brain", i, d, j))
    records.append(_record("unigradicon", "noio", "brain", 0, 0.9, 0.1))  # re-evaluated: the last record wins
    for i, (t, j) in enumerate([(10.0, 0.0), (12.0, 0.0)]):
        records.append(_record("identity", "noio", "lung", i, t, j))
    for i, (t, j) in enumerate([(2.0, 0.2), (4.0, 0.2)]):
        records.append(_record("unigradicon", "noio", "lung", i, t, j))
    for i, (t, j) in enumerate([(1.0, 0.0), (None, 0.0)]):  # IO: one pair without landmarks
        records.append(_record("unigradicon", "io-lncc2", "lung", i, t, j))
    return records


# hand-computed: Dice (%) 100 × mean, mTRE and % J<0 as they are
TABLE2_CSV = """\
io,method,brain T1w/T1w DICE(%),brain T1w/T1w % J<0,lung CT/CT mTRE,lung CT/CT % J<0
noio,identity,60,0,11,0
noio,unigradicon,78.3333,0.2,3,0.2
io-lncc2,unigradicon,,,1,0
"""


def test_hand_built_evaluation_gives_the_hand_computed_cells(tmp_path):
    records = _evaluation()
    frame = pair_values(records)
    uni = frame[(frame.method == "unigradicon") & (frame.dataset == "brain")]
    assert list(uni.moving_subject) == ["p0", "p1", "p2"] and list(uni.dice) == pytest.approx([90.0, 70.0, 75.0])

    csvs = []
    for group in ("identity", "unigradicon"):
        path = tmp_path / "eval" / f"{group}.csv"
        write_csv([r.to_row() for r in records if r.method == group], path, EVAL_COLUMNS)
        csvs.append(path)
    out = tmp_path / "tables"
    build_tables(csvs, CONFIG, out)
    assert (out / "table2.csv").read_text(encoding="utf-8") == TABLE2_CSV

    cells = {(r["dataset"], r["metric"], r["io"], r["method"]): r for r in read_csv(out / "summary.csv")}
    assert len(cells) == 10
    expected = {  # (n, mean, best)
        ("brain", "dice", "noio", "identity"): (3, 60.0, "0"),
        ("brain", "dice", "noio", "unigradicon"): (3, (90.0 + 70.0 + 75.0) / 3, "1"),
        ("brain", "negative_jacobian_percent", "noio", "unigradicon"): (3, 0.2, "0"),
        ("lung", "landmarks", "noio", "identity"): (2, 11.0, "0"),
        ("lung", "landmarks", "noio", "unigradicon"): (2, 3.0, "0"),
        ("lung", "landmarks", "io-lncc2", "unigradicon"): (1, 1.0, "1"),
        ("lung", "negative_jacobian_percent", "io-lncc2", "unigradicon"): (2, 0.0, "1"),
    }
    for key, (n, mean, best) in expected.items():
        row = cells[key]
        assert (int(row["n"]), float(row["mean"]), row["best"]) == (n, pytest.approx(mean), best), key
    # identity scores every brain pair below uniGradICON: the exact two-sided p of 3 pairs is 2 / 2³
    assert float(cells[("brain", "dice", "noio", "identity")]["p_vs_best"]) == pytest.approx(0.25)
    # against the IO row, which has one pair with landmarks, no test
    assert cells[("lung", "landmarks", "noio", "identity")]["p_vs_best"] == ""
    assert cells[("brain", "dice", "noio", "unigradicon")]["p_vs_best"] == ""  # the best row itself

    summary = summarize(records, [], seed=0)  # no columns: an empty frame with the summary's columns
    assert summary.empty and list(summary.columns)[:3] == ["table", "dataset", "column_label"]
