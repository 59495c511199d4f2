"""Config validation and helpers shared by every stage."""

import re

from snakemake.utils import validate

from mgicon.data.registry import in_stage, load_registry

validate(config, "../schemas/config.schema.yaml")

RESULTS = config["results"]
REGISTRY = load_registry(config["datasets"])
STAGES = ["pretrain", "finetune", "test"]


wildcard_constraints:
    dataset="|".join(re.escape(name) for name in REGISTRY),
    stage="|".join(STAGES + ["stage1", "stage2"]),
    variant="|".join(re.escape(v) for v in config.get("variants", {})) or "NONE",


def datasets_in(stage):
    """Names of the registry datasets used in ``stage``."""
    return [spec.name for spec in in_stage(REGISTRY, stage)]


def used_stages():
    return [stage for stage in STAGES if datasets_in(stage)]


def data_params(name):
    """The part of the config a dataset's data jobs depend on (so that, e.g., training settings don't rerun them)."""
    keys = ("seed", "resources", "network", "synthetic")
    return {
        **{k: config.get(k) for k in keys},
        "datasets": {name: config["datasets"][name]},
    }


def stage_params(stage):
    """The part of the config a stage's pair lists depend on (weights use every dataset of the stage)."""
    return {
        "seed": config["seed"],
        "datasets": {n: config["datasets"][n] for n in datasets_in(stage)},
    }


def train_params(variant):
    """The part of the config a variant's training jobs depend on."""
    keys = ("seed", "results", "network", "training", "tracking", "datasets")
    return {
        **{k: config.get(k) for k in keys},
        "variants": {variant: VARIANTS[variant]},
    }


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


VARIANTS = config.get("variants", {})


def last_stage(variant):
    """A finetuned variant ends with ``finetune``, the others with ``stage2``."""
    return "finetune" if VARIANTS[variant].get("finetune_from") else "stage2"


def train_inputs(wildcards):
    """Data of the stage's training set, and the checkpoint the stage starts from."""
    stage_data = "finetune" if wildcards.stage == "finetune" else "pretrain"
    names = datasets_in(stage_data)
    chosen = VARIANTS[wildcards.variant].get("datasets")
    if chosen:
        names = [n for n in names if n in chosen]
    inputs = {
        "preprocessed": [preprocessed_csv(n) for n in names],
        "pairs": [f"{RESULTS}/pairs/{stage_data}/{n}.csv" for n in names],
    }
    if wildcards.stage == "stage2":
        inputs["init"] = f"{RESULTS}/models/{wildcards.variant}/stage1/final.pt"
    elif wildcards.stage == "finetune":
        base = VARIANTS[wildcards.variant]["finetune_from"]
        inputs["init"] = f"{RESULTS}/models/{base}/checkpoint.pt"
    return inputs


def model_targets():
    return [f"{RESULTS}/models/{v}/checkpoint.pt" for v in VARIANTS]
