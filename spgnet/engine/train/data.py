"""The training data of ``spgnet train``: this process's share of every iteration's global batch.

:class:`spgnet.data.sampler.TrainSampler` draws each iteration's global batch (sample order and
augmentation seeds from (seed, iteration)); :class:`RankBatches` deals it out to the processes
(:func:`spgnet.engine.train.distributed.shard`); the loader collates with uint8 labels, which the
training step makes int64 on the device.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from spgnet.config import RunConfig
from spgnet.engine.train import distributed


class RankBatches(Sampler):
    """This process's share of each iteration's global batch, from ``start`` to ``stop``."""

    def __init__(self, sampler, start: int, stop: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.start, self.stop = sampler, start, stop
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            yield distributed.shard(self.sampler.keys(iteration), self.rank, self.world_size)


def build_train_dataset(cfg: RunConfig, seed: int) -> Dataset:
    from spgnet.data import build_dataset
    from spgnet.data.transforms import TrainTransform

    t = cfg.train
    transform = TrainTransform(t.crop, t.scale_min, t.scale_max, t.scale_step, seed=seed)
    return build_dataset(cfg.dataset_kind, cfg.data.path(), t.split, transform=transform)


def collate_batch(samples: list[dict]) -> dict:
    """``{"image": float32[B,3,H,W], "label": [B,H,W], "name": [str]}``. Labels keep their dtype
    (uint8 from :class:`spgnet.data.transforms.TrainTransform`: 1 byte a pixel through the worker
    pipes and the host-to-device copy); :func:`train_step` makes them int64 on the device."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([torch.as_tensor(s["label"]) for s in samples]),
        "name": [s.get("name", "") for s in samples],
    }


def build_train_loader(cfg: RunConfig, dataset: Dataset, seed: int, start: int, info) -> DataLoader:
    """The batches of iterations ``start`` .. ``train.iterations`` for this process."""
    from spgnet.data.sampler import TrainSampler

    t = cfg.train
    sampler = TrainSampler(len(dataset), t.batch_size, seed, start_iteration=start, iterations=t.iterations)
    return DataLoader(dataset, batch_sampler=RankBatches(sampler, start, t.iterations, info.rank, info.world_size),
                      num_workers=t.workers, collate_fn=collate_batch, pin_memory=info.device.type == "cuda",
                      persistent_workers=t.workers > 0, prefetch_factor=4 if t.workers > 0 else None)
