"""A toy network, toy data and a toy config for the tests of ``spgnet train``, and
:func:`train_with`: :func:`spgnet.engine.train.loop.train` with the test's own network, data, or a
run that ends early as if killed.

``train()`` builds its network, training set and loader through the module attributes
``build_network``, ``build_train_dataset`` and ``build_train_loader`` of
:mod:`spgnet.engine.train.loop`; :func:`substitutes` puts the test's in their place while a run
goes (``unittest.mock``, so it works in spawned processes as well as under ``monkeypatch``).
"""

from __future__ import annotations

import contextlib
import itertools
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import resolve
from spgnet.engine.train import loop

NUM_CLASSES = 3


# --------------------------------------------------------------------------------------------
# Toy model and data (the real ones are tested once, in test_train_loop.py)
# --------------------------------------------------------------------------------------------


class ToyNet(nn.Module):
    """Two 'stages' with per-class logits, dropout (randomness inside the model) and a BN."""

    def __init__(self, stages: int = 2, classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(stages))
        self.heads = nn.ModuleList(nn.Conv2d(8, classes, 1) for _ in range(stages))
        self.drop = nn.Dropout2d(0.2)

    def forward(self, x):
        feats = self.stem(x)
        logits = []
        for block, head in zip(self.blocks, self.heads):
            feats = F.relu(block(self.drop(feats))) + feats
            logits.append(head(feats))
        return {"out": logits[-1], "aux": logits[:-1]}


class ToySet(torch.utils.data.Dataset):
    """Deterministic images; the key's rng seeds a random flip and noise (augmentation)."""

    def __init__(self, n: int = 10, size: int = 16, nan_index: int | None = None):
        self.n, self.size, self.nan_index = n, size, nan_index

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        index, rng = key if isinstance(key, tuple) else (key, None)
        g = torch.Generator().manual_seed(1000 + int(index))
        image = torch.randn(3, self.size, self.size, generator=g)
        label = (image[0] > 0).long() + (image[1] > 0.5).long()
        label[0, :] = 255
        if rng is not None:
            r = np.random.default_rng(rng)
            if r.integers(2):
                image, label = image.flip(-1), label.flip(-1)
            image = image + torch.from_numpy(r.normal(0, 0.1, image.shape).astype(np.float32))
        if index == self.nan_index:
            image = image * float("nan")
        return {"image": image, "label": label, "name": f"toy{index}", "path": ""}


def toy_model(stages: int = 2) -> ToyNet:
    torch.manual_seed(0)  # a model passed to train() is built by the caller: seed it here
    return ToyNet(stages)


def toy_cfg(**train):
    values = dict(iterations=6, batch_size=2, checkpoint_every=2, log_every=1, workers=0, device="cpu", amp=False)
    values.update(train)
    return resolve("t3-spg-sigmoid", "mini", train=values, model={"num_classes": NUM_CLASSES})


# --------------------------------------------------------------------------------------------
# train() with the test's network and data
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def substitutes(model: nn.Module | None = None, dataset=None, stop_after: int | None = None):
    """While inside, :func:`spgnet.engine.train.loop.train` trains ``model`` instead of the
    experiment's network, on ``dataset`` instead of its training set, and (``stop_after=k``) ends
    after iteration ``k`` as if it were killed there: at least one step, no checkpoint beyond the
    last scheduled one, no ``train_metrics.json``."""
    with contextlib.ExitStack() as stack:
        if model is not None:
            stack.enter_context(mock.patch.object(loop, "build_network", lambda cfg, device: model))
        if dataset is not None:
            stack.enter_context(mock.patch.object(loop, "build_train_dataset", lambda cfg, seed: dataset))
        if stop_after is not None:
            build_loader = loop.build_train_loader

            def stopping_loader(cfg, dataset, seed, start, info):
                loader = build_loader(cfg, dataset, seed, start, info)
                yield from itertools.islice(loader, max(stop_after - start, 1))

            stack.enter_context(mock.patch.object(loop, "build_train_loader", stopping_loader))
        yield


def train_with(cfg, out, seed: int = 0, resume: bool = False, *, model: nn.Module | None = None, dataset=None,
               stop_after: int | None = None, **kwargs) -> dict:
    """:func:`spgnet.engine.train.loop.train` (``kwargs``: its other arguments) with
    :func:`substitutes`."""
    with substitutes(model, dataset, stop_after):
        return loop.train(cfg, out, seed, resume, **kwargs)
