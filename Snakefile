"""mgicon: datasets → preprocessing → pair lists (→ training → evaluation → tables, as the stages land)."""

from snakemake.utils import min_version

min_version("9.0")


# The embedded default unless the command line gives a config (--configfile replaces it instead of merging).
if not config:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/train.smk"


rule all:
    default_target: True
    input:
        data_targets(),
        model_targets(),
