"""config/paper.yaml (and config/released.yaml) on fake dataset layouts: every source resolves, and the whole
study plans — with the SLURM profile and without — in seconds.

The fake layouts hold tiny NIfTI files named as each dataset's ``source`` expects: template patterns under a
``root`` for the controlled-access sets, a Learn2Reg ``*_dataset.json`` for the others (for downloads, already
extracted where the adapter keeps its download, ``{resources}/{dataset}/extracted``), landmark files in each
dataset's ``landmarks_format``.  Nothing is trained or evaluated: manifests and test pair lists are built
in-process, the DAG only planned (``snakemake -n``), the tables' layout rendered without data.
"""

import copy
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from mgicon.data.build import build_manifest
from mgicon.data.manifest import read_landmarks
from mgicon.data.pairs import make_pairs
from mgicon.data.registry import load_registry
from mgicon.tables import build_tables, columns_from_config
from tests.paths import CONFIGS, PROFILES, SNAKEFILE, SNAKEMAKE, load_yaml

PAPER = load_yaml(CONFIGS / "paper.yaml")
RELEASED = load_yaml(CONFIGS / "released.yaml")
TRAIN_SUBJECTS = ("s01", "s02")
TRAIN_CASES = ("0901", "0902")  # Learn2Reg case numbers no test list uses


def _write_like(template: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


# landmark files of the fake 4×4×4 images, by the layout's ``landmarks_format``
FAKE_LANDMARKS = {
    "dirlab_txt": "1 2 3\n3 2 1\n4 4 4\n",  # DIR-Lab: 1-based voxel indices
    "bratsreg_csv": "Landmark,X,Y,Z\n1,1.0,-238.0,2.0\n2,3.0,-237.5,0.0\n",  # BraTS-Reg: Y = j - 239
}
# timepoints of the fake scans: BraTS-Reg's baseline and follow-up as its file names spell them, else DIR-Lab's
FAKE_TIMEPOINTS = {"bratsreg_csv": ("00_0000", "01_0106")}


def _fake_template(root: Path, spec, image: Path) -> None:
    """Files for a ``template`` layout: two training subjects, two test subjects (or 'atlas'), two timepoints."""
    layout = spec.source["layout"]
    subjects = [str(s) for s in spec.source.get("test_subjects", [])][:2] + list(TRAIN_SUBJECTS)
    if spec.pairing == "atlas":
        subjects.append("atlas")
    first = next(iter(layout["images"].values()))
    fmt = layout.get("landmarks_format", "mm_csv")
    timepoints = FAKE_TIMEPOINTS.get(fmt, ("INSP", "EXP")) if "{timepoint}" in first else ("0",)
    for subject in subjects:
        for timepoint in timepoints:
            fields = {"subject": subject, "timepoint": timepoint}
            for modality, pattern in layout["images"].items():
                _write_like(image, root / pattern.format(**fields))
                for key in ("label", "mask"):
                    if layout.get(key):
                        _write_like(image, root / layout[key].format(modality=modality, **fields))
                if layout.get("landmarks"):
                    target = root / layout["landmarks"].format(modality=modality, **fields)
                    target.write_text(FAKE_LANDMARKS[fmt])


def _fake_learn2reg(folder: Path, name: str, spec, image: Path) -> Path:
    """A Learn2Reg ``*_dataset.json`` with its files; returns the json's path."""
    layout = spec.source.get("layout") or {}
    renamed = {str(v): str(k) for k, v in (layout.get("modality_names") or {}).items()}
    json_name = lambda m: renamed.get(m, m).upper()  # noqa: E731 (the json's spelling of our modality)
    if layout.get("channel_is") == "timepoint":  # a case's scans are its channels
        mods = list(spec.modalities) * (2 if len(spec.modalities) == 1 else 1)
        if "cbct" in spec.modalities:  # ThoraxCBCT: the planning CT, then two CBCTs
            mods.append("cbct")
    else:
        mods = list(spec.modalities)
    task = re.sub(r"[^A-Za-z]", "", name)
    test = [str(s) for s in spec.source.get("test_subjects", [])][:2]
    only_test = spec.stages == ("test",)
    cases = test + ([] if only_test and test else list(TRAIN_CASES))
    entries = []
    for case in cases:
        for channel in range(len(mods)):
            stem = f"{task}_{case}_{channel:04d}.nii.gz"
            entry = {"image": f"./imagesTr/{stem}"}
            _write_like(image, folder / "imagesTr" / stem)
            if (spec.evaluation or {}).get("metric") == "landmarks":
                key = layout.get("keypoints_key", "keypoints")
                entry[key] = f"./keypointsTr/{task}_{case}_{channel:04d}.csv"
                (folder / "keypointsTr").mkdir(exist_ok=True)
                (folder / entry[key]).write_text("1.0,2.0,3.0\n3.0,2.0,1.0\n")
            else:
                entry["label"] = f"./labelsTr/{stem}"
                _write_like(image, folder / "labelsTr" / stem)
            entries.append(entry)
    meta = {
        "name": task,
        "modality": {str(i): json_name(m) for i, m in enumerate(mods)},
        "validation" if only_test else "training": entries,
    }
    path = folder / f"{task}_dataset.json"
    path.write_text(json.dumps(meta))
    return path


@pytest.fixture(scope="module")
def fake_study(tmp_path_factory):
    """``(workdir, config path, config)``: config/paper.yaml with every source pointed at a fake layout and
    ``results``/``resources`` in the temporary folder."""
    work = tmp_path_factory.mktemp("paper")
    image = work / "image.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(4, 4, 4)), str(image))
    config = copy.deepcopy(PAPER)
    config["results"], config["resources"] = str(work / "results"), str(work / "resources")
    for spec in load_registry(config["datasets"]).values():
        source = config["datasets"][spec.name]["source"]
        if source["kind"] == "local":
            source["root"] = str(work / "roots" / spec.name)
            _fake_template(work / "roots" / spec.name, spec, image)
        elif source["kind"] == "download":  # already downloaded and extracted
            _fake_learn2reg(work / "resources" / spec.name / "extracted", spec.name, spec, image)
        elif source["kind"] == "learn2reg":
            source["path"] = str(_fake_learn2reg(work / "roots" / spec.name, spec.name, spec, image))
    path = work / "paper.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return work, path, config


def _snakemake(workdir: Path, *args: str, config: Path) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [
        SNAKEMAKE,
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--nolock",
        "--configfile",
        str(config),
        *args,
    ]
    start = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, encoding="utf-8", errors="replace", cwd=workdir)
    return run, time.monotonic() - start


def _job_counts(out: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run: rule -> number of jobs."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _resources(out: str, rule: str) -> str:
    block = out.split(f"rule {rule}:", 1)[1].split("\n\n", 1)[0]
    return re.search(r"resources: (.*)", block).group(1)


def _expected_counts(config) -> dict[str, int]:
    registry = load_registry(config["datasets"])
    variants, evaluation = config["variants"], config["evaluation"]
    return {
        "manifest": len(registry),
        "preprocess": len(registry),
        "train_stage": sum(1 if v.get("finetune_from") else 2 for v in variants.values()),
        "model": len(variants),
        "evaluate": (len(variants) + len(evaluation.get("released", {}))) * len(evaluation["io"]),
        "baseline": len(evaluation["baselines"]),
        "tables": 1,
        "claims": 1,
        "summary": 1,
    }


def _check_plan(out: str, config) -> None:
    counts = _job_counts(out)
    for rule, n in _expected_counts(config).items():
        assert counts.get(rule) == n, (rule, counts)
    results = config["results"]
    for variant, spec in config["variants"].items():
        stages = ["finetune"] if spec.get("finetune_from") else ["stage1", "stage2"]
        for stage in stages:
            assert f"{results}/models/{variant}/{stage}/final.pt" in out
    for method in [*config["variants"], *config["evaluation"].get("released", {})]:
        for io in config["evaluation"]["io"]:
            assert f"{results}/eval/{method}/{io}/L2R-NLST-val.csv" in out, (method, io)
    for baseline in ("identity", "syn"):
        assert f"{results}/eval/{baseline}/noio/Dirlab-COPDGene.csv" in out
    # BraTS-Reg (Tables 3 and 5): its test pairs, and its evaluation by every method in every IO setting
    assert f"{results}/pairs/test/BratsReg.csv" in out
    for method in [*config["evaluation"]["baselines"], *config["variants"], *config["evaluation"].get("released", {})]:
        ios = ["noio"] if method in config["evaluation"]["baselines"] else config["evaluation"]["io"]
        for io in ios:
            assert f"{results}/eval/{method}/{io}/BratsReg.csv" in out, (method, io)
    for n in (2, 3, 4, 5):
        assert f"{results}/tables/table{n}.md" in out
    assert f"{results}/tables/published_vs_reproduced.md" in out and f"{results}/summary.md" in out
    assert f"{results}/tables/claims.md" in out and f"{results}/tables/claims.csv" in out


# Known gaps, each to be removed with its fix (strict: a fixed gap fails here until its entry goes).
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[n])) if n in KNOWN_GAPS else n
        for n in PAPER["datasets"]
    ],
)
def test_every_paper_source_reads_its_fake_layout(fake_study, name):
    """The dataset's manifest from its fake layout, and test pairs for every modality pair it is evaluated on."""
    work, _, config = fake_study
    spec = load_registry(config["datasets"])[name]
    rows = build_manifest(name, config, work / "manifests" / name / "manifest.csv")  # not results/: the DAG stays whole
    assert {r["modality"] for r in rows} == set(spec.modalities)
    for stage in spec.stages:
        pairs = make_pairs(spec, rows, stage, 1.0)
        if stage == "test":
            assert {(p["moving_modality"], p["fixed_modality"]) for p in pairs} == set(spec.modality_pairs())
        else:
            assert pairs, stage
    test_rows = [r for r in rows if r["split"] == "test"]
    if (spec.evaluation or {}).get("metric") == "landmarks" and "test" in spec.stages:
        assert test_rows and all(r["landmarks"] for r in test_rows)
        for row in test_rows:  # converted to our mm CSVs, one point per line of the fake file
            assert read_landmarks(row["landmarks"]).shape[0] >= 2
    if True in (spec.evaluation or {}).get("masked", []):
        assert test_rows and all(r["mask"] for r in test_rows)


def test_bratsreg_is_scored_baseline_to_follow_up(fake_study):
    """BraTS-Reg's test pairs: each test subject's baseline and follow-up both ways, in all ten modality pairs."""
    work, _, config = fake_study
    spec = load_registry(config["datasets"])["BratsReg"]
    rows = build_manifest("BratsReg", config, work / "manifests" / "BratsReg-pairs" / "manifest.csv")
    pairs = make_pairs(spec, rows, "test", 1.0)
    test_subjects = set(config["datasets"]["BratsReg"]["source"]["test_subjects"][:2])
    assert {p["moving_subject"] for p in pairs} == test_subjects
    assert all(p["moving_subject"] == p["fixed_subject"] for p in pairs)
    assert {(p["moving_timepoint"], p["fixed_timepoint"]) for p in pairs} == {
        ("00_0000", "01_0106"),
        ("01_0106", "00_0000"),
    }
    assert len(pairs) == len(test_subjects) * 2 * 10
    # the fake image has the default geometry (origin 0, spacing 1, identity): mm = (X, Y + 239, Z)
    landmarks = {r["landmarks"] for r in rows if r["split"] == "test"}
    assert all(read_landmarks(path).tolist() == [[1.0, 1.0, 2.0], [3.0, 1.5, 0.0]] for path in landmarks)


# The paper's printed column order (Tables 2-5 of the paper text: dataset, then modality pair), as the tables show
# them: ``{dataset} {pair label}``.  Table 5's Abdomen column is printed "MR/CT"; config/paper.yaml scores that
# dataset's CT -> T1w pairs, labelled "CT/T1w".
PAPER_COLUMNS = {
    2: [
        "Dirlab-COPDGene CT/CT (masked)",
        "Dirlab-COPDGene CT/CT",
        "HCP-test T1w/T1w",
        "L2R-Abdomen CT/CT",
        "OAI-test DESS/DESS",
    ],
    3: [
        "HCP-test T2w/T2w",
        "BratsReg T1w/T1w",
        "BratsReg T2w/T2w",
        "BratsReg T1ce/T1ce",
        "BratsReg FLAIR/FLAIR",
        "UKBiobank-test WDIXON/WDIXON",
        "UKBiobank-test FDIXON/FDIXON",
    ],
    4: [
        "L2R-NLST-val CT/CT",
        "L2R-ThoraxCBCT-val CT/CBCT",
        "IXI-test T1w/T1w",
        "L2R-OASIS-val T1w/T1w",
        "Pancreatic-CT-CBCT-SEG-test CT/CBCT",
    ],
    5: [
        "HCP-test T1w/T2w",
        "BratsReg T1w/T2w",
        "BratsReg T1w/T1ce",
        "BratsReg T1w/FLAIR",
        "BratsReg T2w/T1ce",
        "BratsReg T2w/FLAIR",
        "BratsReg T1ce/FLAIR",
        "L2R-AbdomenMRCT-val CT/T1w",
        "UKBiobank-test FDIXON/WDIXON",
    ],
}


def test_paper_tables_print_their_columns_in_the_papers_order(fake_study, tmp_path):
    _, _, config = fake_study
    columns = columns_from_config(config)
    assert {t: [f"{c.dataset} {c.label}" for c in columns if c.table == t] for t in PAPER_COLUMNS} == PAPER_COLUMNS
    # the rendered tables (no evaluation rows: headers only) keep that order
    build_tables([], config, tmp_path)
    for table, expected in PAPER_COLUMNS.items():
        header = (tmp_path / f"table{table}.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
        assert [h.rsplit(" ", 1)[0] for h in header[2::2]] == expected  # "{column} {metric}", then "% J<0"


def test_paper_plans_with_the_slurm_profile(fake_study):
    work, path, config = fake_study
    # --cores: a dry run caps threads (and so cpus_per_task) at --cores, 1 if not given
    run, seconds = _snakemake(work, "-n", "--workflow-profile", str(PROFILES / "slurm"), "--cores", "64", config=path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert seconds <= 30, seconds
    out = run.stdout + run.stderr
    assert "profiles/slurm" in out and "profiles/default" not in out
    _check_plan(out, config)
    train = _resources(out, "train_stage")
    assert "gpu=4" in train and "tasks_per_gpu=0" in train
    # the partition comes from $MGICON_GPU_PARTITION; depending on the environment the plan shows it unexpanded
    assert "slurm_partition=$MGICON_GPU_PARTITION" in train or "slurm_partition=<TBD>" in train
    assert "gpu=1" in _resources(out, "evaluate")
    # Snakemake 9.15 leaves cpus_per_task (= threads) "<TBD>" in a plan, later versions show the number
    baseline = _resources(out, "baseline")
    assert ("cpus_per_task=8" in baseline or "cpus_per_task=<TBD>" in baseline) and "gpu" not in baseline


def test_paper_plans_with_the_slurm_profile_given_as_profile(fake_study):
    work, path, config = fake_study
    run, seconds = _snakemake(work, "-n", "--profile", str(PROFILES / "slurm"), config=path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert seconds <= 30, seconds
    _check_plan(run.stdout + run.stderr, config)


def test_paper_plans_with_the_default_profile(fake_study):
    work, path, config = fake_study
    run, seconds = _snakemake(work, "-n", config=path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert seconds <= 30, seconds
    out = run.stdout + run.stderr
    assert "profiles/default" in out  # found next to the Snakefile, from any working directory
    _check_plan(out, config)


def test_paper_config_lints(fake_study):
    work, path, _ = fake_study
    run, _ = _snakemake(work, "--lint", config=path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def _released_study(root: Path) -> None:
    """The manifest released.yaml points at (my-study/manifest.csv): two subjects, T1w and T2w, with label maps."""
    study = root / "my-study"
    study.mkdir(parents=True)
    rows = ["dataset,subject,timepoint,modality,image,label,landmarks,mask,split"]
    for subject in ("s1", "s2"):
        label = sitk.GetImageFromArray(np.ones((6, 7, 8), np.uint8))
        sitk.WriteImage(label, str(study / f"{subject}_label.nii.gz"))
        for modality in ("t1w", "t2w"):
            sitk.WriteImage(sitk.Cast(label, sitk.sitkFloat32), str(study / f"{subject}_{modality}.nii.gz"))
            rows.append(f"my-study,{subject},,{modality},{subject}_{modality}.nii.gz,{subject}_label.nii.gz,,,test")
    (study / "manifest.csv").write_text("\n".join(rows) + "\n")


def _released_cache(root: Path) -> Path:
    """A weights cache holding (stand-ins for) both released checkpoints: planning only checks they are there."""
    for name in ("unigradicon", "multigradicon"):
        (root / "cache" / name).mkdir(parents=True)
        (root / "cache" / name / "Step_2_final.trch").write_bytes(b"planned, never loaded")
    return root / "cache"


def test_released_config_as_shipped_stops_at_plan_time_naming_the_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(_released_cache(tmp_path)))
    run, _ = _snakemake(tmp_path, "-n", config=CONFIGS / "released.yaml")
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if "config error" in line]
    assert len(errors) == 1 and "datasets.my-study.source.path: manifest my-study/manifest.csv not found" in errors[0]


def test_released_config_evaluates_checkpoints_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MGICON_WEIGHTS", str(_released_cache(tmp_path)))
    _released_study(tmp_path)
    config = copy.deepcopy(RELEASED)
    config["results"] = str(tmp_path / "results")
    path = tmp_path / "released.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    run, seconds = _snakemake(tmp_path, "-n", config=path)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = _job_counts(run.stdout + run.stderr)
    assert "train_stage" not in counts and "model" not in counts
    assert counts["evaluate"] == 2 * 3 and counts["baseline"] == 2 and counts["summary"] == 1
    assert counts["claims"] == 1
    for method in ("released-unigradicon", "released-multigradicon"):
        assert f"{config['results']}/eval/{method}/io-mind/my-study.csv" in run.stdout + run.stderr
