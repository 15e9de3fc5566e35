"""``spgnet report`` on a fabricated results tree of the smoke profile, and the training curves."""

from __future__ import annotations

import dataclasses
import json
import re
from argparse import Namespace
from pathlib import Path

import pytest

from spgnet.analysis import report
from spgnet.config import PROJECT_ROOT, load_profile, load_registry
from spgnet.errors import SpgnetError
from spgnet.models.inferred import INFERRED
from spgnet.workflow.plan import make_plan

PROFILE = "smoke"
SEEDS = [0, 1]


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")


def _profile_row(name: str, params_m: float, flops_g: float, tiles: int | None = None) -> dict:
    paper = load_registry()[name].paper
    rel = (lambda measured, ref: None if ref is None else (measured - ref) / ref)
    return {
        "name": name, "params_m": params_m, "flops_g": flops_g, "tiles": tiles,
        "flops_g_total": flops_g * (tiles or 1), "paper_params_m": paper.params_m,
        "paper_flops_g": paper.flops_g, "params_rel_diff": rel(params_m, paper.params_m),
        "flops_rel_diff": rel(flops_g, paper.flops_g),
    }


def _eval(name: str, miou, split: str = "val", per_class: dict | None = None) -> dict:
    return {"experiment": name, "profile": PROFILE, "strategy": "AP", "scales": [1.0], "flip": False,
            "split": split, "miou": miou, "per_class": per_class or {}, "num_images": 2,
            "seconds_per_image": 0.1}


@pytest.fixture()
def tree(tmp_path):
    """A partial results tree: t3-1stage under two seeds, t3-spg-sigmoid under seed 0 only, the
    test-set model without labels; everything else of the smoke plan is absent."""
    plan = make_plan(PROFILE, seeds=SEEDS)
    results = tmp_path / "results"

    def at(plan_path: str) -> Path:
        return results / Path(plan_path).relative_to(plan.results)

    _write(at(plan.profile_json), {
        "convention": "fabricated for the test", "torch": "0.0",
        "experiments": [
            _profile_row("t3-1stage", 11.728, 107.59),
            _profile_row("t3-spg-sigmoid", 23.948, 218.03),
            _profile_row("t12-tiled", 11.728, 30.64, tiles=8),
        ],
    })
    _write(at(plan.eval_json("t3-1stage", 0)), _eval("t3-1stage", 50.0))
    _write(at(plan.eval_json("t3-1stage", 1)), _eval("t3-1stage", 52.0))
    _write(at(plan.eval_json("t3-spg-sigmoid", 0)), _eval("t3-spg-sigmoid", 48.25))
    names = load_registry()["t2-spgnet"].paper.per_class
    _write(at(plan.eval_json("t1-spgnet", 0)), _eval("t1-spgnet", None, "test", {c: None for c in names}))
    _write(at(plan.eval_json("t1-spgnet", 1)), _eval("t1-spgnet", None, "test", {c: None for c in names}))
    _write(at(f"{plan.run_dir('t3-1stage', 0)}/train_metrics.json"),
           {"iterations": 2, "final_loss": 3.25, "seconds": 1.5, "device": "cpu", "norm_layer": "ABN"})
    return Namespace(plan=plan, results=results, out=tmp_path / "report" / "tables.md", at=at)


def _args(tree, **extra) -> Namespace:
    return Namespace(profile=PROFILE, data_root=None, results=str(tree.results), out=str(tree.out),
                     seeds=SEEDS, **extra)


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def _row(section: str, experiment: str) -> str:
    return next(line for line in section.splitlines() if line.startswith("|") and line.endswith(f"`{experiment}` |"))


def test_report_renders_every_table_with_paper_and_measured_values(tree):
    assert report.main(_args(tree)) == 0
    text = tree.out.read_text(encoding="utf-8")
    print(_section(text, "Table 3."))  # shown with pytest -s
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    for n in range(1, 13):
        assert any(h.startswith(f"## Table {n}.") for h in headings), n
    order = [h for h in headings if h.startswith("## Table 10.") or h.startswith("## Table 11.") or "Sec. 4.6" in h]
    assert order == [headings[i] for i in sorted(headings.index(h) for h in order)]
    assert order[1] == "## PASCAL VOC 2012 (Sec. 4.6)"
    # header: profile, data set, schedule, date
    assert "**smoke**" in text and "data/synthetic-smoke/cityscapes" in text
    assert "| Iterations |" in text and re.search(r"Generated \| \d{4}-\d{2}-\d{2}", text)

    table3 = _section(text, "Table 3.")
    row = _row(table3, "t3-1stage")
    assert "74.48" in row and "51.00 ± 1.41 (n=2)" in row  # paper | mean ± std of two seeds
    assert "11.7" in row and "11.73 (+0.24%)" in row and "107.59 (-0.01%)" in row
    row = _row(table3, "t3-spg-sigmoid")
    assert "77.67" in row and "48.25 (1 of 2 seeds; missing: " in row
    assert "not run in profile smoke" in _row(table3, "t3-plain")
    assert "has no row 't3-plain'" in _row(table3, "t3-plain")

    table12 = _section(text, "Table 12.")
    tiled = _row(table12, "t12-tiled")
    assert "8 x 30.6 |" in tiled and "8 x 30.64" in tiled
    missing = tree.at(tree.plan.eval_json("t12-tiled", 0))
    assert f"missing: {missing}" in tiled

    table1 = _section(text, "Table 1.")
    assert "2117.3" in _row(table1, "t1-pspnet")
    cited = next(e.name for e in load_registry().values() if not e.reproducible)
    assert _row(text, cited).count("cited, not reproduced") >= 1
    assert "needs the test server" in _row(table1, "t1-spgnet")
    table2 = _section(text, "Table 2.")
    assert "| truck | 78.0 | 76.8 | 67.3 | needs test server |" in table2
    assert "not run in profile smoke" in _row(_section(text, "Table 4."), "t4-se")
    assert "missing: " in _row(_section(text, "PASCAL VOC"), "voc-spgnet")

    for item in INFERRED:
        assert item.topic in text
    assert "missing: " in _section(text, "Figures")
    assert "| `t3-1stage` | 0 | 2 | 3.2500 |" in text


def test_output_is_written_atomically_and_links_figures(tree):
    figures = tree.out.parent / "figures"
    figures.mkdir(parents=True)
    for name in ("fig5-general.png", "fig6-person-rider.png", "fig7-truck-bus-train.png", "training-curves.png"):
        (figures / name).write_bytes(b"\x89PNG\r\n")
    _write(figures / "attention.json", {"experiment": "t1-spgnet", "checkpoint": "ckpt.pt", "images": ["a", "b"]})
    assert report.main(_args(tree)) == 0
    text = tree.out.read_text(encoding="utf-8")
    assert "](figures/fig5-general.png)" in text and "](figures/training-curves.png)" in text
    assert "experiment `t1-spgnet`" in text
    assert sorted(p.name for p in tree.out.parent.iterdir()) == ["figures", "tables.md"]


def test_strict_fails_on_the_first_missing_file(tree):
    with pytest.raises(SpgnetError) as err:
        report.main(_args(tree, strict=True))
    message = str(err.value)
    assert "\n" not in message and message.startswith("missing: ")
    assert "more)" in message
    assert not tree.out.exists()


def test_rows_come_from_the_registry_generically(tree, monkeypatch):
    """A Table 1 peer shows "cited, not reproduced" while it is cited and its counts once it is
    trainable, without any per-row wiring in the report."""
    registry = dict(load_registry())
    spg = registry["t1-spgnet"]
    cited = dataclasses.replace(registry["t1-pspnet"], model=None, train=None, eval=None)
    trainable = dataclasses.replace(
        registry["t1-pspnet"], model=dataclasses.replace(spg.model, arch="pspnet"), train=spg.train, eval=spg.eval)
    profile = json.loads(tree.at(tree.plan.profile_json).read_text())
    profile["experiments"].append(_profile_row("t1-pspnet", 65.71, 2117.33))
    _write(tree.at(tree.plan.profile_json), profile)

    monkeypatch.setattr(report.tables, "load_registry", lambda **_: {**registry, "t1-pspnet": cited})
    assert report.main(_args(tree)) == 0
    row = _row(_section(tree.out.read_text(encoding="utf-8"), "Table 1."), "t1-pspnet")
    assert row.count("cited, not reproduced") == 3 and "2117.3" in row

    monkeypatch.setattr(report.tables, "load_registry", lambda **_: {**registry, "t1-pspnet": trainable})
    assert report.main(_args(tree)) == 0
    row = _row(_section(tree.out.read_text(encoding="utf-8"), "Table 1."), "t1-pspnet")
    assert "cited" not in row and "not run in profile smoke" in row and "65.71 (+0.02%)" in row


def test_the_recipe_is_rendered_beside_the_inferred_architecture(tree):
    """The recipe's entries (spgnet/recipe.py) follow the architecture's inferences, each with its
    value on the paper profile, the paper's words, why and the alternative."""
    from spgnet.recipe import RECIPE, entries

    assert report.main(_args(tree)) == 0
    text = tree.out.read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    inferred = headings.index("## Architecture details inferred from the paper's counts")
    assert headings[inferred + 1] == "## The training and evaluation recipe: the paper's open choices"
    section = _section(text, "The training and evaluation recipe")
    assert "](#the-training-and-evaluation-recipe-the-papers-open-choices)" in text  # the contents line
    items = entries()
    assert len(items) == len(RECIPE)
    for index, item in enumerate(items, start=1):
        assert f"{index}. **{item['topic']}** ({item['part'].lower()}): {item['value']}" in section
        assert item["why"] in section and item["alternative"] in section
    assert "`train.ohem_rule` = `threshold`" in section and "`train.ohem_rule=top_k`" in section
    assert "See `docs/imagenet-init.md`." in section


def test_inferred_details_point_at_real_files():
    for item in INFERRED:
        assert (PROJECT_ROOT / item.where).is_file(), item.where
        assert item.choice and item.evidence and item.text


def test_training_curves_figure(tree, tmp_path):
    from spgnet.analysis import curves

    for run, seed in (("t3-1stage", 0), ("t3-1stage", 1), ("t10-spgnet", 0)):
        log = tree.at(f"{tree.plan.run_dir(run, seed)}/train_log.csv")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("step,loss,lr,loss_stage1\n1,3.0,0.01,1.5\n2,2.5,0.005,1.2\n", encoding="utf-8")
    out = tmp_path / "fig" / "training-curves.png"
    assert curves.main(Namespace(profile=PROFILE, data_root=None, results=str(tree.results), out=str(out))) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SpgnetError, match="no train_log.csv"):
        curves.main(Namespace(profile=PROFILE, data_root=None, results=str(tmp_path / "none"), out=str(out)))


# --------------------------------------------------------------------------------------------
# Table 1's methods trained by this pipeline (the section after Table 1)
# --------------------------------------------------------------------------------------------

TRAINED_HEADING = "Table 1 methods trained by this pipeline"
TIMING = {"device": "cpu", "device_name": "Fabricated CPU", "threads": 1,
          "image_size_min": [128, 256], "image_size_max": [128, 256]}


def _trained_rows() -> list[str]:
    """The non-cited Table 1 rows, then the test-set model's train/val twin (Table 9's t9-r50-d256)."""
    return [e.name for e in load_registry().values() if e.table == "1" and e.reproducible] + ["t9-r50-d256"]


def _table(section: str) -> dict[str, dict[str, str]]:
    """experiment -> {column heading: cell} of the Markdown table in ``section``."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    split = (lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    heads = split(lines[0])
    rows = [dict(zip(heads, split(line))) for line in lines[2:]]
    return {row["Experiment"].strip("`"): row for row in rows}


@pytest.fixture()
def peers_tree(tmp_path):
    """The smoke profile with Table 1's trained rows added, and fabricated results for them: PSPNet
    under two seeds, DANet under one (an eval JSON without the timing keys), the test-set SPGNet
    without labels, DFN and the others missing."""
    smoke = load_profile(PROFILE)
    profile = dataclasses.replace(smoke, experiments=tuple(dict.fromkeys((*smoke.experiments, *_trained_rows()))))
    plan = make_plan(profile, seeds=SEEDS)
    results = tmp_path / "results"

    def at(plan_path: str) -> Path:
        return results / Path(plan_path).relative_to(plan.results)

    _write(at(plan.profile_json), {"experiments": [
        _profile_row("t1-pspnet", 65.71, 2117.33), _profile_row("t1-dfn", 90.22, 2240.33),
        _profile_row("t1-spgnet", 59.79, 654.99)]})
    _write(at(plan.eval_json("t1-pspnet", 0)), {**_eval("t1-pspnet", 70.0), "seconds_per_image": 0.25, **TIMING})
    _write(at(plan.eval_json("t1-pspnet", 1)), {**_eval("t1-pspnet", 72.0), "seconds_per_image": 0.35, **TIMING})
    _write(at(plan.eval_json("t1-danet", 0)), {**_eval("t1-danet", 60.5), "seconds_per_image": 0.5})
    for seed, seconds in ((0, 2.0), (1, 2.5)):
        _write(at(plan.eval_json("t1-spgnet", seed)),
               {**_eval("t1-spgnet", None, "test"), "seconds_per_image": seconds, **TIMING,
                "note": "split 'test' has no labels (every pixel is ignore): no mIoU"})
    figures = tmp_path / "report" / "figures"
    text = report.render(report.Report(plan, results, report.Problems(), figures, figures.parent / "tables.md").context())
    return Namespace(plan=plan, at=at, text=text)


def test_trained_table1_section_follows_table1_with_every_trained_method(peers_tree):
    text = peers_tree.text
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    table1 = next(i for i, h in enumerate(headings) if h.startswith("## Table 1."))
    assert headings[table1 + 1].startswith(f"## {TRAINED_HEADING}")
    section = _section(text, TRAINED_HEADING)
    print(section)  # shown with pytest -s
    rows = _table(section)
    assert list(rows) == _trained_rows()  # registry order, one row per non-cited Table 1 method
    assert {"t1-pspnet", "t1-danet", "t1-denseaspp", "t1-duc-hdc", "t1-bisenet", "t1-dfn", "t1-spgnet"} == set(rows) - {
        "t9-r50-d256"}
    twin = rows["t9-r50-d256"]  # SPGNet measured exactly like the competitors: train split, scored on val
    assert twin["Method"] == "SPGNet (Ours) (train / val)" and twin["Evaluated on"] == "`val`, 1 scale"
    cited = [e for e in load_registry().values() if e.table == "1" and not e.reproducible]
    assert cited and all(f"`{e.name}`" not in section for e in cited)
    assert "Not trainable here: " + ", ".join(e.row for e in cited) in section
    assert "[Table 1, trained here](#table-1-methods-trained-by-this-pipeline" in text  # contents line


def test_trained_table1_numbers_come_from_the_json_files(peers_tree):
    section = _section(peers_tree.text, TRAINED_HEADING)
    rows = _table(section)
    psp = rows["t1-pspnet"]
    assert psp["Trained on"] == "`train`" and psp["Evaluated on"] == "`val`, 1 scale"
    assert psp["mIoU (%) this run"] == "71.00 ± 1.41 (n=2)"
    assert psp["#Params (M)"] == "65.71" and psp["#FLOPs (G)"] == "2117.33"  # no paper difference here
    assert psp["Inference (s / image)"] == "0.300 ± 0.071 (n=2)"
    danet = rows["t1-danet"]
    assert danet["mIoU (%) this run"].startswith("60.50 (1 of 2 seeds; missing: ")
    assert danet["Inference (s / image)"].startswith("0.500 (1 of 2 seeds; missing: ")
    assert danet["#Params (M)"].startswith("missing: ") and "has no row 't1-danet'" in danet["#Params (M)"]
    spg = rows["t1-spgnet"]
    assert spg["Trained on"] == "`trainval`" and spg["Evaluated on"] == "`test`, 6 scales"
    assert spg["Inference (s / image)"] == "2.250 ± 0.354 (n=2)"
    assert spg["#FLOPs (G)"] == "654.99"
    # the caption: where the times were measured, per distinct setting; the split note
    assert "on cpu (Fabricated CPU), 1 CPU thread, 128 x 256 images (`t1-pspnet`, `t1-spgnet`)" in section
    assert "does not record" in section and "(`t1-danet`)" in section
    assert "`t1-spgnet` is the paper's test-set model" in section and "`t9-r50-d256`" in section
    assert "split: `train` (" in section and "`trainval` (`t1-spgnet`)" in section


def test_trained_table1_cells_without_a_number_say_why(peers_tree):
    rows = _table(_section(peers_tree.text, TRAINED_HEADING))
    spg = rows["t1-spgnet"]["mIoU (%) this run"]
    assert spg.startswith("needs the test server") and not re.search(r"\d", spg)
    dfn = rows["t1-dfn"]
    missing = str(peers_tree.at(peers_tree.plan.eval_json("t1-dfn", 0)))
    for column in ("mIoU (%) this run", "Inference (s / image)"):
        assert dfn[column] == f"missing: {missing}"
    assert dfn["#Params (M)"] == "90.22"


def test_trained_table1_rows_not_in_the_profile(tree):
    assert report.main(_args(tree)) == 0
    rows = _table(_section(tree.out.read_text(encoding="utf-8"), TRAINED_HEADING))
    assert list(rows) == _trained_rows()
    for name in ("t1-pspnet", "t1-dfn"):
        assert rows[name]["mIoU (%) this run"] == rows[name]["Inference (s / image)"] == "not run in profile smoke"
    assert rows["t1-spgnet"]["Inference (s / image)"] == "0.100 ± 0.000 (n=2)"  # test split: time without mIoU


def test_evaluate_records_where_it_timed(tmp_path):
    """The eval JSON says on which device, with how many threads and on which image sizes its
    seconds_per_image was measured (the caption of the table above)."""
    import torch

    from spgnet.engine.evaluation import evaluate

    class Pixel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return {"out": self.head(x), "aux": []}

    data = [{"image": torch.rand(3, h, w), "label": torch.zeros(h, w, dtype=torch.long), "name": f"i{k}"}
            for k, (h, w) in enumerate(((8, 12), (10, 6)))]
    result = evaluate.evaluate_model(Pixel(), data, class_names=["a", "b"], strategy="AP")
    assert result["device"] == "cpu" and result["device_name"]
    assert result["threads"] == torch.get_num_threads()
    assert result["image_size_min"] == [8, 6] and result["image_size_max"] == [10, 12]
    assert set(evaluate.TIMING_KEYS) <= set(result) and result["seconds_per_image"] > 0


def test_report_links_each_evaluations_confusion_matrix(tree):
    from spgnet.engine.evaluation.confusion import confusion_paths

    figure = confusion_paths(tree.at(tree.plan.eval_json("t3-1stage", 1)))[1]
    figure.write_bytes(b"\x89PNG fabricated")
    assert report.main(_args(tree)) == 0
    section = _section(tree.out.read_text(encoding="utf-8"), "Figures")
    links = re.findall(r"\[confusion matrix\]\(([^)]+)\)", section)
    assert len(links) == 1 and (tree.out.parent / links[0]).resolve() == figure.resolve()
    line = next(line for line in section.splitlines() if "[confusion matrix]" in line)
    assert "`t3-1stage`" in line and "(seed 1)" in line
