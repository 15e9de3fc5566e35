"""One way in for settings: :func:`build_config` gives the :class:`RunConfig` of one experiment
under one profile with the overrides of a command line, the workflow's plan or a Python caller.

Every verb that runs an experiment (``spgnet train|evaluate|attention|baseline``, through the thin
adapter :func:`config_from_args`), the workflow's plan (:mod:`spgnet.workflow.plan`) and
:func:`spgnet.load_model` / ``hubconf.py`` (:func:`spgnet.serving.predictor.run_config`) call it,
and nothing else reads a profile and applies overrides (detectron2's ``setup(args)``,
mmsegmentation's ``tools/train.py``). The order, last wins:

1. the experiment's registry entry (``params/experiments.yaml``), over the registry's defaults;
2. the profile (``params/profiles/<profile>.yaml``: its ``model``/``train``/``eval`` sections, then
   its ``dataset_overrides`` for the experiment's data set);
3. ``settings`` (``--settings FILE:KEY``: sections read from a YAML file, what the DVC stages pass,
   see :mod:`spgnet.workflow.dvc`), then ``overrides`` (``--set SECTION.KEY=VALUE``, repeatable; the
   value is read as YAML, so ``eval.scales=[1.0,1.5]`` is a list and ``train.lr=2e-2`` a number),
   then the verbs' own flags: ``iterations`` (``--iterations``), ``strategy`` (``--strategy``),
   ``weights_root`` (``--weights-root``, replacing the profile's).

:func:`resolve` is the merge step (1-2, then the sections of 3 as mappings) and checks the result
like the files; a bad ``--set`` value is named as the ``--set`` it came from. Errors are one-line
:class:`~spgnet.config.types.ConfigError`. An override changes the run's config hash, so
``spgnet train --resume`` refuses a checkpoint trained otherwise (only a larger ``train.iterations``
extends a run, see :mod:`spgnet.engine.train.loop`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import spgnet.config.paths as paths
from spgnet.config.builder import import_builder
from spgnet.config.description import DESCRIPTION_FILE, load_description
from spgnet.config.mappings import deep_merge
from spgnet.config.overrides import SECTION_TYPES, parse_overrides, read_settings
from spgnet.config.profiles import Profile, load_profile
from spgnet.config.registry import Experiment, get_experiment
from spgnet.config.sections import EvalConfig, RunConfig
from spgnet.config.types import DATASET_SPLITS, ConfigError, validate, validate_partial


def build_config(experiment: str | Experiment, profile: str | Profile, *, data_root: str | None = None,
                 overrides: Sequence[str] | None = (), settings: str | None = None, iterations: int | None = None,
                 strategy: str | None = None, weights_root: str | None = None,
                 experiments: str | None = None) -> RunConfig:
    """The :class:`RunConfig` of ``experiment`` under ``profile`` (each a name or the loaded
    object; ``data_root`` fills a named profile's ``${data_root}``; ``experiments``: a file of your
    own rows, :mod:`spgnet.config.own_experiments`), with ``settings`` (``FILE:KEY``),
    ``overrides`` (``SECTION.KEY=VALUE`` items), ``iterations``, ``strategy`` and ``weights_root``
    applied in that order (see the module's docstring). Errors: :class:`ConfigError`."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile, data_root=data_root,
                                                                     experiments=experiments)
    sections = read_settings(settings) if settings else {}
    for section, values in parse_overrides(overrides).items():
        # checked here, so that a bad value is named as the --set it came from
        sections.setdefault(section, {}).update(validate_partial(SECTION_TYPES[section], values, "--set", section))
    if iterations is not None:
        if iterations < 1:
            raise ConfigError(f"--iterations must be positive, got {iterations}")
        sections.setdefault("train", {})["iterations"] = iterations
    if strategy:
        sections.setdefault("eval", {})["strategy"] = strategy
    if weights_root:  # replaces the profile's weights_root
        sections.setdefault("model", {})["pretrained"] = str(Path(weights_root).expanduser().resolve())
    return resolve(experiment, prof, **sections)


def config_from_args(args) -> RunConfig:
    """:func:`build_config` of a parsed ``spgnet train|evaluate|attention|baseline`` command line:
    ``args.experiment``, ``args.profile``, ``args.data_root`` and, where the verb has them,
    ``args.settings`` (``--settings``), ``args.set`` (``--set``), ``args.iterations``,
    ``args.strategy``, ``args.weights_root`` and ``args.experiments`` (``--experiments``)."""
    return build_config(args.experiment, args.profile, data_root=getattr(args, "data_root", None),
                        overrides=getattr(args, "set", None), settings=getattr(args, "settings", None),
                        iterations=getattr(args, "iterations", None), strategy=getattr(args, "strategy", None),
                        weights_root=getattr(args, "weights_root", None),
                        experiments=getattr(args, "experiments", None))


def _override(section, overrides: dict, where: str, key: str):
    values = deep_merge(dataclasses.asdict(section), overrides)
    return validate(type(section), values, where, key)


def _cap_scales(ev: EvalConfig) -> EvalConfig:
    """``ev`` without the scales above ``ev.max_scale`` (the smallest scale is always kept)."""
    if ev.max_scale is None:
        return ev
    return dataclasses.replace(ev, scales=tuple(s for s in ev.scales if s <= ev.max_scale) or (min(ev.scales),))


def resolve(experiment: str | Experiment, profile: str | Profile, **overrides: dict) -> RunConfig:
    """The merge step of :func:`build_config`: an experiment with a profile (each a name or the
    loaded object), then optional ``model=`` / ``train=`` / ``eval=`` mappings, checked like the
    files (a bad value names ``profile '<name>'``). A data set of kind ``folder`` gives the
    network its class count (its ``dataset.yaml``, :mod:`spgnet.config.description`)."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    exp = experiment if isinstance(experiment, Experiment) else get_experiment(experiment, extra=prof.experiments_file)
    if not exp.reproducible:
        raise ConfigError(f"experiment '{exp.name}' is a row the paper cites from another work; nothing to run")
    unknown = sorted(set(overrides) - {"model", "train", "eval"})
    if unknown:
        raise ConfigError(f"unknown override section '{unknown[0]}' (valid: eval, model, train)")
    dataset = exp.train.dataset
    if dataset not in prof.datasets:
        raise ConfigError(
            f"profile '{prof.name}' has no datasets.{dataset} (experiment '{exp.name}' needs it)"
        )
    per_dataset = prof.dataset_overrides.get(dataset)
    per_train, per_eval = (per_dataset.train, per_dataset.eval) if per_dataset is not None else ({}, {})
    where = f"profile '{prof.name}'"
    weights = {"pretrained": prof.weights_root} if prof.weights_root else {}
    source = prof.datasets[dataset]
    if source.kind == "folder":  # the class count is the data set's
        weights["num_classes"] = load_description(source.path()).num_classes
    model = _override(exp.model, deep_merge(deep_merge(weights, prof.model), overrides.get("model", {})), where, "model")
    if source.kind == "folder" and model.num_classes != weights["num_classes"]:
        raise ConfigError(f"experiment '{exp.name}', profile '{prof.name}': key 'model.num_classes': data set "
                          f"'{dataset}' has {weights['num_classes']} classes ({source.path() / DESCRIPTION_FILE}), "
                          f"got {model.num_classes}")
    train = _override(
        exp.train, deep_merge(deep_merge(prof.train, per_train), overrides.get("train", {})), where, "train"
    )
    evaluation = _override(
        exp.eval, deep_merge(deep_merge(prof.eval, per_eval), overrides.get("eval", {})), where, "eval"
    )
    if "scales" not in overrides.get("eval", {}):  # scales given on the command line are used as given
        evaluation = _cap_scales(evaluation)
    if model.builder is not None:  # fails here, before any work, when it does not import
        import_builder(model.builder, f"{exp.source or paths.EXPERIMENTS_FILE}: experiment '{exp.name}': "
                                      f"key 'model.builder'")
    valid_splits = DATASET_SPLITS[source.kind or dataset]
    for key, split in (("train.split", train.split), ("eval.split", evaluation.split)):
        if split not in valid_splits:  # trainaug is VOC's alone
            raise ConfigError(f"experiment '{exp.name}', profile '{prof.name}': key '{key}': dataset '{dataset}' "
                              f"has no split '{split}' (valid: {', '.join(valid_splits)})")
    return RunConfig(
        experiment=exp.name,
        profile=prof.arg,
        table=exp.table,
        row=exp.row,
        model=model,
        train=train,
        eval=evaluation,
        data=source,
        paper=exp.paper,
        experiments_file=prof.experiments_file,
    )
