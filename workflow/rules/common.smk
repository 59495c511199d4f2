"""Config validation and helpers shared by every stage."""

import os
import re
import sys

from mgicon.config import (
    ConfigError,
    JobParams,
    check_dataset_root,
    learn2reg_method,
    resolve,
    syn_threads,
)
from mgicon.data.registry import in_stage, load_registry
from mgicon.vocabulary import (
    BASELINES as BASELINE_METHODS,
    DATA_STAGES,
    FINETUNE,
    IDENTITY,
    IO_SETTINGS,
    LEARN2REG_SPLITS,
    NOIO,
    STAGE1,
    STAGE2,
    STAGE_DATA,
    SYN,
    TEST,
    TRAINING_STAGES,
)
from mgicon.weights import RELEASE_URLS

# named in config errors
CONFIG_FILES = ", ".join(str(f) for f in workflow.configfiles) or None
try:  # every default from the schema, every mistake named before any job runs
    _resolved = resolve(config, CONFIG_FILES)
except ConfigError as exc:
    print(f"config error: {exc}", file=sys.stderr)
    sys.exit(2)
config.clear()
config.update(_resolved)

RESULTS = config["results"]
REGISTRY = load_registry(config["datasets"])
EXPERIMENT = f"{RESULTS}/mlflow/experiment.json"  # the MLflow experiment, created once by its own rule


wildcard_constraints:
    dataset="|".join(re.escape(name) for name in REGISTRY),
    stage="|".join(dict.fromkeys(DATA_STAGES + TRAINING_STAGES)),
    variant="|".join(re.escape(v) for v in config["variants"]) or "NONE",


def datasets_in(stage):
    """Names of the registry datasets used in ``stage``."""
    return [spec.name for spec in in_stage(REGISTRY, stage)]


def used_stages():
    return [stage for stage in DATA_STAGES if datasets_in(stage)]


def config_slice(*keys, **parts):
    """A job's params: the config's ``keys`` and the given ``parts``, compared by Snakemake whatever their order."""
    return JobParams({**{k: config.get(k) for k in keys}, **parts})


def data_params(name):
    """The part of the config a dataset's data jobs depend on (so that, e.g., training settings or the network's
    widths don't rerun them: of the network section, only the grid)."""
    return config_slice(
        "seed",
        "resources",
        "synthetic",
        network={"input_shape": config["network"]["input_shape"]},
        datasets={name: config["datasets"][name]},
    )


def source_root_checked(wildcards):
    """No input files.  Evaluated while Snakemake builds the plan, for the datasets the plan needs only:
    a local dataset's ``source.root`` unset or not a folder stops the plan with one line before any job.
    """
    try:
        check_dataset_root(wildcards.dataset, config["datasets"][wildcards.dataset])
    except ConfigError as exc:
        print(
            f"config error: {ConfigError(exc.key, exc.problem, CONFIG_FILES)}",
            file=sys.stderr,
        )
        # Snakemake wraps an input function's Exception (with a traceback); a SystemExit passes through
        sys.exit(2)
    return []


def stage_params(stage):
    """The part of the config a stage's pair lists depend on (weights use every dataset of the stage)."""
    return config_slice(
        "seed", datasets={n: config["datasets"][n] for n in datasets_in(stage)}
    )


def train_params(variant):
    """The part of the config a variant's training jobs depend on."""
    keys = ("seed", "results", "network", "training", "tracking", "datasets")
    return config_slice(*keys, variants={variant: VARIANTS[variant]})


def preprocessed_csv(name):
    return f"{RESULTS}/data/{name}/preprocessed.csv"


def data_targets():
    """Everything the data stage produces: manifests, preprocessed volumes and pair lists."""
    targets = [preprocessed_csv(name) for name in REGISTRY]
    for stage in used_stages():
        targets += [
            f"{RESULTS}/pairs/{stage}/{name}.csv" for name in datasets_in(stage)
        ]
        targets.append(f"{RESULTS}/pairs/{stage}/weights.csv")
    return targets


VARIANTS = config["variants"]


def last_stage(variant):
    """A finetuned variant ends with ``finetune``, the others with ``stage2``."""
    return FINETUNE if VARIANTS[variant].get("finetune_from") else STAGE2


def train_inputs(wildcards):
    """Data of the stage's training set, and the checkpoint the stage starts from."""
    stage_data = STAGE_DATA[wildcards.stage]
    names = datasets_in(stage_data)
    chosen = VARIANTS[wildcards.variant].get("datasets")
    if chosen:
        names = [n for n in names if n in chosen]
    inputs = {
        "experiment": EXPERIMENT,
        "preprocessed": [preprocessed_csv(n) for n in names],
        "pairs": [f"{RESULTS}/pairs/{stage_data}/{n}.csv" for n in names],
    }
    if wildcards.stage == STAGE2:
        inputs["init"] = f"{RESULTS}/models/{wildcards.variant}/{STAGE1}/final.pt"
    elif wildcards.stage == FINETUNE:
        base = VARIANTS[wildcards.variant]["finetune_from"]
        if base in VARIANTS:
            inputs["init"] = f"{RESULTS}/models/{base}/checkpoint.pt"
        elif (
            base not in RELEASE_URLS
        ):  # a checkpoint path (a released model: finetune_source)
            inputs["init"] = base
    return inputs


def finetune_source(wildcards):
    """The released model a finetuned variant starts from ("" if none): the job resolves (downloads) it."""
    if wildcards.stage != FINETUNE:
        return ""
    base = VARIANTS[wildcards.variant]["finetune_from"]
    return base if base not in VARIANTS and base in RELEASE_URLS else ""


def model_targets():
    return [f"{RESULTS}/models/{v}/checkpoint.pt" for v in VARIANTS]


EVALUATION = config["evaluation"]
BASELINES = EVALUATION["baselines"]
RELEASED = EVALUATION["released"]


def test_datasets():
    return datasets_in(TEST)


def network_methods():
    """Trained variants and released checkpoints: evaluated without and with IO."""
    return list(VARIANTS) + list(RELEASED)


def io_settings(method):
    """The IO settings a method is evaluated in (baselines: w/o IO only)."""
    settings = EVALUATION["io"]
    if method in network_methods():
        own = VARIANTS.get(method, {}).get("io")
        return settings if own is None else [s for s in settings if s in own]
    return [s for s in settings if s == NOIO]


def baseline_threads(method):
    """SyN's threads (mgicon.config.syn_threads), else 1."""
    syn = EVALUATION["syn"]
    if method == SYN:
        return syn_threads(syn["deterministic"], syn["threads"], EVALUATION["threads"])
    return 1


def eval_csvs(method, io):
    return [f"{RESULTS}/eval/{method}/{io}/{name}.csv" for name in test_datasets()]


def eval_targets():
    """Every evaluation CSV of the study: each method × its IO settings × each test dataset."""
    if not test_datasets():
        return []
    return [
        path
        for method in BASELINES + network_methods()
        for io in io_settings(method)
        for path in eval_csvs(method, io)
    ]


# what a baseline's scores depend on (never the networks' IO settings, released models or table layout)
BASELINE_EVALUATION_KEYS = ("max_pairs", "syn")
# ... and a network's (the rest of the evaluation section only shapes the tables)
NETWORK_EVALUATION_KEYS = (
    "max_pairs",
    "io_max_pairs",
    "io_iterations",
    "io_lr",
    "io_lncc_sigma",
    "io_dice_weight",
    "keep_orientation",
    "affine",
    "affine_metric",
    "device",
    "bf16",
)
# ... and a Learn2Reg submission's (mgicon.learn2reg.submission_job; not IO's Dice term: a submission registers
# the test split, whose label maps are withheld)
SUBMISSION_EVALUATION_KEYS = tuple(
    k
    for k in NETWORK_EVALUATION_KEYS
    if k not in ("max_pairs", "io_max_pairs", "io_dice_weight")
)


def eval_params(method):
    """The part of the config an evaluation job depends on: a baseline reruns only when its own settings or
    the test datasets change, a network also when its IO settings, checkpoint or grid do.
    """
    network = method in network_methods()
    keys = NETWORK_EVALUATION_KEYS if network else BASELINE_EVALUATION_KEYS
    evaluation = {k: EVALUATION[k] for k in keys}
    if method in RELEASED:
        evaluation["released"] = {method: RELEASED[method]}
    params = {
        "seed": config["seed"],
        "results": config["results"],
        "tracking": config["tracking"],
        "evaluation": evaluation,
        "datasets": {n: config["datasets"][n] for n in test_datasets()},
        "variants": {method: VARIANTS[method]} if method in VARIANTS else {},
    }
    if network:
        params["network"] = config["network"]
    return JobParams(params)


def eval_inputs(wildcards):
    names = test_datasets()
    inputs = {
        "experiment": EXPERIMENT,
        "pairs": [f"{RESULTS}/pairs/test/{n}.csv" for n in names],
        "preprocessed": [preprocessed_csv(n) for n in names],
    }
    if wildcards.method in VARIANTS:
        inputs["checkpoint"] = f"{RESULTS}/models/{wildcards.method}/checkpoint.pt"
    return inputs


def table_numbers():
    from mgicon.tables.layout import columns_from_config

    return sorted({c.table for c in columns_from_config(config)})


def table_targets():
    if not eval_targets():
        return []
    files = [
        f"{RESULTS}/tables/table{n}.{ext}"
        for n in table_numbers()
        for ext in ("csv", "md", "tex")
    ]
    return files + [
        f"{RESULTS}/tables/summary.csv",
        f"{RESULTS}/tables/published_vs_reproduced.md",
        f"{RESULTS}/tables/claims.md",
        f"{RESULTS}/tables/claims.csv",
    ]


def figure_targets():
    if not eval_targets() or not EVALUATION.get("figures", True):
        return []
    curves = [f"{RESULTS}/figures/training.png"] if VARIANTS else []
    return (
        [f"{RESULTS}/figures/{name}.png" for name in test_datasets()]
        + [f"{RESULTS}/figures/table{n}.png" for n in table_numbers()]
        + curves
    )


def figure_methods():
    """The methods shown in the qualitative panels (w/o IO)."""
    return [m for m in BASELINES if m != IDENTITY] + network_methods()


# ------------------------------------------------------------------------------------------------- learn2reg
# resolve (above) checked learn2reg's datasets and method
LEARN2REG = config["learn2reg"]


def learn2reg_targets():
    return [
        f"{RESULTS}/learn2reg/{d}/{s}.zip"
        for d in LEARN2REG["datasets"]
        for s in LEARN2REG["splits"]
    ]


def learn2reg_inputs(wildcards):
    """The dataset's manifest (a download is fetched by then) and a trained variant's checkpoint."""
    inputs = {"manifest": f"{RESULTS}/data/{wildcards.dataset}/manifest.csv"}
    method = learn2reg_method(config)
    if method in VARIANTS:
        inputs["checkpoint"] = f"{RESULTS}/models/{method}/checkpoint.pt"
    return inputs


def learn2reg_params(dataset):
    """What a submission depends on: the dataset's source, the method's weights and the IO settings."""
    method = learn2reg_method(config)
    return config_slice(
        "seed",
        "resources",
        source=config["datasets"][dataset]["source"],
        method=method,
        released=RELEASED.get(method),
        io=LEARN2REG["io"],
        evaluation={k: EVALUATION[k] for k in SUBMISSION_EVALUATION_KEYS},
    )
