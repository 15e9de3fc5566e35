"""The workflows' side of the package: what Snakemake (``Snakefile``, ``workflow/rules/``) and DVC
(``dvc.yaml``) are built from.

* :mod:`.plan`: which data sets, training runs and evaluations a profile needs, and the name of
  every output (the report reads the same names);
* :mod:`.dvc`: ``workflow/dvc-plan.yaml`` and ``params.yaml``, generated from the plan;
* :mod:`.support`: the Snakemake config checked with one-line errors, each kind of job's resources;
* :mod:`.gpu_slots`: ``python -m spgnet.workflow.gpu_slots``, which gives each local GPU job GPUs
  of its own.

Why this plumbing lives in the package rather than under ``workflow/``: every job runs it as
``python -m spgnet.workflow.gpu_slots`` on whatever machine runs the job (a SLURM node included),
where the installed package is the one thing sure to be importable, and the report reads the plan's
output names; the rule files hold only wiring. Nothing here imports torch. Nothing is imported here.
"""
