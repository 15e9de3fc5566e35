"""A network of your own in the pipeline (``model.builder``, issue 24; ``docs/own-data.md``).

``builder(cfg)`` is called with the row's :class:`~spgnet.config.ModelConfig` (``cfg.num_classes``
is the data set's class count; ``cfg.backbones``, ``cfg.channels``, ``cfg.norm`` and
``cfg.pretrained`` are the row's, to use or ignore) and must return an :class:`torch.nn.Module`
whose ``forward(x)`` takes a float batch ``[N, 3, H, W]`` (ImageNet-normalised) and returns either
the logits ``[N, num_classes, h, w]`` or a dict ``{"out": logits, "aux": [logits, ...]}`` (the
auxiliary ones enter the loss with ``train.aux_weight``, as SPGNet's earlier stages do). Logits of
another size are resized bilinearly to ``H x W``. :class:`OwnNetwork` wraps it so that the engine
sees what every network of the package returns: ``{"out": [N, C, H, W], "aux": [...]}``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spgnet.config import ConfigError, ModelConfig
from spgnet.config.builder import import_builder
from spgnet.errors import SpgnetError


class OwnNetwork(nn.Module):
    """The module a ``model.builder`` returned, with the package's output contract (see the module's
    docstring); ``self.net`` is the user's module (checkpoints hold its weights under ``net.``)."""

    def __init__(self, net: nn.Module, num_classes: int, builder: str):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.builder = builder

    def _resized(self, logits, size) -> torch.Tensor:
        if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise SpgnetError(f"model.builder '{self.builder}': the network returned {shape}; expected logits "
                              f"[N, {self.num_classes}, h, w] or a dict with 'out'")
        if logits.shape[1] != self.num_classes:
            raise SpgnetError(f"model.builder '{self.builder}': the network returned {logits.shape[1]} channels; "
                              f"the data set has {self.num_classes} classes (build it with cfg.num_classes)")
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: torch.Tensor) -> dict:
        output = self.net(x)
        size = x.shape[-2:]
        if isinstance(output, dict):
            if "out" not in output:
                raise SpgnetError(f"model.builder '{self.builder}': the network's dict has no 'out' "
                                  f"(keys: {', '.join(map(str, output))})")
            return {"out": self._resized(output["out"], size),
                    "aux": [self._resized(a, size) for a in output.get("aux", [])]}
        return {"out": self._resized(output, size), "aux": []}


def build_own_network(cfg: ModelConfig, where: str | None = None) -> OwnNetwork:
    """``cfg.builder``'s network (see the module's docstring). Raises :class:`ConfigError` in one
    line starting with ``where`` (default ``model.builder '<path>'``; :func:`builder_where` names
    the file and the row) when the path does not import, the function fails or it does not return
    an ``nn.Module``."""
    where = where or f"model.builder '{cfg.builder}'"
    function = import_builder(cfg.builder, where)
    try:
        net = function(cfg)
    except (ConfigError, SpgnetError):
        raise
    except Exception as err:  # noqa: BLE001 - the user's code: one line naming it
        from spgnet.errors import first_line

        raise ConfigError(f"{where}: '{cfg.builder}' failed ({first_line(err)})") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"{where}: '{cfg.builder}' returned a {type(net).__name__}, not a torch.nn.Module")
    return OwnNetwork(net, cfg.num_classes, cfg.builder)


def builder_where(cfg) -> str:
    """``<experiments file>: experiment '<row>': key 'model.builder'`` of a
    :class:`~spgnet.config.RunConfig`: what its builder's errors start with."""
    from spgnet.config import paths

    return f"{cfg.experiments_file or paths.EXPERIMENTS_FILE}: experiment '{cfg.experiment}': key 'model.builder'"


def check_builder(cfg) -> None:
    """Build the network of a :class:`~spgnet.config.RunConfig` whose model has a ``builder`` on the
    ``meta`` device (no memory, no weights read): one :class:`ConfigError` line naming the file
    and the row when it does not build an ``nn.Module``. The workflow calls it for every run as
    it starts (``workflow/rules/common.smk``), before any job."""
    import dataclasses

    with torch.device("meta"):
        build_own_network(dataclasses.replace(cfg.model, pretrained=None), builder_where(cfg))
