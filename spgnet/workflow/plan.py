"""The pipeline's plan: which data sets, training runs and evaluations a profile needs, and where
each result lives. Snakemake (``workflow/``), DVC (``dvc.yaml``, generated from this plan) and the
report all read it, so the three agree by construction.

Layout under ``results/<profile>/``::

    profile.json                              #Params/#FLOPs at paper scale (every profile)
    runs/<run>/seed<k>/checkpoint.pt          training (one per distinct model+train settings)
    runs/<run>/seed<k>/train_metrics.json     ... its final metrics, train_log.csv its curve
    runs/<run>/seed<k>/untrained.json         ... mIoU of its network before training (same job)
    runs/<run>/seed<k>/eval/<evaluation>.json one per distinct evaluation of that run
    data/<dataset>/summary.json               the checked data set and its split lists
    references/majority/<dataset>.json        mIoU of always predicting the most frequent train class
    references/memory.json                    peak memory of one training step, SPG vs no SPG (Sec. 3.4)

Seeds: every run trains under the profile's ``seeds``; ``table_seeds`` gives the runs of some tables
more (the mini profile: three seeds for the ResNet-18 ablations); a run shared by several tables
gets the union. A ``seeds`` override (``--config seeds=[...]``) applies to every run.

and under the profile's ``report_dir``: ``tables.md`` and ``figures/`` (:data:`CURVES_FIGURE`,
:data:`ATTENTION_FIGURES`). The plan names every output; the analysis modules that draw the
figures import the names from here.

Rows that share a training run (Table 12's GAP/TILED/AP rows, the ResNet-18 rows repeated across
Tables 3-7) are trained once; rows that also share the evaluation settings are evaluated once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from spgnet.config import (
    ConfigError,
    Experiment,
    Profile,
    RunConfig,
    build_config,
    check_seeds,
    config_hash,
    load_profile,
    load_registry,
    own_experiments,
    parse_overrides,
    table_order,
)

#: Guided-attention figures (Sec. 4.5, Figs. 5-7): file name -> (title, Cityscapes classes drawn);
#: :mod:`spgnet.analysis.attention` draws them.
ATTENTION_FIGURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fig5-general.png": ("Figure 5: general classes", ("car", "person", "building", "pole")),
    "fig6-person-rider.png": ("Figure 6: semantically similar classes", ("person", "rider")),
    "fig7-truck-bus-train.png": ("Figure 7: failure cases", ("truck", "bus", "train")),
}
#: Loss and learning rate of every run against the step; :mod:`spgnet.analysis.curves` draws it.
CURVES_FIGURE = "training-curves.png"


#: The rows whose peak training memory Sec. 3.4 compares (2 stages without and with SPG).
MEMORY_ROWS = ("t3-plain", "t3-spg-sigmoid")
#: Crop of the memory measurement on a CPU (769 takes minutes there; 513 keeps activations dominant).
CPU_MEMORY_CROP = 513


@dataclass(frozen=True)
class Evaluation:
    """One experiment row: which training run it evaluates and under which evaluation name."""

    experiment: str
    run: str
    evaluation: str


@dataclass(frozen=True)
class Plan:
    profile: Profile
    experiments: tuple[str, ...]  # reproducible rows this profile runs, registry order
    runs: dict[str, RunConfig]  # training run name -> its resolved config (of the canonical row)
    evaluations: dict[str, Evaluation]  # experiment -> Evaluation
    seeds: tuple[int, ...]  # the profile's default seeds (every run has at least the first)
    run_seeds: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)  # run -> its seeds
    overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # run -> --set items

    # ---- paths (relative to the project root) ----
    @property
    def results(self) -> str:
        return f"results/{self.profile.name}"

    def run_dir(self, run: str, seed: int) -> str:
        return f"{self.results}/runs/{run}/seed{seed}"

    def checkpoint(self, run: str, seed: int) -> str:
        return f"{self.run_dir(run, seed)}/checkpoint.pt"

    def eval_json(self, experiment: str, seed: int) -> str:
        ev = self.evaluations[experiment]
        return f"{self.run_dir(ev.run, seed)}/eval/{ev.evaluation}.json"

    def data_summary(self, dataset: str) -> str:
        return f"{self.results}/data/{dataset}/summary.json"

    # ---- seeds ----
    def seeds_of_run(self, run: str) -> tuple[int, ...]:
        """The seeds training run ``run`` is trained (and each of its evaluations run) under."""
        return self.run_seeds.get(run, self.seeds)

    def seeds_of(self, experiment: str) -> tuple[int, ...]:
        """The seeds of experiment ``experiment``'s training run."""
        return self.seeds_of_run(self.evaluations[experiment].run)

    def eval_files(self, experiments=None) -> list[str]:
        """Every eval JSON of ``experiments`` (default: all of the plan) under each of its seeds."""
        names = self.experiments if experiments is None else experiments
        return [self.eval_json(e, s) for e in names if e in self.evaluations for s in self.seeds_of(e)]

    def evaluated_by_training(self, run: str) -> str | None:
        """The evaluation that ``run``'s training jobs run themselves after their last step (its own
        row: the evaluation named like the run), with the profile's ``evaluate_in_train_job``; None
        without it. The workflow then has no evaluate job for it, and the job's parameters include
        that evaluation's settings."""
        own = self.unique_evaluations().get(run)
        return run if self.profile.evaluate_in_train_job and own is not None and own.run == run else None

    def train_runs(self) -> list[tuple[str, int]]:
        """(run, seed) of every training job."""
        return [(run, seed) for run in self.runs for seed in self.seeds_of_run(run)]

    # ---- reference scores (what an mIoU cell is read against) ----
    def majority_json(self, dataset: str) -> str:
        return f"{self.results}/references/majority/{dataset}.json"

    def untrained_runs(self) -> dict[str, list[str]]:
        """Runs whose untrained networks are the same (same model, data set and test strategy: Table
        9's test-set model and the OHEM rows share their network with another run), keyed by the
        first of them: the report lists each network once."""
        groups: dict[str, list[str]] = {}
        first: dict[str, str] = {}
        for run, cfg in self.runs.items():
            key = config_hash(cfg.model, cfg.data) + cfg.train.dataset + cfg.eval.strategy
            groups.setdefault(first.setdefault(key, run), []).append(run)
        return groups

    def untrained_json(self, run: str, seed: int) -> str:
        """The untrained reference of training run ``run`` under ``seed``: its network before the
        first step, evaluated by its own training job (``spgnet train --untrained-out``)."""
        return f"{self.run_dir(run, seed)}/untrained.json"

    def reference_files(self) -> list[str]:
        return [*(self.majority_json(d) for d in self.datasets()),
                *(self.untrained_json(run, seed) for run, seed in self.train_runs())]

    @property
    def memory_json(self) -> str:
        return f"{self.results}/references/memory.json"

    def memory_settings(self) -> dict | None:
        """What ``spgnet memory`` measures for Sec. 3.4's "2.3% higher peak memory": one training
        step of :data:`MEMORY_ROWS` at batch 1 on the profile's training device, at the paper's
        crop (769) on a GPU and at :data:`CPU_MEMORY_CROP` on a CPU (time). None when the profile
        does not run both rows (smoke)."""
        if not all(name in self.evaluations for name in MEMORY_ROWS):
            return None
        registry = load_registry()
        device = self.experiment_config(MEMORY_ROWS[0]).train.device
        crop = registry[MEMORY_ROWS[0]].train.crop
        if device == "cpu":
            crop = min(crop, CPU_MEMORY_CROP)
        return {"names": list(MEMORY_ROWS), "crop": crop, "batch_size": 1, "device": device}

    @property
    def profile_json(self) -> str:
        return f"{self.results}/profile.json"

    @property
    def report_dir(self) -> str:
        return self.profile.report_dir

    @property
    def figures_dir(self) -> str:
        return f"{self.report_dir}/figures"

    def attention_figures(self) -> list[str]:
        """The guided-attention figures (Figs. 5-7); empty when the profile has no attention row."""
        if self.attention_experiment() is None:
            return []
        return [f"{self.figures_dir}/{name}" for name in ATTENTION_FIGURES]

    @property
    def curves_figure(self) -> str:
        return f"{self.figures_dir}/{CURVES_FIGURE}"

    def datasets(self) -> dict:
        """Data sets the selected runs need: name -> DatasetSource."""
        return {cfg.train.dataset: cfg.data for cfg in self.runs.values()}

    def unique_evaluations(self) -> dict[str, Evaluation]:
        """evaluation name -> Evaluation (each evaluated once)."""
        return {ev.evaluation: ev for ev in self.evaluations.values()}

    def attention_experiment(self) -> str | None:
        """The row whose guided attention is drawn (Sec. 4.5 uses the best model, 2 x R50, D=256;
        a profile that does not run it uses its first Cityscapes row with SPG(sigmoid))."""
        preferred = "t9-r50-d256"
        if preferred in self.evaluations:
            return preferred
        for name in self.experiments:
            cfg = self.runs[self.evaluations[name].run]
            if cfg.model.link == "spg_sigmoid" and cfg.train.dataset == "cityscapes" and cfg.model.arch == "spgnet":
                return name
        return None

    def run_settings(self, run: str) -> str:
        """Digest of a training run's resolved model, schedule and data source. Snakemake keeps it
        as a rule parameter, so changing one experiment's settings reruns that run's jobs only."""
        cfg = self.runs[run]
        return config_hash(cfg.model, cfg.train, cfg.data)

    def evaluation_settings(self, evaluation: str) -> str:
        """Digest of what an evaluation does (its row's test-time settings and data source)."""
        cfg = self.experiment_config(self.unique_evaluations()[evaluation].experiment)
        return config_hash(cfg.eval, cfg.data)

    def experiment_config(self, experiment: str) -> RunConfig:
        run = self.evaluations[experiment].run if experiment in self.evaluations else experiment
        return build_config(experiment, self.profile, overrides=self.overrides.get(run))


def run_overrides(plan_runs, overrides: dict | None) -> dict[str, tuple[str, ...]]:
    """``{"all": [...], "<run>": [...]}`` (the workflow's ``set`` config: SECTION.KEY=VALUE items per
    training run, ``all`` for every run) -> the items of each run of the plan, ``all`` first. A run
    name the plan does not have is a one-line :class:`ConfigError`."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(plan_runs) - {"all"})
    if unknown:
        raise ConfigError(f"set: unknown training run '{unknown[0]}' (valid: all, {', '.join(plan_runs)})")
    items = {}
    for run in plan_runs:
        chosen = [str(v) for key in ("all", run) for v in _as_list(overrides.get(key))]
        if chosen:
            parse_overrides(chosen)  # one-line errors before any job
            items[run] = tuple(chosen)
    return items


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def make_plan(profile: str | Profile, data_root: str | None = None, seeds: list[int] | None = None,
              overrides: dict | None = None, experiments: str | None = None) -> Plan:
    """The plan of ``profile`` (``data_root`` fills the paper profile's dataset roots; ``overrides``
    maps a training run, or ``all``, to ``--set`` items: see :func:`run_overrides`; ``experiments``:
    a file of your own rows, :mod:`spgnet.config.own_experiments`, planned beside the paper's and
    trained under its ``seeds`` when it gives some). Rows that share a training run share its
    overrides: they evaluate the same network."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile, data_root=data_root,
                                                                     experiments=experiments)
    registry = load_registry(extra=prof.experiments_file)
    own = own_experiments(prof.experiments_file) if prof.experiments_file else None
    selected: list[Experiment] = [
        e for e in registry.values() if e.reproducible and (prof.experiments is None or e.name in prof.experiments)
    ]
    if not selected:
        raise ConfigError(f"profile '{prof.name}' selects no reproducible experiment")
    # Canonical names come from the whole registry, so a run keeps its name whatever is selected.
    train_owner: dict[str, str] = {}
    eval_owner: dict[str, str] = {}
    for exp in registry.values():
        if exp.reproducible:
            train_owner.setdefault(config_hash(exp.model, exp.train), exp.name)
            eval_owner.setdefault(config_hash(exp.model, exp.train, exp.eval), exp.name)
    runs: dict[str, RunConfig] = {}
    evaluations: dict[str, Evaluation] = {}
    for exp in selected:
        run = train_owner[config_hash(exp.model, exp.train)]
        runs.setdefault(run, None)
        evaluations[exp.name] = Evaluation(exp.name, run, eval_owner[config_hash(exp.model, exp.train, exp.eval)])
    items = run_overrides(runs, overrides)
    runs = {run: build_config(registry[run], prof, overrides=items.get(run)) for run in runs}
    # the profile's seeds were typed as it was read; a caller's are checked here, once
    chosen_seeds = check_seeds(seeds, "seeds") if seeds else prof.seeds
    run_seeds = {run: chosen_seeds for run in runs}
    if not seeds:
        tables = _table_seeds(prof, registry)
        for exp in selected:
            extra = own.seeds if exp.own and own.seeds else tables.get(exp.table)
            if extra:
                run = evaluations[exp.name].run
                run_seeds[run] = tuple(sorted(set(run_seeds[run]) | set(extra)))
    return Plan(prof, tuple(e.name for e in selected), runs, evaluations, chosen_seeds, run_seeds, items)


def _table_seeds(prof: Profile, registry: dict[str, Experiment]) -> dict[str, tuple[int, ...]]:
    """The profile's ``table_seeds``, checked: known tables, non-empty lists of seeds >= 0
    (:func:`spgnet.config.check_seeds`; a profile need not come from a file)."""
    tables = {exp.table for exp in registry.values()}
    where = f"profile '{prof.name}': table_seeds"
    checked = {}
    for table, values in prof.table_seeds.items():
        if table not in tables:
            raise ConfigError(f"{where}: unknown table '{table}' (tables: {', '.join(sorted(tables, key=table_order))})")
        checked[table] = check_seeds(values, f"{where}.{table}")
    return checked


def describe(plan: Plan) -> dict:
    """A JSON-ready summary of the plan (for the report header and debugging)."""
    return {
        "profile": plan.profile.name,
        "description": plan.profile.description,
        "seeds": list(plan.seeds),
        "run_seeds": {run: list(plan.seeds_of_run(run)) for run in plan.runs},
        "experiments": list(plan.experiments),
        "runs": {name: dataclasses.asdict(cfg.train) for name, cfg in plan.runs.items()},
        "datasets": {name: {"root": src.root, "synthetic": src.synthetic and src.synthetic.options()} for name, src in plan.datasets().items()},
    }

