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
    stage="|".join(STAGES),


def datasets_in(stage):
    """Names of the registry datasets used in ``stage``."""
    return [spec.name for spec in in_stage(REGISTRY, stage)]


def used_stages():
    return [stage for stage in STAGES if datasets_in(stage)]


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
