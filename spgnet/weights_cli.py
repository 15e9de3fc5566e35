"""``spgnet weights check``: which ImageNet files a profile's runs need, and whether each is there.

The verb sits above the plan (it asks :func:`spgnet.workflow.plan.make_plan` which backbones the runs
use); the files themselves are :mod:`spgnet.models.weights`'s business.
"""

from __future__ import annotations

from spgnet.config import ConfigError
from spgnet.models.weights import plan_backbones, weights_root_path, weights_status


def main(args) -> int:
    """``spgnet weights check``: print one line per backbone; exit 1 when a file is missing or wrong."""
    from spgnet.config import load_profile
    from spgnet.workflow.plan import make_plan

    # the data roots play no part here: fill the paper profile's placeholder when none is given
    profile = load_profile(args.profile, data_root=args.data_root or "${data_root}")
    root = args.weights_root or profile.weights_root
    if root is None:
        raise ConfigError(f"profile '{profile.name}' has no weights_root (its runs start from random "
                          "weights); pass --weights-root DIR to check a folder")
    needs = plan_backbones(make_plan(profile))
    rows = weights_status(root, needs)
    print(f"weights_root {weights_root_path(root)} (profile {profile.name}):")
    width = max(len(r.path.name) for r in rows)
    for row in rows:
        runs = f"{len(row.runs)} run{'s' if len(row.runs) > 1 else ''}"
        print(f"  {row.backbone:<12} {row.path.name:<{width}}  {row.status:<7}  {runs:<8}  {row.detail}")
    bad = [r for r in rows if r.status != "present"]
    if bad:
        print(f"{len(bad)} of {len(rows)} ImageNet files missing or wrong (README: 'ImageNet weights')")
        return 1
    return 0
