"""Networks: SPGNet and its variants (Sec. 3-4, appendix), and Table 1's competitors.

``build_model(name, **overrides)`` builds the network of a registered experiment;
``build_model_from_config(cfg)`` builds from a :class:`~spgnet.config.ModelConfig`. Both dispatch
on ``cfg.arch``: ``"spgnet"`` or one of the peers in :mod:`spgnet.models.peers`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from spgnet.config import ConfigError, ModelConfig, get_experiment
from spgnet.errors import SpgnetError
from spgnet.models.spgnet import SPGNet


def _peer_builders() -> dict:
    try:
        from spgnet.models.peers import PEER_BUILDERS
    except ImportError:  # pragma: no cover - the peers package is optional for SPGNet itself
        return {}
    return PEER_BUILDERS


def architectures() -> list[str]:
    return ["spgnet", *_peer_builders()]


def build_model_from_config(cfg: ModelConfig, device: str | torch.device = "cpu", where: str | None = None) -> nn.Module:
    """The network described by ``cfg``; ``device`` only chooses a norm layer that runs there. A
    ``cfg.builder`` (a function of your own, :mod:`spgnet.models.custom`) takes precedence over
    ``cfg.arch``; ``where`` starts its one-line errors (the row and its file)."""
    if cfg.builder is not None:
        from spgnet.models.custom import build_own_network

        return build_own_network(cfg, where)
    if cfg.arch == "spgnet":
        return SPGNet(cfg, device=device)
    builders = _peer_builders()
    if cfg.arch not in builders:
        raise SpgnetError(f"unknown architecture '{cfg.arch}' (valid: {', '.join(architectures())})")
    return builders[cfg.arch](cfg, device=device)


def build_model(name: str, device: str | torch.device = "cpu", **overrides) -> nn.Module:
    """The network of registered experiment ``name``, with keyword overrides of its model section."""
    experiment = get_experiment(name)
    if experiment.model is None:
        raise ConfigError(f"experiment '{name}' is a row the paper cites from another work; it has no model")
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(f"unknown model setting '{unknown[0]}' (valid: {', '.join(sorted(valid))})")
    if "backbones" in overrides:
        overrides["backbones"] = tuple(overrides["backbones"])
    return build_model_from_config(dataclasses.replace(experiment.model, **overrides), device=device)


__all__ = ["SPGNet", "architectures", "build_model", "build_model_from_config"]
