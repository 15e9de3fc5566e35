"""What a run records about itself (:mod:`spgnet.engine.train.run`): ``train_metrics.json``, the
ImageNet files it started from, the MLflow run (params, metrics, artifacts) and the MLflow model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spgnet.errors import SpgnetError
from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with

pytestmark = pytest.mark.usefixtures("no_tracking")


def test_metrics_record_seed_and_pretrained(tmp_path):
    metrics = train_with(toy_cfg(iterations=2), tmp_path, seed=5, model=toy_model(), dataset=ToySet())
    saved = json.loads((tmp_path / "train_metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["seed"] == 5 and saved["pretrained"]["source"] == "random"
    assert len(saved["config_hash"]) == 12 and saved["iterations"] == 2
    assert saved["it_per_s"] > 0


def test_pretrained_file_is_recorded_or_rejected(tmp_path):
    from spgnet.config import ModelConfig
    from spgnet.engine.train.run import describe_pretrained

    model_cfg = ModelConfig(backbones=("resnet18",), pretrained=str(tmp_path))
    with pytest.raises(SpgnetError, match="resnet18-f37072fd.pth: ImageNet weights of resnet18 not found"):
        describe_pretrained(model_cfg)
    weights = tmp_path / "resnet18-f37072fd.pth"
    torch.save({"fc.weight": torch.zeros(1)}, weights)
    info = describe_pretrained(model_cfg)
    assert info["source"] == "imagenet" and info["path"] == str(tmp_path)
    assert info["files"]["resnet18"]["path"] == str(weights) and len(info["files"]["resnet18"]["sha256"]) == 64
    assert describe_pretrained(ModelConfig())["source"] == "random"


def test_train_logs_to_mlflow(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SPGNET_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("SPGNET_INVOCATION", "test-invocation")
    cfg = toy_cfg(iterations=4, log_every=2)
    train_with(cfg, tmp_path / "run", seed=1, model=toy_model(), dataset=ToySet(), stop_after=3)
    # The resumed run continues the same MLflow run.
    train_with(cfg, tmp_path / "run", seed=1, resume=True, model=toy_model(), dataset=ToySet())
    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_names=["spgnet-mini"], filter_string="tags.`spgnet.kind` = 'train'")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["status"] == "FINISHED" and row["params.train.lr"] == "0.01"
    assert row["params.run.seed"] == "1" and row["tags.spgnet.invocation"] == "test-invocation"
    assert row["tags.spgnet.resumed_from"] == "2"
    assert math.isfinite(row["metrics.final_loss"]) and "metrics.loss_stage1" in df
    client = mlflow.tracking.MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(row["run_id"], "loss")] == [2, 4]
    names = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"config.json", "train_metrics.json", "train_log.csv"} <= names


def test_log_model_registers_the_trained_network_and_a_failure_is_a_warning(tmp_path, monkeypatch, capsys):
    from spgnet.serving import mlflow_model as model_registry

    monkeypatch.setenv("SPGNET_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = []
    monkeypatch.setattr(model_registry, "log_model_enabled", lambda profile: profile.name == "mini")
    monkeypatch.setattr(model_registry, "log_trained_model",
                        lambda model, cfg, run_id: logged.append((type(model).__name__, cfg.experiment, run_id)))
    train_with(toy_cfg(iterations=2), tmp_path / "a", model=toy_model(), dataset=ToySet())
    assert len(logged) == 1 and logged[0][:2] == ("ToyNet", "t3-spg-sigmoid") and logged[0][2]

    def broken(model, cfg, run_id):
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(model_registry, "log_trained_model", broken)
    metrics = train_with(toy_cfg(iterations=2), tmp_path / "b", model=toy_model(), dataset=ToySet())
    assert "warning: the MLflow model was not logged (OSError: artifact store unreachable)" in capsys.readouterr().err
    assert (tmp_path / "b" / "train_metrics.json").exists() and metrics["iterations"] == 2
