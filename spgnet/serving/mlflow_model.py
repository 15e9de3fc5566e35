"""The trained network as an MLflow model: logged to a run and registered under its experiment.

With ``tracking: {log_model: true}`` in the profile (:func:`log_model_enabled`; on for the paper
profile, off for mini and smoke), the end of ``spgnet train`` calls :func:`log_trained_model`:
``mlflow.pytorch.log_model`` logs a :class:`spgnet.serving.predictor.SegmentationPipeline` (the
network, norms folded, with its experiment's test-time options) with a signature and an input
example, and registers it as a new version of the registered model named after the experiment.

The logged model maps pictures to class ids, exactly as ``spgnet predict`` does::

    import mlflow
    model = mlflow.pyfunc.load_model("models:/t3-spg-sigmoid/1")
    ids = model.predict(pictures)   # uint8 [N, H, W, 3] RGB -> uint8 [N, H, W] train ids

(``spgnet.data.labels.trainid_to_labelid`` turns Cityscapes train ids into the label ids of
``spgnet predict``'s ``*_labelIds.png``). The model's files carry a copy of the ``spgnet``
package (``code_paths``), so loading it needs only the pip requirements it lists.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch

from spgnet.config import ConfigError
from spgnet.errors import SpgnetError

#: Side of the square input example logged with the model (pixels).
EXAMPLE_SIDE = 64
#: Distributions the logged model needs at load time (pinned to the installed versions).
REQUIREMENTS = ("torch", "torchvision", "numpy", "pillow", "pyyaml", "cityscapesscripts", "mlflow")


def log_model_enabled(profile) -> bool:
    """The profile's ``tracking.log_model`` (default False); a non-boolean value is a ConfigError."""
    tracking = getattr(profile, "tracking", None) or {}
    if not isinstance(tracking, dict):
        raise ConfigError(f"profile '{profile.name}': tracking must be a mapping, got {tracking!r}")
    unknown = sorted(set(tracking) - {"log_model"})
    if unknown:
        raise ConfigError(f"profile '{profile.name}': unknown key 'tracking.{unknown[0]}' (valid keys: log_model)")
    value = tracking.get("log_model", False)
    if not isinstance(value, bool):
        raise ConfigError(f"profile '{profile.name}': tracking.log_model must be true or false, got {value!r}")
    return value


def pip_requirements() -> list[str]:
    """``name==version`` of :data:`REQUIREMENTS` as installed here (local version tags dropped)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            version = importlib.metadata.version(name).split("+", 1)[0]
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
        else:
            pins.append(f"{name}=={version}")
    return pins


def signature():
    """Input: pictures, uint8 ``[-1, -1, -1, 3]``; output: class ids, uint8 ``[-1, -1, -1]``.

    The tensors are unnamed: a named input reaches the PyTorch flavour as a dict, which it rejects.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
                          outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]))


def input_example(side: int = EXAMPLE_SIDE, seed: int = 0) -> np.ndarray:
    """A reproducible noise picture, uint8 ``[1, side, side, 3]``."""
    return np.random.default_rng(seed).integers(0, 256, size=(1, side, side, 3), dtype=np.uint8)


def inference_pipeline(model: torch.nn.Module, cfg):
    """A CPU copy of the trained ``model`` (DDP unwrapped, no process group:
    :func:`spgnet.engine.train.distributed.detached_copy`) as a
    :class:`spgnet.serving.predictor.SegmentationPipeline` for ``cfg``'s experiment."""
    from spgnet.engine.train.distributed import detached_copy
    from spgnet.serving.predictor import PredictSettings, SegmentationPipeline, prepare_for_inference

    network = getattr(model, "module", model)  # DistributedDataParallel keeps the network in .module
    settings = PredictSettings.from_config(cfg)
    network = detached_copy(network).cpu().eval()
    return SegmentationPipeline(prepare_for_inference(network, settings), settings).eval()


def log_trained_model(model: torch.nn.Module, cfg, run_id: str, *, registered_model_name: str | None = None,
                      tracking_uri: str | None = None):
    """Log ``model`` (trained network of run config ``cfg``) to the MLflow run ``run_id`` with
    ``mlflow.pytorch.log_model`` (signature :func:`signature`, example :func:`input_example`)
    and register it as a new version of ``registered_model_name`` (default ``cfg.experiment``).

    ``tracking_uri``: default :func:`spgnet.tracking.tracking_uri`. Returns MLflow's
    ``ModelInfo`` (``.model_uri``, ``.registered_model_version``). Call it while the run is
    open (inside ``start_run``): the run is re-entered with ``mlflow.start_run(run_id=...)``,
    whose exit marks it FINISHED until the caller's tracker closes it with its own status.
    """
    import mlflow
    import mlflow.pytorch

    from spgnet.tracking.store import _StoreLock, sqlite_path
    from spgnet.tracking import tracking_uri as default_uri

    uri = tracking_uri or default_uri()
    name = registered_model_name or cfg.experiment
    pipeline = inference_pipeline(model, cfg)
    package = Path(__file__).resolve().parent.parent
    lock = _StoreLock(sqlite_path(uri))  # one writer at a time on a SQLite store (see tracking/store.py)
    mlflow.set_tracking_uri(uri)
    try:
        with lock(), mlflow.start_run(run_id=run_id):
            return mlflow.pytorch.log_model(
                pipeline, name="model", signature=signature(), input_example=input_example(),
                registered_model_name=name, code_paths=[str(package)], pip_requirements=pip_requirements(),
                await_registration_for=0, serialization_format="pickle",  # pt2 would torch.export the numpy steps
            )
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; one line for the CLI
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise SpgnetError(f"cannot log the trained '{cfg.experiment}' network to MLflow run {run_id} at {uri}: "
                          f"{type(err).__name__}: {first}") from err
