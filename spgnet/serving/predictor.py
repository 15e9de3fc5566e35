"""Inference on your own pictures in three lines of Python (what ``spgnet predict``, ``hubconf.py``,
``spgnet export`` and the MLflow model are built on)::

    import spgnet
    model = spgnet.load_model("t3-spg-sigmoid", "results/mini/runs/t3-spg-sigmoid/seed0/checkpoint.pt")
    ids = spgnet.predict(model, "street.png")            # numpy uint8 [H, W]: train ids
    ids, probs = spgnet.predict(model, "street.png", probabilities=True)  # + float32 [C, H, W]

Class ids are the network's **train ids** ``0 .. C-1``, the index into
``model.spgnet_settings.class_names`` and into the probabilities' first axis: for PASCAL VOC and
Person-Part these are the data set's own label values; for Cityscapes
:func:`spgnet.data.labels.trainid_to_labelid` turns them into the label ids the benchmark (and
``spgnet predict``'s ``*_labelIds.png``) uses.

:func:`load_model` builds the experiment's network (:func:`spgnet.engine.train.checkpoint.load_trained_model`),
sets its global pooling for the experiment's test strategy (Table 12) and returns its
normalisation-folded eval-mode copy, the network ``spgnet evaluate`` runs
(:func:`spgnet.engine.evaluation.inference.inference_model`). :func:`predict` runs
:func:`spgnet.engine.evaluation.inference.infer_probs` (scales, flip, GAP/AP/TILED) on one picture read as
``spgnet evaluate`` reads its data (RGB, ImageNet normalisation), so its ids equal ``spgnet
evaluate --predictions``'s, pixel for pixel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from spgnet.errors import SpgnetError

#: Attribute of a network made by :func:`load_model` holding its :class:`PredictSettings`.
SETTINGS_ATTR = "spgnet_settings"


@dataclass(frozen=True)
class PredictSettings:
    """How :func:`predict` runs a network: its experiment's data set and test-time options.

    ``crop`` is the training crop in pixels (the AP kernel is ``crop // 32``; TILED windows are
    ``crop x crop``); ``overlap`` the TILED windows' overlap fraction; ``scales`` the image
    scale factors averaged over (Sec. 4.3); ``flip`` adds mirrored passes; ``pad_to`` pads the
    picture to at least ``pad_to x pad_to`` first (``eval.pad_to``, None: as it is).
    """

    experiment: str
    profile: str
    dataset: str
    class_names: tuple[str, ...]
    strategy: str
    scales: tuple[float, ...]
    flip: bool
    crop: int
    overlap: float
    pad_to: int | None = None
    data_root: str | None = None  # where the data set lies (a folder data set's palette: spgnet.data.dataset_palette)

    @classmethod
    def from_config(cls, cfg) -> "PredictSettings":
        """The settings of a :class:`spgnet.config.RunConfig` (its ``eval`` section and crop)."""
        from spgnet.data import dataset_classes

        names = tuple(dataset_classes(cfg.dataset_kind, cfg.data.path()))
        if len(names) != cfg.model.num_classes:
            raise SpgnetError(f"experiment '{cfg.experiment}': model.num_classes is {cfg.model.num_classes} but "
                              f"dataset '{cfg.train.dataset}' has {len(names)} classes")
        return cls(experiment=cfg.experiment, profile=cfg.profile, dataset=cfg.dataset_kind, class_names=names,
                   data_root=str(cfg.data.path()),
                   strategy=cfg.eval.strategy, scales=tuple(float(s) for s in cfg.eval.scales),
                   flip=bool(cfg.eval.flip), crop=int(cfg.train.crop), overlap=float(cfg.eval.tile_overlap),
                   pad_to=cfg.eval.pad_to)

    def replace(self, *, strategy: str | None = None, scales: Sequence[float] | None = None,
                flip: bool | None = None) -> "PredictSettings":
        """These settings with the given test-time options changed (None keeps one)."""
        from spgnet.engine.evaluation.inference import STRATEGIES

        if strategy is not None and strategy not in STRATEGIES:
            raise SpgnetError(f"unknown test strategy '{strategy}' (valid: {', '.join(STRATEGIES)})")
        if scales is not None:
            scales = tuple(float(s) for s in scales)
            if not scales or any(not (s > 0) for s in scales):
                raise SpgnetError(f"scales must be positive numbers, got {list(scales)}")
        changes = {k: v for k, v in (("strategy", strategy), ("scales", scales), ("flip", flip)) if v is not None}
        return dataclasses.replace(self, **changes)


def recorded_profile(checkpoint: str | Path, key: str = "profile") -> str | None:
    """The profile a checkpoint was trained under (its ``config.profile``; ``key``: another entry
    of its ``config``, e.g. ``experiments_file``), None if it says none.

    Reads the file memory-mapped, so the weights are not loaded twice.
    """
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_trained_model reports unreadable files in one line
        return None
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    profile = config.get(key) if isinstance(config, dict) else None
    return str(profile) if profile else None


def run_config(experiment: str, checkpoint: str | Path, profile: str | None = None,
               data_root: str | None = None, overrides: list[str] | None = None, experiments: str | None = None):
    """The :class:`spgnet.config.RunConfig` a checkpoint is read with, built like every verb's
    (:func:`spgnet.config.build_config`): ``experiment`` under ``profile`` (default: the
    profile recorded in the checkpoint, else ``mini``), then ``overrides`` (``SECTION.KEY=VALUE``
    items, as ``--set``: give the ones the network was trained with); ``experiments``: the file of
    your own rows (default: the one recorded in the checkpoint). No data set is read, so a profile
    whose data live under ``${data_root}`` (paper) needs no ``data_root`` (a folder data set's
    ``dataset.yaml`` is: its classes)."""
    from spgnet.config import build_config

    name = profile or recorded_profile(checkpoint) or "mini"
    # the data root only locates data sets, which inference never opens
    experiments = experiments or recorded_profile(checkpoint, "experiments_file")
    return build_config(experiment, name, data_root=data_root or "<data_root>", overrides=overrides,
                        experiments=experiments)


def inference_device(requested: str | torch.device | None, cfg) -> torch.device:
    """``requested``, else the experiment's training device when it exists here, else the CPU."""
    if requested is not None:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SpgnetError(f"device '{requested}' requested but CUDA is not available")
        return device
    wanted = torch.device(cfg.train.device)
    if wanted.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return wanted


def prepare_for_inference(model: nn.Module, settings: PredictSettings) -> nn.Module:
    """``model`` (eval mode) as :func:`load_model` returns it: global pooling set for
    ``settings.strategy``, norms folded (the copy ``spgnet evaluate`` runs), settings attached."""
    from spgnet.engine.evaluation.inference import configure_pooling, inference_model

    model = model.eval()
    pooling = "GAP" if settings.strategy == "TILED" else settings.strategy
    configure_pooling(model, pooling, settings.crop)
    device = next(model.parameters()).device
    side = min(settings.crop, 128)
    with torch.no_grad():  # not inference mode: the folded weights must stay usable by torch.export
        folded = inference_model(model, torch.zeros(1, 3, side, side, device=device))
    configure_pooling(folded, pooling, settings.crop)
    setattr(folded, SETTINGS_ATTR, settings)
    return folded


def load_model(experiment: str, checkpoint: str | Path, *, profile: str | None = None,
               device: str | torch.device | None = None, data_root: str | None = None,
               overrides: list[str] | None = None, experiments: str | None = None) -> nn.Module:
    """The trained network of registered ``experiment`` with the weights of ``checkpoint``, ready
    for :func:`predict`: eval mode, on ``device`` (default: the experiment's device when present,
    else the CPU), norms folded as ``spgnet evaluate`` runs it, the experiment's test-time options
    (``eval`` section of ``params/``) in its ``spgnet_settings`` (:class:`PredictSettings`).

    ``profile``: the ``params/profiles`` entry to read the experiment with (default: the one
    recorded in the checkpoint, else ``mini``); ``overrides``: the ``--set`` items it was trained
    with (``["model.channels=64"]``); ``experiments``: the file of your own rows (default: the
    checkpoint's). Calling the returned module on a normalised
    ``float32 [N, 3, H, W]`` batch gives ``{"out": logits [N, C, H, W], "aux": [...]}``.
    Errors (unknown experiment, missing or mismatched checkpoint) are one-line
    :class:`spgnet.errors.SpgnetError`.
    """
    from spgnet.engine.train.checkpoint import load_trained_model

    cfg = run_config(experiment, checkpoint, profile, data_root, overrides, experiments)
    settings = PredictSettings.from_config(cfg)
    model = load_trained_model(checkpoint, cfg, inference_device(device, cfg))
    return prepare_for_inference(model, settings)


def settings_of(model: nn.Module) -> PredictSettings:
    settings = getattr(model, SETTINGS_ATTR, None)
    if settings is None:
        raise SpgnetError("this network has no spgnet_settings: make it with spgnet.load_model(EXPERIMENT, CHECKPOINT)")
    return settings


def as_rgb_array(image) -> np.ndarray:
    """``image`` as an ``uint8 [H, W, 3]`` RGB array: a file path (read with
    :func:`spgnet.data.io.read_image`: any PNG/JPEG mode, EXIF orientation applied), a PIL image
    (converted to RGB) or an ``uint8 [H, W, 3]`` array."""
    if isinstance(image, (str, Path)):
        from spgnet.data.io import read_image

        return np.asarray(read_image(image))
    if hasattr(image, "convert") and hasattr(image, "mode"):  # a PIL image
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise SpgnetError(f"expected an RGB image as uint8 [H, W, 3], got {array.dtype} {list(array.shape)}")
    return array


def predict(model: nn.Module, image, *, probabilities: bool = False, strategy: str | None = None,
            scales: Sequence[float] | None = None, flip: bool | None = None):
    """Class ids of one picture.

    ``image``: a path, a PIL image or an RGB ``uint8 [H, W, 3]`` array. ``model``: made by
    :func:`load_model` (its settings give the test-time options; ``strategy`` ("GAP", "AP",
    "TILED"), ``scales`` and ``flip`` override them for this call).

    Returns ``ids``, a ``numpy.uint8 [H, W]`` array of train ids (see the module docstring), or
    with ``probabilities=True`` the pair ``(ids, probs)`` where ``probs`` is the softmax
    probability ``numpy.float32 [C, H, W]`` averaged over every scale and flip (``ids`` is its
    arg-max over ``C``).
    """
    from spgnet.data.transforms import normalize
    from spgnet.engine.evaluation.inference import infer_probs

    settings = settings_of(model).replace(strategy=strategy, scales=scales, flip=flip)
    x = normalize(as_rgb_array(image)).to(next(model.parameters()).device)
    probs = infer_probs(model, x, scales=settings.scales, flip=settings.flip, strategy=settings.strategy,
                        crop=settings.crop, overlap=settings.overlap, pad_to=settings.pad_to)
    ids = probs.argmax(0).cpu().numpy().astype(np.uint8)
    if probabilities:
        return ids, probs.float().cpu().numpy()
    return ids


class SegmentationPipeline(nn.Module):
    """One module from raw pictures to class ids (what the MLflow model serves).

    ``forward(images)``: ``uint8 [N, H, W, 3]`` RGB pictures -> ``uint8 [N, H, W]`` train ids,
    each picture run as :func:`predict` runs it (normalisation, scales, flip, strategy).
    """

    def __init__(self, model: nn.Module, settings: PredictSettings):
        super().__init__()
        self.model = model
        setattr(self.model, SETTINGS_ATTR, settings)

    @property
    def settings(self) -> PredictSettings:
        return settings_of(self.model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[-1] != 3:
            raise SpgnetError(f"expected uint8 pictures [N, H, W, 3], got {list(images.shape)}")
        arrays = images.detach().cpu().numpy().astype(np.uint8, copy=False)
        return torch.from_numpy(np.stack([predict(self.model, array) for array in arrays]))
