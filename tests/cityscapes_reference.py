"""cityscapesscripts' own pixel-level evaluation, run in a subprocess on a fabricated tree: the
reference that tests/test_metrics.py and tests/test_score.py compare spgnet's numbers with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CITYSCAPES_SCRIPT = r"""
import glob, json
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
ev.args.quiet = True
ev.args.JSONOutput = False
gts = sorted(glob.glob(ev.args.groundTruthSearch))
preds = [ev.getPrediction(ev.args, gt) for gt in gts]
res = ev.evaluateImgLists(preds, gts, ev.args)
print(json.dumps({"classScores": res["classScores"], "averageScoreClasses": res["averageScoreClasses"]}))
"""


def run_cityscapesscripts(root: Path) -> dict:
    """``classScores`` and ``averageScoreClasses`` of cityscapesscripts on ``root`` (gtFine/ beside
    results/ with the prediction PNGs)."""
    env = dict(os.environ, CITYSCAPES_DATASET=str(root), CITYSCAPES_RESULTS=str(root / "results"),
               CITYSCAPES_EXPORT_DIR=str(root))
    done = subprocess.run([sys.executable, "-c", CITYSCAPES_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout.strip().splitlines()[-1])
