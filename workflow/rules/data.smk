# Data sets: generate the embedded synthetic sets, or check a real tree; then write split lists.

for _dataset, _source in PLAN.datasets().items():
    if _source.synthetic:
        _args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in _source.synthetic.items())

        rule:
            name:
                f"synthetic_{_dataset}"
            output:
                directory(_source.root),
            params:
                args=_args,
            log:
                f"results/{PROFILE}/logs/synthetic_{_dataset}.log",
            threads: 1
            shell:
                "spgnet make-synthetic --out {output} {params.args} 2> {log}"


def dataset_root(wildcards):
    return PLAN.datasets()[wildcards.dataset].root


rule prepare_data:
    input:
        dataset_root,
    output:
        f"results/{PROFILE}/data/{{dataset}}/summary.json",
    params:
        out=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        f"results/{PROFILE}/logs/prepare_data_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES_LIGHT["mem_mb"],
    shell:
        "spgnet prepare-data --dataset {wildcards.dataset} --root {input} --out {params.out} 2> {log}"
