# Training: one job per distinct (model, train) setting and seed (spgnet.pipeline.make_plan).
RESOURCES_TRAIN = resources_for(PLAN.profile.resources, "train")


def training_data(wildcards):
    return PLAN.data_summary(PLAN.runs[wildcards.run].train.dataset)


rule train:
    input:
        training_data,
    output:
        checkpoint=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/checkpoint.pt",
        metrics=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/train_metrics.json",
        curve=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/train_log.csv",
    params:
        # the run's resolved settings: Snakemake reruns a job whose settings changed, and only that
        settings=lambda wildcards: PLAN.run_settings(wildcards.run),
        out=lambda wildcards, output: os.path.dirname(output.checkpoint),
        data_root=f"--data-root {config['data_root']}" if config.get("data_root") else "",
        weights_root=f"--weights-root {WEIGHTS_ROOT}" if WEIGHTS_ROOT else "",
    log:
        f"results/{PROFILE}/logs/train_{{run}}_seed{{seed}}.log",
    threads: RESOURCES_TRAIN["threads"]
    resources:
        mem_mb=RESOURCES_TRAIN["mem_mb"],
        gpu=RESOURCES_TRAIN["gpu"],
    shell:
        "OMP_NUM_THREADS={threads} spgnet train {wildcards.run} --profile {PROFILE} {params.data_root} "
        "{params.weights_root} --seed {wildcards.seed} --out {params.out} --resume 2> {log}"
