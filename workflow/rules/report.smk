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
    params:
        command=commands.shell(commands.profile(PLAN)),
    threads: 1
    resources:
        mem_mb=RESOURCES_LIGHT["mem_mb"],
    shell:
        "spgnet {params.command} > {log}"


if ATTENTION:

    rule attention:
        input:
            checkpoint=PLAN.checkpoint(PLAN.evaluations[ATTENTION].run, SEEDS[0]),
        output:
            *[report(path, category="Guided attention (Sec. 4.5)") for path in ATTENTION_FIGURES],
            built=touch(built_marker("attention")),
        params:
            command=commands.shell(commands.attention(
                PLAN, settings=commands.set_args(PLAN, PLAN.evaluations[ATTENTION].run), data_root=DATA_ROOT)),
        log:
            f"results/{PROFILE}/logs/attention.log",
        threads: 1
        resources:
            mem_mb=RESOURCES_EVAL["mem_mb"],
            gpu=RESOURCES_EVAL["gpu"],
        shell:
            EVAL_LAUNCH + " {params.command} 2> {log}"


MEMORY = PLAN.memory_settings()  # None: the profile does not run both rows it compares


if MEMORY:

    rule memory:
        output:
            PLAN.memory_json,
        params:
            command=commands.shell(commands.memory(PLAN)),
        log:
            f"results/{PROFILE}/logs/memory.log",
        threads: RESOURCES_EVAL["threads"]
        resources:
            mem_mb=RESOURCES_TRAIN["mem_mb"],
            gpu=RESOURCES_EVAL["gpu"],
        shell:
            "OMP_NUM_THREADS={threads} " + EVAL_LAUNCH + " {params.command} > {log} 2>&1"


rule curves:
    input:
        [f"{PLAN.run_dir(run, seed)}/train_log.csv" for run, seed in PLAN.train_runs()],
    output:
        figure=report(PLAN.curves_figure, category="Training curves"),
        built=touch(built_marker("curves")),
    params:
        # --data-root: the paper profile's plan needs it (its roots are ${data_root}/...)
        command=commands.shell(commands.curves(PLAN, data_root=DATA_ROOT)),
    log:
        f"results/{PROFILE}/logs/curves.log",
    threads: 1
    shell:
        "spgnet {params.command} 2> {log}"


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
        command=commands.shell(commands.report(PLAN, data_root=DATA_ROOT)),
    log:
        f"results/{PROFILE}/logs/report.log",
    threads: 1
    shell:
        "spgnet {params.command} 2> {log}"
