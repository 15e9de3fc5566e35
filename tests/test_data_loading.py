"""Training batches through DataLoader workers (uint8 labels) and benchmarks/data_loading.py."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from spgnet.data import IGNORE_INDEX, TrainSampler, TrainTransform
from spgnet.engine.train.data import collate_batch

ROOT = Path(__file__).resolve().parents[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("data_loading_benchmark", ROOT / "benchmarks" / "data_loading.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_labels_cross_workers_as_uint8_and_batches_match(tmp_path):
    bench = _benchmark()
    root = bench.fabricate_cityscapes(tmp_path, 3, size=(48, 96))
    dataset = bench.build(root, TrainTransform(40))
    sampler = TrainSampler(len(dataset), 2, seed=3, iterations=3)
    batch_keys = [sampler.keys(i) for i in range(3)]

    def batches(workers):
        loader = DataLoader(dataset, batch_sampler=batch_keys, num_workers=workers, collate_fn=collate_batch,
                            persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
        return list(loader)

    serial, parallel = batches(0), batches(2)
    assert all(b["label"].dtype == torch.uint8 for b in serial)  # the loop makes them int64 on the device
    assert all(b["label"].dtype == torch.uint8 for b in parallel)
    for a, b in zip(serial, parallel):
        assert a["name"] == b["name"] and torch.equal(a["image"], b["image"])
        assert torch.equal(a["label"], b["label"].long())
        assert b["label"].shape == (2, 40, 40)
    labels = torch.cat([b["label"].flatten() for b in serial])
    assert (labels == IGNORE_INDEX).any() and (labels < 19).any()  # padding/unlabeled and classes


def test_fabricated_cityscapes_reads_as_train_ids(tmp_path):
    bench = _benchmark()
    image, label = bench.fabricate_picture(0, (64, 128))
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8 and label.shape == (64, 128)
    root = bench.fabricate_cityscapes(tmp_path, 2, size=(64, 128))
    raw = bench.build(root, None).load(0)["label"]
    assert set(np.unique(raw)) <= set(range(19)) | {IGNORE_INDEX}
    assert len(set(np.unique(raw)) - {IGNORE_INDEX}) >= 5  # road, sidewalk, building, sky, car, ...


def test_benchmark_prints_both_transforms_ratio_and_machine(tmp_path, capsys):
    bench = _benchmark()
    assert bench.main(["--images", "2", "--samples", "2", "--rounds", "1", "--size", "96", "192", "--crop", "65"]) == 0
    out = capsys.readouterr().out
    assert "legacy" in out and "crop-first" in out and "crop-first / legacy:" in out
    assert "thread" in out and "machine:" in out and "dataset.load" in out
    root = bench.fabricate_cityscapes(tmp_path, 2, size=(96, 192))
    result = bench.per_worker(root, 2, 1, crop=65, progress=False)
    assert result["samples"] == 2 and result["ratio"] > 0 and min(result["load_ms"].values()) > 0
    assert 0 < result["rows_read"] <= 1
    rate = bench.loader_throughput(root, workers=1, batch_size=2, batches=2, crop=65, warmup=1)
    assert rate > 0


def test_crop_first_reads_only_the_rows_it_needs_and_equals_a_whole_read(tmp_path):
    from spgnet.data.transforms import make_rng

    class WholeRead(TrainTransform):
        reads_rows = False  # the same transform given the whole loaded sample

    bench = _benchmark()
    root = bench.fabricate_cityscapes(tmp_path, 2, size=(96, 192))
    rows_dataset = bench.build(root, TrainTransform(65))
    whole_dataset = bench.build(root, WholeRead(65))
    fractions = set()
    for k in range(40):
        key = (k % 2, (1, 0, k))
        a, b = rows_dataset[key], whole_dataset[key]
        assert set(a) == set(b) and a["label"].dtype == b["label"].dtype == torch.uint8
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]), key
        transform = rows_dataset.transform
        fractions.add(transform.source_rows(96, 192, *transform.draw(make_rng(key[1]), 96, 192)) / 96)
    assert min(fractions) < 0.6 and max(fractions) == 1.0  # scale 2: a third or so; scale 0.5: all
