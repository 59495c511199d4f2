"""Pair lists: pairing schemes, the cap, test modality pairs, weights spread over pairs, reproducibility."""

import pytest

from mgicon.data.pairs import make_pairs, scan_pairs, weights_table
from mgicon.data.registry import load_registry

SCANS = [("a", "0"), ("a", "1"), ("b", "0"), ("b", "1"), ("atlas", "0")]


@pytest.mark.parametrize("pairing, expected", [("intra", 4), ("inter", 5 * 4 - 4 - 0), ("atlas", 4)])
def test_pairing_schemes(pairing, expected):
    pairs = scan_pairs(SCANS, pairing)
    assert len(pairs) == expected
    if pairing == "intra":
        assert all(m[0] == f[0] and m[1] != f[1] for m, f in pairs)
    if pairing == "inter":
        assert all(m[0] != f[0] for m, f in pairs)
    if pairing == "atlas":
        assert all(m == ("atlas", "0") for m, _ in pairs)


def _rows(subjects, modalities, split="train", timepoints=("0",)):
    return [
        {"subject": s, "timepoint": t, "modality": m, "split": split}
        for s in subjects
        for t in timepoints
        for m in modalities
    ]


def _spec(**kw):
    entry = {
        "region": "Brain",
        "modalities": ["t1w", "t2w"],
        "pairing": "inter",
        "stages": ["pretrain", "test"],
        "source": {"kind": "synthetic"},
        **kw,
    }
    return load_registry({"d": entry})["d"]


def test_cap_is_reproducible_and_weights_sum_to_the_dataset_weight():
    rows = _rows([f"s{i}" for i in range(10)], ["t1w", "t2w"])
    spec = _spec(max_pairs=25)
    first = make_pairs(spec, rows, "pretrain", weight=3.0, seed=1)
    assert len(first) == 25
    assert first == make_pairs(spec, rows, "pretrain", weight=3.0, seed=1)
    assert first != make_pairs(spec, rows, "pretrain", weight=3.0, seed=2)
    assert sum(p["weight"] for p in first) == pytest.approx(3.0)


def test_test_pairs_expand_modality_pairs_and_use_the_test_split():
    rows = _rows(["a", "b"], ["t1w", "t2w"]) + _rows(["c", "d"], ["t1w", "t2w"], split="test")
    pairs = make_pairs(_spec(test_modality_pairs=[["t1w", "t2w"], ["t1w", "t1w"]]), rows, "test", weight=1.0)
    assert {(p["moving_subject"], p["fixed_subject"]) for p in pairs} == {("c", "d"), ("d", "c")}
    assert {(p["moving_modality"], p["fixed_modality"]) for p in pairs} == {("t1w", "t2w"), ("t1w", "t1w")}


def test_weights_table_lists_published_shares():
    registry = load_registry(
        {
            "d": {
                "region": "Brain",
                "modalities": ["t1w"],
                "pairing": "inter",
                "stages": ["pretrain"],
                "paper": {"pretrain_share": 12.5},
                "source": {"kind": "synthetic"},
            }
        }
    )
    table = weights_table({"d": 1.0}, {"d": 7}, registry, "pretrain")
    assert table == [{"dataset": "d", "pairs": 7, "weight": "1", "expected_share": "100.00", "paper_share": 12.5}]
