# Paper-scale profiling, guided-attention figures, training curves and the report.
ATTENTION = PLAN.attention_experiment()
FIGURES = PLAN.figures_dir
ATTENTION_FIGURES = PLAN.attention_figures()


rule profile:
    output:
        f"results/{PROFILE}/profile.json",
    log:
        f"results/{PROFILE}/logs/profile.log",
    threads: 1
    resources:
        mem_mb=RESOURCES_LIGHT["mem_mb"],
    shell:
        "spgnet profile --out {output} > {log}"


if ATTENTION:

    rule attention:
        input:
            checkpoint=PLAN.checkpoint(PLAN.evaluations[ATTENTION].run, SEEDS[0]),
        output:
            [report(path, category="Guided attention (Sec. 4.5)") for path in ATTENTION_FIGURES],
        params:
            data_root=f"--data-root {config['data_root']}" if config.get("data_root") else "",
        log:
            f"results/{PROFILE}/logs/attention.log",
        threads: 1
        resources:
            mem_mb=RESOURCES_EVAL["mem_mb"],
        shell:
            "spgnet attention {ATTENTION} --profile {PROFILE} {params.data_root} "
            "--checkpoint {input.checkpoint} --out {FIGURES} 2> {log}"


rule curves:
    input:
        [f"{PLAN.run_dir(run, seed)}/train_log.csv" for run in PLAN.runs for seed in SEEDS],
    output:
        report(PLAN.curves_figure, category="Training curves"),
    log:
        f"results/{PROFILE}/logs/curves.log",
    threads: 1
    shell:
        "spgnet curves --profile {PROFILE} --out {output} 2> {log}"


rule report:
    input:
        profile=f"results/{PROFILE}/profile.json",
        evaluations=eval_files(PLAN.experiments),
        curves=PLAN.curves_figure,
        figures=ATTENTION_FIGURES if ATTENTION else [],
    output:
        report(f"{PLAN.report_dir}/tables.md", category="Tables"),
    params:
        data_root=f"--data-root {config['data_root']}" if config.get("data_root") else "",
    log:
        f"results/{PROFILE}/logs/report.log",
    threads: 1
    shell:
        "spgnet report --profile {PROFILE} {params.data_root} --out {output} 2> {log}"
