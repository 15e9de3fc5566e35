"""The training and evaluation recipe of the paper profile, setting by setting: ``docs/recipe.md``.

The paper states part of its recipe (Sec. 4.2, 4.4, 4.6, appendix A) and leaves the rest open.
:data:`RECIPE` has one :class:`RecipeEntry` per setting of :class:`spgnet.config.TrainConfig` and
:class:`spgnet.config.EvalConfig` (every field in exactly one entry, ``tests/test_recipe.py``), plus
the normalisation layer and the encoders' initialisation: what the paper says (with its section) or
:data:`NOT_STATED`, why the value was chosen (the work followed, with the paper's reference
number), and the alternative with the setting that switches to it (the entries' texts:
:mod:`spgnet.recipe_entries`). No value is typed there: each entry names its config keys and
:func:`entries` reads their values from :func:`spgnet.config.resolve` of the paper profile for
the rows of :data:`ROWS`; the texts take
what they quote of the configuration from the same configs (``{cityscapes.train.crop}``, see
:func:`_facts`). ``spgnet report`` renders the entries beside the architecture's inferences
(``spgnet/models/inferred.py``); ``python -m spgnet.recipe --write`` writes ``docs/recipe.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re

from spgnet.config import PROJECT_ROOT, EvalConfig, ModelConfig, RunConfig, TrainConfig, load_profile, resolve
from spgnet.recipe_entries import NOT_STATED, RECIPE, RecipeEntry  # noqa: F401 - spgnet.recipe's names

PROFILE = "paper"
RECIPE_FILE = "docs/recipe.md"

#: The rows whose settings the page shows: (label, experiment), one per data set and test setting.
ROWS = (
    ("Cityscapes val", "t9-r50-d256"),
    ("Cityscapes val, flip + multi-scale (Sec. 4.4)", "t9-r50-d256-msflip"),
    ("Cityscapes test (Tables 1, 2)", "t1-spgnet"),
    ("PASCAL VOC 2012 (Sec. 4.6)", "voc-spgnet"),
    ("Person-Part (Table 10)", "t10-spgnet"),
    ("Person-Part, multi-scale (Table 10)", "t10-spgnet-ms"),
)
#: which :func:`_facts` name holds the config of which row
_FACT_ROWS = {"cityscapes": "t9-r50-d256", "msflip": "t9-r50-d256-msflip", "test": "t1-spgnet",
              "voc": "voc-spgnet", "person_part": "t10-spgnet", "person_part_ms": "t10-spgnet-ms"}
#: the sections whose every field an entry covers (``tests/test_recipe.py``)
SECTIONS = {"train": TrainConfig, "eval": EvalConfig}
HOW_TO_SWITCH = (
    "`spgnet train|evaluate EXPERIMENT --set train.ohem_rule=top_k` (one run); "
    "`snakemake ... --config 'set={all: [train.ohem_rule=top_k]}'` (every run of a workflow, or one run by name); "
    "`dvc exp run -S 'runs.<run>.train.ohem_rule=top_k'` (a DVC experiment; `params.yaml` holds the model and "
    "train settings); or the registry entry or a profile under `params/`"
)


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def configs(data_root: str = "<data_root>") -> dict[str, RunConfig]:
    """``{experiment: RunConfig}`` of :data:`ROWS` under the paper profile (no data set is read)."""
    profile = load_profile(PROFILE, data_root=data_root)
    return {experiment: resolve(experiment, profile) for _label, experiment in ROWS}


_QUOTE = re.compile(r"\{(\w+)((?:\.\w+)*)\}")


def _fill(text: str, facts: dict) -> str:
    """``text`` with each ``{name}`` / ``{name.attr...}`` whose name is a fact replaced by its value."""

    def value(match: re.Match) -> str:
        if match.group(1) not in facts:
            return match.group(0)
        found = facts[match.group(1)]
        for attr in filter(None, match.group(2).split(".")):
            found = getattr(found, attr)
        return str(found)

    return _QUOTE.sub(value, text)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _facts(cfgs: dict[str, RunConfig]) -> dict:
    """What the entries' texts quote: the configs by name (:data:`_FACT_ROWS`) and figures derived
    from them."""
    from spgnet.models.norm import LEAKY_SLOPE

    facts = {name: cfgs[experiment] for name, experiment in _FACT_ROWS.items()}
    gpus = load_profile(PROFILE, data_root="<data_root>").resources["train"].gpus
    cs, voc = facts["cityscapes"].train, facts["voc"].train
    global_cs = cs.ohem_min_kept / (cs.batch_size * cs.crop ** 2)
    global_voc = voc.ohem_min_kept / (voc.batch_size * voc.crop ** 2)
    per_gpu = (voc.batch_size // gpus, math.ceil(voc.batch_size / gpus))  # crops per GPU: 3 or 4 of 28
    per_gpu_cs = cs.ohem_min_kept / (math.ceil(cs.batch_size / gpus) * cs.crop ** 2)
    per_gpu_voc = [voc.ohem_min_kept / (n * voc.crop ** 2) for n in per_gpu]
    factors = [per_gpu_cs / global_cs] + [share / global_voc for share in per_gpu_voc]
    return {
        **facts,
        "gpus": gpus,
        "leaky_slope": LEAKY_SLOPE,
        "cityscapes_share": _percent(global_cs),
        "voc_share": _percent(global_voc),
        "cityscapes_per_gpu_share": _percent(per_gpu_cs),
        "voc_per_gpu": f"{per_gpu[0]}-{per_gpu[1]}" if per_gpu[0] != per_gpu[1] else str(per_gpu[0]),
        "voc_per_gpu_share": "-".join(_percent(s) for s in sorted(set(per_gpu_voc))),
        "per_gpu_factor": f"{min(factors):.0f}-{max(factors):.0f}x",
    }


def show(key: str, value) -> str:
    """A setting's value as it is written in ``params/`` or after ``--set`` (YAML); ``model.pretrained``
    as the config hash sees it ("imagenet" or null: whether ImageNet weights are used, not where the
    files lie on this machine)."""
    if key == "model.pretrained":
        value = {f.name: f for f in dataclasses.fields(ModelConfig)}["pretrained"].metadata["hash"](value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(show(key, v) for v in value) + "]"
    return str(value)


def values(key: str, cfgs: dict[str, RunConfig]) -> list[tuple[str, list[str]]]:
    """``[(value, [experiments])]``: the value of ``key`` in each row, rows with equal values together."""
    section, name = key.split(".")
    grouped: dict[str, list[str]] = {}
    for experiment, cfg in cfgs.items():
        grouped.setdefault(show(key, getattr(getattr(cfg, section), name)), []).append(experiment)
    return list(grouped.items())


def entries(cfgs: dict[str, RunConfig] | None = None) -> list[dict]:
    """:data:`RECIPE` with its texts filled in and its values read: ``[{"part", "topic", "keys",
    "values": [(key, [(value, [experiments])])], "value": one line, "paper", "why", "alternative",
    "link"}]``."""
    cfgs = cfgs if cfgs is not None else configs()
    facts = _facts(cfgs)
    result = []
    for entry in RECIPE:
        per_key = [(key, values(key, cfgs)) for key in entry.keys]
        result.append({
            **dataclasses.asdict(entry),
            "values": per_key,
            "value": _value_line(per_key, len(cfgs)),
            "paper": _fill(entry.paper, facts),
            "why": _fill(entry.why, facts),
            "alternative": _fill(entry.alternative, facts),
        })
    return result


def _value_line(per_key: list, rows: int) -> str:
    """``train.crop`` `769` (t9-r50-d256, ...), `513` (voc-spgnet, ...); one value for every row: just it."""
    parts = []
    for key, grouped in per_key:
        if len(grouped) == 1:
            shown = f"`{grouped[0][0]}`"
        else:
            shown = "; ".join(f"`{value}` ({', '.join(f'`{e}`' for e in experiments)})" for value, experiments in grouped)
        parts.append(f"`{key}` = {shown}")
    return "; ".join(parts) if parts else "not a setting"


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def render(cfgs: dict[str, RunConfig] | None = None) -> str:
    """The text of ``docs/recipe.md``."""
    items = entries(cfgs)
    rows = ", ".join(f"`{experiment}` ({label})" for label, experiment in ROWS)
    lines = [
        "# The training and evaluation recipe, setting by setting",
        "",
        "<!-- generated by `python -m spgnet.recipe --write` from spgnet/recipe.py and params/; do not edit -->",
        "",
        "The paper states part of its recipe and leaves the rest open. Below, every setting of the training "
        "(`TrainConfig`) and evaluation (`EvalConfig`) sections of `spgnet/config/sections.py`, the normalisation layer "
        "and the encoders' initialisation: what the paper says (its section) or *not stated*, the value the "
        "**paper profile** runs, why (the work followed, with the paper's reference number), and the alternative "
        "with the setting that switches to it. Where the paper is silent the value is the most defensible "
        "reading, named as such. `spgnet/models/inferred.py` lists the architecture's open details "
        "([`architecture-counts.md`](architecture-counts.md)); `spgnet report` renders both.",
        "",
        f"Values are read from `spgnet.config.resolve(EXPERIMENT, \"{PROFILE}\")` for the rows {rows}; a value "
        "shown once holds for all of them.",
        "",
        f"Switching: {HOW_TO_SWITCH}.",
    ]
    for part in dict.fromkeys(item["part"] for item in items):
        lines += ["", f"## {part}", ""]
        for index, item in enumerate((i for i in items if i["part"] == part), start=1):
            lines.append(f"{index}. **{item['topic']}**: {item['value']}")
            lines.append(f"    - *Paper:* {item['paper']}")
            lines.append(f"    - *Chosen because:* {item['why']}")
            alternative = item["alternative"]
            if item["link"]:
                alternative += f" See [`docs/{item['link']}`]({item['link']})."
            lines.append(f"    - *Alternative:* {alternative}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spgnet.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RECIPE_FILE} instead of printing it")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        from spgnet.atomic import write_text

        write_text(PROJECT_ROOT / RECIPE_FILE, text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
