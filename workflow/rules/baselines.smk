"""Reference methods, scored by the same code: the identity (unregistered) and ANTsPy SyN (mutual information);
``ground-truth`` (the synthetic suite's exact deformation) on request."""


rule baseline:
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
        method="|".join(re.escape(m) for m in BASELINE_METHODS),
        io=re.escape(NOIO),
    conda:
        "../envs/mgicon.yaml"
    threads: lambda w: baseline_threads(w.method)
    params:
        config=lambda w: eval_params(w.method),
        datasets=test_datasets(),
    script:
        "../scripts/evaluate.py"
