"""Snakemake never runs more than it was given: the threads of the jobs running at any moment stay within
``--cores``, and a declared resource (``gpu``, as the workflow's rules declare it) within ``--resources``.

Snakemake 9.10.0–9.16.x broke this (snakemake issue #3913): a job selected alone took nothing from the pool but
gave its share back when it ended, so every lone job grew the pool.  The workflow below has such lone jobs (a
``prepare`` job, then one job whose siblings are not ready yet) before jobs that together ask for more than there
is; each job records its start and end, and the test replays the records."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.paths import SNAKEMAKE

# Each job writes `start|end <epoch seconds> <threads> <gpu>` to its own record file.
SNAKEFILE = """
rule all:
    input: expand("done/wide{i}", i=range(3)), expand("done/gpu{i}", i=range(3))

def record(name):
    return (
        f"echo start $(date +%s.%N) {{threads}} {{resources.gpu}} > records/{name}; sleep {{params.seconds}}; "
        f"echo end $(date +%s.%N) {{threads}} {{resources.gpu}} >> records/{name}; touch {{output}}"
    )

rule prepare:
    output: "done/prepare"
    threads: 1
    resources: gpu=0
    params: seconds=0.5
    shell: record("prepare")

rule lone:
    input: "done/prepare"
    output: "done/lone"
    threads: 1
    resources: gpu=1
    params: seconds=0.5
    shell: record("lone")

rule wide:
    input: "done/lone"
    output: "done/wide{i}"
    threads: 2
    resources: gpu=0
    params: seconds=1.5
    shell: record("wide{wildcards.i}")

rule gpu:
    input: "done/lone"
    output: "done/gpu{i}"
    threads: 1
    resources: gpu=1
    params: seconds=1.5
    shell: record("gpu{wildcards.i}")
"""


def _peak(records: Path) -> tuple[float, int, int]:
    """(peak threads, peak gpus, jobs) of the jobs running at once, from their start/end records."""
    events = []
    for path in records.iterdir():
        (_, start, threads, gpu), (_, end, *_) = (line.split() for line in path.read_text().splitlines())
        events += [(float(start), 1, int(threads), int(gpu)), (float(end), -1, int(threads), int(gpu))]
    threads = gpus = peak_threads = peak_gpus = 0
    for _, sign, t, g in sorted(events, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        threads, gpus = threads + sign * t, gpus + sign * g
        peak_threads, peak_gpus = max(peak_threads, threads), max(peak_gpus, gpus)
    return peak_threads, peak_gpus, len(events) // 2


@pytest.mark.parametrize(
    "cores, gpus",
    [
        (2, 1),  # the demo's machine, one GPU
        (3, 2),
    ],
)
def test_running_jobs_never_exceed_the_cores_and_resources_given(tmp_path, cores, gpus):
    (tmp_path / "Snakefile").write_text(SNAKEFILE, encoding="utf-8")
    (tmp_path / "records").mkdir()
    run = subprocess.run(
        [SNAKEMAKE, "--cores", str(cores), "--resources", f"gpu={gpus}", "--workflow-profile", "none"],
        cwd=tmp_path,
        capture_output=True,
        encoding="utf-8",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    peak_threads, peak_gpus, jobs = _peak(tmp_path / "records")
    assert jobs == 8
    assert peak_threads <= cores, f"{peak_threads} threads ran at once under --cores {cores}"
    assert peak_gpus <= gpus, f"{peak_gpus} gpu jobs ran at once under --resources gpu={gpus}"
    assert peak_threads == cores  # the limit is used, not just respected: jobs did run side by side
