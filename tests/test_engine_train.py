"""Training engine: optimiser, poly schedule, OHEM, loss terms, checkpoints, kill-and-resume."""

from __future__ import annotations

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import resolve
from spgnet.engine.train import checkpoint as ckpt
from spgnet.engine.train.losses import (ohem_cross_entropy, ohem_mask, segmentation_loss, stage_loss, top_k_cross_entropy,
                                  top_k_mask)
from spgnet.engine.train.schedule import build_optimizer, poly_lr, set_lr
from spgnet.engine.train.loop import NonFiniteLossError, train
from spgnet.errors import SpgnetError

NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch):
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    monkeypatch.setenv("SPGNET_PROGRESS", "off")


# --------------------------------------------------------------------------------------------
# Toy model and data (the real ones are tested once, below)
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
# Optimiser and schedule (Sec. 4.2)
# --------------------------------------------------------------------------------------------


def test_optimizer_is_papers_sgd():
    cfg = resolve("t3-plain", "mini")
    assert (cfg.train.lr, cfg.train.momentum, cfg.train.weight_decay, cfg.train.poly_power) == (0.01, 0.9, 1e-4, 0.9)
    model = ToyNet()
    opt = build_optimizer(model, cfg.train)
    assert isinstance(opt, torch.optim.SGD)
    (group,) = opt.param_groups
    assert group["lr"] == 0.01 and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    assert group["nesterov"] is False
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in model.parameters())
    set_lr(opt, 0.005)
    assert opt.param_groups[0]["lr"] == 0.005


def _group_of(optimizer) -> dict:
    """``id(parameter)`` -> (lr multiplier, weight decay) of its group."""
    return {id(p): (g["lr_mult"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}


def _is_norm(module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) or type(module).__name__ in (
        "ABN", "InPlaceABN", "InPlaceABNSync")


def test_optimizer_groups_put_norm_and_bias_decay_and_lr_multiplier_on_the_right_parameters():
    from spgnet.models import build_model_from_config

    cfg = resolve("t3-plain", "mini")  # two ResNet-18 stages
    model = build_model_from_config(cfg.model)
    (group,) = build_optimizer(model, cfg.train).param_groups  # the defaults: one rate, one decay
    assert (group["lr_mult"], group["weight_decay"]) == (1.0, 1e-4)
    t = dataclasses.replace(cfg.train, weight_decay_norm=0.0, weight_decay_bias=5e-5, lr_mult_new_layers=10.0)
    groups = _group_of(build_optimizer(model, t))
    kinds = set()
    for name, param in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        encoder = name.startswith("stages.") and ".encoder." in name
        decay = 0.0 if _is_norm(module) else 5e-5 if name.endswith(".bias") else 1e-4
        assert groups[id(param)] == (1.0 if encoder else 10.0, decay), name
        kinds.add((encoder, decay))
    assert kinds == {(True, 0.0), (True, 1e-4), (False, 0.0), (False, 5e-5), (False, 1e-4)}
    assert groups[id(model.stages[1].encoder.layer4[1].conv2.weight)] == (1.0, 1e-4)  # the 2nd stage's encoder too
    assert groups[id(model.stages[0].classifier.bias)] == (10.0, 5e-5)


def test_a_peers_new_backbone_layers_get_the_new_layers_rate():
    """PSPNet's deep stem is not in torchvision's file (``imagenet_skip``): new, like the head."""
    from spgnet.models import build_model_from_config

    cfg = resolve("t1-pspnet", "mini", model={"backbones": ["resnet50"]}, train={"lr_mult_new_layers": 10.0})
    model = build_model_from_config(cfg.model)
    groups = _group_of(build_optimizer(model, cfg.train))
    skip = model.backbone.imagenet_skip
    assert skip
    for name, param in model.named_parameters():
        imagenet = name.startswith("backbone.") and not name.removeprefix("backbone.").startswith(skip)
        assert groups[id(param)][0] == (1.0 if imagenet else 10.0), name


def test_the_poly_schedule_keeps_each_groups_multiplier_and_resume_keeps_the_groups():
    t = dataclasses.replace(resolve("t3-plain", "mini").train, lr_mult_new_layers=10.0)
    model = ToyNet()  # no ImageNet part: every layer is new
    opt = build_optimizer(model, t)
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.1)]
    set_lr(opt, poly_lr(t.lr, 50, 100))
    assert opt.param_groups[0]["lr"] == pytest.approx(10 * 0.01 * 0.5 ** 0.9)
    from spgnet.models import build_model_from_config

    cfg = resolve("t3-1stage", "mini")
    model = build_model_from_config(cfg.model)
    opt = build_optimizer(model, dataclasses.replace(cfg.train, lr_mult_new_layers=10.0))
    set_lr(opt, 0.004)
    assert sorted(g["lr"] for g in opt.param_groups) == [pytest.approx(0.004), pytest.approx(0.04)]
    again = build_optimizer(model, dataclasses.replace(cfg.train, lr_mult_new_layers=10.0))
    again.load_state_dict(opt.state_dict())  # what --resume does
    set_lr(again, 0.002)
    assert [g["lr"] / g["lr_mult"] for g in again.param_groups] == [pytest.approx(0.002)] * 2


def test_poly_schedule_values():
    assert poly_lr(0.01, 0, 100) == 0.01
    assert poly_lr(0.01, 50, 100) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert poly_lr(0.01, 99, 100) == pytest.approx(0.01 * 0.01 ** 0.9)
    assert poly_lr(0.01, 100, 100) == 0.0
    lrs = [poly_lr(0.01, i, 80000, 0.9) for i in range(0, 80000, 1000)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def test_paper_schedules_per_dataset():
    from spgnet.config import get_experiment

    cityscapes = get_experiment("t3-plain").train
    assert (cityscapes.iterations, cityscapes.batch_size, cityscapes.crop) == (80000, 8, 769)
    voc = get_experiment("voc-spgnet").train
    assert (voc.iterations, voc.crop, voc.batch_size) == (30000, 513, 28)


# --------------------------------------------------------------------------------------------
# OHEM
# --------------------------------------------------------------------------------------------


def _logits_with_true_prob(probs: list[float]):
    """2-class logits [1,2,1,W] whose true class (label 0) has the given probabilities."""
    p = torch.tensor(probs, dtype=torch.float64)
    logit0 = torch.log(p) - torch.log1p(-p)  # sigmoid(logit0 - 0) == p
    logits = torch.stack([logit0, torch.zeros_like(logit0)]).reshape(1, 2, 1, -1)
    target = torch.zeros(1, 1, len(probs), dtype=torch.long)
    return logits, target


def test_ohem_keeps_pixels_below_threshold():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.6])
    target[0, 0, 6] = 255  # ignored, never kept
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=2)
    assert keep[0, 0].tolist() == [True, True, True, False, False, False, False]
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept=2)
    assert loss.item() == pytest.approx(-(math.log(0.1) + math.log(0.3) + math.log(0.5)) / 3, rel=1e-6)


def test_ohem_min_kept_raises_the_threshold():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95])
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=5)
    assert keep[0, 0].tolist() == [True, True, True, True, True, False]  # the 5 hardest
    loss = ohem_cross_entropy(logits, target, threshold=0.7, min_kept=5)
    expected = -sum(math.log(p) for p in [0.1, 0.3, 0.5, 0.8, 0.9]) / 5
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ohem_keeps_everything_when_min_kept_exceeds_labelled_pixels():
    logits, target = _logits_with_true_prob([0.1, 0.99, 0.999])
    target[0, 0, 0] = 255
    keep = ohem_mask(logits, target, threshold=0.7, min_kept=5)
    assert keep[0, 0].tolist() == [False, True, True]
    assert ohem_cross_entropy(logits, target, 0.7, 5).item() == pytest.approx(
        F.cross_entropy(logits.float(), target, ignore_index=255).item(), rel=1e-6)


def test_ohem_all_ignored_is_zero_with_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), 255)
    loss = ohem_cross_entropy(logits, target, 0.7, 1)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def _tf_deeplab_top_k(logits, target, fraction):
    """TensorFlow DeepLab's hard pixel mining (train_utils.py, top_k_percent_pixels), transcribed:
    k = int(fraction x all pixels), the k largest losses (ignored pixels weigh 0), their sum over
    the number of non-zero ones."""
    losses = F.cross_entropy(logits.double(), target, ignore_index=255, reduction="none").flatten()
    top = torch.topk(losses, int(fraction * losses.numel())).values
    return (top.sum() / (top != 0).sum()).item()


def test_top_k_keeps_the_largest_losses_of_all_pixels_ignored_ones_counted():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95, 0.6, 0.05])
    target[0, 0, 6:] = 255  # two ignored pixels (one would be the hardest): never kept
    # 8 pixels, 50%: k = 4 of the 8 pixels, ignored ones counted -> the 4 hardest labelled pixels
    assert top_k_mask(logits, target, 0.5)[0, 0].tolist() == [True, True, True, True, False, False, False, False]
    # 40%: k = int(3.2) = 3
    assert top_k_mask(logits, target, 0.4)[0, 0].tolist() == [True, True, True, False, False, False, False, False]
    loss = top_k_cross_entropy(logits, target, 0.4)
    assert loss.item() == pytest.approx(-(math.log(0.1) + math.log(0.3) + math.log(0.5)) / 3, rel=1e-6)
    for fraction in (0.125, 0.4, 0.5, 0.75, 1.0):
        assert top_k_cross_entropy(logits, target, fraction).item() == pytest.approx(
            _tf_deeplab_top_k(logits, target, fraction), rel=1e-6), fraction


def test_top_k_beyond_the_labelled_pixels_keeps_them_all_and_averages_over_them():
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.5])
    target[0, 0, 2:] = 255
    # k = 3 of 4 pixels: the 2 labelled ones and an ignored one (loss 0); the mean is over the 2
    assert top_k_mask(logits, target, 0.75)[0, 0].tolist() == [True, True, False, False]
    assert top_k_cross_entropy(logits, target, 0.75).item() == pytest.approx(
        -(math.log(0.1) + math.log(0.3)) / 2, rel=1e-6)
    # k = 0: nothing kept, a zero loss that keeps the graph
    logits.requires_grad_(True)
    loss = top_k_cross_entropy(logits, target, 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_ohem_rule_and_scope_settings_choose_the_term():
    t = dataclasses.replace(resolve("t8-r50-ohem", "mini").train, ohem_min_kept=3, ohem_threshold=0.2,
                            ohem_top_k=0.25)
    assert (t.ohem_rule, t.ohem_scope) == ("threshold", "process")  # the defaults
    logits, target = _logits_with_true_prob([0.1, 0.3, 0.5, 0.8, 0.9, 0.95])
    threshold = stage_loss(logits, target, t)
    assert threshold.item() == pytest.approx(ohem_cross_entropy(logits, target, 0.2, 3).item())
    top_k = stage_loss(logits, target, dataclasses.replace(t, ohem_rule="top_k"))
    assert top_k.item() == pytest.approx(-math.log(0.1), rel=1e-6)  # k = int(0.25 x 6) = 1: the hardest pixel
    assert top_k.item() != pytest.approx(threshold.item())
    # one process: the scope changes nothing (the 2-process case: tests/test_distributed.py)
    for rule in ("threshold", "top_k"):
        batch = dataclasses.replace(t, ohem_rule=rule, ohem_scope="batch")
        process = dataclasses.replace(batch, ohem_scope="process")
        assert stage_loss(logits, target, process).item() == stage_loss(logits, target, batch).item()
    assert stage_loss(logits, target, dataclasses.replace(t, ohem=False, ohem_rule="top_k")).item() == pytest.approx(
        F.cross_entropy(logits.float(), target).item())


# --------------------------------------------------------------------------------------------
# Loss terms of each variant
# --------------------------------------------------------------------------------------------


def _outputs(stages: int, requires_grad: bool = True):
    g = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, NUM_CLASSES, 5, 5, generator=g).requires_grad_(requires_grad) for _ in range(stages)]
    target = torch.randint(0, NUM_CLASSES, (2, 5, 5), generator=g)
    target[:, 0] = 255
    return {"out": logits[-1], "aux": logits[:-1]}, target


def _ce(logits, target):
    return F.cross_entropy(logits, target, ignore_index=255)


def test_loss_supervised_two_stages():
    t = dataclasses.replace(resolve("t3-spg-sigmoid", "mini").train, aux_weight=0.4)
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, t, supervise=True)
    assert list(terms) == ["stage1", "stage2"]
    assert terms["stage1"].item() == pytest.approx(_ce(outputs["aux"][0], target).item())
    assert terms["stage2"].item() == pytest.approx(_ce(outputs["out"], target).item())
    assert total.item() == pytest.approx(terms["stage2"].item() + 0.4 * terms["stage1"].item())


def test_loss_without_supervision_gives_aux_no_term():
    cfg = resolve("t3-spg-no-supervision", "mini")
    assert cfg.model.supervise is False
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, cfg.train, supervise=cfg.model.supervise)
    assert list(terms) == ["stage2"]
    assert total.item() == pytest.approx(_ce(outputs["out"], target).item())
    total.backward()
    assert outputs["aux"][0].grad is None


def test_loss_one_and_three_stages():
    t = resolve("t3-1stage", "mini").train
    outputs, target = _outputs(1)
    total, terms = segmentation_loss(outputs, target, t)
    assert list(terms) == ["stage1"] and total.item() == pytest.approx(_ce(outputs["out"], target).item())
    outputs, target = _outputs(3)
    total, terms = segmentation_loss(outputs, target, dataclasses.replace(t, aux_weight=1.0))
    assert list(terms) == ["stage1", "stage2", "stage3"]
    assert total.item() == pytest.approx(sum(v.item() for v in terms.values()), rel=1e-6)


def test_loss_ohem_applies_to_every_stage():
    cfg = resolve("t8-r50-ohem", "mini")
    assert cfg.train.ohem is True
    t = dataclasses.replace(cfg.train, ohem_min_kept=10, ohem_threshold=0.7)
    outputs, target = _outputs(2)
    total, terms = segmentation_loss(outputs, target, t)
    for name, logits in (("stage1", outputs["aux"][0]), ("stage2", outputs["out"])):
        assert terms[name].item() == pytest.approx(ohem_cross_entropy(logits, target, 0.7, 10).item())
        assert terms[name].item() != pytest.approx(_ce(logits, target).item())
    assert total.item() == pytest.approx(terms["stage1"].item() * t.aux_weight + terms["stage2"].item())


# --------------------------------------------------------------------------------------------
# Checkpoints, resume, NaN, device
# --------------------------------------------------------------------------------------------


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"iteration": 1, "model": {"w": torch.ones(2)}})

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError):
        ckpt.save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_model_weights_errors_are_one_line_and_name_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    trained = toy_model()
    ckpt.save_checkpoint(path, {"model": {f"module.{k}": v for k, v in trained.state_dict().items()}, "iteration": 3})
    model = ToyNet()
    assert ckpt.load_model_weights(model, path)["iteration"] == 3  # DDP prefix dropped
    torch.testing.assert_close(model.heads[1].weight, trained.heads[1].weight)

    def error(target, **kwargs):
        with pytest.raises(SpgnetError) as info:
            ckpt.load_model_weights(target, path, **kwargs)
        text = str(info.value)
        assert text.startswith(f"{path}: ") and "\n" not in text
        return text

    assert "does not fit experiment 'toy' (missing 'blocks.2.weight'" in error(ToyNet(stages=3), experiment="toy")
    assert "unexpected 'blocks.1.weight'" in error(ToyNet(stages=1))
    assert "'heads.0.weight' is [3, 8, 1, 1], expected [5, 8, 1, 1]" in error(ToyNet(classes=5))
    torch.save({"iteration": 1}, path)
    assert "no 'model' entry" in error(model)
    path.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in error(model)
    path.unlink()
    assert error(model) == f"{path}: checkpoint not found"


def test_load_trained_model_builds_from_the_config(tmp_path):
    cfg = resolve("t3-spg-sigmoid", "smoke")
    built = []

    def build(model_cfg, device):
        built.append(model_cfg)
        return toy_model()

    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": toy_model().state_dict()})
    model = ckpt.load_trained_model(path, cfg, "cpu", build=build)
    assert not model.training and built[0].pretrained is None
    with pytest.raises(SpgnetError, match="none.pt: checkpoint not found"):
        ckpt.load_trained_model(tmp_path / "none.pt", cfg, "cpu", build=build)


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in ("seconds", "it_per_s", "segments")}


def test_kill_and_resume_is_bit_identical(tmp_path):
    cfg = toy_cfg()
    full = train(cfg, tmp_path / "full", seed=3, model=toy_model(), dataset=ToySet())
    # "Killed" after iteration 3: the last checkpoint is iteration 2, the log already has row 3.
    partial = tmp_path / "killed"
    train(cfg, partial, seed=3, model=toy_model(), dataset=ToySet(), stop_after=3)
    assert ckpt.load_checkpoint(partial / "latest.pt")["iteration"] == 2
    assert not (partial / "checkpoint.pt").exists()  # only a finished run writes it
    assert len(_read_csv(partial / "train_log.csv")) == 3
    assert not (partial / "train_metrics.json").exists()
    resumed = train(cfg, partial, seed=3, resume=True, model=toy_model(), dataset=ToySet())
    assert resumed["segments"] == [0, 2] and full["segments"] == [0]

    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = ckpt.load_checkpoint(partial / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(partial / "train_log.csv")
    ma = json.loads((tmp_path / "full" / "train_metrics.json").read_text())
    mb = json.loads((partial / "train_metrics.json").read_text())
    assert _comparable(ma) == _comparable(mb)
    assert ma["iterations"] == 6 and math.isfinite(ma["final_loss"])
    rows = _read_csv(partial / "train_log.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "loss_stage1", "loss_stage2"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[0]["lr"]) == pytest.approx(0.01)
    assert float(rows[5]["lr"]) == pytest.approx(0.01 * (1 / 6) ** 0.9)


def test_different_seed_gives_different_weights(tmp_path):
    cfg = toy_cfg(iterations=2)
    train(cfg, tmp_path / "a", seed=0, model=toy_model(), dataset=ToySet())
    train(cfg, tmp_path / "b", seed=1, model=toy_model(), dataset=ToySet())
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert not torch.equal(a["heads.1.weight"], b["heads.1.weight"])


def test_resume_refuses_another_config(tmp_path):
    train(toy_cfg(iterations=2), tmp_path, seed=0, model=toy_model(), dataset=ToySet())
    with pytest.raises(SpgnetError, match="another configuration"):
        train(toy_cfg(iterations=4, lr=0.02), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_cfg(iterations=8, batch_size=10, checkpoint_every=2)
    # Batch = the whole set, so the NaN sample is drawn at every iteration after we switch it on.
    dataset = ToySet(n=10)
    model = ToyNet()

    def poison(iteration, losses):
        if iteration == 3:
            dataset.nan_index = 4

    with pytest.raises(NonFiniteLossError, match=r"iteration 4.*latest.pt \(iteration 2\)"):
        train(cfg, tmp_path, seed=0, model=model, dataset=dataset, on_step=poison)
    state = ckpt.load_checkpoint(tmp_path / "latest.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "train_metrics.json").exists()


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpgnetError, match="CUDA is not available"):
        train(toy_cfg(device="cuda"), tmp_path, model=toy_model(), dataset=ToySet())


def test_metrics_record_seed_and_pretrained(tmp_path):
    metrics = train(toy_cfg(iterations=2), tmp_path, seed=5, model=toy_model(), dataset=ToySet())
    saved = json.loads((tmp_path / "train_metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["seed"] == 5 and saved["pretrained"]["source"] == "random"
    assert len(saved["config_hash"]) == 12 and saved["iterations"] == 2
    assert saved["it_per_s"] > 0


def test_amp_on_cpu_trains_in_bfloat16(tmp_path):
    model = toy_model()
    seen = []
    model.heads[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    metrics = train(toy_cfg(iterations=2, amp=True), tmp_path, seed=0, model=model, dataset=ToySet())
    assert seen and set(seen) == {torch.bfloat16}
    assert metrics["amp"] is True and math.isfinite(metrics["final_loss"])
    # the weights stay float32 (autocast casts per op), so checkpoints look the same either way
    state = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_pretrained_file_is_recorded_or_rejected(tmp_path):
    from spgnet.config import ModelConfig
    from spgnet.engine.train.loop import describe_pretrained

    model_cfg = ModelConfig(backbones=("resnet18",), pretrained=str(tmp_path))
    with pytest.raises(SpgnetError, match="resnet18-f37072fd.pth: ImageNet weights of resnet18 not found"):
        describe_pretrained(model_cfg)
    weights = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"fc.weight": torch.zeros(1)}, weights)
    info = describe_pretrained(model_cfg)
    assert info["source"] == "imagenet" and info["path"] == str(tmp_path)
    assert info["files"]["resnet18"]["path"] == str(weights) and len(info["files"]["resnet18"]["sha256"]) == 64
    assert describe_pretrained(ModelConfig())["source"] == "random"


def test_progress_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPGNET_PROGRESS", "lines")
    train(toy_cfg(iterations=4, log_every=2), tmp_path, model=toy_model(), dataset=ToySet())
    err = capsys.readouterr().err
    assert "it 2/4 loss" in err and "it 4/4 loss" in err and "it/s" in err and " lr " in err


def test_train_logs_to_mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SPGNET_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPGNET_INVOCATION", "test-invocation")
    cfg = toy_cfg(iterations=4, log_every=2)
    train(cfg, tmp_path / "run", seed=1, model=toy_model(), dataset=ToySet(), stop_after=3)
    # The resumed run continues the same MLflow run.
    train(cfg, tmp_path / "run", seed=1, resume=True, model=toy_model(), dataset=ToySet())
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["spgnet-mini"], filter_string="tags.`spgnet.kind` = 'train'")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["params.train.lr"] == "0.01"
    assert row["params.run.seed"] == "1" and row["tags.spgnet.invocation"] == "test-invocation"
    assert row["tags.spgnet.resumed_from"] == "2"
    assert math.isfinite(row["metrics.final_loss"]) and "metrics.loss_stage1" in df
    client = mlflow.tracking.MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(row["run_id"], "loss")] == [2, 4]
    names = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"config.json", "train_metrics.json", "train_log.csv"} <= names


# --------------------------------------------------------------------------------------------
# The real network (2-stage SPGNet, ResNet-18) resumes bit-identically too
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_spgnet_kill_and_resume(tmp_path):
    models = pytest.importorskip("spgnet.models")
    cfg = resolve("t3-spg-sigmoid", "mini",
                  train=dict(iterations=3, batch_size=2, checkpoint_every=1, log_every=1, workers=0, crop=33),
                  model={"num_classes": NUM_CLASSES, "channels": 16})

    def build():
        torch.manual_seed(0)
        return models.build_model_from_config(cfg.model, device="cpu")

    train(cfg, tmp_path / "full", seed=0, model=build(), dataset=ToySet(n=4, size=33))
    train(cfg, tmp_path / "part", seed=0, model=build(), dataset=ToySet(n=4, size=33), stop_after=1)
    train(cfg, tmp_path / "part", seed=0, resume=True, model=build(), dataset=ToySet(n=4, size=33))
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(tmp_path / "part" / "train_log.csv")


# --------------------------------------------------------------------------------------------
# The command line, killed for real (SIGKILL) and resumed
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_sigkill_and_resume(tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from spgnet.config import PARAMS_DIR

    root = tmp_path / "project"
    shutil.copytree(PARAMS_DIR, root / "params")
    env = dict(os.environ, SPGNET_ROOT=str(root), SPGNET_TRACKING="0", SPGNET_PROGRESS="lines",
               PYTHONWARNINGS="ignore")
    spgnet = [sys.executable, "-m", "spgnet"]
    subprocess.run(spgnet + ["make-synthetic", "--out", str(root / "data/synthetic-smoke/cityscapes"),
                             "--num-train", "4", "--num-val", "1", "--num-test", "0",
                             "--height", "96", "--width", "192"], env=env, check=True, capture_output=True)
    command = spgnet + ["train", "t3-1stage", "--profile", "smoke", "--iterations", "5", "--seed", "2"]
    full = subprocess.run(command + ["--out", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command + ["--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    at = None
    while time.time() < deadline and proc.poll() is None:
        if (killed / "latest.pt").exists():
            at = ckpt.load_checkpoint(killed / "latest.pt")["iteration"]
            if at >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    assert not (killed / "train_metrics.json").exists()
    resumed = subprocess.run(command + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = ckpt.load_checkpoint(killed / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 5 and b["state"]["segments"][0] == 0 and len(b["state"]["segments"]) == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(killed / "train_log.csv")
    ma = json.loads((tmp_path / "full" / "train_metrics.json").read_text())
    mb = json.loads((killed / "train_metrics.json").read_text())
    assert _comparable(ma) == _comparable(mb)


# --------------------------------------------------------------------------------------------
# Extending a finished run, failed runs, validation while training, skipped fp16 steps
# --------------------------------------------------------------------------------------------


def test_resume_with_more_iterations_extends_a_finished_run(tmp_path, capsys):
    train(toy_cfg(iterations=4), tmp_path, seed=0, model=toy_model(), dataset=ToySet())
    assert not (tmp_path / "latest.pt").exists()  # a finished run keeps checkpoint.pt only
    metrics = train(toy_cfg(iterations=6), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())
    assert "resuming from iteration 4" in capsys.readouterr().err
    assert metrics["iterations"] == 6 and metrics["segments"] == [0, 4]
    rows = _read_csv(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the poly schedule of the new length from the resumed iteration on
    assert float(rows[4]["lr"]) == pytest.approx(0.01 * (1 - 4 / 6) ** 0.9)
    assert ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 6
    with pytest.raises(SpgnetError, match="already at iteration 6, beyond train.iterations 5"):
        train(toy_cfg(iterations=5), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())


class _Broken(ToySet):
    def __getitem__(self, key):
        raise RuntimeError("unreadable sample")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="unreadable sample"):
        train(toy_cfg(), tmp_path / "new", model=toy_model(), dataset=_Broken())
    assert not (tmp_path / "new").exists()
    (tmp_path / "given").mkdir()  # a folder made beforehand (as Snakemake does) stays, empty
    with pytest.raises(RuntimeError):
        train(toy_cfg(), tmp_path / "given", resume=True, model=toy_model(), dataset=_Broken())
    assert list((tmp_path / "given").iterdir()) == []


def test_the_untrained_reference_is_written_before_training_and_changes_nothing(tmp_path, monkeypatch):
    from spgnet.engine.evaluation import reference

    calls = []

    def fake_scores(cfg, seed):
        calls.append((cfg.eval.split, cfg.eval.scales, cfg.eval.flip, seed))
        torch.rand(1000)  # draws from the global generator, as building a network does
        return {"kind": "untrained", "miou": 1.5, "seed": seed}

    monkeypatch.setattr(reference, "untrained_scores", fake_scores)
    train(toy_cfg(), tmp_path / "plain", seed=2, model=toy_model(), dataset=ToySet())
    train(toy_cfg(), tmp_path / "ref", seed=2, model=toy_model(), dataset=ToySet(),
          untrained_out=tmp_path / "ref" / "untrained.json")
    assert calls == [("val", (1.0,), False, 2)]
    assert json.loads((tmp_path / "ref" / "untrained.json").read_text())["miou"] == 1.5
    a = ckpt.load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # every step reseeds: the run is the same
    # a run killed before its first checkpoint leaves no reference behind; started again, it writes it
    (tmp_path / "killed").mkdir()
    with pytest.raises(RuntimeError):
        train(toy_cfg(), tmp_path / "killed", seed=2, model=toy_model(), dataset=_Broken(),
              untrained_out=tmp_path / "killed" / "untrained.json")
    assert list((tmp_path / "killed").iterdir()) == []
    # resumed from a checkpoint, the job scores the network as the seed builds it, not the resumed one
    train(toy_cfg(), tmp_path / "part", seed=2, model=toy_model(), dataset=ToySet(), stop_after=2)
    train(toy_cfg(), tmp_path / "part", seed=2, resume=True, model=toy_model(), dataset=ToySet(),
          untrained_out=tmp_path / "part" / "untrained.json")
    assert calls[-1] == ("val", (1.0,), False, 2) and (tmp_path / "part" / "untrained.json").exists()


def test_predictions_without_evaluate_out_is_an_error():
    import argparse

    from spgnet.engine.train.loop import main

    with pytest.raises(SpgnetError, match="--predictions needs --evaluate-out"):
        main(argparse.Namespace(predictions="preds", evaluate_out=None))


def test_a_run_that_fails_after_a_checkpoint_keeps_it(tmp_path):
    dataset = ToySet(n=10)

    def fail(iteration, losses):
        if iteration == 3:
            dataset.__class__ = _Broken

    with pytest.raises(RuntimeError):
        train(toy_cfg(checkpoint_every=2), tmp_path, model=toy_model(), dataset=dataset, on_step=fail)
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["iteration"] == 2
    assert (tmp_path / "train_log.csv").exists()


def test_validation_while_training_logs_val_miou_and_keeps_the_best(tmp_path, monkeypatch):
    from spgnet.engine.evaluation import evaluate

    scores = {2: 10.0, 4: 30.0, 6: 20.0}
    seen = []

    def fake_validation(model, cfg, device):
        seen.append(model.training)
        return scores[2 * len(seen)]

    monkeypatch.setattr(evaluate, "validation_miou", fake_validation)
    metrics = train(toy_cfg(iterations=6, val_every=2), tmp_path, model=toy_model(), dataset=ToySet())
    assert seen == [False, False, False]  # evaluated in eval mode
    rows = _read_csv(tmp_path / "train_log.csv")
    assert [r["val_miou"] for r in rows] == ["", "10.0", "", "30.0", "", "20.0"]
    assert metrics["best"] == {"val_miou": 30.0, "iteration": 4}
    best = ckpt.load_checkpoint(tmp_path / "best.pt")
    assert best["iteration"] == 4 and best["val_miou"] == 30.0
    assert not torch.equal(best["model"]["heads.1.weight"],
                           ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["model"]["heads.1.weight"])


def test_validation_miou_scores_the_val_split(monkeypatch):
    from spgnet import data
    from spgnet.engine.evaluation.evaluate import evaluate_model, validation_miou

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            item = ToySet(n=2)[index]
            return {**item, "label": item["label"].clamp(max=255)}

    splits = []
    monkeypatch.setattr(data, "build_dataset", lambda name, root, split, **kw: splits.append(split) or Items())
    cfg = toy_cfg()
    model = toy_model().eval()
    expected = evaluate_model(model, Items(), class_names=["a", "b", "c"], strategy=cfg.eval.strategy,
                              crop=cfg.train.crop)["miou"]
    monkeypatch.setattr("spgnet.engine.evaluation.evaluate._class_names", lambda cfg: ["a", "b", "c"])
    assert validation_miou(model, cfg, torch.device("cpu")) == pytest.approx(expected)
    assert splits == ["val"]


def test_with_a_gradient_scaler_non_finite_steps_are_skipped(tmp_path, monkeypatch):
    """fp16's gradient scaler (imitated on CPU): a step whose loss is NaN is skipped, training goes
    on; only NONFINITE_PATIENCE of them in a row stop the run."""
    from spgnet.engine.train import precision as precision_module
    from spgnet.engine.train import loop as train_module

    monkeypatch.setattr(train_module, "resolve_precision",
                        lambda amp, device, **_: precision_module.Precision(None, True, "test: scaler on CPU"))
    dataset = ToySet(n=10)

    def poison(iteration, losses):
        dataset.nan_index = 4 if iteration in (2, 3) else None  # iterations 3 and 4 see a NaN crop

    cfg = toy_cfg(iterations=6, batch_size=10)
    metrics = train(cfg, tmp_path / "a", model=toy_model(), dataset=dataset, on_step=poison)
    assert metrics["skipped_steps"] == 2 and math.isfinite(metrics["final_loss"])
    # weights and the norm's running statistics stayed finite
    state = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    monkeypatch.setattr(train_module, "NONFINITE_PATIENCE", 3)
    dataset.nan_index = 4
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row"):
        train(cfg, tmp_path / "b", model=toy_model(), dataset=dataset, on_step=lambda i, v: None)


def test_gradient_overflow_lowers_the_scale_and_skips_the_update(tmp_path, monkeypatch):
    """fp16's usual overflow is in the gradients, not the loss: the scaler skips those steps and
    lowers its scale, the run trains on (gradients made infinite at iterations 3 and 4)."""
    from spgnet.engine.train import precision as precision_module
    from spgnet.engine.train import loop as train_module

    monkeypatch.setattr(train_module, "resolve_precision",
                        lambda amp, device, **_: precision_module.Precision(None, True, "test: scaler on CPU"))
    model = toy_model()
    overflow = {"on": False}
    model.heads[1].weight.register_hook(lambda grad: grad * float("inf") if overflow["on"] else grad)

    def toggle(iteration, losses):
        overflow["on"] = iteration in (2, 3)

    metrics = train(toy_cfg(iterations=6), tmp_path, model=model, dataset=ToySet(), on_step=toggle)
    assert metrics["skipped_steps"] == 2 and math.isfinite(metrics["final_loss"])
    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    assert float(saved["scaler"]["scale"]) == 2.0 ** 16 / 4  # halved once per skipped step
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_log_model_registers_the_trained_network_and_a_failure_is_a_warning(tmp_path, monkeypatch, capsys):
    from spgnet.serving import mlflow_model as model_registry

    monkeypatch.setenv("SPGNET_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = []
    monkeypatch.setattr(model_registry, "log_model_enabled", lambda profile: profile.name == "mini")
    monkeypatch.setattr(model_registry, "log_trained_model",
                        lambda model, cfg, run_id: logged.append((type(model).__name__, cfg.experiment, run_id)))
    train(toy_cfg(iterations=2), tmp_path / "a", model=toy_model(), dataset=ToySet())
    assert len(logged) == 1 and logged[0][:2] == ("ToyNet", "t3-spg-sigmoid") and logged[0][2]

    def broken(model, cfg, run_id):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(model_registry, "log_trained_model", broken)
    metrics = train(toy_cfg(iterations=2), tmp_path / "b", model=toy_model(), dataset=ToySet())
    assert "warning: the MLflow model was not logged (OSError: artifact store unreachable)" in capsys.readouterr().err
    assert (tmp_path / "b" / "train_metrics.json").exists() and metrics["iterations"] == 2
