"""Time the whole reproduction on a profile and check issue 5's targets (default: mini).

    python benchmarks/workflow_time.py                 # full run: from nothing to reports/tables.md
    python benchmarks/workflow_time.py --keep          # reuse existing results (only the re-run figures)
    python benchmarks/workflow_time.py --profile smoke

Runs, one after the other, in the project root:

1. ``snakemake --cores <cores> reproduce_all --config profile=<profile>`` after deleting the
   profile's results, data and report (unless ``--keep``): wall time (target, mini: < 20 min);
2. the same command again: wall time and whether Snakemake reported nothing to do (target < 5 s);
3. ``dvc repro`` (mini only; dvc.yaml describes the mini profile): wall time and whether every stage
   was up to date (target < 10 s);

then reads the R18 1-stage row's mIoU on the synthetic val split (target > 50%) from the
evaluation JSON the workflow wrote. Prints one line per figure with PASS/FAIL; exits non-zero when a
step failed (not when a target is missed: the figures are the output).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
R18_ROW = "t3-1stage"  # Table 3's "1 stage" row: ResNet-18, one stage (also Tables 5, 7, 12)


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
        raise SystemExit(f"benchmark: `{' '.join(command)}` failed with exit code {result.returncode}")
    return elapsed, result


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def clean(plan) -> None:
    """Delete what the workflow makes for this profile, so the first run starts from nothing."""
    targets = [Path(plan.results), Path(plan.report_dir) / "tables.md", Path(plan.figures_dir)]
    targets += [Path(source.root) for source in plan.datasets().values() if source.synthetic]
    for target in targets:
        path = ROOT / target
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="mini")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--keep", action="store_true", help="do not delete earlier results first")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from spgnet.pipeline import make_plan

    plan = make_plan(args.profile)
    if not args.keep:
        clean(plan)
    snakemake = ["snakemake", "--cores", args.cores, "reproduce_all", "--config", f"profile={args.profile}"]
    print(f"profile {args.profile}, {os.cpu_count()} cores, {len(plan.runs)} training runs, "
          f"{len(plan.unique_evaluations())} evaluations", flush=True)

    first, _ = timed(snakemake)
    print(f"first run:   {first / 60:6.1f} min   target < 20 min (mini): {verdict(first < 1200)}", flush=True)

    second, result = timed(snakemake)
    nothing = "Nothing to be done" in (result.stdout + result.stderr)
    print(f"second run:  {second:6.1f} s     nothing to do: {nothing}   target < 5 s: "
          f"{verdict(nothing and second < 5)}", flush=True)

    if args.profile == "mini":
        dvc_time, result = timed(["dvc", "repro"])
        up_to_date = "didn't change" in result.stdout or "up to date" in result.stdout
        ran = [line for line in result.stdout.splitlines() if line.startswith("Running stage")]
        print(f"dvc repro:   {dvc_time:6.1f} s     stages run: {len(ran)}   target < 10 s and none run: "
              f"{verdict(dvc_time < 10 and not ran and up_to_date)}", flush=True)

    if R18_ROW in plan.evaluations:
        metrics = json.loads((ROOT / plan.eval_json(R18_ROW, plan.seeds[0])).read_text())
        print(f"R18 1-stage: mIoU {metrics['miou']:.2f}% on {metrics.get('split', 'val')}   "
              f"target > 50%: {verdict(metrics['miou'] > 50)}")


if __name__ == "__main__":
    main()
