"""Learn2Reg submissions: one displacement field per pair of a split, named for the official evaluation, and a
zip of them (`snakemake learn2reg`; config key learn2reg)."""


localrules:
    learn2reg,


rule learn2reg:
    input:
        learn2reg_targets(),


rule learn2reg_split:
    input:
        unpack(learn2reg_inputs),
    output:
        fields=directory(f"{RESULTS}/learn2reg/{{dataset}}/{{split}}"),
        zip=f"{RESULTS}/learn2reg/{{dataset}}/{{split}}.zip",
    log:
        f"{RESULTS}/logs/learn2reg/{{dataset}}/{{split}}.log",
    wildcard_constraints:
        split="|".join(LEARN2REG_SPLITS),
    conda:
        "../envs/mgicon.yaml"
    threads: EVALUATION["threads"]
    resources:
        gpu=1 if EVALUATION["device"] != "cpu" else 0,
    params:
        config=lambda w: learn2reg_params(w.dataset),
    script:
        "../scripts/learn2reg.py"
