"""spgnet-repro: reference implementation and reproduction pipeline of SPGNet (Cheng et al., ICCV 2019).

Inference in three lines (see :mod:`spgnet.serving.predictor`)::

    import spgnet
    model = spgnet.load_model("t3-spg-sigmoid", "checkpoint.pt")   # eval mode, norms folded
    ids = spgnet.predict(model, "street.png")   # numpy uint8 [H, W] train ids
    ids, probs = spgnet.predict(model, "street.png", probabilities=True)   # + float32 [C, H, W]

Everything here loads on first use: ``import spgnet`` does not import torch.
"""

__version__ = "0.1.0"


def build_model(name: str, **overrides):
    """The network of registered experiment ``name`` (keyword overrides of its model section).

    ``build_model("t3-spg-sigmoid", norm="abn")`` -> :class:`spgnet.models.SPGNet`.
    """
    from spgnet.models import build_model as _build

    return _build(name, **overrides)


def load_model(experiment: str, checkpoint, **kwargs):
    """:func:`spgnet.serving.predictor.load_model`: the trained network, ready for :func:`predict`."""
    from spgnet.serving.predictor import load_model as _load

    return _load(experiment, checkpoint, **kwargs)


def predict(model, image, **kwargs):
    """:func:`spgnet.serving.predictor.predict`: ``numpy.uint8 [H, W]`` train ids of one picture
    (with ``probabilities=True`` also ``numpy.float32 [C, H, W]`` softmax probabilities)."""
    from spgnet.serving.predictor import predict as _predict

    return _predict(model, image, **kwargs)


__all__ = ["build_model", "load_model", "predict", "__version__"]
