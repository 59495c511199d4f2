"""Datasets → manifests → preprocessed volumes at the network shape."""


rule manifest:
    input:
        source_root_checked,
    output:
        f"{RESULTS}/data/{{dataset}}/manifest.csv",
    log:
        f"{RESULTS}/logs/data/{{dataset}}/manifest.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: data_params(w.dataset),
    script:
        "../scripts/manifest.py"


rule preprocess:
    input:
        f"{RESULTS}/data/{{dataset}}/manifest.csv",
    output:
        f"{RESULTS}/data/{{dataset}}/preprocessed.csv",
    log:
        f"{RESULTS}/logs/data/{{dataset}}/preprocess.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: data_params(w.dataset),
    script:
        "../scripts/preprocess.py"
