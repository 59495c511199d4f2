"""Registry weights: the paper's formulas on a hand-built registry, and Table 1's shares from config/paper.yaml."""

import pytest

from mgicon.data.registry import expected_shares, finetune_weights, load_registry, pretrain_weight, stage_weights
from tests.paths import CONFIGS, load_yaml

HAND = {
    "mono": {
        "region": "Lung",
        "modalities": ["ct"],
        "pairing": "intra",
        "stages": ["pretrain"],
        "source": {"kind": "synthetic"},
    },
    "pair": {
        "region": "Knee",
        "modalities": ["dess", "t2"],
        "pairing": "inter",
        "stages": ["pretrain", "finetune"],
        "source": {"kind": "synthetic"},
    },
    "inv": {
        "region": "Abdomen",
        "modalities": ["mri", "ct"],
        "pairing": "inter",
        "stages": ["pretrain", "finetune"],
        "ct_inversion": True,
        "source": {"kind": "synthetic"},
    },
    "body": {
        "region": "Body",
        "modalities": ["fat", "water"],
        "pairing": "inter",
        "stages": ["pretrain", "finetune"],
        "regions": 6,
        "anatomies": ["abdomen", "knee"],
        "source": {"kind": "synthetic"},
    },
}


@pytest.mark.parametrize("name, expected", [("mono", 1), ("pair", 3), ("inv", 6), ("body", 18)])
def test_pretrain_weight_is_regions_times_modality_pairs_with_repetition(name, expected):
    assert pretrain_weight(load_registry(HAND)[name]) == expected


def test_finetune_weights_balance_anatomies():
    registry = load_registry(HAND)
    weights = finetune_weights([registry[n] for n in ("pair", "inv", "body")])
    # counts: knee 2 (pair, body), abdomen 2 (inv, body); max 2
    assert weights == {"pair": 1.0, "inv": 1.0, "body": 2.0}
    assert "mono" not in stage_weights(registry, "finetune")


def test_inverted_ct_only_in_pretraining():
    spec = load_registry(HAND)["inv"]
    assert spec.modalities_in("pretrain") == ("mri", "ct", "1-ct")
    assert spec.modalities_in("finetune") == ("mri", "ct")


def test_paper_registry_reproduces_table_1_shares():
    config = load_yaml(CONFIGS / "paper.yaml")
    registry = load_registry(config["datasets"])
    for stage, key in (("pretrain", "pretrain_share"), ("finetune", "finetune_share")):
        shares = expected_shares(stage_weights(registry, stage))
        published = {n: s.paper[key] for n, s in registry.items() if s.paper.get(key)}
        assert set(published) == set(shares)
        for name, share in shares.items():
            assert share == pytest.approx(published[name], abs=0.011), (stage, name)
    assert len(registry) == 21  # the rows of Table 1


def test_unknown_stage_is_an_error():
    bad = {"x": {**HAND["mono"], "stages": ["pretraining"]}}
    with pytest.raises(ValueError, match="unknown stages"):
        load_registry(bad)
