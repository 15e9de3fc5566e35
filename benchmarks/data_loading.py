"""Training-data throughput at paper scale: the crop-first transform against the one before issue 11.

    python benchmarks/data_loading.py [--images 4] [--samples 24] [--rounds 3]
    python benchmarks/data_loading.py --workers 8 16 [--batch-size 8] [--batches 20]

Fabricates Cityscapes-like 2048x1024 pictures (``leftImg8bit`` PNGs of street-like bands, boxes
and sensor noise, about 2.5 MB each where the real ones average about 2.2 MB, and their
``gtFine_labelIds`` PNGs) in a
temporary folder laid out as Cityscapes, reads them with the project's own reader
(``spgnet.data.build_dataset("cityscapes", ...)``: PNG decoding and the label-id lookup included)
and times ``dataset[(index, (seed, epoch, index))]``, what one DataLoader worker does per sample:

- default (per worker): one thread, :class:`spgnet.data.transforms.LegacyTrainTransform` (the
  whole PNGs decoded, the whole image rescaled, up to 4096x2048, then cropped; int64 labels) and
  :class:`spgnet.data.transforms.TrainTransform` (only the PNG rows down to the window's last
  decoded, only the 769x769 window resampled, the label lookup on the crop only; uint8 labels) on
  the same keys, alternated in ``--rounds`` rounds so that a loaded machine slows both alike.
  Prints samples per CPU-second of each, their ratio (issue 11's target: at least 3x), each one's
  reading and decoding (legacy: ``SegmentationDataset.load``; crop-first: ``dataset.open(i)
  .read(rows)`` with the rows its draws need, timed on the same keys) and its share, the share of
  the image rows crop-first decodes, the transforms alone, and the machine
  (:func:`spgnet.runtime.hardware.describe_line`).
- ``--workers N [N ...]``: a DataLoader as ``spgnet train`` builds it (TrainSampler batches,
  ``spgnet.engine.train.data.collate_batch``, persistent workers, prefetching, pinned memory on CUDA) with N
  worker processes; prints samples per wall-second after the first batches (the device check,
  ``benchmarks/gpu_check.py``, runs it at 8 and 16 workers).

Only ratios measured in the same run mean something on a shared machine; the absolute figures
name the CPU they come from.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from spgnet.runtime.hardware import describe_line

CROP = 769  # Cityscapes' training crop (Sec. 4.2)
SIZE = (1024, 2048)  # Cityscapes' images, height x width

#: Label ids (cityscapesscripts' ``id``) of the fabricated regions: road, sidewalk, building,
#: vegetation, sky, car, pole, and 0 (unlabeled, ignored in training) along the bottom edge.
_SKY, _BUILDING, _VEGETATION, _SIDEWALK, _ROAD, _CAR, _POLE, _UNLABELED = 23, 11, 21, 8, 7, 26, 17, 0
_COLOURS = {_SKY: (70, 130, 180), _BUILDING: (70, 70, 70), _VEGETATION: (107, 142, 35),
            _SIDEWALK: (244, 35, 232), _ROAD: (128, 64, 128), _CAR: (0, 0, 142), _POLE: (153, 153, 153),
            _UNLABELED: (0, 0, 0)}


#: Standard deviation of the fabricated sensor noise (grey levels): PNGs of about 2.5 MB, near
#: Cityscapes' 2.2 MB mean (11 GB for 5000 leftImg8bit images); decoding cost grows with it.
NOISE = 1.5


def fabricate_picture(seed: int, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A street-like HxWx3 uint8 picture and its HxW uint8 Cityscapes label-id map."""
    rng = np.random.default_rng(seed)
    height, width = size
    label = np.full(size, _SKY, dtype=np.uint8)
    horizon = int(height * rng.uniform(0.35, 0.5))
    skyline = horizon - (rng.integers(0, height // 4, width // 64 + 1).repeat(64)[:width])
    rows = np.arange(height)[:, None]
    label[rows >= skyline[None, :]] = _BUILDING
    label[(rows >= horizon - height // 10) & (np.arange(width)[None, :] < width // 3)] = _VEGETATION
    label[horizon + height // 8:] = _SIDEWALK
    label[horizon + height // 6:] = _ROAD
    for _ in range(int(rng.integers(3, 8))):
        h, w = int(rng.integers(height // 16, height // 5)), int(rng.integers(width // 20, width // 6))
        top, left = int(rng.integers(horizon, height - h)), int(rng.integers(0, width - w))
        label[top:top + h, left:left + w] = _CAR
    for x in rng.integers(0, width - 8, 6):
        label[horizon - height // 5:horizon + height // 5, x:x + 8] = _POLE
    label[-height // 20:] = _UNLABELED  # the ego car's bonnet
    palette = np.zeros((256, 3), dtype=np.float32)
    for value, colour in _COLOURS.items():
        palette[value] = colour
    shade = np.linspace(0.75, 1.15, width, dtype=np.float32)[None, :, None]
    image = palette[label] * shade + rng.normal(0.0, NOISE, (height, width, 3)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


def fabricate_cityscapes(root: Path, count: int, size: tuple[int, int] = SIZE, split: str = "train") -> Path:
    """``count`` fabricated pictures under ``root`` in Cityscapes' layout (``leftImg8bit`` and
    ``gtFine_labelIds`` PNGs of one city); returns ``root``."""
    from spgnet.data.cityscapes import image_path, label_path

    for index in range(count):
        image, label = fabricate_picture(index, size)
        name = f"fabricated_{index:06d}_000019"
        for path, array in ((image_path(root, split, name), image), (label_path(root, split, name), label)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def build(root: Path, transform):
    from spgnet.data import build_dataset

    return build_dataset("cityscapes", root, "train", transform=transform)


def per_worker(root: Path, samples: int, rounds: int, crop: int = CROP, progress: bool = True) -> dict:
    """Per-sample CPU cost of the legacy and the crop-first transform, one thread, the same keys.

    Returns ``{"samples_per_cpu_s": {"legacy": r, "crop-first": r}, "ratio": x, "load_ms": {...},
    "transform_ms": {...}, "transform_ratio": x, "rows_read": f, "samples": n}``: the end-to-end
    rates and their ratio; the CPU milliseconds per sample of each one's reading (legacy:
    ``dataset.load``, the whole PNGs decoded and the label lookup; crop-first: ``dataset.open``
    and ``read`` of the rows its draws need) and of each transform alone (its end-to-end time less
    its reading); the mean share of the image rows crop-first decodes."""
    from spgnet.data.transforms import LegacyTrainTransform, TrainTransform, make_rng

    torch.set_num_threads(1)  # what a DataLoader worker runs with
    datasets = {"legacy": build(root, LegacyTrainTransform(crop)), "crop-first": build(root, TrainTransform(crop))}
    count = len(datasets["legacy"])
    seconds = dict.fromkeys(list(datasets) + ["legacy read", "crop-first read"], 0.0)
    done, rows_read = 0, 0.0
    for dataset in datasets.values():  # warm-up: page cache, lazy imports, nearest-index cache
        dataset[(0, (0, 0, 0))]
    transform = datasets["crop-first"].transform
    for round_ in range(rounds):
        keys = [(k % count, (round_, 0, k)) for k in range(samples)]
        started = time.process_time()
        for index, _ in keys:
            datasets["legacy"].load(index)
        seconds["legacy read"] += time.process_time() - started
        started = time.process_time()
        for index, seed in keys:  # what crop-first's call reads for the same draws
            reader = datasets["crop-first"].open(index)
            width, height = reader.size
            rows = transform.source_rows(height, width, *transform.draw(make_rng(seed), height, width))
            reader.read(rows)
            rows_read += rows / height
        seconds["crop-first read"] += time.process_time() - started
        for name, dataset in datasets.items():
            started = time.process_time()
            for key in keys:
                dataset[key]
            seconds[name] += time.process_time() - started
        done += len(keys)
        if progress and sys.stderr.isatty():
            print(f"\rround {round_ + 1}/{rounds}", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)
    rates = {name: done / max(seconds[name], 1e-9) for name in datasets}
    load_ms = {name: 1000.0 * seconds[f"{name} read"] / done for name in datasets}
    transform_ms = {name: max(1000.0 * seconds[name] / done - load_ms[name], 1e-6) for name in datasets}
    return {"samples_per_cpu_s": rates, "ratio": rates["crop-first"] / rates["legacy"], "load_ms": load_ms,
            "transform_ms": transform_ms, "transform_ratio": transform_ms["legacy"] / transform_ms["crop-first"],
            "rows_read": rows_read / done, "samples": done}


def loader_throughput(root: Path, workers: int, batch_size: int, batches: int, crop: int = CROP,
                      warmup: int = 2, legacy: bool = False) -> float:
    """Samples per wall-second of a training DataLoader with ``workers`` processes (after
    ``warmup`` batches, which include starting the workers)."""
    from torch.utils.data import DataLoader

    from spgnet.data.sampler import TrainSampler
    from spgnet.data.transforms import LegacyTrainTransform, TrainTransform
    from spgnet.engine.train.data import collate_batch

    dataset = build(root, (LegacyTrainTransform if legacy else TrainTransform)(crop))
    sampler = TrainSampler(len(dataset), batch_size, seed=0, iterations=warmup + batches)
    batch_keys = [sampler.keys(i) for i in range(warmup + batches)]
    loader = DataLoader(dataset, batch_sampler=batch_keys, num_workers=workers, collate_fn=collate_batch,
                        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    started = None
    for index, batch in enumerate(loader):
        if index == warmup - 1 or (warmup == 0 and started is None):
            started = time.perf_counter()
        assert batch["label"].dtype == (torch.int64 if legacy or workers == 0 else torch.uint8)
    elapsed = time.perf_counter() - started
    return batches * batch_size / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4, help="fabricated 2048x1024 pictures (default 4)")
    parser.add_argument("--samples", type=int, default=24, help="samples per transform per round (default 24)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--workers", type=int, nargs="*", help="DataLoader mode: worker counts to time")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    parser.add_argument("--legacy", action="store_true", help="DataLoader mode: time the legacy transform")
    parser.add_argument("--size", type=int, nargs=2, default=SIZE, metavar=("H", "W"))
    parser.add_argument("--crop", type=int, default=CROP)
    args = parser.parse_args(argv)
    size = tuple(args.size)
    with tempfile.TemporaryDirectory(prefix="spgnet-dataload-") as tmp:
        count = max(args.images, max(args.workers or [0]) * 2 if args.workers else args.images)
        root = fabricate_cityscapes(Path(tmp), count, size)
        print(f"{count} fabricated {size[1]}x{size[0]} Cityscapes-like PNGs, crop {args.crop}")
        if args.workers:
            which = "legacy" if args.legacy else "crop-first"
            for workers in args.workers:
                rate = loader_throughput(root, workers, args.batch_size, args.batches, args.crop, legacy=args.legacy)
                print(f"DataLoader, {which} transform, {workers} workers, batch {args.batch_size}: "
                      f"{rate:.1f} samples/s")
            print(f"machine: {describe_line()} (main process); {torch.multiprocessing.cpu_count()} CPUs")
            return 0
        result = per_worker(root, args.samples, args.rounds, args.crop)
        rates = result["samples_per_cpu_s"]
        print(f"per worker (1 thread, {result['samples']} samples each):")
        for name, rate in rates.items():
            print(f"  {name:10s} {rate:7.2f} samples per CPU-second")
        verdict = "meets" if result["ratio"] >= 3.0 else "misses"
        print(f"crop-first / legacy: {result['ratio']:.2f}x ({verdict} issue 11's 3x target)")
        load = result["load_ms"]
        print(f"reading + decoding the PNGs: legacy {load['legacy']:.1f} CPU-ms a sample (dataset.load, "
              f"{load['legacy'] * rates['legacy'] / 1000:.0%} of its time), crop-first {load['crop-first']:.1f} "
              f"(dataset.open + read of {result['rows_read']:.0%} of the rows on average, "
              f"{load['crop-first'] * rates['crop-first'] / 1000:.0%} of its time)")
        print(f"transforms alone: legacy {result['transform_ms']['legacy']:.1f} ms, crop-first "
              f"{result['transform_ms']['crop-first']:.1f} ms a sample ({result['transform_ratio']:.1f}x)")
        sizes = sorted(root.rglob("*_leftImg8bit.png"))
        mean_mb = sum(p.stat().st_size for p in sizes) / len(sizes) / 1e6
        print(f"fabricated PNGs: {mean_mb:.2f} MB each on average (Cityscapes' leftImg8bit: about 2.2 MB)")
        print(f"machine: {describe_line(threads=1)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
