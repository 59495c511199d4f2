"""mgicon: datasets → preprocessing → pair lists → training → evaluation (w/o IO, IO, SyN) → Tables 2–5, figures."""

from snakemake.utils import min_version

min_version("9.0")


# The embedded default unless the command line gives a config (--configfile replaces it instead of merging).
if not config:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/tables.smk"


rule all:
    default_target: True
    input:
        data_targets(),
        model_targets(),
        eval_targets(),
        table_targets(),
        figure_targets(),
        f"{RESULTS}/summary.md",
