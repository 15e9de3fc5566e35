# Evaluation: one job per distinct evaluation of each training run (single scale, multi-scale +
# flip, GAP / AP / TILED, the test-set submission), and the guided-attention figures.
# (RESOURCES_EVAL and EVAL_LAUNCH: common.smk)


rule evaluate:
    input:
        checkpoint=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/checkpoint.pt",
    output:
        metrics=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/eval/{{evaluation}}.json",
        # spgnet.engine.evaluation.confusion: the matrix and its row-normalised figure, beside the metrics
        confusion=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/eval/{{evaluation}}.confusion.json",
        confusion_figure=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/eval/{{evaluation}}.confusion.png",
    params:
        settings=lambda wildcards: PLAN.evaluation_settings(wildcards.evaluation),
        command=lambda wildcards: commands.shell(commands.evaluate(
            PLAN, wildcards.evaluation, int(wildcards.seed), settings=commands.set_args(PLAN, wildcards.run),
            data_root=DATA_ROOT)),
    log:
        f"results/{PROFILE}/logs/evaluate_{{run}}_{{evaluation}}_seed{{seed}}.log",
    benchmark:
        f"results/{PROFILE}/benchmarks/evaluate/{{run}}/seed{{seed}}/{{evaluation}}.tsv"
    threads: RESOURCES_EVAL["threads"]
    resources:
        mem_mb=RESOURCES_EVAL["mem_mb"],
        gpu=RESOURCES_EVAL["gpu"],
    shell:
        "OMP_NUM_THREADS={threads} " + EVAL_LAUNCH + " {params.command} 2> {log}"


# Reference scores every mIoU cell is read against (spgnet.engine.evaluation.reference): the most frequent
# training class of each data set (here), and each run's network before training (its training
# job writes untrained.json: train.smk).
rule reference_majority:
    input:
        f"results/{PROFILE}/data/{{dataset}}/summary.json",
    output:
        f"results/{PROFILE}/references/majority/{{dataset}}.json",
    log:
        f"results/{PROFILE}/logs/reference_majority_{{dataset}}.log",
    params:
        command=lambda wildcards: commands.shell(commands.baseline_majority(PLAN, wildcards.dataset)),
    threads: 1
    resources:
        mem_mb=RESOURCES_LIGHT["mem_mb"],
    shell:
        "spgnet {params.command} 2> {log}"

