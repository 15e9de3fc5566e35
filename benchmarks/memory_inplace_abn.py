"""Peak memory of one training step with InPlaceABN against BatchNorm + leaky ReLU.

The same network (an experiment of the registry, default ``t3-spg-sigmoid``: 2-stage SPGNet,
ResNet-18) and the same batch, built twice: once with ``inplace_abn`` (Sec. 4.2's layer; on a GPU
run with ``--device cuda``) and once with ``batchnorm`` (``nn.BatchNorm2d`` followed by leaky
ReLU, same maths). Each is measured in a fresh subprocess by :mod:`spgnet.analysis.memory`
(forward, loss on every supervised stage, backward, SGD step, after one warm-up step): on CUDA
``torch.cuda.max_memory_allocated``, on CPU the peak of live tensor bytes (PyTorch's MemTracker)
plus, as a cross-check, the resident-set high-water mark over the step. Prints both figures and
the ratio InPlaceABN / BatchNorm (the paper's reference [49] reports up to ~50% savings of the
activation memory).

    python benchmarks/memory_inplace_abn.py                        # crop 193, batch 2, CPU
    python benchmarks/memory_inplace_abn.py --crop 769 --batch-size 2 --device cuda
    python benchmarks/memory_inplace_abn.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

from spgnet.analysis.memory import compare, format_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="t3-spg-sigmoid")
    parser.add_argument("--crop", type=int, default=193)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    results = compare([args.experiment], args.crop, args.batch_size, device=args.device,
                      norms=["batchnorm", "inplace_abn"])
    bn, iabn = results
    print(format_table(results))
    summary = {
        "experiment": args.experiment, "crop": args.crop, "batch_size": args.batch_size, "device": args.device,
        "method": bn["method"],
        "batchnorm_peak_mib": bn["peak_mib"],
        "inplace_abn_peak_mib": iabn["peak_mib"],
        "ratio_inplace_abn_to_batchnorm": round(iabn["peak_bytes"] / bn["peak_bytes"], 4),
        "saving_percent": round(100 * (1 - iabn["peak_bytes"] / bn["peak_bytes"]), 2),
    }
    # The same comparison without the parts no normalisation layer can shrink.
    fixed = ("param", "grad", "opt", "buffer")
    if "peak_by_kind" in bn and "peak_by_kind" in iabn:
        bn_var = sum(v for k, v in bn["peak_by_kind"].items() if k not in fixed)
        iabn_var = sum(v for k, v in iabn["peak_by_kind"].items() if k not in fixed)
        if bn_var:
            summary["activation_ratio_inplace_abn_to_batchnorm"] = round(iabn_var / bn_var, 4)
    if "rss_peak_delta_bytes" in bn and bn["rss_peak_delta_bytes"]:
        summary["rss_ratio_inplace_abn_to_batchnorm"] = round(
            iabn["rss_peak_delta_bytes"] / bn["rss_peak_delta_bytes"], 4)
    print(f"InPlaceABN / BatchNorm+LeakyReLU peak memory: {summary['ratio_inplace_abn_to_batchnorm']:.4f} "
          f"({summary['saving_percent']:.1f}% less)")
    if "activation_ratio_inplace_abn_to_batchnorm" in summary:
        print(f"  activations and temporaries only (without weights, gradients, momentum): "
              f"{summary['activation_ratio_inplace_abn_to_batchnorm']:.4f}")
    if "rss_ratio_inplace_abn_to_batchnorm" in summary:
        print(f"  process RSS high-water delta: {summary['rss_ratio_inplace_abn_to_batchnorm']:.4f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"summary": summary, "runs": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
