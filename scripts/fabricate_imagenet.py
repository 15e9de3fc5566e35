"""Fabricated ImageNet files for the CPU rehearsal of the paper path (README, "CPU rehearsal").

Writes, per backbone, torchvision's architecture saved in torchvision's format under torchvision's
own file name (``resnet50-0676ba61.pth``, :func:`spgnet.models.weights.weights_file_name`), with
what real ImageNet files have and a default initialisation lacks: norm gammas of both signs
(N(0, 1), about half negative), nonzero running means, running variances other than 1, nonzero
betas. So loading them under Inplace-ABN converts channels as loading the published files does
(``norm_conversion`` in ``train_metrics.json``), and ``spgnet weights check`` finds them present
(with the note that they are not the published files):
:func:`spgnet.models.weights.fabricate_weights_file`, which the tests and the device check use too.

    python scripts/fabricate_imagenet.py --out data/rehearsal/imagenet resnet50
    python scripts/fabricate_imagenet.py --profile rehearsal --data-root data/rehearsal   # the profile's backbones, into its weights_root

An existing file is left as it is (``--force`` writes it again). No network, no download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="*", help="torchvision backbones (resnet18, resnet50, ...)")
    parser.add_argument("--out", default=None, help="folder (default: the profile's weights_root)")
    parser.add_argument("--profile", default=None, help="also every backbone this profile's runs need")
    parser.add_argument("--data-root", default=None, help="the profile's data_root (paper-based profiles)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write files that already exist again")
    args = parser.parse_args(argv)

    from spgnet.config import project_path
    from spgnet.errors import SpgnetError
    from spgnet.models.weights import fabricate_weights_file, plan_backbones, weights_file_name

    backbones = list(args.backbones)
    out = args.out
    try:
        if args.profile:
            from spgnet.workflow.plan import make_plan

            plan = make_plan(args.profile, data_root=args.data_root)
            backbones += [b for b in plan_backbones(plan) if b not in backbones]
            out = out or plan.profile.weights_root
        if not out or not backbones:
            parser.error("give --out and backbones, or --profile")
        folder = project_path(out)
        for index, backbone in enumerate(backbones):
            path = folder / weights_file_name(backbone)
            if path.is_file() and not args.force:
                print(f"fabricate_imagenet: {path} exists, kept", file=sys.stderr)
                continue
            fabricate_weights_file(folder, backbone, args.seed + index)
            print(f"fabricate_imagenet: {backbone} -> {path}", file=sys.stderr)
    except SpgnetError as err:
        print(f"fabricate_imagenet: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
