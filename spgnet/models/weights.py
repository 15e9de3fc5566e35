"""ImageNet weights per backbone: torchvision's own files, under their own names, in ``weights_root``.

The paper fine-tunes ImageNet-pretrained encoders (implied by Sec. 3.2). Every backbone a run needs reads the
file torchvision publishes for it, from one folder, ``weights_root`` (the profile's
``weights_root``, Snakemake's ``--config weights_root=DIR``, ``spgnet train --weights-root DIR``),
under the name torchvision gives it: the last part of ``<Model>_Weights.IMAGENET1K_V1.url``
(``resnet18-f37072fd.pth``, ``resnet50-0676ba61.pth``, ``resnet101-63fe2227.pth``,
``resnet152-394f9c45.pth``, ``densenet161-8d451a50.pth``). ``IMAGENET1K_V1`` is the original
release, the weights a 2019 paper could fine-tune; torchvision's ``DEFAULT`` for ResNet-50/101/152
is the 2021 ``IMAGENET1K_V2`` recipe. The folder torchvision downloads into,
``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch/hub/checkpoints``), is laid out this way.

Nothing here downloads. Each SPGNet stage loads the file of its own backbone
(:func:`spgnet.models.backbone.load_imagenet_weights`), each Table 1 competitor the file of its one
backbone (:func:`spgnet.models.peers.backbones.load_pretrained`), strictly
(:mod:`spgnet.models.pretrained`). The location is not part of a run's configuration hash
(:func:`spgnet.config.config_hash`): moving the files invalidates no checkpoint; the run records
which files it read and their SHA-256 instead (:func:`describe_weights`, ``train_metrics.json``),
and how many norm channels loading each file converted for Inplace-ABN (:func:`with_norm_conversions`).

``spgnet weights check --profile P [--weights-root DIR]`` (:func:`main`) lists, for every backbone
the profile's runs need, whether its file is present, missing or wrong.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from spgnet.config import ConfigError, ModelConfig, project_path
from spgnet.errors import SpgnetError

#: torchvision's weight enum member used for every backbone
IMAGENET_WEIGHTS = "IMAGENET1K_V1"
#: torch.hub's convention: the hex digits after the last '-' of a published file's name begin its SHA-256
_HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.[a-z]+$")


def imagenet_weights(backbone: str):
    """torchvision's ``IMAGENET1K_V1`` weights enum member of ``backbone`` (e.g. ``"resnet50"``)."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(backbone)
    except (ValueError, KeyError):
        raise SpgnetError(f"backbone '{backbone}': torchvision has no such model") from None
    try:
        return enum[IMAGENET_WEIGHTS]
    except KeyError:
        raise SpgnetError(f"backbone '{backbone}': torchvision has no {IMAGENET_WEIGHTS} weights") from None


def weights_url(backbone: str) -> str:
    """Where torchvision publishes ``backbone``'s ImageNet file."""
    return imagenet_weights(backbone).url


def weights_file_name(backbone: str) -> str:
    """torchvision's file name of ``backbone``'s ImageNet weights (``resnet18-f37072fd.pth``)."""
    return weights_url(backbone).rsplit("/", 1)[-1]


def weights_root_path(root: str | Path) -> Path:
    """``weights_root`` as a path: ``~`` and ``$VARS`` expanded, relative to the project root."""
    return project_path(str(root))


def weights_path(root: str | Path, backbone: str) -> Path:
    """The file ``backbone`` reads under ``weights_root`` ``root``."""
    return weights_root_path(root) / weights_file_name(backbone)


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def published_hash_matches(path: str | Path, sha256: str) -> bool | None:
    """Whether ``sha256`` starts with the hash prefix in the file's name (torch.hub's check on a
    download); None when the name carries none."""
    match = _HASH_PREFIX.search(Path(path).name)
    return None if match is None else sha256.startswith(match.group(1))


def model_backbones(model_cfg: ModelConfig) -> tuple[str, ...]:
    """The distinct backbones of a model, in stage order (``t6-r18-r50`` -> resnet18, resnet50)."""
    return tuple(dict.fromkeys(model_cfg.backbones))


def plan_backbones(plan) -> dict[str, list[str]]:
    """backbone -> the training runs of ``plan`` (a :class:`spgnet.workflow.plan.Plan`) that need it."""
    needs: dict[str, list[str]] = {}
    for run, cfg in plan.runs.items():
        for backbone in model_backbones(cfg.model):
            needs.setdefault(backbone, []).append(run)
    return needs


def check_file(path: str | Path, backbone: str) -> str | None:
    """Why the file at ``path`` is not ``backbone``'s ImageNet weights, or None when it is: it must
    be a readable state dict with exactly torchvision's ``backbone`` tensors (names and shapes;
    the classifier may be there). Compared with torchvision's model built on the ``meta`` device."""
    import torch
    import torchvision

    from spgnet.models.pretrained import read_torchvision_state, strict_mismatch

    try:
        state = read_torchvision_state(path)
    except SpgnetError as err:
        return str(err).split(": ", 1)[-1]
    with torch.device("meta"):
        reference = torchvision.models.get_model(backbone, weights=None)
    return strict_mismatch(reference.state_dict(), state)


def require_weights(plan, root: str | Path) -> str:
    """Workflow start check: every ImageNet file ``plan``'s runs need exists under ``root``; returns
    the folder as an absolute path. Raises :class:`ConfigError` naming the first missing file, the
    runs that need it and where torchvision publishes it. Existence only: reading them all is
    ``spgnet weights check``'s job."""
    folder = weights_root_path(root)
    if not folder.is_dir():
        raise ConfigError(f"config: key 'weights_root': {folder} is not a folder (see README, 'ImageNet weights')")
    needs = plan_backbones(plan)
    missing = [b for b in needs if not (folder / weights_file_name(b)).is_file()]
    if missing:
        first = missing[0]
        more = f"; {len(missing) - 1} more missing (spgnet weights check --profile {plan.profile.name} lists them)" if len(missing) > 1 else ""
        raise ConfigError(
            f"config: key 'weights_root': {folder / weights_file_name(first)} is missing (ImageNet weights of "
            f"{first}, needed by {', '.join(needs[first][:3])}{' ...' if len(needs[first]) > 3 else ''}): "
            f"download {weights_url(first)} into {folder}{more}"
        )
    return str(folder)


def describe_weights(model_cfg: ModelConfig) -> dict:
    """What initialises a run's encoders, as recorded in ``train_metrics.json`` and the checkpoint:
    ``{"source": "random", "path": None, "files": {}}``, or ``{"source": "imagenet", "path":
    weights_root, "files": {backbone: {"file", "path", "url", "sha256", "published_hash"}}}``
    (``published_hash``: the SHA-256 starts with the hash in torchvision's file name, see
    :func:`published_hash_matches`). A missing file is a :class:`SpgnetError` naming it."""
    if not model_cfg.pretrained:
        return {"source": "random", "path": None, "files": {}}
    root = weights_root_path(model_cfg.pretrained)
    files = {}
    for backbone in model_backbones(model_cfg):
        path = root / weights_file_name(backbone)
        if not path.is_file():
            raise SpgnetError(f"{path}: ImageNet weights of {backbone} not found (download {weights_url(backbone)})")
        digest = sha256_of(path)
        files[backbone] = {"file": path.name, "path": str(path), "url": weights_url(backbone),
                           "sha256": digest, "published_hash": published_hash_matches(path, digest)}
    return {"source": "imagenet", "path": str(root), "files": files}


def fabricate_weights_file(folder: str | Path, backbone: str, seed: int = 0) -> Path:
    """Write a stand-in for ``backbone``'s ImageNet file into ``folder`` under torchvision's name:
    torchvision's architecture in its format, randomly initialised (seeded by ``seed``), with what
    real ImageNet files have and a default initialisation lacks: norm gammas of both signs (N(0, 1),
    about half negative), nonzero running means (N(0, 0.5)), running variances other than 1
    (U(0.5, 2)) and nonzero betas (N(0, 0.5)). Loading it under Inplace-ABN converts channels as the
    published files do (:func:`spgnet.models.pretrained.fit_to_abs_weight_norms`); ``spgnet weights
    check`` finds it present (not the published file). For the CPU rehearsal
    (``scripts/fabricate_imagenet.py``), the device check and the tests; never a substitute for
    ImageNet weights in a real run. Written atomically; returns its path."""
    import torch
    import torchvision

    from spgnet.atomic import atomic_path

    torch.manual_seed(seed)
    state = torchvision.models.get_model(backbone, weights=None).state_dict()
    for key, value in state.items():
        if value.dim() != 1 or not value.is_floating_point():
            continue
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            value.normal_(0.0, 0.5)
        elif key.endswith(".weight"):
            value.normal_(0.0, 1.0)  # gamma: about half negative
        elif key.endswith(".bias") and not key.startswith(("fc.", "classifier.")):
            value.normal_(0.0, 0.5)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / weights_file_name(backbone)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def with_norm_conversions(record: dict, model) -> dict:
    """``record`` (:func:`describe_weights`) with, per file, what loading it into ``model`` changed to
    fit Inplace-ABN (:func:`spgnet.models.pretrained.fit_to_abs_weight_norms`), summed over the
    modules that read it (both stages of a 2 x ResNet-50): ``files[backbone]["norm_conversion"] =
    {"norm_layers", "channels", "sign_to_conv", "sign_to_input", "below_eps"}`` (all 0 under
    ``abn`` / ``batchnorm``). Files no module of ``model`` reports on are left as they are."""
    files = {backbone: dict(entry) for backbone, entry in record.get("files", {}).items()}
    for module in model.modules():
        done = getattr(module, "imagenet_init", None)
        backbone = getattr(module, "name", None)
        if done is None or backbone not in files:
            continue
        total = files[backbone].setdefault("norm_conversion", {})
        for key, value in done.items():
            if key != "file":
                total[key] = total.get(key, 0) + value
    return {**record, "files": files}


# --------------------------------------------------------------------------------------------
# spgnet weights check
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsStatus:
    """One line of ``spgnet weights check``."""

    backbone: str
    path: Path
    status: str  # "present", "missing" or "wrong"
    detail: str  # what is wrong, where to download it, or the SHA-256 of a present file
    runs: tuple[str, ...]


def weights_status(root: str | Path, needs: dict[str, list[str]]) -> list[WeightsStatus]:
    """The state of every backbone's file under ``root`` (``needs``: backbone -> runs)."""
    rows = []
    for backbone, runs in needs.items():
        path = weights_path(root, backbone)
        if not path.is_file():
            rows.append(WeightsStatus(backbone, path, "missing", f"download {weights_url(backbone)}", tuple(runs)))
            continue
        problem = check_file(path, backbone)
        if problem is not None:
            rows.append(WeightsStatus(backbone, path, "wrong", problem, tuple(runs)))
            continue
        digest = sha256_of(path)
        note = {True: "", None: "", False: " (not the published file: its name's hash prefix differs)"}
        rows.append(WeightsStatus(backbone, path, "present", f"sha256 {digest}{note[published_hash_matches(path, digest)]}",
                                  tuple(runs)))
    return rows
