"""Peak memory of ``spgnet predict`` on large photos: the 48-megapixel case of issue 22 (detectron2#1221).

    python benchmarks/predict_memory.py [--experiment t3-1stage] [--profile mini] [--full]

Writes two JPEGs of street-like noise into a temporary folder, a 2000x1500 one (the peer: run at
its own size, under the default ``--max-side`` of 2048) and an 8000x6000 one (48 megapixels, run
at 2048x1536 and its outputs resized back), and a checkpoint of ``--experiment`` with seeded random
weights saved as ``spgnet train`` saves it. Each ``spgnet predict`` runs in a process of its own;
its peak resident memory is read from ``getrusage(RUSAGE_CHILDREN)`` of a wrapper process that
waits for it alone. Prints each peak in MB, the ratio of the 48-megapixel peak to the peer's (the
issue's target: a peak under 4 GB; the peer measured 2.2 GB before), and the machine. ``--full``
also runs the 48-megapixel photo with ``--max-side 0`` (at its own size: tens of GB; only on a
machine that has them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

_WRAPPER = (
    "import json, resource, subprocess, sys; "
    "run = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
    "print(json.dumps({'rc': run.returncode, 'peak_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
    "'stdout': run.stdout[-500:], 'stderr': run.stderr[-1500:]}))"
)


def photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A JPEG of sky, buildings and road bands with sensor noise (JPEG quality 90)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    base = np.where(rows < 0.35, [120, 160, 220], np.where(rows < 0.65, [110, 100, 90], [70, 70, 75])).astype(np.float32)
    image = base + rng.normal(0, 18, (height, width, 3)).astype(np.float32)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def checkpoint(path: Path, experiment: str, profile: str) -> Path:
    import torch

    from spgnet.config import resolve
    from spgnet.engine.train.checkpoint import save_checkpoint
    from spgnet.models import build_model_from_config

    cfg = resolve(experiment, profile)
    torch.manual_seed(0)
    model = build_model_from_config(dataclasses.replace(cfg.model, pretrained=None), device="cpu")
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0})
    return path


def peak(args: argparse.Namespace, ckpt: Path, picture: Path, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "spgnet", "predict", args.experiment, "--checkpoint", str(ckpt), "--input",
               str(picture), "--out", str(out), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT), SPGNET_TRACKING="0", OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run([sys.executable, "-c", _WRAPPER, *command], env=env, capture_output=True, text=True)
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="t3-1stage")
    parser.add_argument("--profile", default="mini", help="the profile whose model settings the checkpoint has")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="also the 48-megapixel photo at its own size")
    args = parser.parse_args()

    from spgnet.runtime.hardware import describe_line

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = checkpoint(tmp / "checkpoint.pt", args.experiment, args.profile)
        peer = peak(args, ckpt, photo(tmp / "peer-2000x1500.jpg", 2000, 1500), tmp / "out-peer")
        big_picture = photo(tmp / "big-8000x6000.jpg", 8000, 6000, seed=1)
        big = peak(args, ckpt, big_picture, tmp / "out-big")
        runs = {"2000x1500 (own size)": peer, "8000x6000 (--max-side 2048)": big}
        if args.full:
            runs["8000x6000 (--max-side 0)"] = peak(args, ckpt, big_picture, tmp / "out-full", "--max-side", "0")
        written = sorted(p.name for p in (tmp / "out-big").glob("*.png")) if (tmp / "out-big").is_dir() else []
    print(f"spgnet predict {args.experiment} ({args.profile} settings, random weights), {args.threads} threads; "
          f"{describe_line()}")
    for name, run in runs.items():
        state = "ok" if run["rc"] == 0 else f"exit {run['rc']}: {run['stderr'].strip().splitlines()[-1:]}"
        print(f"  {name:<28} peak RSS {run['peak_mb']:8.0f} MB  {state}")
    print(f"  48-megapixel peak / 2000x1500 peak: {big['peak_mb'] / peer['peak_mb']:.2f}  (target: under 4096 MB; "
          f"{'met' if big['rc'] == 0 and big['peak_mb'] < 4096 else 'NOT met'})")
    print(f"  outputs of the 48-megapixel photo: {', '.join(written)}")
    return 0 if big["rc"] == 0 and peer["rc"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
