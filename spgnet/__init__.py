"""spgnet-repro: reference implementation and reproduction pipeline of SPGNet (Cheng et al., ICCV 2019)."""

__version__ = "0.1.0"


def build_model(name: str, **overrides):
    """The network of registered experiment ``name`` (keyword overrides of its model section).

    ``build_model("t3-spg-sigmoid", norm="abn")`` -> :class:`spgnet.models.SPGNet`.
    """
    from spgnet.models import build_model as _build

    return _build(name, **overrides)


__all__ = ["build_model", "__version__"]
