"""Table 1's competitors as trainable networks (PSPNet, DANet, DenseASPP, DUC-HDC, BiSeNet, DFN).

``PEER_BUILDERS[arch](cfg)`` (the model class, a :class:`~spgnet.models.peers.base.PeerModel`)
builds the network for a :class:`~spgnet.config.ModelConfig` whose ``arch`` is one of the keys;
``cfg.backbones`` names its one backbone, ``cfg.norm`` its norm layer
(:func:`spgnet.models.norm.usable_norm` picks the closest one that runs where it is built:
``meta`` under ``torch.device("meta")``, CUDA when available, else the CPU; pass ``device=`` to
choose), ``cfg.pretrained`` the folder of torchvision's ImageNet files (``weights_root``, see
:mod:`spgnet.models.weights`; None: random initialisation; never downloaded). ``cfg.channels``
and the SPGNet-only fields are ignored.

Every model's ``forward(x)`` returns ``{"out": logits, "aux": [auxiliary logits]}``, all
bilinearly resized to the input size; DFN adds ``"border"`` (one-channel boundary logits).
Which definition each module follows, and why, is in its docstring and in
``docs/table1-peers.md``: PSPNet, DANet, DenseASPP and DUC-HDC reproduce the paper's
#Params/#FLOPs to the printed digit; BiSeNet and DFN follow TorchSeg's public code and miss the
paper's parameter counts (FLOPs match).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.peers.base import PeerModel
from spgnet.models.peers.bisenet import BiSeNet
from spgnet.models.peers.danet import DANet
from spgnet.models.peers.denseaspp import DenseASPP
from spgnet.models.peers.dfn import DFN
from spgnet.models.peers.duc_hdc import DUCHDC
from spgnet.models.peers.pspnet import PSPNet

PEER_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    model.arch: model for model in (PSPNet, DANet, DenseASPP, DUCHDC, BiSeNet, DFN)
}

__all__ = ["PEER_BUILDERS", "PeerModel", "BiSeNet", "DANet", "DenseASPP", "DFN", "DUCHDC", "PSPNet"]
