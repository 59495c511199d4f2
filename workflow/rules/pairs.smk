"""Pair lists per stage and dataset, and each stage's weights table (next to Table 1's shares)."""


rule pair_list:
    input:
        lambda w: preprocessed_csv(w.dataset),
    output:
        f"{RESULTS}/pairs/{{stage}}/{{dataset}}.csv",
    log:
        f"{RESULTS}/logs/pairs/{{stage}}/{{dataset}}.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: stage_params(w.stage),
    script:
        "../scripts/pair_list.py"


rule pair_weights:
    input:
        lambda w: [
            f"{RESULTS}/pairs/{w.stage}/{name}.csv" for name in datasets_in(w.stage)
        ],
    output:
        f"{RESULTS}/pairs/{{stage}}/weights.csv",
    log:
        f"{RESULTS}/logs/pairs/{{stage}}/weights.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: stage_params(w.stage),
        datasets=lambda w: datasets_in(w.stage),
    script:
        "../scripts/pair_weights.py"


rule data:
    input:
        data_targets(),
