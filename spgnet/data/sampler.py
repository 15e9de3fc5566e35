"""A resumable, worker-independent order of training samples.

:class:`TrainSampler` turns (seed, iteration) into dataset keys. Epoch ``e`` visits the data set
in the permutation ``default_rng((seed, 1, e)).permutation(n)``; the stream of epochs is cut into
batches of ``batch_size`` consecutive keys, so iteration ``k`` always gets stream positions
``k*batch_size .. (k+1)*batch_size - 1`` whether or not the run was stopped before ``k``. Each
key is ``(index, (seed, epoch, index))``; the data set seeds that sample's augmentation with
``default_rng((seed, epoch, index))`` (see :mod:`spgnet.data.transforms`).

Use it as ``DataLoader(dataset, batch_size=B, sampler=TrainSampler(len(dataset), B, seed,
start_iteration=k, iterations=N))``; any ``num_workers`` gives the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from spgnet.errors import SpgnetError


def epoch_permutation(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((int(seed), 1, int(epoch))).permutation(num_samples)


class TrainSampler(Sampler):
    """Keys ``(index, (seed, epoch, index))`` for iterations ``start_iteration .. iterations-1``
    (endless when ``iterations`` is None)."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        start_iteration: int = 0,
        iterations: int | None = None,
    ):
        if num_samples < 1:
            raise SpgnetError("the training set is empty")
        if batch_size < 1:
            raise SpgnetError(f"batch_size must be positive, got {batch_size}")
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_iteration = int(start_iteration)
        self.iterations = None if iterations is None else int(iterations)

    def __len__(self) -> int:
        if self.iterations is None:
            raise TypeError("an endless TrainSampler has no length")
        return max(0, self.iterations - self.start_iteration) * self.batch_size

    def keys(self, iteration: int) -> list[tuple[int, tuple[int, int, int]]]:
        """The keys of one iteration's batch."""
        start = iteration * self.batch_size
        return [self._key(position) for position in range(start, start + self.batch_size)]

    def _key(self, position: int) -> tuple[int, tuple[int, int, int]]:
        epoch, offset = divmod(position, self.num_samples)
        index = int(epoch_permutation(self.num_samples, self.seed, epoch)[offset])
        return index, (self.seed, epoch, index)

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int, int]]]:
        position = self.start_iteration * self.batch_size
        stop = None if self.iterations is None else self.iterations * self.batch_size
        epoch, offset = divmod(position, self.num_samples)
        order = epoch_permutation(self.num_samples, self.seed, epoch)
        while stop is None or position < stop:
            if offset == self.num_samples:
                epoch, offset = epoch + 1, 0
                order = epoch_permutation(self.num_samples, self.seed, epoch)
            index = int(order[offset])
            yield index, (self.seed, epoch, index)
            position += 1
            offset += 1
