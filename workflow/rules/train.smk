"""Training of every variant: stage 1, stage 2 (from stage 1), finetuning (from another variant), final model."""


rule train_stage:
    input:
        unpack(train_inputs),
    output:
        f"{RESULTS}/models/{{variant}}/{{stage}}/final.pt",
    log:
        f"{RESULTS}/logs/train/{{variant}}/{{stage}}.log",
    wildcard_constraints:
        stage="|".join(TRAINING_STAGES),
    priority: 1  # the critical path: start training before the baselines
    conda:
        "../envs/mgicon.yaml"
    threads: config["training"]["threads"]
    resources:
        gpu=(
            config["training"]["devices"]
            if config["training"]["device"] != "cpu"
            else 0
        ),
    params:
        config=lambda w: train_params(w.variant),
        stage_data=lambda w: STAGE_DATA[w.stage],
        init_model=finetune_source,
    script:
        "../scripts/train.py"


rule model:
    input:
        lambda w: f"{RESULTS}/models/{w.variant}/{last_stage(w.variant)}/final.pt",
    output:
        checkpoint=f"{RESULTS}/models/{{variant}}/checkpoint.pt",
        run=f"{RESULTS}/models/{{variant}}/mlflow_run.json",
    log:
        f"{RESULTS}/logs/train/{{variant}}/model.log",
    conda:
        "../envs/mgicon.yaml"
    script:
        "../scripts/model.py"
