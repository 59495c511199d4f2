"""The whole DAG on the micro config .test/config/config.yaml: data → training → evaluation (w/o IO, IO, SyN) →
tables, figures, summary, MLflow runs; then a pipeline killed during training and again during evaluation resumes
and completes without redoing finished work, with the tables of an uninterrupted run on one core."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mgicon.data.manifest import read_csv
from tests.paths import SNAKEFILE, SNAKEMAKE, TEST_CONFIGS, load_yaml

MICRO_PATH = TEST_CONFIGS / "config.yaml"
MICRO = load_yaml(MICRO_PATH)
METHODS = ("identity", "syn", "unigradicon", "multigradicon-f", "multigradicon")


def _command(work: Path, cores: int = 2) -> list[str]:
    return [
        SNAKEMAKE,
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(work),
        "--cores",
        str(cores),
        "--configfile",
        str(MICRO_PATH),
        "--rerun-incomplete",
    ]


def _run(work: Path, cores: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(_command(work, cores), capture_output=True, encoding="utf-8", errors="replace", cwd=work)


def _run_until(work: Path, condition, timeout: float = 400) -> None:
    """Start the pipeline and interrupt it (SIGINT, as Ctrl-C or a scheduler does) once ``condition()`` holds."""
    log = open(work / f"run-{time.time():.0f}.log", "w", encoding="utf-8")
    # SIGINT's default action restored: a shell's background job (`make test &`, some CI runners) ignores it,
    # and children inherit that
    proc = subprocess.Popen(
        _command(work),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    start = time.time()
    try:
        while not condition():
            assert proc.poll() is None, f"the pipeline ended before the condition held (rc {proc.returncode})"
            assert time.time() - start < timeout, "condition not reached in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _planned(work: Path) -> set[Path]:
    """The outputs a rerun would (re)make: a dry run's plan.  A job interrupted after writing its output but
    before Snakemake recorded it as finished is incomplete, and rerunning it is right."""
    plan = subprocess.run([*_command(work), "--dry-run"], capture_output=True, encoding="utf-8", cwd=work)
    assert plan.returncode == 0, plan.stderr[-3000:]
    lines = (line.strip() for line in plan.stdout.splitlines())
    return {work / out.strip() for line in lines if line.startswith("output:") for out in line[7:].split(",")}


def _mtimes(work: Path, paths) -> dict[Path, int]:
    """Modification times of the finished outputs among ``paths``."""
    planned = _planned(work)
    return {p: p.stat().st_mtime_ns for p in paths if p not in planned}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run the micro pipeline, interrupted once in training and once in evaluation, then to the end."""
    work = tmp_path_factory.mktemp("pipeline")
    results = work / "results"
    stage = results / "models" / "multigradicon-f" / "stage1"
    # 1. interrupt during training: after a mid-stage checkpoint, before the stage's end
    _run_until(work, lambda: (stage / "latest.pt").is_file())
    assert not (stage / "final.pt").exists()
    done_before = _mtimes(work, [*(results / "data").rglob("*.csv"), *results.glob("models/*/stage1/final.pt")])
    assert done_before
    # 2. interrupt during evaluation: after the first pairs of a job were saved
    partials = lambda: list((results / "eval").rglob(".*.partial"))  # noqa: E731
    _run_until(work, lambda: any(len(read_csv(p)) >= 1 for p in partials() if p.stat().st_size))
    interrupted = {p.name: len(read_csv(p)) for p in partials()}
    done_before.update(_mtimes(work, results.glob("models/*/checkpoint.pt")))
    # 3. the same command again completes
    final = _run(work)
    assert final.returncode == 0, final.stderr[-4000:]
    return work, done_before, interrupted, final


def test_every_output_of_the_study_is_there(pipeline):
    work, *_ = pipeline
    results = work / "results"
    for method in METHODS:
        for io in ["noio"] if method in ("identity", "syn") else ["noio", "io-lncc2"]:
            for name in MICRO["datasets"]:
                rows = read_csv(results / "eval" / method / io / f"{name}.csv")
                assert rows and all(r["method"] == method and r["io"] == io for r in rows)
    for n in (2, 5):
        for ext in ("csv", "md", "tex"):
            assert (results / "tables" / f"table{n}.{ext}").is_file()
        assert (results / "figures" / f"table{n}.png").is_file()
    for name in [*MICRO["datasets"], "training"]:
        assert (results / "figures" / f"{name}.png").stat().st_size > 10_000
    assert (results / "tables" / "published_vs_reproduced.md").is_file()
    assert "Table 2" in (results / "summary.md").read_text(encoding="utf-8")


def test_tables_hold_every_method(pipeline):
    work, *_ = pipeline
    rows = read_csv(work / "results" / "tables" / "table2.csv")
    assert {(r["io"], r["method"]) for r in rows} == {
        *[("noio", m) for m in METHODS],
        *[("io-lncc2", m) for m in METHODS[2:]],
    }
    markdown = (work / "results" / "tables" / "table2.md").read_text(encoding="utf-8")
    for shown in ("SyN", "uniGradICON", "multiGradICON-F", "multiGradICON", "CT/CT (masked)"):
        assert shown in markdown


def test_mlflow_has_a_run_for_every_training_and_evaluation_job(pipeline):
    work, *_ = pipeline
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mgicon")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    for variant in MICRO["variants"]:
        stages = ["finetune"] if "finetune_from" in MICRO["variants"][variant] else ["stage1", "stage2"]
        assert {f"train-{variant}-{s}" for s in stages} <= finished
    ios = {m: ["noio"] if m in ("identity", "syn") else ["noio", "io-lncc2"] for m in METHODS}
    evaluations = {f"eval-{m}-{io}" for m in METHODS for io in ios[m]}
    assert evaluations <= finished
    assert "summary" in finished
    metrics = next(r for r in runs if r.info.run_name == "eval-unigradicon-noio").data.metrics
    assert any(k.startswith("syn-lung/mtre/") for k in metrics)


def test_interrupted_training_resumed_from_its_checkpoint(pipeline):
    work, *_ = pipeline
    samples = read_csv(work / "results" / "models" / "multigradicon-f" / "stage1" / "samples.csv")
    steps = [int(r["step"]) for r in samples]
    assert sorted(set(steps)) == list(range(MICRO["training"]["steps"]["stage1"]))  # every step once, none redone
    log = (work / "results" / "logs" / "train" / "multigradicon-f" / "stage1.log").read_text(encoding="utf-8")
    assert "resum" in log.lower()


def test_interrupted_evaluation_resumed_without_redoing_pairs(pipeline):
    work, _, interrupted, _ = pipeline
    assert interrupted, "the evaluation was not interrupted mid-job"
    logs = "\n".join(p.read_text(encoding="utf-8") for p in (work / "results" / "logs" / "eval").rglob("*.log"))
    assert "resuming:" in logs


def test_finished_work_was_not_redone(pipeline):
    _, done_before, _, final = pipeline
    changed = [str(p) for p, t in done_before.items() if p.stat().st_mtime_ns != t]
    assert not changed, changed
    assert "rule manifest" not in final.stdout + final.stderr


def test_the_tables_do_not_depend_on_the_core_count_nor_on_interruptions(pipeline, tmp_path):
    """Every job's thread count comes from the config, so `--cores` only decides how many run side by side: an
    uninterrupted run on one core gives the summary of the interrupted two-core run, byte for byte."""
    work, *_ = pipeline
    single = _run(tmp_path, cores=1)
    assert single.returncode == 0, single.stderr[-4000:]
    summary = Path("results") / "tables" / "summary.csv"
    assert (tmp_path / summary).read_bytes() == (work / summary).read_bytes()
