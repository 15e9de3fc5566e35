"""The part every Table 1 competitor shares: set-up, one backbone, outputs at the input size.

The shape follows segmentation_models_pytorch (``base/model.py``'s ``SegmentationModel`` beside
``decoders/<arch>/model.py``) and mmsegmentation's ``BaseDecodeHead``: :class:`PeerModel` owns
what the six peers do the same way, and each model (``pspnet.py``, ``danet.py``, ...) says only
what differs:

* set-up: the norm+activation factory of ``cfg.norm`` for the device the model is built on
  (:func:`peer_factory`), the one backbone name checked against the model's
  :attr:`PeerModel.backbone_names` (:func:`single_backbone`), the backbone built from the model's
  class attributes (:attr:`~PeerModel.dilated`, :attr:`~PeerModel.deep_stem`,
  :meth:`~PeerModel.dilations`; DenseASPP overrides :meth:`~PeerModel.build_backbone`), then the
  model's own modules (:meth:`~PeerModel.build_head`), in this order (the order fixes which random
  numbers each weight's initialisation draws);
* forward: the backbone's features go to the model's :meth:`~PeerModel.decode`, which returns
  ``{"out": logits, "aux": [auxiliary logits], ...}`` at the feature resolution; the base resizes
  every tensor bilinearly to the input size (:func:`upsample`).

Which definition each peer follows, and what its #Params/#FLOPs pin down, is in its module's
docstring and in ``docs/table1-peers.md``.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ModelConfig
from spgnet.errors import SpgnetError
from spgnet.models.norm import NormAct, norm_act, usable_norm
from spgnet.models.peers.backbones import RESNETS, ResNetBackbone


def _default_device() -> str:
    """Where the model will run when the caller does not say: ``meta`` while building under
    ``torch.device("meta")`` (counting), CUDA when there is one, else the CPU."""
    if torch.get_default_device().type == "meta":
        return "meta"
    return "cuda" if torch.cuda.is_available() else "cpu"


def peer_factory(cfg: ModelConfig, device: str | torch.device | None = None) -> NormAct:
    """The norm+activation factory of ``cfg.norm``, or the closest one that runs on ``device``."""
    return norm_act(usable_norm(cfg.norm, device if device is not None else _default_device()))


def single_backbone(cfg: ModelConfig, arch: str, allowed: tuple[str, ...]) -> str:
    """The one backbone name of a peer model, checked against ``allowed``.

    Raises :class:`~spgnet.errors.SpgnetError` (one line naming ``model.backbones``) when
    ``cfg.backbones`` holds more than one name or a name not in ``allowed``.
    """
    if len(cfg.backbones) != 1:
        raise SpgnetError(f"model.backbones: '{arch}' takes one backbone, got {len(cfg.backbones)}")
    name = cfg.backbones[0]
    if name not in allowed:
        raise SpgnetError(f"model.backbones: unknown backbone '{name}' for '{arch}' (valid: {', '.join(allowed)})")
    return name


def upsample(x: torch.Tensor, size, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of an ``(N, C, H, W)`` tensor to ``size`` = ``(H', W')`` (a no-op when it
    already has it; a same-size bilinear resize would return the same values)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class PeerModel(nn.Module, abc.ABC):
    """One Table 1 competitor: ``PeerModel(cfg, device=None)``; ``forward(x)`` -> dict.

    ``cfg`` is a :class:`~spgnet.config.ModelConfig` (``backbones`` names the one backbone,
    ``norm`` the norm layer, ``pretrained`` an optional torchvision checkpoint for the backbone,
    ``num_classes`` the classes); ``device`` picks the norm that runs there (default: ``meta``
    under ``torch.device("meta")``, CUDA when available, else the CPU). ``forward`` takes a float
    image batch ``(N, 3, H, W)`` and returns ``{"out": (N, classes, H, W), "aux": [(N, classes,
    H, W), ...], ...}`` (DFN adds ``"border"``: ``[(N, 1, H, W), ...]``).

    A subclass sets :attr:`arch` and the backbone attributes and implements :meth:`build_head`
    and :meth:`decode`.
    """

    arch: ClassVar[str]
    #: backbone names the model accepts (``model.backbones``)
    backbone_names: ClassVar[tuple[str, ...]] = RESNETS
    #: ResNet options (:class:`~spgnet.models.peers.backbones.ResNetBackbone`)
    dilated: ClassVar[bool] = True
    deep_stem: ClassVar[bool] = True

    def __init__(self, cfg: ModelConfig, device: str | torch.device | None = None):
        super().__init__()
        factory = peer_factory(cfg, device)
        name = single_backbone(cfg, self.arch, self.backbone_names)
        self.backbone = self.build_backbone(name, factory, cfg.pretrained)
        self.build_head(cfg, factory)

    def dilations(self, name: str) -> dict[int, list[int]] | None:
        """Per-block dilation rates of ``layer3``/``layer4`` (``None``: torchvision's)."""
        return None

    def build_backbone(self, name: str, factory: NormAct, pretrained: str | None) -> nn.Module:
        """The backbone; its ``forward(x)`` gives the features :meth:`decode` reads."""
        return ResNetBackbone(name, factory, dilated=self.dilated, deep_stem=self.deep_stem,
                              dilations=self.dilations(name), pretrained=pretrained)

    @abc.abstractmethod
    def build_head(self, cfg: ModelConfig, factory: NormAct) -> None:
        """Create the model's own modules (everything after the backbone) as attributes."""

    @abc.abstractmethod
    def decode(self, x: torch.Tensor, features) -> dict:
        """The outputs from the image ``x`` and the backbone's ``features``, at any resolution:
        ``{"out": tensor, "aux": [tensors], ...}``."""

    def forward(self, x: torch.Tensor) -> dict:
        size = x.shape[-2:]
        outputs = self.decode(x, self.backbone(x))
        return {key: [upsample(t, size) for t in value] if isinstance(value, list) else upsample(value, size)
                for key, value in outputs.items()}
