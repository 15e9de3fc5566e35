"""``spgnet make-synthetic``: the embedded data sets.

``--kind cityscapes`` writes street scenes (see :mod:`spgnet.data.synthetic.street`) in the exact
Cityscapes layout::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq>_000019_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_000019_gtFine_{labelIds,instanceIds,color}.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_000019_gtFine_polygons.json

with several cities per split. The polygons JSON is the source of truth: labelIds, instanceIds
and color images are what cityscapesscripts rasterises from it. Unlike the real test split, the
synthetic test split keeps its ground truth, so the embedded profile can score the submission
PNGs locally (the evaluation server's role).

``--kind voc`` writes ``JPEGImages/``, ``SegmentationClass/`` (palette PNGs, 255 borders) and
``ImageSets/Segmentation/{train,val[,test]}.txt``; with ``--num-aug N`` also the ``trainaug``
layout DeepLab uses: N extra "SBD" images (ids ``2012_3xxxxx``) whose labels are only in
``SegmentationClassAug/`` (grayscale PNGs without 255 borders, as SBD's annotations), the train
images' labels there too (the same values, grayscale), and ``ImageSets/Segmentation/train_aug.txt``
= the train ids then the extra ids (never a val id). ``--kind person_part`` writes
``JPEGImages/``, ``SegmentationPart/`` and ``ImageSets/Person/{train,val[,test]}.txt`` (see
:mod:`spgnet.data.synthetic.pascal`). Test images of these two kinds have no labels, as in VOC.

``--kind folder`` writes a data set of your own's layout: ``dataset.yaml``,
``images/<split>/*.jpg`` and ``labels/{train,val}/*.png`` (RGB colour masks; five classes, an
ignore colour on object outlines, images of slightly different non-square sizes; see
:mod:`spgnet.data.synthetic.folder`), read by ``--dataset folder`` (:mod:`spgnet.data.folder`).

Determinism: image ``i`` of a split is drawn from ``numpy.random.default_rng((seed, kind, split,
i))`` alone, PNGs are written without timestamps, so the same arguments give byte-identical files
(and changing ``--num-val`` does not change the training images).

Safety: everything is written to a hidden folder next to ``--out`` and renamed into place at the
end, so a failure leaves no half-written output. ``<out>/spgnet_synthetic.json`` records the
arguments. An existing non-empty ``--out`` is an error unless that manifest shows identical
arguments; then the set is generated again and swapped in (byte-identical, so this repairs
damaged or missing files).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from spgnet.atomic import atomic_dir
from spgnet.errors import SpgnetError

MANIFEST = "spgnet_synthetic.json"
FORMAT_VERSION = 1
KINDS = ("cityscapes", "voc", "person_part", "folder")
_KIND_CODE = {"cityscapes": 0, "voc": 1, "person_part": 2, "folder": 3}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2, "aug": 3}
_VOC_ID_OFFSET = {"train": 0, "val": 100000, "test": 200000, "aug": 300000}
#: ``--kind voc --num-aug``: the extra "SBD" images (split "aug") and where their labels go.
AUG_LABEL_DIR = "SegmentationClassAug"
AUG_LIST = "train_aug.txt"


def is_generated(root: str | Path) -> bool:
    """Whether ``spgnet make-synthetic`` wrote the tree at ``root`` (its :data:`MANIFEST` is there),
    whatever a profile calls it."""
    return (Path(root) / MANIFEST).is_file()


def _progress(total: int, desc: str):
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="img", leave=False)
    return None


def sample_rng(seed: int, kind: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng((int(seed), _KIND_CODE[kind], _SPLIT_CODE[split], int(index)))


def _arguments(kind, seed, num_train, num_val, num_test, height, width, num_aug=0) -> dict:
    args = {"kind": kind, "seed": int(seed), "num_train": int(num_train), "num_val": int(num_val),
            "num_test": int(num_test), "height": int(height), "width": int(width)}
    if num_aug:  # recorded only when used: sets made without it keep their manifest
        args["num_aug"] = int(num_aug)
    return args


def _check_arguments(args: dict) -> None:
    if args["kind"] not in KINDS:
        raise SpgnetError(f"--kind {args['kind']}: unknown kind (valid: {', '.join(KINDS)})")
    for key in ("num_train", "num_val", "num_test", "num_aug"):
        if args.get(key, 0) < 0:
            raise SpgnetError(f"--{key.replace('_', '-')} {args[key]}: must not be negative")
    if args.get("num_aug") and args["kind"] != "voc":
        raise SpgnetError(f"--num-aug {args['num_aug']}: only --kind voc has a trainaug split (SBD's extra images)")
    if args["kind"] == "folder":  # dataset.yaml declares both, and prepare-data wants images in each
        for key in ("num_train", "num_val"):
            if args[key] < 1:
                raise SpgnetError(f"--{key.replace('_', '-')} {args[key]}: --kind folder needs at least one image")
    if args["num_train"] + args["num_val"] + args["num_test"] == 0:
        raise SpgnetError("--num-train, --num-val and --num-test are all 0: nothing to generate")
    for key in ("height", "width"):
        if not 32 <= args[key] <= 4096:
            raise SpgnetError(f"--{key} {args[key]}: must be between 32 and 4096 pixels")
    if args["seed"] < 0:
        raise SpgnetError(f"--seed {args['seed']}: must not be negative")


def _check_existing(out: Path, args: dict) -> bool:
    """True when ``out`` exists and may be replaced; raises when it must not be touched."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise SpgnetError(f"{out}: exists and is not a folder")
    if not any(out.iterdir()):
        return True
    manifest = out / MANIFEST
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        previous_args = previous["arguments"]
    except (OSError, ValueError, KeyError, TypeError):
        raise SpgnetError(f"{out}: exists, is not empty and has no readable {MANIFEST}; remove it or choose another --out") from None
    if previous_args != args:
        diff = ", ".join(f"{k}={previous_args.get(k)!r} (now {v!r})" for k, v in args.items() if previous_args.get(k) != v)
        raise SpgnetError(f"{out}: holds a synthetic set made with other arguments ({diff}); remove it or choose another --out")
    return True


def _save_png(image: Image.Image, path: Path, level: int = 6) -> None:
    image.save(path, format="PNG", compress_level=level)


def _cityscapes_task(tmp: Path, args: dict, split: str, i: int, city: str, key: str) -> None:
    from spgnet.data.synthetic.street import make_sample

    rng = sample_rng(args["seed"], "cityscapes", split, i)
    image, text, label_ids, instance, colour = make_sample(rng, args["height"], args["width"], i)
    img_dir, gt_dir = tmp / "leftImg8bit" / split / city, tmp / "gtFine" / split / city
    _save_png(image, img_dir / f"{key}_leftImg8bit.png", level=1)
    _save_png(label_ids, gt_dir / f"{key}_gtFine_labelIds.png")
    _save_png(Image.fromarray(instance), gt_dir / f"{key}_gtFine_instanceIds.png")
    _save_png(colour, gt_dir / f"{key}_gtFine_color.png")
    (gt_dir / f"{key}_gtFine_polygons.json").write_text(text, encoding="utf-8")


def _pascal_task(tmp: Path, args: dict, split: str, i: int, name: str, label_dir: Path) -> None:
    from spgnet.data.synthetic.pascal import make_person_part_sample, make_voc_sample

    rng = sample_rng(args["seed"], args["kind"], split, i)
    if args["kind"] == "voc":  # SBD's annotations ("aug") mark no object borders
        image, label = make_voc_sample(rng, args["height"], args["width"], i, borders=split != "aug")
    else:
        image, label = make_person_part_sample(rng, args["height"], args["width"], i)
    image.save(tmp / "JPEGImages" / f"{name}.jpg", format="JPEG", quality=95)
    if split in ("train", "val"):
        _save_png(label, label_dir / f"{name}.png")
    if args.get("num_aug") and split in ("train", "aug"):  # trainaug's labels: the values as a grayscale PNG, as DeepLab's
        _save_png(Image.fromarray(np.asarray(label), mode="L"), tmp / AUG_LABEL_DIR / f"{name}.png")


def _folder_task(tmp: Path, args: dict, split: str, i: int, name: str) -> None:
    from spgnet.data.synthetic import folder

    rng = sample_rng(args["seed"], "folder", split, i)
    height, width = folder.sample_size(rng, args["height"], args["width"], i)
    image, label = folder.make_folder_sample(rng, height, width)
    image.save(tmp / folder.IMAGE_DIR / split / f"{name}{folder.IMAGE_SUFFIX}", format="JPEG", quality=95)
    if split != "test":
        _save_png(label, tmp / folder.LABEL_DIR / split / f"{name}{folder.LABEL_SUFFIX}")


def _workers(tasks: int) -> int:
    """Processes for ``tasks`` images: one for small sets, else up to 4 of the CPUs we may use
    (``SPGNET_WORKERS`` overrides). The output does not depend on it."""
    if "SPGNET_WORKERS" in os.environ:
        return max(1, int(os.environ["SPGNET_WORKERS"]))
    if tasks < 24:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def _run_tasks(function, tasks: list[tuple], progress) -> None:
    workers = _workers(len(tasks))
    if workers == 1:
        for task in tasks:
            function(*task)
            if progress is not None:
                progress.update(1)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(function, *task) for task in tasks]
        for future in futures:
            future.result()
            if progress is not None:
                progress.update(1)


def _write_cityscapes(tmp: Path, args: dict, counts: dict, progress) -> dict:
    from spgnet.data.synthetic.street import CITIES

    names, tasks = {}, []
    for split, count in counts.items():
        cities = CITIES[split]
        names[split] = []
        for i in range(count):
            city = cities[i % len(cities)]
            key = f"{city}_{i // len(cities):06d}_000019"
            for top in ("leftImg8bit", "gtFine"):
                (tmp / top / split / city).mkdir(parents=True, exist_ok=True)
            tasks.append((tmp, args, split, i, city, key))
            names[split].append(key)
    _run_tasks(_cityscapes_task, tasks, progress)
    return names


def _write_pascal(tmp: Path, args: dict, counts: dict, progress) -> dict:
    kind = args["kind"]
    label_dir = tmp / ("SegmentationClass" if kind == "voc" else "SegmentationPart")
    list_dir = tmp / "ImageSets" / ("Segmentation" if kind == "voc" else "Person")
    for folder in (tmp / "JPEGImages", label_dir, list_dir):
        folder.mkdir(parents=True, exist_ok=True)
    if args.get("num_aug"):
        (tmp / AUG_LABEL_DIR).mkdir()
    names, tasks = {}, []
    for split, count in counts.items():
        ids = [f"2012_{_VOC_ID_OFFSET[split] + i:06d}" for i in range(count)]
        tasks += [(tmp, args, split, i, name, label_dir) for i, name in enumerate(ids)]
        if count and split != "aug":
            (list_dir / f"{split}.txt").write_text("".join(f"{n}\n" for n in ids), encoding="utf-8")
        names[split] = ids
    if args.get("num_aug"):  # DeepLab's train_aug.txt: VOC train + SBD, no val image
        trainaug = names["train"] + names["aug"]
        (list_dir / AUG_LIST).write_text("".join(f"{n}\n" for n in trainaug), encoding="utf-8")
    _run_tasks(_pascal_task, tasks, progress)
    return names


def _write_folder(tmp: Path, args: dict, counts: dict, progress) -> dict:
    from spgnet.data.synthetic import folder

    names, tasks = {}, []
    for split, count in counts.items():
        names[split] = [f"{split}_{i:04d}" for i in range(count)]
        if count:
            (tmp / folder.IMAGE_DIR / split).mkdir(parents=True)
            if split != "test":
                (tmp / folder.LABEL_DIR / split).mkdir(parents=True)
        tasks += [(tmp, args, split, i, name) for i, name in enumerate(names[split])]
    text = folder.description_text(args["height"], args["width"], test=counts.get("test", 0) > 0)
    (tmp / "dataset.yaml").write_text(text, encoding="utf-8")
    _run_tasks(_folder_task, tasks, progress)
    return names


def generate(
    out: Path,
    kind: str = "cityscapes",
    seed: int = 0,
    num_train: int = 96,
    num_val: int = 24,
    num_test: int = 8,
    height: int = 256,
    width: int = 512,
    num_aug: int = 0,
) -> Path:
    """Write the synthetic set to ``out`` (atomically); returns ``out``. ``num_aug`` (kind voc):
    extra "SBD" images of the trainaug split."""
    out = Path(out)
    args = _arguments(kind, seed, num_train, num_val, num_test, height, width, num_aug)
    _check_arguments(args)
    _check_existing(out, args)
    counts = {"train": args["num_train"], "val": args["num_val"], "test": args["num_test"]}
    if args.get("num_aug"):
        counts["aug"] = args["num_aug"]
    progress = _progress(sum(counts.values()), f"make-synthetic {kind}")
    try:
        with atomic_dir(out) as tmp:
            writer = {"cityscapes": _write_cityscapes, "folder": _write_folder}.get(kind, _write_pascal)
            names = writer(tmp, args, counts, progress)
            manifest = {"tool": "spgnet make-synthetic", "format_version": FORMAT_VERSION, "arguments": args,
                        "counts": {s: len(n) for s, n in names.items()}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    finally:
        if progress is not None:
            progress.close()
    return out


def main(args) -> int:
    num_aug = getattr(args, "num_aug", 0)
    out = generate(Path(args.out), kind=args.kind, seed=args.seed, num_train=args.num_train,
                   num_val=args.num_val, num_test=args.num_test, height=args.height, width=args.width,
                   num_aug=num_aug)
    total = args.num_train + args.num_val + args.num_test + num_aug
    aug = f", {num_aug} extra trainaug (SBD-style; trainaug {args.num_train + num_aug})" if num_aug else ""
    print(f"wrote {total} {args.kind} images ({args.num_train} train, {args.num_val} val, {args.num_test} test{aug}) to {out}")
    return 0
