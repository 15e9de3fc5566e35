# Evaluation: one job per distinct evaluation of each training run (single scale, multi-scale +
# flip, GAP / AP / TILED, the test-set submission), and the guided-attention figures.
from spgnet.gpu_slots import launcher

RESOURCES_EVAL = resources_for(PLAN.profile.resources, "evaluate")
# `spgnet` on CPU profiles; on GPUs the slot wrapper gives each job its own CUDA_VISIBLE_DEVICES
EVAL_LAUNCH = launcher(RESOURCES_EVAL["gpu"])


rule evaluate:
    input:
        checkpoint=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/checkpoint.pt",
    output:
        metrics=f"results/{PROFILE}/runs/{{run}}/seed{{seed}}/eval/{{evaluation}}.json",
    params:
        settings=lambda wildcards: PLAN.evaluation_settings(wildcards.evaluation),
        predictions=lambda wildcards, output: os.path.splitext(output.metrics)[0] + "-predictions",
        data_root=f"--data-root {config['data_root']}" if config.get("data_root") else "",
        overrides=lambda wildcards: PLAN.set_args(wildcards.run),
    log:
        f"results/{PROFILE}/logs/evaluate_{{run}}_{{evaluation}}_seed{{seed}}.log",
    threads: RESOURCES_EVAL["threads"]
    resources:
        mem_mb=RESOURCES_EVAL["mem_mb"],
        gpu=RESOURCES_EVAL["gpu"],
    shell:
        "OMP_NUM_THREADS={threads} " + EVAL_LAUNCH + " evaluate {wildcards.evaluation}"
        " --profile {PROFILE} {params.data_root} {params.overrides} "
        "--checkpoint {input.checkpoint} --out {output.metrics} --predictions {params.predictions} 2> {log}"
