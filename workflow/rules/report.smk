# Paper-scale profiling, guided-attention figures, training curves and the report.
ATTENTION = PLAN.attention_experiment()
FIGURES = PLAN.figures_dir
ATTENTION_FIGURES = PLAN.attention_figures()


def built_marker(rule_name):
    """A file under results/ that Snakemake touches when ``rule_name`` has run in this checkout.

    The mini profile's report and figures are committed, so a fresh clone already holds those
    outputs, and Snakemake does not rerun a job whose outputs exist merely because its inputs are
    missing. The marker is never committed and reproduce_all asks for it: its absence makes the job
    (and, through its missing inputs, everything upstream) run.
    """
    return f"results/{PROFILE}/built/{rule_name}"


# the rules whose outputs are committed (see built_marker)
BUILT_MARKERS = [built_marker(name) for name in ("report", "curves", "attention" if ATTENTION else None) if name]


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
            *[report(path, category="Guided attention (Sec. 4.5)") for path in ATTENTION_FIGURES],
            built=touch(built_marker("attention")),
        params:
            data_root=DATA_ROOT_ARG,
            overrides=PLAN.set_args(PLAN.evaluations[ATTENTION].run),
        log:
            f"results/{PROFILE}/logs/attention.log",
        threads: 1
        resources:
            mem_mb=RESOURCES_EVAL["mem_mb"],
            gpu=RESOURCES_EVAL["gpu"],
        shell:
            EVAL_LAUNCH + " attention {ATTENTION}"
            " --profile {PROFILE} {params.data_root} {params.overrides} "
            "--checkpoint {input.checkpoint} --out {FIGURES} 2> {log}"


MEMORY = PLAN.memory_settings()  # None: the profile does not run both rows it compares


if MEMORY:

    rule memory:
        output:
            PLAN.memory_json,
        params:
            names=" ".join(MEMORY["names"]),
            crop=MEMORY["crop"],
            batch_size=MEMORY["batch_size"],
            device=MEMORY["device"],
        log:
            f"results/{PROFILE}/logs/memory.log",
        threads: RESOURCES_EVAL["threads"]
        resources:
            mem_mb=RESOURCES_TRAIN["mem_mb"],
            gpu=RESOURCES_EVAL["gpu"],
        shell:
            "OMP_NUM_THREADS={threads} " + EVAL_LAUNCH + " memory {params.names} --crop {params.crop} "
            "--batch-size {params.batch_size} --device {params.device} --out {output} > {log} 2>&1"


rule curves:
    input:
        [f"{PLAN.run_dir(run, seed)}/train_log.csv" for run, seed in PLAN.train_runs()],
    output:
        figure=report(PLAN.curves_figure, category="Training curves"),
        built=touch(built_marker("curves")),
    params:
        data_root=DATA_ROOT_ARG,  # the paper profile's plan needs it (its roots are ${data_root}/...)
    log:
        f"results/{PROFILE}/logs/curves.log",
    threads: 1
    shell:
        "spgnet curves --profile {PROFILE} {params.data_root} --out {output.figure} 2> {log}"


rule report:
    input:
        profile=f"results/{PROFILE}/profile.json",
        evaluations=PLAN.eval_files(),
        references=PLAN.reference_files(),
        memory=PLAN.memory_json if MEMORY else [],
        curves=PLAN.curves_figure,
        figures=ATTENTION_FIGURES if ATTENTION else [],
    output:
        tables=report(f"{PLAN.report_dir}/tables.md", category="Tables"),
        built=touch(built_marker("report")),
    params:
        data_root=DATA_ROOT_ARG,
    log:
        f"results/{PROFILE}/logs/report.log",
    threads: 1
    shell:
        "spgnet report --profile {PROFILE} {params.data_root} --out {output.tables} 2> {log}"
