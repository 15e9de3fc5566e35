"""Section 4.2's transforms and the resumable training sampler."""

import numpy as np
import pytest
import torch
from PIL import Image

from spgnet.data import EvalTransform, IGNORE_INDEX, TrainSampler, TrainTransform
from spgnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from spgnet.errors import SpgnetError


def _sample(h=40, w=60, seed=0):
    """An image whose grey level encodes its label (label * 20), in 10x10 blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 10, (h // 10 + 1, w // 10 + 1))
    label = np.kron(blocks, np.ones((10, 10), int))[:h, :w].astype(np.uint8)
    image = np.repeat((label * 20)[:, :, None], 3, axis=2).astype(np.uint8)
    return {"image": Image.fromarray(image), "label": label, "name": "x", "path": "x.png"}


def _equal(a, b):
    return torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_scale_set_and_output_types():
    t = TrainTransform(32)
    assert t.scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    out = t(_sample())
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
    assert out["label"].shape == (32, 32) and out["label"].dtype == torch.int64
    assert out["name"] == "x" and out["path"] == "x.png"
    with pytest.raises(SpgnetError):
        TrainTransform(0)


def test_same_seed_same_sequence_of_outputs():
    a, b, c = TrainTransform(24, seed=3), TrainTransform(24, seed=3), TrainTransform(24, seed=4)
    outs_a = [a(_sample(seed=i)) for i in range(6)]
    outs_b = [b(_sample(seed=i)) for i in range(6)]
    outs_c = [c(_sample(seed=i)) for i in range(6)]
    assert all(_equal(x, y) for x, y in zip(outs_a, outs_b))
    assert not all(_equal(x, y) for x, y in zip(outs_a, outs_c))


def test_per_sample_rng_does_not_depend_on_history():
    t = TrainTransform(24, seed=0)
    first = t(_sample(), (7, 2, 5))
    for _ in range(3):
        t(_sample())
    assert _equal(first, t(_sample(), (7, 2, 5)))
    assert _equal(first, TrainTransform(24, seed=99)(_sample(), np.random.default_rng((7, 2, 5))))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert _equal(t(_sample(), g1), t(_sample(), g2))


def test_padding_uses_mean_colour_and_ignore():
    t = TrainTransform(100, scale_min=1.0, scale_max=1.0, seed=0)
    out = t(_sample(40, 60))
    assert (out["label"][40:, :] == IGNORE_INDEX).all() and (out["label"][:, 60:] == IGNORE_INDEX).all()
    assert (out["image"][:, 40:, :] == 0).all() and (out["image"][:, :, 60:] == 0).all()
    assert (out["label"][:40, :60] != IGNORE_INDEX).all()


def test_image_and_label_stay_aligned_under_flip_crop_and_scale():
    for seed in range(12):
        out = TrainTransform(32, scale_min=1.0, scale_max=1.0, seed=seed)(_sample(seed=seed))
        grey = denormalize(out["image"])[:, :, 0].astype(int)
        assert (grey == out["label"].numpy() * 20).all()
    flips = [TrainTransform(60, scale_min=1, scale_max=1, seed=s).draw(np.random.default_rng(s), 40, 60)[1] for s in range(20)]
    assert any(flips) and not all(flips)
    for seed in range(6):
        out = TrainTransform(48, scale_min=2.0, scale_max=2.0, seed=seed)(_sample(seed=seed))
        grey = denormalize(out["image"])[:, :, 0].astype(int)
        label = np.pad(out["label"].numpy(), 1, mode="edge")
        interior = ((label[1:-1, 1:-1] == label[:-2, 1:-1]) & (label[1:-1, 1:-1] == label[2:, 1:-1])
                    & (label[1:-1, 1:-1] == label[1:-1, :-2]) & (label[1:-1, 1:-1] == label[1:-1, 2:]))
        assert interior.mean() > 0.5
        assert np.mean(np.abs(grey - label[1:-1, 1:-1] * 20)[interior] <= 2) > 0.99


def test_normalisation_and_eval_transform():
    mean = tuple(int(round(m * 255)) for m in IMAGENET_MEAN)
    image = Image.new("RGB", (8, 6), mean)
    out = EvalTransform()({"image": image, "label": np.zeros((6, 8), np.uint8), "name": "n", "path": "p"})
    assert out["image"].shape == (3, 6, 8) and out["image"].abs().max() < 0.01
    white = EvalTransform()({"image": Image.new("RGB", (2, 2), (255, 255, 255)), "label": np.zeros((2, 2), np.uint8)})
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(white["image"][:, 0, 0], torch.tensor(expected), atol=1e-5)


def test_sampler_resumes_exactly():
    full = list(TrainSampler(10, 4, seed=1, iterations=7))
    resumed = list(TrainSampler(10, 4, seed=1, start_iteration=3, iterations=7))
    assert len(full) == 28 and resumed == full[12:]
    assert TrainSampler(10, 4, seed=1).keys(5) == full[20:24]
    epoch0 = [index for index, _ in full[:10]]
    assert sorted(epoch0) == list(range(10))
    assert all(key == (1, position // 10, index) for position, (index, key) in enumerate(full))
    assert list(TrainSampler(10, 4, seed=2, iterations=7)) != full
