"""Section 4.2's transforms and the resumable training sampler."""

import numpy as np
import pytest
import torch
from PIL import Image

from spgnet.data import EvalTransform, IGNORE_INDEX, TrainSampler, TrainTransform
from spgnet.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LegacyTrainTransform,
    denormalize,
    make_rng,
    nearest_indices,
)
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
    assert out["label"].shape == (32, 32) and out["label"].dtype == torch.uint8  # int64 on the device
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


# --- crop-first transform (issue 11): same crops as the transform that rescaled the whole image ---


def _noise_sample(h, w, seed=0, classes=19):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    label = rng.integers(0, classes, (h, w)).astype(np.uint8)
    label[rng.random((h, w)) < 0.05] = IGNORE_INDEX
    return {"image": Image.fromarray(image), "label": label, "name": "n", "path": "n.png"}


_MEAN_255 = [m * 255 for m in IMAGENET_MEAN]
_INV_STD = [1 / (s * 255) for s in IMAGENET_STD]


def _grey(out):
    """The crop's pixels as HxWx3 float grey levels (normalisation undone, not rounded)."""
    return out["image"].numpy().transpose(1, 2, 0) / np.asarray(_INV_STD) + np.asarray(_MEAN_255)


@pytest.mark.parametrize("size", [(120, 250), (61, 47), (200, 97)])
def test_crop_first_equals_legacy_crop(size):
    """Same draws, same crop: labels identical, image within Pillow's 8-bit rounding (2 levels)."""
    h, w = size
    sample = _noise_sample(h, w, seed=h)
    new, old = TrainTransform(97), LegacyTrainTransform(97)
    worst, seen_flip, seen_scales = 0.0, set(), set()
    for seed in range(150):
        a, b = new(sample, (seed, 0, 1)), old(sample, (seed, 0, 1))
        scale, flip, _, _ = new.draw(make_rng((seed, 0, 1)), h, w)
        seen_flip.add(flip), seen_scales.add(scale)
        assert a["label"].dtype == torch.uint8 and b["label"].dtype == torch.int64
        assert torch.equal(a["label"].long(), b["label"]), (seed, scale, flip)
        _, _, y0, y1, x0, x1 = new.window(h, w, *new.draw(make_rng((seed, 0, 1)), h, w))
        inside = torch.zeros(97, 97, dtype=torch.bool)
        inside[: y1 - y0, : x1 - x0] = True
        assert (a["image"][:, ~inside] == 0).all() and (a["label"][~inside] == IGNORE_INDEX).all()
        diff = np.abs(_grey(a) - _grey(b))
        worst = max(worst, float(diff.max()))
        assert diff.mean() < 0.35, (seed, scale)
    assert worst <= 2.0 + 1e-3
    assert seen_flip == {False, True} and len(seen_scales) == 7


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
def test_label_crop_is_the_nearest_resized_full_labels_crop(scale):
    h, w = 90, 170
    sample = _noise_sample(h, w, seed=3)
    t = TrainTransform(64, scale_min=scale, scale_max=scale)
    new_h, new_w = t.scaled_size(h, w, scale)
    full = Image.fromarray(sample["label"]).resize((new_w, new_h), Image.NEAREST)
    for seed in range(25):
        _, flip, top, left = t.draw(make_rng(seed), h, w)
        expected = np.asarray(full.transpose(Image.FLIP_LEFT_RIGHT) if flip else full)
        crop = expected[top:top + 64, left:left + 64]
        out = t(sample, seed)["label"].numpy()
        assert np.array_equal(out[: crop.shape[0], : crop.shape[1]], crop), (seed, flip)
        assert (out[crop.shape[0]:] == IGNORE_INDEX).all() and (out[:, crop.shape[1]:] == IGNORE_INDEX).all()


def test_nearest_indices_are_pillows_grid():
    ramp = np.arange(2048, dtype=np.int32)
    for size in (1024, 1536, 2048, 2560, 3072, 3584, 4096, 7, 1):
        got = nearest_indices(2048, size)
        row = Image.frombytes("I", (2048, 1), ramp.tobytes()).resize((size, 1), Image.NEAREST)
        assert np.array_equal(got, np.asarray(row)[0]) and not got.flags.writeable
    naive = np.floor((np.arange(1536) + 0.5) * 2048 / 1536).astype(int)
    assert not np.array_equal(nearest_indices(2048, 1536), naive)  # why Pillow's own grid is used


def test_image_crop_is_bilinear_within_one_grey_level():
    """Against Pillow's bilinear filter in float32 (mode F, no 8-bit rounding) on the full image."""
    h, w = 80, 150
    sample = _noise_sample(h, w, seed=5)
    planes = [Image.fromarray(np.asarray(sample["image"])[:, :, c].astype(np.float32), mode="F") for c in range(3)]
    for scale in (0.75, 1.5):
        t = TrainTransform(50, scale_min=scale, scale_max=scale)
        new_h, new_w = t.scaled_size(h, w, scale)
        exact = np.stack([np.asarray(p.resize((new_w, new_h), Image.BILINEAR)) for p in planes], axis=2)
        for seed in range(10):
            _, flip, top, left = t.draw(make_rng(seed), h, w)
            ref = exact[:, ::-1] if flip else exact
            ref = ref[top:top + 50, left:left + 50]
            got = _grey(t(sample, seed))[: ref.shape[0], : ref.shape[1]]
            assert np.abs(got - ref).max() <= 1.0 + 1e-3


def test_draws_follow_the_augmentation_laws():
    """(scale, flip, top, left) over many per-sample seeds: scale uniform on the 7 values, a fair
    flip, offsets uniform on 0..new-crop (0 where the scaled image is smaller than the crop); every
    frequency within 5 binomial standard deviations of its expectation."""
    h, w, crop, n = 64, 128, 97, 21000
    t = TrainTransform(crop)
    draws = [t.draw(make_rng((11, e, i)), h, w) for e in range(3) for i in range(n // 3)]

    def within(count, total, p):
        return abs(count - total * p) <= 5 * np.sqrt(total * p * (1 - p))

    scales = [d[0] for d in draws]
    assert all(within(scales.count(s), n, 1 / len(t.scales)) for s in t.scales)
    assert within(sum(d[1] for d in draws), n, 0.5)
    for scale in t.scales:
        new_h, new_w = t.scaled_size(h, w, scale)
        subset = [d for d in draws if d[0] == scale]
        for axis, size in ((2, new_h), (3, new_w)):
            values = np.array([d[axis] for d in subset])
            span = max(size, crop) - crop + 1
            assert values.min() >= 0 and values.max() < span
            if span == 1:
                assert (values == 0).all()
                continue
            bins = min(span, 8)
            edges = np.linspace(0, span, bins + 1).round().astype(int)
            counts = np.histogram(values, bins=edges)[0]
            assert all(within(c, len(values), (hi - lo) / span) for c, lo, hi in zip(counts, edges[:-1], edges[1:]))
    # the crop-first transform draws exactly these (same generator, same order)
    sample = _noise_sample(h, w)
    for k in range(20):
        key = (11, 0, k)
        assert torch.equal(TrainTransform(crop)(sample, key)["label"].long(), LegacyTrainTransform(crop)(sample, key)["label"])
