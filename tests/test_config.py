"""mgicon.config: defaults come from the schema alone, every mistake is named before any job runs."""

import copy
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from mgicon.config import ConfigError, load_schema, resolve, schema_default
from mgicon.data.registry import load_registry
from mgicon.evaluate.job import build_method, pair_cap
from mgicon.evaluate.methods import MethodError
from mgicon.network.checkpoint import save_checkpoint
from mgicon.network.model import build_network
from mgicon.train.job import stage_config
from mgicon.train.loop import build_model
from tests.paths import CONFIGS, REPO, SNAKEFILE, SNAKEMAKE, TEST_CONFIGS, load_yaml

DEMO = load_yaml(CONFIGS / "config.yaml")
MINIMAL = {"datasets": {"syn-brain": copy.deepcopy(DEMO["datasets"]["syn-brain"])}}


# every default of the schema, written out by hand (upstream's values where the paper or upstream's code gives them)
EXPECTED_DEFAULTS = {
    "seed": 0,
    "results": "results",
    "resources": "resources",
    "network": {"preset": "paper", "input_shape": [175, 175, 175], "down_channels": None, "up_channels": None},
    "training": {
        "lr": 5e-05,
        "batch_size": 4,
        "device_batch": None,
        "devices": 1,
        "device": "cpu",
        "threads": 16,
        "steps": {"stage1": 100, "stage2": 50, "finetune": 50},
        "checkpoint_every": 50,
        "bn_recalibration": 0,
        "log_every": 1,
        "lncc_sigma": 5.0,
        "augment": True,
        "axis_permutation": True,
        "affine_std": 0.05,
        "bf16": False,
        "channels_last": False,
    },
    "variants": {},
    "evaluation": {
        "baselines": ["identity", "syn"],
        "io": ["noio", "io-lncc2", "io-mind"],
        "io_iterations": 50,
        "io_lr": 2e-05,
        "io_dice_weight": 0.0,  # upstream 1.0.6's --dice_loss_weight
        "io_lncc_sigma": 5.0,
        "keep_orientation": False,
        "affine": False,
        "affine_metric": "auto",
        "max_pairs": None,
        "io_max_pairs": None,
        "device": "cpu",
        "bf16": False,
        "threads": 2,
        "syn": {"deterministic": True, "threads": None, "max_pairs": None},
        "released": {},
        "figures": True,
        "column_order": {},
    },
    "learn2reg": {"datasets": [], "splits": ["val"], "method": None, "io": "io-lncc2"},
    "tracking": {"uri": None, "experiment": "mgicon"},
    "synthetic": {},
}


def test_minimal_config_resolves_to_exactly_the_schema_defaults():
    resolved = resolve(MINIMAL)
    brain = resolved.pop("datasets")["syn-brain"]
    assert resolved == EXPECTED_DEFAULTS
    assert brain["regions"] == 1 and brain["max_pairs"] == 200 and brain["source"]["seed_offset"] == 0
    assert resolve({**resolved, "datasets": {"syn-brain": brain}}) == {**resolved, "datasets": {"syn-brain": brain}}


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_schema_default_gives_every_default():
    for key, value in _leaves(EXPECTED_DEFAULTS):
        assert schema_default(key) == value, key
    assert load_schema()["properties"]["training"]["properties"]["steps"]["default"] == {}


def test_a_partial_nested_section_keeps_the_other_defaults():
    config = {**MINIMAL, "training": {"steps": {"stage1": 5}}}
    assert resolve(config)["training"]["steps"] == {"stage1": 5, "stage2": 50, "finetune": 50}


def _with(path: str, value):
    config = copy.deepcopy({**MINIMAL, "variants": {"multigradicon-f": {"randomization": "F"}}})
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return config


MISTAKES = [
    # (config path, value, key named in the error, words of the problem)
    ("trainig", {"lr": 1e-3}, "trainig", "did you mean 'training'"),
    ("training.stpes", {"stage1": 5}, "training.stpes", "did you mean 'steps'"),
    ("network.presett", "tiny", "network.presett", "did you mean 'preset'"),
    ("training.steps.stage3", 5, "training.steps.stage3", "unknown key"),
    ("datasets.syn-brain.evaluation.metrik", "dice", "datasets.syn-brain.evaluation.metrik", "unknown key"),
    ("network.input_shape", [16, 16, 16], "network.input_shape", "too small"),
    ("network.up_channels", [4, 8], "network.up_channels", "one entry per U-Net level"),
    ("training.lr", -1, "training.lr", "less than or equal to the minimum"),
    ("training.steps.stage1", 0, "training.steps.stage1", "less than the minimum"),
    ("variants.multigradicon-f.datasets", ["syn-nothing"], "variants.multigradicon-f.datasets", "syn-nothing"),
    ("variants.multigradicon.finetune_from", "nope", "variants.multigradicon.finetune_from", "no variant 'nope'"),
    ("variants.multigradicon-f.randomization", "X", "variants.multigradicon-f.randomization", "is not one of"),
    ("datasets.syn-brain.test_modality_pairs", [["t1w", "pd"]], "datasets.syn-brain.test_modality_pairs.0", "'pd'"),
    ("datasets.syn-brain.evaluation.tables", {"t1w/dwi": 5}, "datasets.syn-brain.evaluation.tables.t1w/dwi", "'dwi'"),
    ("evaluation.column_order", {"2": ["HCP"]}, "evaluation.column_order.2", "not a test dataset"),
    ("synthetic.sise", [8, 8, 8], "synthetic", "sise"),
    ("evaluation.released", {"multigradicon-f": {"model": "x.pt"}}, "evaluation.released", "also name a variant"),
]


@pytest.mark.parametrize("path, value, key, words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_config_mistakes_are_named(path, value, key, words):
    with pytest.raises(ConfigError) as err:
        resolve(_with(path, value), "my.yaml")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"my.yaml: {key}: ") and words in message, message


def _write(path: Path, shape=(8, 9, 10), spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(np.zeros(shape[::-1], np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _manifest(tmp_path, split="train", label_spacing=(1.0, 1.0, 1.0)):
    rows = ["dataset,subject,timepoint,modality,image,label,landmarks,mask,split"]
    for s in ("a", "b"):
        _write(tmp_path / f"{s}.nii.gz")
        _write(tmp_path / f"{s}_label.nii.gz", spacing=label_spacing if s == "b" else (1.0, 1.0, 1.0))
        rows.append(f"mine,{s},,t1w,{s}.nii.gz,{s}_label.nii.gz,,,{split if s == 'b' else 'train'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    return {
        "datasets": {
            "mine": {
                "region": "Brain",
                "modalities": ["t1w"],
                "pairing": "inter",
                "stages": ["test"],
                "source": {"kind": "manifest", "path": str(tmp_path / "manifest.csv")},
            }
        }
    }


@pytest.mark.parametrize(
    "split, label_spacing, words",
    [
        ("validation", (1.0, 1.0, 1.0), "split 'validation' is not train or test"),
        ("test", (2.0, 1.0, 1.0), "is not on the grid of its image"),
    ],
)
def test_manifest_mistakes_are_caught_at_plan_time(tmp_path, split, label_spacing, words):
    config = _manifest(tmp_path, split, label_spacing)
    with pytest.raises(ConfigError, match=words) as err:
        resolve(config)
    assert "datasets.mine.source.path" in str(err.value) and "line 3" in str(err.value)
    resolve(_manifest(tmp_path))  # the same manifest with a good split and grid passes


def test_an_absent_released_model_that_cannot_be_downloaded_fails_at_plan_time(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("MGICON_MULTIGRADICON_URL", "http://127.0.0.1:9/Step_2_final.trch")  # discard port: closed
    config = {**MINIMAL, "evaluation": {"released": {"mg": {"model": "multigradicon"}}}}
    with pytest.raises(ConfigError, match="evaluation.released.mg.model: the released multigradicon weights are not"):
        resolve(config)
    resolve(config, check_files=False)  # the schema part alone is fine


def _every_default_changed() -> dict:
    """The demo's datasets with every training/evaluation/network default replaced by another valid value."""
    return {
        "seed": 7,
        "results": "elsewhere",
        "network": {
            "preset": "tiny",
            "input_shape": [24, 28, 32],
            "down_channels": [2, 4, 6],
            "up_channels": [3, 5, 7],
        },
        "training": {
            "lr": 3e-3,
            "batch_size": 3,
            "device_batch": 1,
            "devices": 1,
            "device": "cpu",
            "threads": 3,
            "steps": {"stage1": 11, "stage2": 12, "finetune": 13},
            "checkpoint_every": 5,
            "log_every": 2,
            "lncc_sigma": 1.5,
            "augment": False,
            "axis_permutation": False,
            "affine_std": 0.01,
            "bf16": True,
            "channels_last": True,
        },
        "evaluation": {
            "io_iterations": 3,
            "io_lr": 1e-2,
            "io_lncc_sigma": 1.25,
            "max_pairs": 2,
            "io_max_pairs": 1,
            "bf16": True,
            "affine": True,
            "affine_metric": "gc",
            "keep_orientation": True,
            "syn": {"deterministic": False, "threads": 2},
        },
        "variants": {"v": {"similarity": "mind", "randomization": "R", "modalities": "first"}},
        "datasets": DEMO["datasets"],
    }


def test_every_job_follows_a_changed_default(tmp_path):
    config = resolve(_every_default_changed())
    training = config["training"]
    for stage in ("stage1", "stage2", "finetune"):
        cfg = stage_config(config, "v", stage, None)
        assert cfg.steps == training["steps"][stage]
        assert (cfg.lr, cfg.batch_size, cfg.device_batch, cfg.lncc_sigma) == (3e-3, 3, 1, 1.5)
        assert (cfg.checkpoint_every, cfg.log_every, cfg.affine_std, cfg.seed) == (5, 2, 0.01, 7)
        assert (cfg.augment, cfg.axis_permutation, cfg.bf16, cfg.channels_last) == (False, False, True, True)
        assert cfg.similarity == "mind" and cfg.network["input_shape"] == [24, 28, 32]
        built = build_model(cfg).config
        assert (built.down_channels, built.up_channels) == ((2, 4, 6), (3, 5, 7))
    checkpoint = tmp_path / "v.pt"
    save_checkpoint(build_network("tiny", (24, 28, 32)), checkpoint)
    method = build_method(config, "v", checkpoint)
    assert (method.io_iterations, method.io_lr, method.io_lncc_sigma, method.seed, method.bf16) == (
        3,
        1e-2,
        1.25,
        7,
        True,
    )
    assert (method.affine, method.affine_metric, method.keep_orientation) == (True, "gc", True)
    assert pair_cap(config, "noio") == 2 and pair_cap(config, "io-mind") == 1
    syn = build_method(config, "syn")
    assert (syn.seed, syn.deterministic, syn.threads) == (7, False, 2)
    spec = load_registry(config["datasets"])["syn-lung"]
    assert spec.evaluation["masked"] == [True, False] and spec.max_pairs == 200


def test_a_variant_is_scored_with_the_checkpoint_the_pipeline_names():
    """The library does not guess where the pipeline put a variant's weights."""
    with pytest.raises(MethodError, match="v: a trained variant needs its checkpoint"):
        build_method(resolve(_every_default_changed()), "v")


def test_snakemake_dry_run_stops_on_a_config_mistake_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"stpes": {"stage1": 5}}}))
    run = subprocess.run(
        [
            SNAKEMAKE,
            "-n",
            "--snakefile",
            str(SNAKEFILE),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(CONFIGS / "config.yaml"),
            str(bad),
        ],
        capture_output=True,
        encoding="utf-8",
        cwd=tmp_path,
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1 and "bad.yaml" in errors[0] and "training.stpes" in errors[0], run.stderr
    assert "Traceback" not in run.stderr


def _local_dataset(root) -> dict:
    """The demo's brain set with a ``mine`` dataset read from ``root`` by a local layout."""
    source = {"kind": "local", "root": root, "layout": {"images": {"t1w": "{subject}.nii.gz"}}}
    mine = {"region": "Brain", "modalities": ["t1w"], "pairing": "inter", "stages": ["test"], "source": source}
    return {"datasets": {**MINIMAL["datasets"], "mine": mine}}


def _dry_run(tmp_path, config: dict, *targets: str) -> subprocess.CompletedProcess:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        [SNAKEMAKE, "-n", *targets, "--snakefile", str(SNAKEFILE), "--directory", str(tmp_path)]
        + ["--configfile", str(tmp_path / "mine.yaml")],
        capture_output=True,
        encoding="utf-8",
        cwd=tmp_path,
    )


@pytest.mark.parametrize("root, problem", [(None, "not set"), ("gone", "does not exist"), ("a-file", "not a folder")])
def test_snakemake_dry_run_stops_on_an_unusable_dataset_root_with_one_line(tmp_path, root, problem):
    """A local dataset's root that is null, missing or a file stops the plan before any job (it used to fail in
    the dataset's manifest job, with a traceback in its log)."""
    (tmp_path / "a-file").write_text("not a folder")
    run = _dry_run(tmp_path, _local_dataset(root))
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1, run.stderr
    assert "mine.yaml: datasets.mine.source.root: " in errors[0] and problem in errors[0], errors[0]
    assert "Traceback" not in run.stderr and "manifest.log" not in run.stdout + run.stderr


def test_a_dataset_root_only_blocks_the_plans_that_need_it(tmp_path):
    run = _dry_run(tmp_path, _local_dataset(None), "results/data/syn-brain/preprocessed.csv")
    assert run.returncode == 0, run.stderr[-2000:]
    (tmp_path / "copy").mkdir()
    run = _dry_run(tmp_path, _local_dataset("copy"))  # a folder: its files are the manifest job's to read
    assert run.returncode == 0, run.stderr[-2000:]
    assert "results/data/mine/manifest.csv" in run.stdout


@pytest.mark.parametrize(
    "path", sorted(CONFIGS.glob("*.yaml")) + sorted(TEST_CONFIGS.glob("*.yaml")), ids=lambda p: str(p.relative_to(REPO))
)
def test_shipped_configs_resolve(path):
    resolve(load_yaml(path), path, check_files=False)  # released.yaml names a manifest the user provides


def test_test_configs_copy_the_demos_datasets_and_variants():
    """The .test configs are complete configs (the catalog's convention); their datasets and variants are the
    demo's, so the workflow tests exercise what `make pipeline` runs."""
    for path in TEST_CONFIGS.glob("*.yaml"):
        config = load_yaml(path)
        for section in ("datasets", "variants"):
            for name, spec in config.get(section, {}).items():
                assert spec == DEMO[section][name], (path.name, section, name)


def _learn2reg_config(learn2reg: dict) -> dict:
    """The minimal config plus a Learn2Reg dataset (``toy``) and one released method (``rel``)."""
    config = copy.deepcopy(MINIMAL)
    config["datasets"]["toy"] = {
        **copy.deepcopy(MINIMAL["datasets"]["syn-brain"]),
        "source": {"kind": "learn2reg", "path": "Toy_dataset.json"},
    }
    config["evaluation"] = {"released": {"rel": {"model": "rel.pt"}}}
    config["learn2reg"] = learn2reg
    return config


@pytest.mark.parametrize(
    "learn2reg, key, words",
    [
        ({"datasets": ["toy", "nope"]}, "learn2reg.datasets.1", "'nope' is not a dataset of the config"),
        ({"datasets": ["syn-brain"]}, "learn2reg.datasets.0", "'syn-brain' is not read from a Learn2Reg json"),
        ({"datasets": ["toy"], "method": "nope"}, "learn2reg.method", "'nope' is not a variant or"),
    ],
    ids=["unknown dataset", "not learn2reg", "unknown method"],
)
def test_learn2reg_mistakes_are_named_by_resolve(learn2reg, key, words):
    with pytest.raises(ConfigError) as err:
        resolve(_learn2reg_config(learn2reg), "my.yaml", check_files=False)
    assert str(err.value).startswith(f"my.yaml: {key}: ") and words in str(err.value), str(err.value)


def test_learn2reg_method_defaults_to_the_first_network_method():
    from mgicon.config import learn2reg_method

    config = resolve(_learn2reg_config({"datasets": ["toy"]}), check_files=False)
    assert learn2reg_method(config) == "rel"
    config["variants"] = {"mine": {}}
    assert learn2reg_method(config) == "mine"
    config["learn2reg"]["method"] = "rel"
    assert learn2reg_method(config) == "rel"


def test_syn_threads():
    from mgicon.config import syn_threads

    assert syn_threads(True, None, 8) == 1  # deterministic: one thread, whatever the job has
    assert syn_threads(False, 3, 8) == 3
    assert syn_threads(False, None, 8) == 8
    assert syn_threads(False, None) is None  # ANTs' own default
