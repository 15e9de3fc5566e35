# Data sets: generate the embedded synthetic sets, or check a real tree; then write split lists.

for _dataset, _source in PLAN.datasets().items():
    if _source.synthetic:

        rule:
            name:
                f"synthetic_{_dataset}"
            output:
                directory(_source.root),
            params:
                command=commands.shell(commands.make_synthetic(_source.root, _source.synthetic)),
            log:
                f"results/{PROFILE}/logs/synthetic_{_dataset}.log",
            threads: 1
            shell:
                "spgnet {params.command} 2> {log}"


def dataset_root(wildcards):
    return PLAN.datasets()[wildcards.dataset].root


rule prepare_data:
    input:
        dataset_root,
    output:
        f"results/{PROFILE}/data/{{dataset}}/summary.json",
    params:
        command=lambda wildcards, input, output: commands.shell(
            commands.prepare_data(PLAN.datasets()[wildcards.dataset].kind, input[0], os.path.dirname(output[0]))),
    log:
        f"results/{PROFILE}/logs/prepare_data_{{dataset}}.log",
    threads: 1
    resources:
        mem_mb=RESOURCES_LIGHT["mem_mb"],
    shell:
        "spgnet {params.command} 2> {log}"
