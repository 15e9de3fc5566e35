"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: on a shared 2-core machine two spinning threads are 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """A project folder with a tiny synthetic Cityscapes set (2 val images, 64 x 128) where the
    smoke profile looks for it, and ``checkpoint.pt``: t3-1stage (smoke profile) with seeded
    random weights, as ``spgnet train`` saves it. For predict / export / MLflow model tests."""
    import dataclasses

    from spgnet.config import resolve
    from spgnet.data.synthetic import generate
    from spgnet.engine.train.checkpoint import save_checkpoint
    from spgnet.models import build_model_from_config

    root = tmp_path_factory.mktemp("tiny-project")
    data = root / "data/synthetic-smoke/cityscapes"
    generate(data, kind="cityscapes", seed=0, num_train=1, num_val=2, num_test=0, height=64, width=128)
    cfg = resolve("t3-1stage", "smoke")
    torch.manual_seed(0)
    model = build_model_from_config(dataclasses.replace(cfg.model, pretrained=None), device="cpu")
    save_checkpoint(root / "checkpoint.pt", {"model": model.state_dict(), "config": cfg.to_dict(), "iteration": 0})
    return root


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    """A copy of params/profiles/ that tests may edit, read instead of the real one."""
    from spgnet.config import paths as config

    folder = tmp_path / "profiles"
    folder.mkdir()
    for path in config.PROFILES_DIR.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    monkeypatch.setattr(config, "PROFILES_DIR", folder)
    return folder


@pytest.fixture
def no_tracking(monkeypatch):
    """No MLflow and no progress bar (the training tests: ``pytestmark = pytest.mark.usefixtures("no_tracking")``)."""
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    monkeypatch.setenv("SPGNET_PROGRESS", "off")
