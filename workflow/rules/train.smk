# Training: one job per distinct (model, train) setting and seed (spgnet.workflow.plan.make_plan).
# Before its first step the job also scores the network it starts from on val (untrained.json,
# the report's untrained reference): a validation pass, not a process of its own.
#
# Launch: one process per GPU. A profile with `gpus: N > 1` runs `torchrun --standalone
# --nproc_per_node N` inside the GPU slot wrapper (spgnet.workflow.gpu_slots: the job's own
# CUDA_VISIBLE_DEVICES; under SLURM the job's allocation), each rank with threads / N OpenMP
# threads of the threads Snakemake gave the job (torchrun would give every rank one, OpenMP all of
# the machine's). CPU profiles keep the plain `spgnet train` line, unless they ask for several
# processes (resources.train.processes: N, the rehearsal profile): then `torchrun --standalone
# --nproc_per_node N` on the CPU (gloo), without the slot wrapper, each rank with threads / N.
#
# Resume: the job always passes --resume. Periodic checkpoints go to <out>/latest.pt, which is NOT
# an output: Snakemake deletes a job's outputs before it runs and after it fails, so only the
# finished run's checkpoint.pt is one. A killed, pre-empted or timed-out job started again (its
# outputs are missing, so Snakemake reruns it; SLURM profile: `retries`) continues from latest.pt.
# With the profile's evaluate_in_train_job (the CPU profiles) the job also evaluates its run's
# own row from the checkpoint it wrote (spgnet train --evaluate-out: what `spgnet evaluate` runs,
# the same files but for timings), one process start fewer per run; that row's eval settings are then parameters of
# the job, and the evaluate rule (evaluate.smk) serves only the other evaluations.
TRAIN_EVALUATES = PLAN.profile.evaluate_in_train_job
RUN_EVAL = f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/eval/{{run}}"
TRAIN_EVAL_OUTPUTS = (
    {"eval": f"{RUN_EVAL}.json", "confusion": f"{RUN_EVAL}.confusion.json", "confusion_figure": f"{RUN_EVAL}.confusion.png"}
    if TRAIN_EVALUATES
    else {}
)


def train_settings(wildcards):
    """The run's resolved settings (and its own evaluation's, when the job evaluates it)."""
    evaluation = PLAN.evaluated_by_training(wildcards.run)
    return PLAN.run_settings(wildcards.run) + (f" {PLAN.evaluation_settings(evaluation)}" if evaluation else "")


ruleorder: train > evaluate


def threads_per_process(wildcards, threads, resources):
    """OpenMP threads of each of the job's processes: the threads Snakemake gave the job (its
    --cores may give fewer than the profile asks) shared by its processes, one per GPU (on the
    CPU: the profile's resources.train.processes)."""
    return max(1, threads // (resources.gpu if resources.gpu > 0 else RESOURCES_TRAIN["processes"]))


rule train:
    input:
        training_data,
    output:
        checkpoint=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/checkpoint.pt",
        metrics=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/train_metrics.json",
        curve=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/train_log.csv",
        untrained=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/untrained.json",
        **TRAIN_EVAL_OUTPUTS,
    params:
        # the run's resolved settings: Snakemake reruns a job whose settings changed, and only that
        settings=train_settings,
        command=lambda wildcards: commands.shell(commands.train(
            PLAN, wildcards.run, int(wildcards.seed), settings=commands.set_args(PLAN, wildcards.run),
            data_root=DATA_ROOT, weights_root=WEIGHTS_ROOT, resume=True,
            evaluate=PLAN.evaluated_by_training(wildcards.run))),
        omp_threads=threads_per_process,
    log:
        f"results/{PROFILE}/logs/train_{{run}}_seed{{seed}}.log",
    benchmark:
        f"results/{PROFILE}/benchmarks/train/{{run}}/seed{{seed}}.tsv"
    threads: RESOURCES_TRAIN["threads"]
    resources:
        mem_mb=RESOURCES_TRAIN["mem_mb"],
        gpu=RESOURCES_TRAIN["gpu"],
    shell:
        "OMP_NUM_THREADS={params.omp_threads} " + TRAIN_LAUNCH + " {params.command} 2> {log}"
