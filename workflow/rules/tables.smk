"""Tables 2–5 in the paper's layout, the published values beside them, figures, and the run summary."""


localrules:
    tables,
    claims,
    summary,


rule tables:
    input:
        eval_targets(),
    output:
        tables=[
            report(
                f"{RESULTS}/tables/table{n}.csv",
                caption="../report/table.rst",
                category="Tables",
                labels={"table": f"Table {n}"},
            )
            for n in table_numbers()
        ],
        text=[
            f"{RESULTS}/tables/table{n}.{ext}"
            for n in table_numbers()
            for ext in ("md", "tex")
        ],
        summary=f"{RESULTS}/tables/summary.csv",
        published=report(
            f"{RESULTS}/tables/published_vs_reproduced.md",
            caption="../report/published.rst",
            category="Tables",
            labels={"table": "published vs reproduced"},
        ),
    log:
        f"{RESULTS}/logs/tables/tables.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: config_slice("seed", "datasets", "variants", "evaluation"),
        out_dir=lambda w, output: os.path.dirname(output.summary),
    script:
        "../scripts/tables.py"


rule claims:
    input:
        eval_targets(),
    output:
        md=report(
            f"{RESULTS}/tables/claims.md",
            caption="../report/claims.rst",
            category="Tables",
            labels={"table": "the paper's findings"},
        ),
        csv=f"{RESULTS}/tables/claims.csv",
    log:
        f"{RESULTS}/logs/tables/claims.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: config_slice("seed", "datasets", "variants", "evaluation"),
    script:
        "../scripts/claims.py"


rule figure_panels:
    input:
        examples=lambda w: [
            f"{RESULTS}/eval/{m}/{NOIO}/{w.dataset}.example.h5"
            for m in figure_methods()
        ],
        pairs=f"{RESULTS}/pairs/test/{{dataset}}.csv",
        preprocessed=lambda w: preprocessed_csv(w.dataset),
    output:
        report(
            f"{RESULTS}/figures/{{dataset}}.png",
            caption="../report/panels.rst",
            category="Figures",
            subcategory="Registrations",
            labels={"dataset": "{dataset}"},
        ),
    log:
        f"{RESULTS}/logs/figures/{{dataset}}.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        methods=figure_methods(),
        config=lambda w: config_slice(
            datasets={w.dataset: config["datasets"][w.dataset]}, evaluation=EVALUATION
        ),
    script:
        "../scripts/figure_panels.py"


rule summary_plot:
    input:
        f"{RESULTS}/tables/summary.csv",
    output:
        report(
            f"{RESULTS}/figures/table{{n}}.png",
            caption="../report/summary_plot.rst",
            category="Figures",
            subcategory="Tables",
            labels={"table": "Table {n}"},
        ),
    log:
        f"{RESULTS}/logs/figures/table{{n}}.log",
    wildcard_constraints:
        n=r"\d+",
    conda:
        "../envs/mgicon.yaml"
    script:
        "../scripts/summary_plot.py"


rule summary:
    input:
        experiment=EXPERIMENT,
        tables=table_targets(),
        figures=figure_targets(),
        models=model_targets(),
    output:
        report(
            f"{RESULTS}/summary.md",
            caption="../report/summary.rst",
            category="Summary",
        ),
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        config=lambda w: config_slice(
            "seed", "results", "tracking", "datasets", "variants", "evaluation"
        ),
    script:
        "../scripts/summary.py"


rule training_curves:
    input:
        runs=[f"{RESULTS}/models/{v}/mlflow_run.json" for v in VARIANTS],
    output:
        report(
            f"{RESULTS}/figures/training.png",
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="Training",
        ),
    log:
        f"{RESULTS}/logs/figures/training.log",
    conda:
        "../envs/mgicon.yaml"
    params:
        variants=list(VARIANTS),
        config=lambda w: config_slice("variants", "training"),
    script:
        "../scripts/training_curves.py"
