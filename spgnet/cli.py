"""``spgnet <verb>``: parses arguments and calls one function; no logic lives here.

Each verb names the function that does its work as ``"module:function"``; the module is imported
only when the verb runs, so ``spgnet experiments`` answers without importing torch. Every function
takes the parsed ``argparse.Namespace`` and returns the exit status. A
:class:`spgnet.config.ConfigError` (or any ``SpgnetError``) becomes a one-line message on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from spgnet.errors import SpgnetError


_PROFILE_HELP = "params/profiles/<name>.yaml, or a profile file of your own (my-profile.yaml)"
_EXPERIMENTS_HELP = "an experiments file of your own rows, beside the paper's (docs/own-data.md)"


def _experiments_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiments", default=None, metavar="FILE.yaml", help=_EXPERIMENTS_HELP)


def _profile_args(parser: argparse.ArgumentParser, overrides: bool = False) -> None:
    parser.add_argument("--profile", default="mini", help=f"{_PROFILE_HELP} (default: mini)")
    parser.add_argument("--data-root", default=None, help="root of the real data sets (paper profile)")
    _experiments_arg(parser)
    if overrides:
        parser.add_argument("--settings", default=None, metavar="FILE:KEY",
                            help="model/train/eval sections from a YAML file (the DVC stages: params.yaml:runs.<run>)")
        parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                            help="override a setting of the model/train/eval section, value read as YAML "
                                 "(repeatable; e.g. --set train.lr=0.02 --set eval.scales=[1.0,1.5])")


def _trained_network_args(parser: argparse.ArgumentParser) -> None:
    """EXPERIMENT, --checkpoint, --profile (default: the checkpoint's) and --set: which trained network
    (``predict``, ``export``; read as :func:`spgnet.serving.predictor.load_model` reads it)."""
    parser.add_argument("experiment")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--profile", default=None, help=f"{_PROFILE_HELP} (default: the checkpoint's, else mini)")
    _experiments_arg(parser)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting the network was trained with (as spgnet train --set; repeatable)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spgnet", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, target: str, help_text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(target=target)
        return sub

    p = verb("experiments", "spgnet.registry_cli:list_experiments", "list the registered experiments (one per paper table row)")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--table", default=None, help="only the rows of this table")
    _experiments_arg(p)

    p = verb("profile", "spgnet.analysis.profile:main", "#Params and #FLOPs at the paper's input size, beside the paper's values")
    p.add_argument("names", nargs="*", help="experiments (default: every reproducible one)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--experiments", default=None, metavar="FILE.yaml",
                   help=f"{_EXPERIMENTS_HELP}; its rows are counted at their data set's image size (needs --profile)")
    p.add_argument("--profile", default=None, help=f"{_PROFILE_HELP}: where --experiments' data sets lie")
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)

    p = verb("memory", "spgnet.analysis.memory:main", "peak memory of one training step of an experiment's model")
    p.add_argument("names", nargs="+", help="experiments to measure")
    p.add_argument("--crop", type=int, default=513, help="square crop side (default 513)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--norm", default=None, help="normalisation layer (default: a working layer for the device)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="also write the JSON to this file")

    p = verb("make-synthetic", "spgnet.data.synthetic.make:main",
             "generate a street-scene data set in the Cityscapes (or VOC / Person-Part / folder) layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kind", default="cityscapes", choices=["cityscapes", "voc", "person_part", "folder"],
                   help="folder: a data set of your own's layout, described by DIR/dataset.yaml (docs/own-data.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=96)
    p.add_argument("--num-val", type=int, default=24)
    p.add_argument("--num-test", type=int, default=8)
    p.add_argument("--num-aug", type=int, default=0,
                   help="--kind voc: extra SBD-style images of the trainaug split (SegmentationClassAug, train_aug.txt)")
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=512)

    p = verb("prepare-data", "spgnet.data.prepare:main", "check a data set tree and write the split lists the pipeline reads")
    p.add_argument("--dataset", required=True, choices=["cityscapes", "voc", "person_part", "folder"],
                   help="folder: a data set of your own, described by ROOT/dataset.yaml (docs/own-data.md)")
    p.add_argument("--root", required=True, help="the data set's root folder")
    p.add_argument("--out", required=True, help="folder for the split lists")

    p = verb("train", "spgnet.engine.train.loop:main", "train one experiment")
    p.add_argument("experiment")
    _profile_args(p, overrides=True)
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    p.add_argument("--weights-root", default=None,
                   help="folder of torchvision's ImageNet files (resnet50-0676ba61.pth, ...); "
                        "replaces the profile's weights_root (see README, 'ImageNet weights')")
    p.add_argument("--iterations", type=int, default=None, help="override the schedule's iterations")
    p.add_argument("--untrained-out", default=None, metavar="JSON",
                   help="also evaluate the network as this seed builds it, before training, on val "
                        "(the report's untrained reference, as spgnet baseline untrained) and write it here")
    p.add_argument("--evaluate-out", default=None, metavar="JSON",
                   help="when finished, also evaluate checkpoint.pt as spgnet evaluate EXPERIMENT does: the metrics "
                        "JSON, and <name>.confusion.json / .confusion.png beside it")
    p.add_argument("--predictions", default=None, metavar="DIR",
                   help="with --evaluate-out only: write the prediction PNGs there (as spgnet evaluate --predictions)")

    p = verb("weights", "spgnet.weights_cli:main", "check the ImageNet files a profile's runs need")
    p.add_argument("action", choices=["check"], help="check: list each backbone's file as present, missing or wrong")
    _profile_args(p)
    p.add_argument("--weights-root", default=None, help="folder to check (default: the profile's weights_root)")

    p = verb("evaluate", "spgnet.engine.evaluation.evaluate:main", "evaluate a trained experiment (single/multi-scale, flip, GAP/AP/TILED)")
    p.add_argument("experiment")
    _profile_args(p, overrides=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="metrics JSON file")
    p.add_argument("--strategy", default=None, choices=["GAP", "AP", "TILED"])
    p.add_argument("--predictions", default=None, help="folder for prediction PNGs (labelIds)")

    p = verb("predict", "spgnet.serving.predict_files:main", "segment your own pictures with a trained experiment (labelIds, colour, overlay PNGs)")
    _trained_network_args(p)
    p.add_argument("--data-root", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="pictures, folders (recursive) or globs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--strategy", default=None, choices=["GAP", "AP", "TILED"], help="default: the experiment's")
    p.add_argument("--scales", type=float, nargs="+", default=None, help="test scales (default: the experiment's)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="add mirrored passes (default: the experiment's)")
    p.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png")
    p.add_argument("--opacity", type=float, default=0.5, help="weight of the colours in the overlay (default 0.5)")
    p.add_argument("--device", default=None, help="default: the experiment's device if present, else cpu")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="run pictures whose longer side is larger at this size, their outputs resized back "
                        "(default 2048; 0: every picture at its own size)")

    p = verb("export", "spgnet.serving.export:main", "export a trained experiment to ONNX or a torch.export program, checked against PyTorch")
    _trained_network_args(p)
    p.add_argument("--format", required=True, choices=["onnx", "exported-program"])
    p.add_argument("--out", required=True, help="output file (.onnx / .pt2)")
    p.add_argument("--strategy", default=None, choices=["GAP", "AP"], help="global pooling in the graph (default: the experiment's; TILED exports GAP)")
    p.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"), help="example input size (default: the training crop)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="largest accepted |logit difference| (default 1e-3)")

    p = verb("baseline", "spgnet.engine.evaluation.reference:main",
             "reference mIoU on val: the most frequent train class, or an experiment's untrained network")
    p.add_argument("kind", choices=["majority", "untrained"])
    p.add_argument("experiment", nargs="?", default=None, help="untrained: the experiment whose network is scored")
    _profile_args(p, overrides=True)
    p.add_argument("--summary", default=None, help="majority: the data set's summary.json (spgnet prepare-data)")
    p.add_argument("--seed", type=int, default=0, help="untrained: the training seed whose initial weights are scored")
    p.add_argument("--out", required=True, help="reference JSON file")

    p = verb("score", "spgnet.engine.evaluation.score:main", "score prediction PNGs against Cityscapes ground truth")
    p.add_argument("pred_dir")
    p.add_argument("gt_dir")
    p.add_argument("--json", action="store_true")
    p.add_argument("--format", default="auto", choices=["auto", "labelIds", "trainIds"],
                   help="pixel values of the predictions (default: detect)")

    p = verb("attention", "spgnet.analysis.attention:main", "guided-attention maps (Sec. 4.5, Figs. 4-7)")
    p.add_argument("experiment")
    _profile_args(p, overrides=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output folder for the figures")

    p = verb("dvc-plan", "spgnet.workflow.dvc:main", "write workflow/dvc-plan.yaml, the stages dvc.yaml iterates over")
    p.add_argument("--profile", default="mini")
    p.add_argument("--out", default=None, help="default: workflow/dvc-plan.yaml")
    p.add_argument("--check", action="store_true", help="fail if the file is stale instead of writing it")

    p = verb("report", "spgnet.analysis.report:main", "render reports/tables.md from results/ and the registry")
    _profile_args(p)
    p.add_argument("--results", default=None, help="results folder (default results/<profile>)")
    p.add_argument("--out", default=None, help="default: <profile's report_dir>/tables.md")
    p.add_argument("--strict", action="store_true", help="fail on the first missing result file")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to report (default: the profile's)")

    p = verb("curves", "spgnet.analysis.curves:main", "training-curve figure from every run's train_log.csv")
    _profile_args(p)
    p.add_argument("--results", default=None, help="results folder (default results/<profile>)")
    p.add_argument("--out", default=None, help="PNG file (default <report_dir>/figures/training-curves.png)")

    return parser


#: The arguments that name where a verb writes: each is checked writable before the verb runs
#: (:func:`spgnet.atomic.check_writable`), so an evaluation into a read-only folder stops in one
#: line before it evaluates rather than after (issue 22, case 6).
OUTPUT_ARGS = ("out", "evaluate_out", "untrained_out", "predictions")


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    module_name, function_name = args.target.split(":")
    try:
        from spgnet.atomic import check_writable
        from spgnet.runtime.checkout import warn_if_other_checkout

        warn_if_other_checkout()
        for name in OUTPUT_ARGS:
            if getattr(args, name, None):
                check_writable(getattr(args, name))
        function = getattr(importlib.import_module(module_name), function_name)
        return int(function(args) or 0)
    except SpgnetError as err:
        print(f"spgnet {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spgnet {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
