"""Table 1's competitors as trainable networks (PSPNet, DANet, DenseASPP, DUC-HDC, BiSeNet, DFN).

``PEER_BUILDERS[arch](cfg)`` builds the network for a :class:`~spgnet.config.ModelConfig` whose
``arch`` is one of the keys; ``cfg.backbones`` names its one backbone, ``cfg.norm`` its norm layer
(:func:`spgnet.models.norm.usable_norm` picks the closest one that runs where it is built:
``meta`` under ``torch.device("meta")``, CUDA when available, else the CPU; pass ``device=`` to
choose), ``cfg.pretrained`` the folder of torchvision's ImageNet files (``weights_root``, see
:mod:`spgnet.models.weights`; None: random initialisation; never downloaded). ``cfg.channels``
and the SPGNet-only fields are ignored.

Every model's ``forward(x)`` returns ``{"out": logits, "aux": [auxiliary logits]}``, all
bilinearly resized to the input size; DFN adds ``"border"`` (one-channel boundary logits).
Which definition each module follows, and why, is in its docstring and in
``shared/notes/table1-peers.md``: PSPNet, DANet, DenseASPP and DUC-HDC reproduce the paper's
#Params/#FLOPs to the printed digit; BiSeNet and DFN follow TorchSeg's public code and miss the
paper's parameter counts (FLOPs match).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from spgnet.config import ModelConfig
from spgnet.models.peers.bisenet import BiSeNet, build_bisenet
from spgnet.models.peers.danet import DANet, build_danet
from spgnet.models.peers.denseaspp import DenseASPP, build_denseaspp
from spgnet.models.peers.dfn import DFN, build_dfn
from spgnet.models.peers.duc_hdc import DUCHDC, build_duc_hdc
from spgnet.models.peers.pspnet import PSPNet, build_pspnet

PEER_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "pspnet": build_pspnet,
    "danet": build_danet,
    "denseaspp": build_denseaspp,
    "duc_hdc": build_duc_hdc,
    "bisenet": build_bisenet,
    "dfn": build_dfn,
}

__all__ = ["PEER_BUILDERS", "BiSeNet", "DANet", "DenseASPP", "DFN", "DUCHDC", "PSPNet"]
