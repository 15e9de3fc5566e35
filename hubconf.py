"""PyTorch Hub entry points of spgnet-repro.

    model = torch.hub.load("/path/to/spgnet-repro", "spgnet", source="local",
                           experiment="t3-spg-sigmoid", checkpoint="results/mini/runs/t3-spg-sigmoid/seed0/checkpoint.pt")
    ids = spgnet.predict(model, "street.png")    # numpy uint8 [H, W] train ids

The network is :func:`spgnet.load_model`'s (eval mode, norms folded, test-time options attached).
"""

dependencies = ["torch", "torchvision", "numpy", "PIL", "yaml", "cityscapesscripts"]


def spgnet(experiment: str, checkpoint: str, profile: str | None = None, device: str | None = None, **kwargs):
    """The trained network of registered ``experiment`` with the weights of the spgnet checkpoint
    file ``checkpoint`` (``profile``: the ``params/profiles`` entry, default the checkpoint's).
    No pretrained weights are downloaded: SPGNet has no published checkpoint."""
    from spgnet.serving.predictor import load_model

    return load_model(experiment, checkpoint, profile=profile, device=device, **kwargs)
