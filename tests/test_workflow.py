"""The Snakemake workflow: lint and format, the data target on .test/config/data.yaml (the demo's datasets, a
smaller grid), a dry run of the demo and of the paper."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
import yaml

from mgicon.data.build import read_preprocessed
from mgicon.data.manifest import read_csv, read_manifest
from tests.paths import CONFIGS, REPO, SNAKEFILE, SNAKEMAKE, TEST_CONFIGS, load_yaml

MICRO_PATH = TEST_CONFIGS / "data.yaml"
MICRO = load_yaml(MICRO_PATH)


def _snakemake(workdir, *args, config=None):
    cmd = [SNAKEMAKE, "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    if config is not None:
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=workdir)


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
    work = tmp_path_factory.mktemp("micro")
    run = _snakemake(work, "--cores", "2", "data", config=MICRO_PATH)
    assert run.returncode == 0, run.stderr[-3000:]
    return work


def test_data_target_builds_manifests_volumes_and_pairs(micro_data):
    results = micro_data / "results"
    for name in MICRO["datasets"]:
        rows = read_manifest(results / "data" / name / "manifest.csv")
        assert rows and {r["dataset"] for r in rows} == {name}
        processed = read_preprocessed(results / "data" / name / "preprocessed.csv")
        volume = sitk.GetArrayFromImage(sitk.ReadImage(processed[0]["network_image"]))
        assert volume.shape == (24, 24, 24) and volume.min() >= 0 and volume.max() <= 1 and volume.max() > 0.5
    for stage in ("pretrain", "finetune", "test"):
        weights = read_csv(results / "pairs" / stage / "weights.csv")
        assert {w["dataset"] for w in weights} == {n for n, d in MICRO["datasets"].items() if stage in d["stages"]}
        assert sum(float(w["expected_share"]) for w in weights) == pytest.approx(100, abs=0.05)
    test_list = read_csv(results / "pairs" / "test" / "syn-brain.csv")
    assert {(p["moving_modality"], p["fixed_modality"]) for p in test_list} == {
        ("t1w", "t1w"),
        ("t2w", "t2w"),
        ("t1w", "t2w"),
        ("t2w", "flair"),
    }


def test_landmarks_and_masks_reach_the_manifest(micro_data):
    rows = read_manifest(micro_data / "results" / "data" / "syn-lung" / "manifest.csv")
    assert all(r["landmarks"] and r["mask"] for r in rows)
    assert {r["timepoint"] for r in rows} == {"inhale", "exhale"}


def test_a_second_run_has_nothing_to_do(micro_data):
    run = _snakemake(micro_data, "-n", "data", config=MICRO_PATH)
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr


def test_lint_and_snakefmt_are_clean():
    lint = subprocess.run([SNAKEMAKE, "--lint"], capture_output=True, encoding="utf-8", errors="replace", cwd=REPO)
    assert lint.returncode == 0, lint.stdout[-2000:] + lint.stderr[-2000:]
    fmt = subprocess.run(
        [str(Path(sys.executable).with_name("snakefmt")), "--check", "workflow/"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=REPO,
    )
    assert fmt.returncode == 0, fmt.stderr


def test_paper_config_plans_the_data_stage(tmp_path):
    """As shipped, the plan stops at the first controlled-access dataset without a root; with the roots set (to
    folders; their files are read by the manifest jobs) the data stage plans."""
    shipped = _snakemake(tmp_path, "-n", "data", config=CONFIGS / "paper.yaml")
    assert shipped.returncode == 2, shipped.stderr[-2000:]
    errors = [line for line in shipped.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1 and "datasets.COPDGene.source.root: not set" in errors[0], shipped.stderr[-2000:]
    config = load_yaml(CONFIGS / "paper.yaml")
    for name, spec in config["datasets"].items():
        if spec["source"]["kind"] == "local":
            spec["source"]["root"] = str(tmp_path / "roots" / name)
            (tmp_path / "roots" / name).mkdir(parents=True)
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    run = _snakemake(tmp_path, "-n", "data", config=tmp_path / "paper.yaml")
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout + run.stderr
    assert "manifest" in out and "pair_weights" in out
    for name in ("COPDGene", "UKBiobank", "Dirlab-COPDGene", "Pancreatic-CT-CBCT-SEG-test"):
        assert f"results/data/{name}/manifest.csv" in out


def test_default_config_plans_every_variant(tmp_path):
    run = _snakemake(tmp_path, "-n", config=CONFIGS / "config.yaml")
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout + run.stderr
    for variant in ("unigradicon", "unigradicon-lncc2", "multigradicon-b", "multigradicon-f", "multigradicon-r"):
        assert f"results/models/{variant}/stage1/final.pt" in out and f"results/models/{variant}/stage2/final.pt" in out
    assert "results/models/multigradicon/finetune/final.pt" in out
    assert "results/models/multigradicon-f/checkpoint.pt" in out


def _planned_rules(run) -> list[str]:
    lines = (run.stdout + run.stderr).splitlines()
    return [line.split()[1].rstrip(":") for line in lines if line.startswith(("rule ", "localrule "))]


def test_baselines_do_not_rerun_for_network_settings(micro_data):
    """A finished identity baseline stays finished when the networks' IO settings change, and reruns when its own
    setting (the number of test pairs) does."""
    config = copy.deepcopy(MICRO)
    config["evaluation"] = {"baselines": ["identity"], "io": ["noio", "io-lncc2"], "figures": False}
    (micro_data / "base.yaml").write_text(yaml.safe_dump(config))
    tests = [n for n, d in MICRO["datasets"].items() if "test" in d["stages"]]
    targets = [f"results/eval/identity/noio/{n}.csv" for n in tests]
    run = _snakemake(micro_data, "--cores", "2", *targets, config=micro_data / "base.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    for change, reruns in (({"io": ["noio"], "io_iterations": 3, "io_lr": 1e-3}, False), ({"max_pairs": 1}, True)):
        changed = copy.deepcopy(config)
        changed["evaluation"].update(change)
        (micro_data / "changed.yaml").write_text(yaml.safe_dump(changed))
        plan = _snakemake(micro_data, "-n", *targets, config=micro_data / "changed.yaml")
        assert plan.returncode == 0, plan.stderr[-2000:]
        assert ("baseline" in _planned_rules(plan)) is reruns, plan.stdout[-2000:]


def test_a_variant_finetuned_from_a_checkpoint_plans_only_its_finetuning(tmp_path):
    """`finetune_from: PATH`: the pipeline finetunes the user's checkpoint (a job input) and trains nothing else."""
    from mgicon.network.checkpoint import save_checkpoint
    from mgicon.network.model import build_network

    checkpoint = tmp_path / "mine.pt"
    save_checkpoint(build_network("tiny", (24, 24, 24)), checkpoint)
    config = {**MICRO, "variants": {"mine": {"finetune_from": str(checkpoint)}}, "evaluation": {"io": ["noio"]}}
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(config))
    run = _snakemake(tmp_path, "-n", "--cores", "1", config=tmp_path / "ft.yaml")
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout + run.stderr
    assert "results/models/mine/finetune/final.pt" in out and str(checkpoint) in out
    assert "stage1/final.pt" not in out and "stage2/final.pt" not in out


def test_a_variant_finetuned_from_a_checkpoint_runs_to_its_evaluation(micro_data):
    """The pipeline's finetune route end to end: the user's checkpoint finetuned on one dataset with upstream's
    Dice term (the variant's options reach the job), then evaluated; nothing else is trained."""
    from mgicon.network.checkpoint import load_checkpoint, save_checkpoint
    from mgicon.network.model import build_network

    checkpoint = micro_data / "mine.pt"
    save_checkpoint(build_network("tiny", tuple(MICRO["network"]["input_shape"])), checkpoint)
    variant = {"finetune_from": str(checkpoint), "datasets": ["syn-abdomen"], "dice_loss_weight": 1.0}
    training = {"steps": {"finetune": 4}, "batch_size": 2, "lr": 2e-3, "threads": 1}
    config = {**MICRO, "training": training, "variants": {"mine": variant}, "evaluation": {"io": ["noio"]}}
    (micro_data / "mine.yaml").write_text(yaml.safe_dump(config))
    target = "results/eval/mine/noio/syn-abdomen.csv"
    run = _snakemake(micro_data, "--cores", "2", target, config=micro_data / "mine.yaml")
    assert run.returncode == 0, run.stderr[-3000:]
    rules = _planned_rules(run)
    assert rules.count("train_stage") == 1
    # the data stage stays done although the config was rewritten with its keys sorted (params compare by content)
    assert not {"manifest", "preprocess"} & set(rules), rules
    final = load_checkpoint(micro_data / "results" / "models" / "mine" / "finetune" / "final.pt")
    assert final["train_config"]["init_from"] == str(checkpoint) and final["train_config"]["dice_loss_weight"] == 1.0
    assert final["step"] == 4
    start = load_checkpoint(checkpoint)["state_dict"]
    assert any(not torch.equal(start[k], v) for k, v in final["state_dict"].items())  # it did train
    samples = read_csv(micro_data / "results" / "models" / "mine" / "finetune" / "samples.csv")
    assert {r["dataset"] for r in samples} == {"syn-abdomen"}
    rows = read_csv(micro_data / target)
    assert rows and all(r["method"] == "mine" for r in rows)
