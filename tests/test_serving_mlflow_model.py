"""The trained network as a registered MLflow model gives spgnet predict's class ids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import spgnet
from spgnet import cli
from spgnet.config import ConfigError, load_profile
from spgnet.data.labels import trainid_to_labelid
from spgnet.serving.mlflow_model import log_model_enabled, log_trained_model


def test_log_model_is_a_profile_setting():
    assert log_model_enabled(load_profile("paper", data_root="/data")) is True
    assert log_model_enabled(load_profile("mini")) is False
    bad = dataclasses.replace(load_profile("mini"), tracking={"log_model": "yes"})
    with pytest.raises(ConfigError, match="tracking.log_model"):
        log_model_enabled(bad)
    with pytest.raises(ConfigError, match="tracking.log_models"):
        log_model_enabled(dataclasses.replace(bad, tracking={"log_models": True}))


def test_pyfunc_model_gives_spgnet_predict_ids(tiny_project, tmp_path, monkeypatch, one_thread):
    import mlflow
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from spgnet.engine.train.checkpoint import load_trained_model
    from spgnet.serving.predictor import run_config

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    # another test of the same process may have set MLflow's global URI, which wins over the variable
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", uri, raising=False)
    checkpoint = tiny_project / "checkpoint.pt"
    client = MlflowClient(uri)
    # artifacts under tmp_path too (a sqlite store's default artifact root is ./mlruns of the cwd)
    run = client.create_run(client.create_experiment("spgnet-smoke", artifact_location=(tmp_path / "artifacts").as_uri()))
    cfg = run_config("t3-1stage", checkpoint)
    trained = load_trained_model(checkpoint, cfg).train()  # as the training loop leaves it
    info = log_trained_model(trained, cfg, run.info.run_id)
    assert info.registered_model_version is not None
    assert client.get_registered_model("t3-1stage").name == "t3-1stage"
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, -1, -1, 3)
    assert trained.training  # the caller's network is left as it was

    pictures = sorted((tiny_project / "data/synthetic-smoke/cityscapes/leftImg8bit/val").rglob("*.png"))
    status = cli.main(["predict", "t3-1stage", "--checkpoint", str(checkpoint), "--input", *map(str, pictures),
                       "--out", str(tmp_path / "predict")])
    assert status == 0
    served = mlflow.pyfunc.load_model(f"models:/t3-1stage/{info.registered_model_version}")
    batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pictures])
    ids = served.predict(batch)
    assert ids.dtype == np.uint8 and ids.shape == (2, 64, 128)
    for picture, served_ids in zip(pictures, ids):
        written = np.array(Image.open(tmp_path / "predict" / f"{picture.stem}_labelIds.png"))
        assert np.array_equal(trainid_to_labelid(served_ids), written)
    assert np.array_equal(ids[0], spgnet.predict(spgnet.load_model("t3-1stage", checkpoint), batch[0]))
