"""Guided-attention maps (Sec. 4.5, Fig. 4) on a tiny fabricated SPGNet with random weights."""

from __future__ import annotations

from argparse import Namespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spgnet
from spgnet.analysis import attention
from spgnet.config import resolve
from spgnet.data import class_names
from spgnet.errors import SpgnetError
from spgnet.models import build_model_from_config

CLASSES = class_names("cityscapes")
CAR = CLASSES.index("car")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return spgnet.build_model("t3-spg-sigmoid", norm="batchnorm").eval()


def _items(count: int = 2, size: int = 64) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(3, size, size, generator=generator), "name": f"img{i}"} for i in range(count)]


def test_top_channels_are_the_largest_weights_of_the_class():
    weight = torch.zeros(128, 19, 1, 1)
    weight[:, CAR, 0, 0] = torch.arange(128, dtype=torch.float32).flip(0) * 0.01  # channel 0 largest
    weight[:, 0, 0, 0] = 5.0  # another class: must not matter
    weight[7, CAR, 0, 0] = 10.0
    assert attention.top_channels(weight, CAR).tolist() == [7, *range(0, 7), *range(8, 15)]
    assert attention.top_channels(torch.randn(8, 19, 1, 1), CAR).numel() == 8  # D < 15: every channel


def test_l2_norm_over_the_selected_channels_scaled_to_unit_range():
    mask = torch.full((20, 2, 2), 100.0)  # unselected channels are huge: they must be ignored
    selected = torch.tensor([3, 5, 11])
    mask[selected] = torch.tensor([[1.0, 0.0], [2.0, 3.0]])
    scaled = attention.class_attention(mask, selected)
    # l2 norm = sqrt(3) * [[1, 0], [2, 3]], min-max scaled: [[1/3, 0], [2/3, 1]]
    assert torch.allclose(scaled, torch.tensor([[1 / 3, 0.0], [2 / 3, 1.0]]))
    assert torch.equal(attention.class_attention(torch.ones(4, 3, 3), torch.tensor([0, 1])), torch.zeros(3, 3))


def test_maps_match_a_hand_computation_on_the_model(model):
    image = _items(1)[0]["image"]
    maps = attention.attention_maps(model, image, [CAR])
    with torch.no_grad():
        mask = model(image[None], return_attention=True)["attention"][0][0].numpy()  # [D, 16, 16]
    assert mask.shape == (128, 16, 16)
    weights = model.links[0].attention_conv.weight[:, CAR, 0, 0].detach().numpy()
    top = np.argsort(-weights)[:15]
    norm = np.sqrt((mask[top] ** 2).sum(0))
    expected = (norm - norm.min()) / (norm.max() - norm.min())
    upsampled = F.interpolate(torch.from_numpy(expected)[None, None], size=(64, 64), mode="bilinear",
                              align_corners=False)[0, 0]
    assert maps[CAR].shape == (64, 64)
    assert torch.allclose(maps[CAR], upsampled.float(), atol=1e-5)
    assert 0.0 <= float(maps[CAR].min()) and float(maps[CAR].max()) <= 1.0


def test_three_figures_are_written(model, tmp_path):
    written = attention.write_figures(model, _items(2), tmp_path / "figures", CLASSES, experiment="fabricated")
    names = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert names == ["attention.json", "fig5-general.png", "fig6-person-rider.png", "fig7-truck-bus-train.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_a_model_without_spg_is_an_error(tmp_path):
    plain = spgnet.build_model("t3-plain", norm="batchnorm")
    with pytest.raises(SpgnetError, match="'t3-plain'"):
        attention.write_figures(plain, _items(1), tmp_path, CLASSES, experiment="t3-plain")
    args = Namespace(experiment="t3-1stage", profile="smoke", data_root=None, checkpoint="x.pt", out=str(tmp_path))
    with pytest.raises(SpgnetError, match="'t3-1stage'"):
        attention.main(args)


def test_main_loads_the_checkpoint_and_writes_the_figures(tmp_path, monkeypatch):
    cfg = resolve("t3-spg-sigmoid", "smoke")
    torch.manual_seed(0)
    trained = build_model_from_config(cfg.model)
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": trained.state_dict(), "iteration": 2}, checkpoint)
    monkeypatch.setattr(attention, "_build_dataset", lambda cfg: _items(3, size=64))
    out = tmp_path / "figures"
    args = Namespace(experiment="t3-spg-sigmoid", profile="smoke", data_root=None, checkpoint=str(checkpoint),
                     out=str(out), num_images=1)
    assert attention.main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "attention.json", "fig5-general.png", "fig6-person-rider.png", "fig7-truck-bus-train.png"]
    with pytest.raises(SpgnetError, match="checkpoint not found"):
        attention.main(Namespace(**{**vars(args), "checkpoint": str(tmp_path / "none.pt")}))
