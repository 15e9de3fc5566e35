"""Every ``spgnet`` command line the two workflows run, written in one place.

Each function returns the words after ``spgnet`` for one job (a list of strings; :func:`shell`
quotes them for a shell). The Snakemake rules (``workflow/rules/*.smk``) put that line after
their launcher (``spgnet``, or the GPU slot wrapper and ``torchrun`` of
:func:`spgnet.workflow.gpu_slots.launcher`) and before their log redirection; ``spgnet dvc-plan``
(:mod:`spgnet.workflow.dvc`) writes ``spgnet`` + the same line into ``workflow/dvc-plan.yaml``, and
every ``dvc.yaml`` stage runs ``${item.cmd}`` (or ``${<stage>_cmd}``) from there. A new argument
or output is one edit here; every path is quoted, so a data root with spaces or non-ASCII
characters reaches ``spgnet`` as one argument.

The two pipelines differ in three arguments of the training and evaluation lines, each for a reason
(``tests/test_workflow_commands.py`` runs both planners and checks that nothing else differs):

* where a run's overrides come from (``settings``): Snakemake passes the items of the workflow's
  ``--config set=...`` as ``--set`` (:func:`set_args`); DVC passes ``--settings
  params.yaml:runs.<run>`` (:func:`dvc_settings_args`), so that ``dvc exp run -S`` changes them;
* ``--resume`` (``resume``): a Snakemake training job continues its own ``latest.pt`` after a kill or
  a requeue; a DVC stage reruns only after a change, and its persistent ``checkpoint.pt`` of other
  settings would make ``--resume`` refuse to start;
* with the profile's ``evaluate_in_train_job`` a Snakemake training job also evaluates its own row
  (``evaluate``: ``--evaluate-out``, ``--predictions``); DVC keeps every evaluation a stage of its
  own, whose line is :func:`evaluate`'s, as the Snakemake evaluate job's would be.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence

from spgnet.workflow.plan import Plan

#: DVC's parameters file (``spgnet dvc-plan`` writes it; :mod:`spgnet.workflow.dvc`).
DVC_PARAMS = "params.yaml"


def shell(words: Sequence[str]) -> str:
    """``words`` as one shell-quoted line (:func:`shlex.join`)."""
    return shlex.join(str(word) for word in words)


def set_args(plan: Plan, run: str) -> list[str]:
    """The ``--set SECTION.KEY=VALUE`` arguments of training run ``run`` (the workflow's ``set``
    config, :func:`spgnet.workflow.plan.run_overrides`); empty without overrides."""
    return [word for item in plan.overrides.get(run, ()) for word in ("--set", item)]


def dvc_settings_args(run: str) -> list[str]:
    """``--settings params.yaml:runs.<run>``: the run's settings as the DVC stages pass them."""
    return ["--settings", f"{DVC_PARAMS}:runs.{run}"]


def _optional(flag: str, value: str | None) -> list[str]:
    return [flag, str(value)] if value else []


def profile_args(plan: Plan) -> list[str]:
    """``--profile`` (the profile's name, or its file: :attr:`Profile.arg`) and, when the plan has
    rows of your own, ``--experiments FILE``."""
    return ["--profile", plan.profile.arg, *_optional("--experiments", plan.profile.experiments_file)]


def make_synthetic(root: str, spec) -> list[str]:
    """``make-synthetic``: write the embedded synthetic data set ``spec`` (a profile's
    ``datasets.<name>.synthetic``, a mapping or a dataclass: ``kind``, ``seed``, sizes; a value
    of None is left to the command's default) into ``root``."""
    values = spec if isinstance(spec, Mapping) else dataclasses.asdict(spec)
    return ["make-synthetic", "--out", root, *(word for key, value in values.items() if value is not None
                                               for word in (f"--{key.replace('_', '-')}", str(value)))]


def prepare_data(kind: str, root: str, out: str) -> list[str]:
    """``prepare-data``: check the data set under ``root`` with the reader ``kind`` (a built-in data
    set's, or ``folder``), write its split lists and summary into ``out``."""
    return ["prepare-data", "--dataset", kind, "--root", root, "--out", out]


def train(plan: Plan, run: str, seed: int, *, settings: Sequence[str] = (), data_root: str | None = None,
          weights_root: str | None = None, resume: bool = False, evaluate: str | None = None) -> list[str]:
    """``train``: training run ``run`` under ``seed`` into :meth:`Plan.run_dir`, with its untrained
    reference (:meth:`Plan.untrained_json`); ``evaluate``: the evaluation the job also runs on the
    checkpoint it writes (:meth:`Plan.evaluated_by_training`), its outputs those of
    :func:`evaluate`."""
    words = ["train", run, *profile_args(plan), *_optional("--data-root", data_root),
             *_optional("--weights-root", weights_root), *settings, "--seed", str(seed),
             "--out", plan.run_dir(run, seed), *(["--resume"] if resume else []),
             "--untrained-out", plan.untrained_json(run, seed)]
    if evaluate:
        metrics = plan.eval_json(plan.unique_evaluations()[evaluate].experiment, seed)
        words += ["--evaluate-out", metrics, "--predictions", predictions_dir(metrics)]
    return words


def predictions_dir(metrics: str) -> str:
    """The folder of an evaluation's prediction PNGs, beside its metrics JSON."""
    return metrics.removesuffix(".json") + "-predictions"


def evaluate(plan: Plan, evaluation: str, seed: int, *, settings: Sequence[str] = (),
             data_root: str | None = None) -> list[str]:
    """``evaluate``: evaluation ``evaluation`` (:meth:`Plan.unique_evaluations`) of its training
    run's checkpoint under ``seed``: metrics JSON, its confusion matrix beside it, predictions."""
    ev = plan.unique_evaluations()[evaluation]
    metrics = plan.eval_json(ev.experiment, seed)
    return ["evaluate", evaluation, *profile_args(plan), *_optional("--data-root", data_root), *settings,
            "--checkpoint", plan.checkpoint(ev.run, seed), "--out", metrics, "--predictions", predictions_dir(metrics)]


def baseline_majority(plan: Plan, dataset: str) -> list[str]:
    """``baseline majority``: the score of always predicting ``dataset``'s most frequent train class."""
    return ["baseline", "majority", "--summary", plan.data_summary(dataset), "--out", plan.majority_json(dataset)]


def memory(plan: Plan) -> list[str]:
    """``memory``: Sec. 3.4's peak-memory comparison (:meth:`Plan.memory_settings`; the profile
    must run both rows)."""
    settings = plan.memory_settings()
    if settings is None:
        raise ValueError(f"profile '{plan.profile.name}' does not run both rows of the memory comparison")
    return ["memory", *settings["names"], "--crop", str(settings["crop"]), "--batch-size", str(settings["batch_size"]),
            "--device", str(settings["device"]), "--out", plan.memory_json]


def profile(plan: Plan) -> list[str]:
    """``profile``: #Params and #FLOPs of every experiment at paper scale (rows of your own at their
    data set's image size: the profile says where the data lie)."""
    own = plan.profile.experiments_file
    return ["profile", *(profile_args(plan) if own else []), "--out", plan.profile_json]


def attention(plan: Plan, *, settings: Sequence[str] = (), data_root: str | None = None) -> list[str]:
    """``attention``: the guided-attention figures (Sec. 4.5) of :meth:`Plan.attention_experiment`'s
    network under the plan's first seed."""
    experiment = plan.attention_experiment()
    if experiment is None:
        raise ValueError(f"profile '{plan.profile.name}' has no row whose guided attention is drawn")
    return ["attention", experiment, *profile_args(plan), *_optional("--data-root", data_root), *settings,
            "--checkpoint", plan.checkpoint(plan.evaluations[experiment].run, plan.seeds[0]),
            "--out", plan.figures_dir]


def curves(plan: Plan, *, data_root: str | None = None) -> list[str]:
    """``curves``: loss and learning rate of every run against the step."""
    return ["curves", *profile_args(plan), *_optional("--data-root", data_root), "--out", plan.curves_figure]


def report(plan: Plan, *, data_root: str | None = None) -> list[str]:
    """``report``: ``tables.md``, every cell beside the paper's."""
    return ["report", *profile_args(plan), *_optional("--data-root", data_root),
            "--out", f"{plan.report_dir}/tables.md"]
