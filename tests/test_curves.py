"""Training curves: MLflow histories back in step order, stages one after the other, a finetuned variant after the
variant it starts from, the trailing mean by hand, and the figure from a real MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mgicon.tables.curves import variant_curves
from mgicon.tables.figures import curve_lines
from mgicon.tracking import Tracker, metric_history
from mgicon.vocabulary import GRADICON_TERM, SIMILARITY_TERM

CONFIG = {
    "variants": {"f": {}, "ft": {"finetune_from": "f"}, "ft2": {"finetune_from": "ft"}},
    "training": {"steps": {"stage1": 4, "stage2": 3, "finetune": 2}},
}


def test_lines_put_stages_one_after_the_other_and_smooth_by_a_trailing_mean():
    curves = {
        "f": {
            "stage2": {SIMILARITY_TERM: [(0, 5.0), (1, 7.0)]},  # given out of order: stage 1 comes first
            "stage1": {SIMILARITY_TERM: [(0, 1.0), (1, 3.0), (2, 2.0)], GRADICON_TERM: [(0, 0.5)]},
        },
        "ft": {"finetune": {SIMILARITY_TERM: [(0, 4.0)]}},
    }
    lines = {(ln.variant, ln.term, ln.stage): ln for ln in curve_lines(curves, {"ft": 5}, window=2)}
    s1, s2 = lines["f", SIMILARITY_TERM, "stage1"], lines["f", SIMILARITY_TERM, "stage2"]
    np.testing.assert_array_equal(s1.steps, [0, 1, 2])
    np.testing.assert_array_equal(s2.steps, [3, 4])
    np.testing.assert_allclose(s1.smoothed, [1.0, 2.0, 2.5])
    np.testing.assert_allclose(s2.smoothed, [5.0, 6.0])  # each stage smoothed on its own
    np.testing.assert_array_equal(lines["ft", SIMILARITY_TERM, "finetune"].steps, [5])
    assert ("ft", GRADICON_TERM, "finetune") not in lines and ("f", GRADICON_TERM, "stage2") not in lines


def test_figure_from_the_runs_of_real_training_jobs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_files = {}
    for variant, stages in (("f", ("stage1", "stage2")), ("ft", ("finetune",)), ("ft2", ("finetune",))):
        record = {"stages": {}}
        for stage in stages:
            tracker = Tracker(uri, f"train-{variant}-{stage}")
            steps = CONFIG["training"]["steps"][stage]
            for step in reversed(range(steps)):  # logged out of order: the history comes back sorted
                tracker.log_metrics({SIMILARITY_TERM: 1.0 / (step + 1), GRADICON_TERM: 0.1 * step}, step)
            tracker.end()
            record["stages"][stage] = {"run_id": tracker.run_id, "tracking_uri": uri}
        path = tmp_path / f"{variant}.json"
        path.write_text(json.dumps(record), encoding="utf-8")
        run_files[variant] = path
    history = metric_history(uri, record["stages"]["finetune"]["run_id"], [SIMILARITY_TERM, "absent"])
    assert history == {SIMILARITY_TERM: [(0, 1.0), (1, 0.5)]}
    out = variant_curves(CONFIG, run_files, tmp_path / "training.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("variant, offset", [("f", 0), ("ft", 7), ("ft2", 9)])
def test_a_finetuned_variant_starts_after_the_training_it_continues(variant, offset):
    from mgicon.tables.curves import _steps

    runs = {"f": {"stages": {"stage1": {}, "stage2": {}}}, "ft": {"stages": {"finetune": {}}}, "ft2": {"stages": {}}}
    assert _steps(variant, CONFIG, runs) == offset
