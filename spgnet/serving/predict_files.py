"""``spgnet predict EXPERIMENT --checkpoint CKPT --input PATH... --out DIR``: segment your own pictures.

``PATH`` is a picture, a folder (searched recursively for ``.png``/``.jpg``/``.jpeg``) or a glob
(``'photos/**/*.jpg'``). Every picture is read with :func:`spgnet.data.io.read_image` (any PNG or
JPEG mode: RGB, RGBA, palette, grayscale, CMYK, 16-bit; EXIF orientation applied) and run as
``spgnet evaluate`` runs its data (:func:`spgnet.serving.predictor.predict`: the experiment's test
strategy, scales and flip unless ``--strategy``, ``--scales``, ``--flip/--no-flip`` say
otherwise). For each picture ``<stem>.<ext>`` it writes, atomically, into ``DIR`` (keeping the
sub-folders of a folder input):

``<stem>_labelIds.png``  the prediction as ``spgnet evaluate --predictions`` writes it, byte for
                         byte: Cityscapes label ids (``spgnet.data.labels.trainid_to_labelid``),
                         or the data set's own class values for PASCAL VOC (a palette PNG) and
                         Person-Part;
``<stem>_color.png``     the same classes in the data set's colours (:func:`palette`: Cityscapes'
                         colours from cityscapesscripts, the VOC colour map for VOC and
                         Person-Part, a folder data set's ``dataset.yaml`` palette), a palette PNG;
``<stem>_overlay.png``   with ``--overlay``: the picture and the colours alpha-blended
                         (``--opacity``, default 0.5, the colours' weight).

Memory is bounded by the picture's size at inference, not by the size of the file: a picture whose
longer side exceeds ``--max-side`` (default :data:`MAX_SIDE`, Cityscapes' 2048 px; 0: none) is
resized to it (bilinear, aspect kept) for the network, and its class map is resized back to the
picture's own size (nearest), so every output keeps the picture's size. The detectron2 and
mmsegmentation predictors resize to their test scale the same way (detectron2#1221: a 48-megapixel
photo ran a machine out of memory; ``benchmarks/predict_memory.py`` measures the peak).

A progress bar is drawn on a terminal; otherwise only the summary line is printed. Pictures that
cannot be read, or that still run out of memory, are listed at the end, one line each, and the
exit status is 1; the others are still written.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from spgnet.errors import SpgnetError, first_line

#: File name endings ``spgnet predict`` picks up inside folders (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Default of ``--max-side``: the longest side, in pixels, a picture is run at (Cityscapes' width).
MAX_SIDE = 2048


def palette(dataset: str, root: str | Path | None = None) -> np.ndarray:
    """``uint8 [256, 3]`` colour of each train id of the data set of reader kind ``dataset``
    (unused entries black): :func:`spgnet.data.dataset_palette`.

    Cityscapes: the colour of the label each train id stands for (cityscapesscripts' table);
    PASCAL VOC and Person-Part: the VOC devkit's colour map (Person-Part's annotations are
    drawn with it too); ``folder``: the palette of ``root/dataset.yaml`` (else a generated one).
    """
    from spgnet.data.catalog import dataset_palette

    return dataset_palette(dataset, root)


def collect_inputs(paths: list[str]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """``([(picture, output stem relative to DIR)], [(PATH, why)])`` for the ``--input`` values:
    files as given, folders searched recursively (sub-folders kept in the output), globs
    expanded (``**`` recursive). A PATH that matches nothing goes in the second list."""
    found: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pictures = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not pictures:
                missing.append((raw, "folder holds no .png/.jpg/.jpeg file"))
            found += [(p, p.relative_to(path).with_suffix("")) for p in pictures]
        elif path.is_file():
            found.append((path, Path(path.stem)))
        else:
            matches = sorted(Path(m) for m in glob.glob(raw, recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                missing.append((raw, "no such file, folder or matching glob"))
            found += [(m, Path(m.stem)) for m in files]
    by_stem: dict[Path, Path] = {}
    unique = []
    for picture, stem in found:
        previous = by_stem.setdefault(stem, picture)
        if previous is picture:
            unique.append((picture, stem))
        elif previous.resolve() != picture.resolve():
            raise SpgnetError(f"{previous} and {picture} would both be written as '{stem}_*.png'; "
                              f"pass their common folder instead")
    return unique, missing


def _save_png(image, path: Path) -> None:
    from spgnet.atomic import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_outputs(ids: np.ndarray, rgb: np.ndarray, stem: Path, out: Path, dataset: str,
                  overlay: bool = False, opacity: float = 0.5, colours: np.ndarray | None = None) -> list[Path]:
    """Write the ``_labelIds``, ``_color`` (and ``_overlay``) PNGs of one picture; returns them.

    ``ids``: ``uint8 [H, W]`` train ids; ``rgb``: the picture, ``uint8 [H, W, 3]``; ``colours``:
    ``uint8 [256, 3]`` (default: :func:`palette` of ``dataset``, a built-in data set).
    """
    from PIL import Image

    from spgnet.engine.evaluation.evaluate import write_prediction

    target = out / stem.parent
    target.mkdir(parents=True, exist_ok=True)
    written = []
    # the evaluation's own writer, into a scratch folder, then renamed: identical bytes, atomic
    with tempfile.TemporaryDirectory(dir=target, prefix=".predict-") as scratch:
        labels = write_prediction(ids, "prediction", Path(scratch), dataset)
        final = target / f"{stem.name}_labelIds.png"
        os.replace(labels, final)
        written.append(final)
    colours = palette(dataset) if colours is None else colours
    color = Image.fromarray(ids)
    color.putpalette(colours.reshape(-1).tolist())
    final = target / f"{stem.name}_color.png"
    _save_png(color, final)
    written.append(final)
    if overlay:
        blended = Image.blend(Image.fromarray(rgb), Image.fromarray(colours[ids]), float(opacity))
        final = target / f"{stem.name}_overlay.png"
        _save_png(blended, final)
        written.append(final)
    return written


def _progress(items: list, label: str):
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="img", dynamic_ncols=True, disable=not sys.stderr.isatty())


def main(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from spgnet.runtime.allocator import keep_freed_memory
    from spgnet.serving.predictor import as_rgb_array, load_model, settings_of

    if not 0.0 <= args.opacity <= 1.0:
        raise SpgnetError(f"--opacity must be between 0 and 1, got {args.opacity}")
    max_side = MAX_SIDE if getattr(args, "max_side", None) is None else args.max_side
    if max_side < 0:
        raise SpgnetError(f"--max-side must be 0 (no limit) or a number of pixels, got {max_side}")
    pictures, failures = collect_inputs(args.input)
    if not pictures:
        raise SpgnetError("no pictures to predict: " + "; ".join(f"{p}: {why}" for p, why in failures))
    keep_freed_memory()
    model = load_model(args.experiment, args.checkpoint, profile=args.profile, overrides=getattr(args, "set", None), device=args.device,
                       data_root=args.data_root, experiments=getattr(args, "experiments", None))
    settings = settings_of(model).replace(strategy=args.strategy, scales=args.scales, flip=args.flip)
    colours = palette(settings.dataset, settings.data_root)  # the model's settings name its data set
    out = Path(args.out)
    written, resized = 0, 0
    for picture, stem in _progress(pictures, f"predict {settings.experiment}"):
        try:
            rgb = as_rgb_array(picture)
        except (SpgnetError, OSError, UnidentifiedImageError, ValueError, SyntaxError,
                Image.DecompressionBombError) as err:
            failures.append((str(picture), f"cannot read it: {first_line(err)}"))
            continue
        try:
            ids, smaller = predict_at_most(model, rgb, max_side, strategy=settings.strategy, scales=settings.scales,
                                           flip=settings.flip)
        except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError
            if isinstance(err, RuntimeError) and not _out_of_memory(err):
                raise
            height, width = rgb.shape[:2]
            failures.append((str(picture), f"out of memory at {width}x{height} px ({first_line(err)}); "
                                           f"a smaller --max-side than {max_side or 'none'} needs less"))
            continue
        write_outputs(ids, rgb, stem, out, settings.dataset, overlay=args.overlay, opacity=args.opacity,
                      colours=colours)
        written += 1
        resized += smaller
    note = f" ({resized} run at {max_side} px on their longer side)" if resized else ""
    print(f"{settings.experiment} [{settings.strategy}, scales {list(settings.scales)}, flip {settings.flip}]: "
          f"{written} of {written + len(failures)} pictures -> {out}{note}")
    for path, why in failures:
        print(f"spgnet predict: {path}: {why}", file=sys.stderr)
    return 1 if failures else 0


def predict_at_most(model, rgb: np.ndarray, max_side: int, **options) -> tuple[np.ndarray, bool]:
    """:func:`spgnet.serving.predictor.predict`'s class map ``uint8 [H, W]`` of ``rgb`` (``uint8 [H, W,
    3]``), run on the picture resized so that its longer side is at most ``max_side`` pixels
    (bilinear; 0: as it is) and resized back to ``H x W`` (nearest); and whether it was resized."""
    from PIL import Image

    from spgnet.serving.predictor import predict

    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return predict(model, rgb, **options), False
    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    ids = predict(model, small, **options)
    return np.asarray(Image.fromarray(ids).resize((width, height), Image.Resampling.NEAREST)), True


def _out_of_memory(err: RuntimeError) -> bool:
    """Whether ``err`` is an allocation failure (torch's CPU allocator, CUDA's)."""
    text = str(err).lower()
    return "can't allocate memory" in text or "out of memory" in text or "cannot allocate memory" in text
