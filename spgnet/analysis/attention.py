"""``spgnet attention EXPERIMENT --checkpoint FILE --out DIR``: guided-attention maps (Sec. 4.5).

Section 4.5 and Figure 4 describe the method; this module follows it step by step:

1. The first SPG link's attention conv (``model.links[0].attention_conv``, a 1x1 conv C -> D whose
   weight has shape ``[D, C, 1, 1]``) is the paper's C x D matrix.
2. For class ``c``, its row ``weight[:, c, 0, 0]`` (D values) gives the indices of the 15 largest
   weights (:func:`top_channels`): the guided-attention channels class ``c`` contributes most to.
3. The guided-attention mask (``model(x, return_attention=True)["attention"][0]``, ``[D, H/4, W/4]``)
   is reduced to the l2 norm over those channels at every pixel (:func:`class_attention`).
4. Each map is min-max scaled to [0, 1] ("normalized between 0 (blue color) and 1 (red color)"),
   bilinearly upsampled to the image and overlaid on it with the jet colour map.

Figures (a grid: one row per val image, the image then one panel per class), written atomically:

``fig5-general.png``          car, person, building, pole (Fig. 5)
``fig6-person-rider.png``     person, rider (Fig. 6)
``fig7-truck-bus-train.png``  truck, bus, train (Fig. 7)
``attention.json``            experiment, checkpoint, images and each class's top-15 channels

Cityscapes only (the figures' classes are Cityscapes classes). The model must have an SPG link;
any other model is a :class:`~spgnet.errors.SpgnetError` naming the experiment.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spgnet.atomic import atomic_path, write_json
from spgnet.errors import SpgnetError
from spgnet.workflow.plan import ATTENTION_FIGURES

#: Channels per class, as in Sec. 4.5 ("the indexes of the top 15 largest weights").
TOP_K = 15
#: Val images per figure (rows of the grid).
NUM_IMAGES = 3
#: Figure file -> (title, classes), Figs. 5-7, as the plan names them (spgnet.workflow.plan).
FIGURES = ATTENTION_FIGURES
SIDECAR = "attention.json"
OVERLAY_ALPHA = 0.5


# --------------------------------------------------------------------------------------------
# The computation (Sec. 4.5)
# --------------------------------------------------------------------------------------------


def attention_conv(model, experiment: str = "model"):
    """The first SPG link's C -> D attention conv; a SpgnetError when the model has none."""
    links = getattr(model, "links", None)
    conv = getattr(links[0], "attention_conv", None) if links is not None and len(links) else None
    if conv is None:
        raise SpgnetError(
            f"experiment '{experiment}' has no SPG link (no links[0].attention_conv): "
            "guided attention needs a multi-stage SPGNet with link spg_sigmoid/spg_softmax/spg_sum"
        )
    return conv


def top_channels(weight, class_index: int, k: int = TOP_K):
    """Indices of the ``k`` largest weights of class ``class_index`` in a ``[D, C, 1, 1]`` weight,
    largest first (all D channels if D < k)."""
    import torch

    column = weight.detach()[:, class_index].reshape(weight.shape[0])
    return torch.topk(column, min(k, column.numel()), largest=True, sorted=True).indices


def class_attention(mask, channels):
    """l2 norm over ``channels`` of a ``[D, h, w]`` guided-attention mask, min-max scaled to [0, 1]
    (a constant map becomes all zeros)."""
    norm = mask.detach()[channels].float().pow(2).sum(0).sqrt()
    low, high = norm.min(), norm.max()
    if float(high - low) <= 0.0:
        return norm.new_zeros(norm.shape)
    return (norm - low) / (high - low)


def attention_maps(model, image, classes: list[int], k: int = TOP_K, experiment: str = "model") -> dict:
    """``{class index: [H, W] map in [0, 1]}`` for one normalised ``[3, H, W]`` image: the scaled
    l2 norm of the class's top-``k`` channels, bilinearly upsampled to the image size."""
    import torch
    import torch.nn.functional as F

    conv = attention_conv(model, experiment)
    device = conv.weight.device
    with torch.no_grad():
        output = model(image.unsqueeze(0).to(device), return_attention=True)
    masks = output.get("attention") or []
    if not masks:
        raise SpgnetError(f"experiment '{experiment}': the model returned no guided-attention mask")
    mask = masks[0][0]
    maps = {}
    for c in classes:
        small = class_attention(mask, top_channels(conv.weight, c, k))
        full = F.interpolate(small[None, None], size=tuple(image.shape[-2:]), mode="bilinear", align_corners=False)
        maps[c] = full[0, 0].clamp_(0.0, 1.0).cpu()
    return maps


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _denormalize(image):
    from spgnet.data.transforms import denormalize

    return denormalize(image)


def _savefig_atomic(fig, path: Path, dpi: int = 100) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def render_figure(images: list, names: list[str], maps: list[dict], class_names: list[str],
                  classes: tuple[str, ...], title: str, path: Path) -> Path:
    """One grid figure: per image a row with the image and one jet overlay per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = {name: i for i, name in enumerate(class_names)}
    rows, cols = len(images), 1 + len(classes)
    height, width = images[0].shape[:2]
    panel_w = 3.2
    panel_h = max(panel_w * height / width, 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_w * cols, panel_h * rows + 0.6), squeeze=False)
    last = None
    for r, (rgb, name, per_class) in enumerate(zip(images, names, maps)):
        axes[r][0].imshow(rgb)
        axes[r][0].set_title(name if r else f"image\n{name}", fontsize=7)
        for j, cls in enumerate(classes, start=1):
            ax = axes[r][j]
            ax.imshow(rgb)
            last = ax.imshow(per_class[index[cls]].numpy(), cmap="jet", vmin=0.0, vmax=1.0,
                             alpha=OVERLAY_ALPHA, interpolation="bilinear")
            if r == 0:
                ax.set_title(cls, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title} (top-{TOP_K} channels, l2 norm, scaled to [0, 1])", fontsize=9)
    if last is not None:
        fig.colorbar(last, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    try:
        _savefig_atomic(fig, path)
    finally:
        plt.close(fig)
    return path


def write_figures(model, items: list[dict], out: str | Path, class_names: list[str],
                  experiment: str = "model", k: int = TOP_K, extra: dict | None = None,
                  figures: dict | None = None) -> list[Path]:
    """Compute the maps of every figure's classes for ``items`` (dataset items with ``"image"`` and
    ``"name"``) and write the figures (``figures``: file name -> (title, classes); default the
    paper's three, :data:`FIGURES`) plus ``attention.json`` into ``out``."""
    figures = FIGURES if figures is None else figures
    out = Path(out)
    if not items:
        raise SpgnetError(f"experiment '{experiment}': no images to visualise")
    conv = attention_conv(model, experiment)
    if conv.weight.shape[1] != len(class_names):
        raise SpgnetError(
            f"experiment '{experiment}': the attention conv has {conv.weight.shape[1]} classes, "
            f"expected {len(class_names)} (the data set's)"
        )
    index = {name: i for i, name in enumerate(class_names)}
    wanted = sorted({index[c] for _, classes in figures.values() for c in classes})
    model.eval()
    images, names, maps = [], [], []
    for item in items:
        maps.append(attention_maps(model, item["image"], wanted, k=k, experiment=experiment))
        images.append(_denormalize(item["image"]))
        names.append(str(item.get("name", len(names))))
    written = []
    for filename, (title, classes) in figures.items():
        written.append(render_figure(images, names, maps, class_names, classes, title, out / filename))
    sidecar = {
        **(extra or {}),
        "experiment": experiment,
        "images": names,
        "top_k": k,
        "top_channels": {class_names[c]: top_channels(conv.weight, c, k).tolist() for c in wanted},
        "figures": list(figures),
    }
    write_json(out / SIDECAR, sidecar)
    return written


# --------------------------------------------------------------------------------------------
# Command line (module-level builders so tests can replace them)
# --------------------------------------------------------------------------------------------


#: Classes drawn for a data set other than Cityscapes (its first ones, in label order).
OWN_FIGURE_CLASSES = 4


def own_figures(dataset: str, class_names: list[str]) -> dict:
    """The one figure drawn for a data set other than Cityscapes (whose three are the paper's):
    its first :data:`OWN_FIGURE_CLASSES` classes, ``attention-<dataset>.png``."""
    classes = tuple(class_names[:OWN_FIGURE_CLASSES])
    return {f"attention-{dataset}.png": (f"Guided attention on {dataset}: {', '.join(classes)}", classes)}


def _build_dataset(cfg):
    from spgnet.data import build_dataset

    return build_dataset(cfg.dataset_kind, cfg.data.path(), "val")


def _load_model(cfg, checkpoint: str | Path, device):
    from spgnet.engine.train.checkpoint import load_trained_model

    return load_trained_model(checkpoint, cfg, device)


def main(args) -> int:
    import torch

    from spgnet.config import config_from_args
    from spgnet.data import dataset_classes
    from spgnet.runtime.allocator import keep_freed_memory

    keep_freed_memory()

    cfg = config_from_args(args)
    if cfg.model.builder is not None or cfg.model.arch != "spgnet" or cfg.model.num_stages < 2 or not cfg.model.link.startswith("spg"):
        raise SpgnetError(
            f"experiment '{cfg.experiment}' has no SPG link (arch {cfg.model.arch}, "
            f"{cfg.model.num_stages} stage(s), link {cfg.model.link}); guided attention needs one"
        )
    names = dataset_classes(cfg.dataset_kind, cfg.data.path())
    figures = FIGURES if cfg.dataset_kind == "cityscapes" else own_figures(cfg.train.dataset, names)
    device = torch.device("cuda" if cfg.train.device == "cuda" and torch.cuda.is_available() else "cpu")
    model = _load_model(cfg, args.checkpoint, device)
    attention_conv(model, cfg.experiment)
    from spgnet.engine.evaluation.inference import configure_pooling

    # the experiment's test-time pooling (TILED runs whole images with GAP here)
    configure_pooling(model, "AP" if cfg.eval.strategy == "AP" else "GAP", cfg.train.crop)
    dataset = _build_dataset(cfg)
    count = min(int(getattr(args, "num_images", None) or NUM_IMAGES), len(dataset))
    items = [dataset[i] for i in range(count)]
    written = write_figures(model, items, args.out, names, experiment=cfg.experiment,
                            extra={"profile": cfg.profile, "checkpoint": str(args.checkpoint)}, figures=figures)
    if sys.stdout.isatty():
        for path in written:
            print(f"wrote {path}")
    return 0
