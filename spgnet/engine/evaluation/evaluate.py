"""``spgnet evaluate EXPERIMENT --checkpoint FILE --out METRICS.json``: score a trained network.

Runs the experiment's ``eval`` section (split, scales, flip, GAP/AP/TILED strategy, padding, see
:mod:`spgnet.engine.evaluation.inference`) over the evaluation split, accumulates a confusion matrix over the
dataset's classes (255 ignored; :mod:`spgnet.engine.evaluation.metrics`, equal to cityscapesscripts) and
writes, atomically, a metrics JSON that DVC and the report read::

    {"experiment", "profile", "strategy", "scales", "flip", "split",
     "miou", "macc", "aacc", "per_class": {name: iou}, "num_images", "seconds_per_image", "seconds", "checkpoint",
     "device", "device_name", "threads", "image_size_min", "image_size_max"}

IoUs are in percent (the paper's unit); undefined IoUs are ``null``. ``macc`` (mean class
accuracy) and ``aacc`` (pixel accuracy) are mmsegmentation's ``mAcc``/``aAcc``, in percent
(:mod:`spgnet.engine.evaluation.metrics`). The confusion matrix is written beside the metrics as
``<name>.confusion.json`` and drawn, row-normalised, as ``<name>.confusion.png``
(:mod:`spgnet.engine.evaluation.confusion`). ``seconds_per_image`` is the
mean time of one image's test-time forward passes (every scale and flip of the strategy) and its
argmax, without data loading or writing predictions (CUDA synchronised around it); ``seconds`` is
the wall time of the whole loop over the split (loading, inference, scoring, writing predictions:
the job's time minus its start-up, ``benchmarks/workflow_time.py``); the last keys
say where it was measured: ``device`` ("cpu", "cuda", ...), ``device_name`` (GPU or CPU model),
``threads`` (``torch.get_num_threads()``) and the smallest and largest image as ``[H, W]`` (the
report's companion of Table 1 prints them). A split without labels (the
Cityscapes test split: every pixel ignored) gets ``"miou": null`` and a ``"note"`` saying so.

``--predictions DIR`` also writes one PNG per image: Cityscapes label ids named
``<city>_<seq>_<frame>_leftImg8bit.png`` (the test server's format, also what ``spgnet score``
reads), or class indices named ``<name>.png`` for the other data sets (VOC with its palette).
``eval.submission: true`` requires ``--predictions``.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from spgnet.atomic import write_json
from spgnet.config import RunConfig, config_from_args, load_profile
from spgnet.engine.evaluation.confusion import confusion_paths, draw_confusion, write_confusion_json
from spgnet.engine.evaluation.inference import STRATEGIES, infer_probs
from spgnet.engine.evaluation.metrics import ConfusionMatrix, as_percent
from spgnet.engine.train.checkpoint import load_trained_model
from spgnet.errors import SpgnetError
from spgnet.runtime.allocator import keep_freed_memory
from spgnet.runtime.threads import apply_profile_threads


# --------------------------------------------------------------------------------------------
# Small helpers (module level so tests can replace the model / data builders)
# --------------------------------------------------------------------------------------------


def _build_model(model_cfg, device: torch.device) -> torch.nn.Module:
    """The untrained network of ``model_cfg`` (what the checkpoint's weights are loaded into)."""
    from spgnet.models import build_model_from_config

    return build_model_from_config(model_cfg, device=device)


def _build_dataset(cfg: RunConfig):
    from spgnet.data import build_dataset

    return build_dataset(cfg.dataset_kind, cfg.data.path(), cfg.eval.split)


def _class_names(cfg: RunConfig) -> list[str]:
    from spgnet.data import dataset_classes

    names = list(dataset_classes(cfg.dataset_kind, cfg.data.path()))
    if len(names) != cfg.model.num_classes:
        raise SpgnetError(
            f"experiment '{cfg.experiment}': model.num_classes is {cfg.model.num_classes} but "
            f"dataset '{cfg.train.dataset}' has {len(names)} classes"
        )
    return names


def _device(cfg: RunConfig) -> torch.device:
    wanted = torch.device(cfg.train.device)
    if wanted.type == "cuda" and not torch.cuda.is_available():
        print("spgnet evaluate: note: CUDA is not available; evaluating on the CPU", file=sys.stderr)
        return torch.device("cpu")
    return wanted


def write_prediction(pred: np.ndarray, name: str, folder: Path, dataset: str) -> Path:
    """One prediction PNG (see the module docstring for names and values)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if dataset == "cityscapes":
        from spgnet.data.labels import trainid_to_labelid

        path = folder / f"{name}_leftImg8bit.png"
        Image.fromarray(np.asarray(trainid_to_labelid(pred.astype(np.uint8)), dtype=np.uint8)).save(path)
        return path
    path = folder / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)  # a folder data set's names may hold sub-folders
    image = Image.fromarray(pred.astype(np.uint8))
    if dataset == "voc":
        from spgnet.data.labels import voc_palette

        image.putpalette(voc_palette())  # "L" -> "P", pixel values kept
    image.save(path)
    return path


#: Where ``seconds_per_image`` was measured (see the module docstring).
TIMING_KEYS = ("device", "device_name", "threads", "image_size_min", "image_size_max")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _first(batch):
    return batch[0]


def _progress(iterable, total: int):
    if not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc="evaluate", unit="img", dynamic_ncols=True)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def evaluate_model(
    model: torch.nn.Module,
    dataset,
    *,
    class_names: list[str],
    scales=(1.0,),
    flip: bool = False,
    strategy: str = "GAP",
    crop: int | None = None,
    overlap: float = 1.0 / 3.0,
    device: str | torch.device = "cpu",
    predictions: str | Path | None = None,
    dataset_name: str = "cityscapes",
    workers: int = 0,
    pad_to: int | None = None,
) -> dict:
    """Run ``model`` over ``dataset`` (items ``{"image", "label", "name"}``); returns
    ``{"miou", "macc", "aacc", "per_class", "num_images", "seconds_per_image", "seconds", "labelled"}``
    (percent, None where undefined; ``seconds`` the wall time of the whole loop), where the time was measured (:data:`TIMING_KEYS`: ``device``,
    ``device_name``, ``threads``, ``image_size_min``/``image_size_max`` as ``[H, W]``) and, under
    ``"matrix"``, the ``[C, C+1]`` confusion matrix."""
    if strategy not in STRATEGIES:
        raise SpgnetError(f"unknown test strategy '{strategy}' (valid: {', '.join(STRATEGIES)})")
    device = torch.device(device)
    model.eval().to(device)
    cm = ConfusionMatrix(len(class_names))
    pred_dir = Path(predictions) if predictions else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=workers,
                                         collate_fn=_first)
    seconds = 0.0
    count = 0
    smallest = largest = None
    loop_start = time.perf_counter()
    for item in _progress(loader, total=len(dataset)):
        image = item["image"].to(device)
        size = [int(v) for v in image.shape[-2:]]
        smallest = size if smallest is None else [min(a, b) for a, b in zip(smallest, size)]
        largest = size if largest is None else [max(a, b) for a, b in zip(largest, size)]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        probs = infer_probs(model, image, scales=scales, flip=flip, strategy=strategy, crop=crop, overlap=overlap,
                        pad_to=pad_to)
        pred = probs.argmax(0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        count += 1
        label = item.get("label")
        if label is not None:
            label = torch.as_tensor(label)
            if tuple(label.shape) != tuple(pred.shape):
                raise SpgnetError(
                    f"{item.get('path', item.get('name'))}: label is {tuple(label.shape)} but the image is {tuple(pred.shape)}"
                )
            cm.update(label.cpu(), pred.cpu())
        if pred_dir is not None:
            write_prediction(pred.cpu().numpy(), str(item["name"]), pred_dir, dataset_name)
    loop_seconds = time.perf_counter() - loop_start
    labelled = cm.num_labelled > 0
    iou = cm.iou()
    miou = cm.miou() if labelled else float("nan")
    return {
        "miou": as_percent(miou),
        "macc": as_percent(cm.macc()) if labelled else None,
        "aacc": as_percent(cm.aacc()) if labelled else None,
        "per_class": {name: (as_percent(v) if labelled else None) for name, v in zip(class_names, iou)},
        "num_images": count,
        "seconds_per_image": seconds / count if count else None,
        "seconds": round(loop_seconds, 3),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "image_size_min": smallest,
        "image_size_max": largest,
        "labelled": labelled,
        "matrix": cm.mat.tolist(),
    }


def validation_miou(model: torch.nn.Module, cfg: RunConfig, device: torch.device) -> float:
    """mIoU (%) of ``model`` on the val split of ``cfg``'s data set, single scale, no flip, the
    experiment's strategy: what ``train.val_every`` logs as ``val_miou`` (the network as trained,
    norms not folded; the final numbers come from ``spgnet evaluate``)."""
    from spgnet.data import build_dataset

    dataset = build_dataset(cfg.dataset_kind, cfg.data.path(), "val")
    if len(dataset) == 0:
        raise SpgnetError(f"{cfg.data.path()}: split 'val' of {cfg.train.dataset} has no images (train.val_every)")
    result = evaluate_model(model, dataset, class_names=_class_names(cfg), strategy=cfg.eval.strategy,
                            crop=cfg.train.crop, overlap=cfg.eval.tile_overlap, device=device,
                            dataset_name=cfg.dataset_kind, pad_to=cfg.eval.pad_to)
    return result["miou"]


def main(args) -> int:
    """Entry point of ``spgnet evaluate`` (see :mod:`spgnet.cli`)."""
    keep_freed_memory()
    cfg = config_from_args(args)
    apply_profile_threads(load_profile(args.profile, data_root=args.data_root, experiments=getattr(args, "experiments", None)), "evaluate")  # spgnet.runtime.threads
    metrics = evaluate_checkpoint(cfg, args.checkpoint, args.out, getattr(args, "predictions", None))
    print(result_line(cfg, metrics, args.out))
    return 0


def result_line(cfg: RunConfig, metrics: dict, out: str | Path) -> str:
    """One line saying what an evaluation measured and where it was written."""
    ev = cfg.eval
    miou = "n/a" if metrics["miou"] is None else f"{metrics['miou']:.2f}"
    return (f"{cfg.experiment} [{ev.split}, {ev.strategy}, scales {list(ev.scales)}, flip {ev.flip}]: "
            f"mIoU {miou} over {metrics['num_images']} images, {metrics['seconds_per_image']:.3f} s/image -> {out}")


def evaluate_checkpoint(cfg: RunConfig, checkpoint: str | Path, out: str | Path,
                        predictions: str | Path | None = None) -> dict:
    """Score the network of ``checkpoint`` with ``cfg``'s eval section and write ``out`` (the
    metrics JSON of the module docstring), its confusion matrix and figure beside it, and with
    ``predictions`` one PNG per image there; one MLflow ``evaluate`` run. Returns the metrics.
    What ``spgnet evaluate`` runs, and what a training job with ``--evaluate-out`` runs on the
    checkpoint it has just written (:mod:`spgnet.engine.train.loop`): the same files, timings aside.
    Raises :class:`SpgnetError` for a submission without ``predictions`` or an empty split."""
    ev = cfg.eval
    if ev.submission and not predictions:
        raise SpgnetError(f"experiment '{cfg.experiment}' writes a submission (eval.submission); pass --predictions DIR")
    names = _class_names(cfg)
    device = _device(cfg)
    model = load_trained_model(checkpoint, cfg, device, build=_build_model)  # no ImageNet file needed
    dataset = _build_dataset(cfg)
    if len(dataset) == 0:
        raise SpgnetError(f"{cfg.data.path()}: split '{ev.split}' of {cfg.train.dataset} has no images")

    from spgnet.tracking import start_run

    with start_run("evaluate", cfg, run_name=f"{cfg.experiment}/evaluate/{ev.strategy}") as tracker:
        result = evaluate_model(
            model, dataset, class_names=names, scales=ev.scales, flip=ev.flip, strategy=ev.strategy,
            crop=cfg.train.crop, overlap=ev.tile_overlap, device=device, predictions=predictions,
            dataset_name=cfg.dataset_kind, workers=cfg.train.workers, pad_to=ev.pad_to,
        )
        metrics = {
            "experiment": cfg.experiment,
            "profile": cfg.profile,
            "strategy": ev.strategy,
            "scales": list(ev.scales),
            "flip": ev.flip,
            "split": ev.split,
            "miou": result["miou"],
            "macc": result["macc"],
            "aacc": result["aacc"],
            "per_class": result["per_class"],
            "num_images": result["num_images"],
            "seconds_per_image": result["seconds_per_image"],
            "seconds": result["seconds"],
            "checkpoint": str(checkpoint),
            **{key: result[key] for key in TIMING_KEYS},
        }
        if not result["labelled"]:
            note = f"split '{ev.split}' has no labels (every pixel is ignore): no mIoU"
            metrics["note"] = note
            print(f"spgnet evaluate: note: {note}", file=sys.stderr)
        write_json(out, metrics, allow_nan=False)
        confusion_json, confusion_png = confusion_paths(out)
        write_confusion_json(confusion_json, result["matrix"], names)
        draw_confusion(confusion_png, result["matrix"], names,
                       title=f"{cfg.experiment} [{ev.split}, {ev.strategy}]: rows = ground truth, % of the row")
        logged = {"seconds_per_image": result["seconds_per_image"] or 0.0}
        if result["miou"] is not None:
            logged.update({k: result[k] for k in ("miou", "macc", "aacc")})
            logged.update({f"iou/{k}": v for k, v in result["per_class"].items() if v is not None})
        tracker.log_metrics(logged)
        tracker.log_params({"run.threads": torch.get_num_threads()})
        tracker.log_dict({"matrix": result["matrix"], "classes": names}, "confusion_matrix.json")
        tracker.log_artifact(out)
        tracker.log_artifact(confusion_png)
    return metrics
