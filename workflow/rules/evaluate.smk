"""Evaluation of the trained variants and released checkpoints, without IO and with IO (1 − LNCC², MIND-SSC)."""


localrules:
    mlflow_experiment,


rule mlflow_experiment:
    output:
        EXPERIMENT,
    log:
        f"{RESULTS}/logs/mlflow/experiment.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: config_slice("results", "tracking"),
    script:
        "../scripts/mlflow_experiment.py"


rule evaluate:
    input:
        unpack(eval_inputs),
    output:
        csv=expand(
            f"{RESULTS}/eval/{{method}}/{{io}}/{{dataset}}.csv",
            dataset=test_datasets(),
            allow_missing=True,
        ),
        example=expand(
            f"{RESULTS}/eval/{{method}}/{{io}}/{{dataset}}.example.h5",
            dataset=test_datasets(),
            allow_missing=True,
        ),
    log:
        f"{RESULTS}/logs/eval/{{method}}/{{io}}.log",
    wildcard_constraints:
        method="|".join(re.escape(m) for m in network_methods()) or "NONE",
        io="|".join(re.escape(io) for io in IO_SETTINGS),
    conda:
        "../envs/mgicon.yaml"
    threads: EVALUATION["threads"]
    resources:
        gpu=1 if EVALUATION["device"] != "cpu" else 0,
    params:
        config=lambda w: eval_params(w.method),
        datasets=test_datasets(),
    script:
        "../scripts/evaluate.py"
