"""Files from other tools (issue 12.5): EXIF-oriented JPEGs, any PIL mode, split lists with a
BOM / CRLF / blank lines, and missing-file messages that show invisible characters.

Through :mod:`spgnet.data.io` alone, then through the readers (``build_dataset`` /
``SegmentationDataset``), the pipeline's own lists and ``spgnet prepare-data``.
"""

from __future__ import annotations

import codecs
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spgnet.cli import main as cli
from spgnet.data import build_dataset
from spgnet.data.io import (EXIF_ORIENTATION, PartialReader, png_pixel_stream, printable, read_image, read_label,
                            read_lines, read_numbered_lines)
from spgnet.data.labels import voc_palette
from spgnet.errors import SpgnetError

BLOCK = 16  # JPEG-friendly blocks of one colour each; every orientation moves them differently
COLOURS = np.array([(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30), (30, 230, 230), (230, 30, 230)],
                   dtype=np.uint8)

# How a viewer turns the stored pixels upright for each EXIF orientation value (EXIF 2.32, Table
# "Orientation": 2 mirrors horizontally, 6 rotates 90 degrees clockwise, ...) and the inverse, which
# a camera applied when it stored them. Written with numpy, independently of PIL.
DISPLAY = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.rot90(np.fliplr(a), 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(np.fliplr(a), -1),
    8: lambda a: np.rot90(a, 1),
}
STORE = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, 1),
    7: lambda a: np.rot90(np.swapaxes(a, 0, 1), 2),
    8: lambda a: np.rot90(a, -1),
}


def _blocks(rows: int, cols: int) -> np.ndarray:
    """rows x cols block ids (0..5), distinct per block, as an image-sized int array."""
    ids = np.arange(rows * cols).reshape(rows, cols) % len(COLOURS)
    return np.kron(ids, np.ones((BLOCK, BLOCK), dtype=np.int64))


def _save_jpeg(rgb: np.ndarray, path: Path, orientation: int | None) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(np.ascontiguousarray(rgb)).save(path, "JPEG", quality=95, exif=exif)


def _block_ids(image: Image.Image) -> np.ndarray:
    """The colour id of each block of an RGB image (nearest of COLOURS to the block's mean)."""
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    means = a.reshape(h, BLOCK, w, BLOCK, 3).mean(axis=(1, 3))
    return np.linalg.norm(means[:, :, None, :] - COLOURS[None, None].astype(np.float64), axis=-1).argmin(-1)


def test_store_and_display_tables_are_inverse():
    a = np.arange(6).reshape(2, 3)
    assert {k: DISPLAY[k](STORE[k](a)).tolist() for k in DISPLAY} == {k: a.tolist() for k in DISPLAY}
    assert len({STORE[k](a).tobytes() + bytes(STORE[k](a).shape) for k in STORE}) == 8


@pytest.mark.parametrize("shape", [(2, 2), (2, 3)], ids=["square", "non-square"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_turns_every_exif_orientation_upright(tmp_path, orientation, shape):
    upright = _blocks(*shape)
    path = tmp_path / "photo.jpg"
    _save_jpeg(COLOURS[STORE[orientation](upright)], path, orientation)
    image, applied = read_image(path, with_orientation=True)
    assert applied == orientation and image.mode == "RGB"
    assert image.size == (upright.shape[1], upright.shape[0])
    assert np.array_equal(_block_ids(image), upright[::BLOCK, ::BLOCK])


def test_a_jpeg_without_exif_or_with_a_bad_value_is_read_as_stored(tmp_path):
    stored = _blocks(2, 3)
    for name, orientation in (("none.jpg", None), ("zero.jpg", 0), ("nine.jpg", 9)):
        _save_jpeg(COLOURS[stored], tmp_path / name, orientation)
        image, applied = read_image(tmp_path / name, with_orientation=True)
        assert applied == 1 and np.array_equal(_block_ids(image), stored[::BLOCK, ::BLOCK]), name


def _png_rgb16(values: np.ndarray, path: Path) -> None:
    """A 16-bit-per-channel RGB PNG (colour type 2, depth 16), which PIL cannot write itself."""
    h, w, _ = values.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_read_image_gives_rgb_uint8_for_every_mode(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (12, 16), dtype=np.uint8)

    def read(name):
        image = read_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (16, 12), name
        return np.asarray(image).astype(np.int64)

    # 16-bit grayscale (I;16): the top 8 bits, in all three channels
    gray16 = gray.astype(np.uint16) * 256 + 255
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.array_equal(read("gray16.png"), np.repeat(gray[..., None], 3, -1))
    # 16-bit RGB: the top 8 bits
    _png_rgb16(rgb.astype(np.uint16) * 256 + 7, tmp_path / "rgb16.png")
    assert np.array_equal(read("rgb16.png"), rgb)
    # 8-bit grayscale PNG and JPEG
    Image.fromarray(gray).save(tmp_path / "gray.png")
    assert np.array_equal(read("gray.png"), np.repeat(gray[..., None], 3, -1))
    Image.fromarray(np.full((12, 16), 200, np.uint8)).save(tmp_path / "gray.jpg", quality=95)
    assert np.abs(read("gray.jpg") - 200).max() <= 2
    # CMYK JPEG (print workflows): back to the RGB it was made from, up to JPEG error
    Image.fromarray(np.full((12, 16, 3), (200, 40, 90), np.uint8)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    assert np.abs(read("cmyk.jpg") - (200, 40, 90)).max() <= 4
    # palette PNG, without and with a transparent index (transparent pixels become black)
    palette = Image.fromarray(gray % 4, mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255])
    palette.save(tmp_path / "palette.png")
    lut = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)])
    assert np.array_equal(read("palette.png"), lut[gray % 4])
    palette.save(tmp_path / "palette-t.png", transparency=3)
    assert np.array_equal(read("palette-t.png"), np.where((gray % 4 == 3)[..., None], 0, lut[gray % 4]))
    # RGBA: composited on black (alpha 0 -> black, 255 -> the colour)
    alpha = np.where(gray > 127, 255, 0).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    assert np.array_equal(read("rgba.png"), np.where((alpha == 255)[..., None], rgb, 0))


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(SpgnetError, match=r"broken.jpg: unreadable or truncated image \(") as err:
        read_image(tmp_path / "broken.jpg")
    assert "\n" not in str(err.value)
    with pytest.raises(SpgnetError) as err:
        read_image(tmp_path / "\ufeffphoto.jpg")
    assert str(err.value) == f"'{tmp_path}/\\ufeffphoto.jpg': image not found"


def test_read_label_rejects_other_modes_and_exif_orientation(tmp_path):
    values = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16) % 7
    Image.fromarray(values).save(tmp_path / "ok.png")
    assert np.array_equal(read_label(tmp_path / "ok.png"), values)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(values).save(tmp_path / "turned.png", exif=exif)
    with pytest.raises(SpgnetError, match=r"turned.png: label PNG carries EXIF orientation 6; .* without an orientation tag"):
        read_label(tmp_path / "turned.png")
    exif[EXIF_ORIENTATION] = 1
    Image.fromarray(values).save(tmp_path / "upright.png", exif=exif)
    assert np.array_equal(read_label(tmp_path / "upright.png"), values)
    Image.fromarray(values).convert("RGB").save(tmp_path / "rgb.png")
    with pytest.raises(SpgnetError, match="rgb.png: label image has mode RGB, expected a single-channel"):
        read_label(tmp_path / "rgb.png")
    with pytest.raises(SpgnetError, match="'.*gone.png': label not found"):
        read_label(tmp_path / "gone.png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stream_allowed(path: Path, modes=("RGB", "L", "P")) -> bool:
    with Image.open(path) as img:
        return png_pixel_stream(img, modes) is not None


def test_partial_reader_decodes_the_top_rows_of_plain_pngs(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    values = rng.integers(0, 30, (37, 23), dtype=np.uint8)
    Image.fromarray(values).save(tmp_path / "l.png")
    palette = Image.frombytes("P", (23, 37), values.tobytes())
    palette.putpalette(voc_palette())
    palette.save(tmp_path / "p.png")
    assert all(_stream_allowed(tmp_path / name) for name in ("rgb.png", "l.png", "p.png"))
    image = PartialReader(tmp_path / "rgb.png")
    assert image.size == (23, 37) and image.orientation == 1
    for rows in (1, 17, 37, 99, None):
        top = image.read(rows)
        assert top.mode == "RGB" and np.array_equal(np.asarray(top), rgb[: rows or 37])
    for name in ("l.png", "p.png"):
        label = PartialReader(tmp_path / name, label=True)
        assert np.array_equal(label.read(9), values[:9]) and np.array_equal(label.read(), read_label(tmp_path / name))
    assert np.array_equal(np.asarray(PartialReader(tmp_path / "l.png").read(5)), np.repeat(values[:5, :, None], 3, 2))


def test_partial_reader_reads_turned_pictures_whole_and_upright(tmp_path):
    stored = _blocks(3, 2)
    rgb = COLOURS[STORE[6](stored)]
    _save_jpeg(rgb, tmp_path / "six.jpg", 6)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(rgb)).save(tmp_path / "six.png", exif=exif)
    # The same PNG with its eXIf chunk after the pixels, where only a full decode finds it.
    plain = (tmp_path / "plain.png")
    Image.fromarray(np.ascontiguousarray(rgb)).save(plain)
    data = plain.read_bytes()
    (tmp_path / "late.png").write_bytes(data[:-12] + _chunk(b"eXIf", exif.tobytes()) + data[-12:])
    assert _stream_allowed(plain)
    for name in ("six.jpg", "six.png", "late.png"):
        assert not _stream_allowed(tmp_path / name)
        reader = PartialReader(tmp_path / name)
        upright = read_image(tmp_path / name)
        assert reader.size == upright.size == (stored.shape[1], stored.shape[0]) and reader.orientation == 6
        assert np.array_equal(np.asarray(reader.read(BLOCK)), np.asarray(upright)[:BLOCK])
        assert np.array_equal(_block_ids(upright), stored[::BLOCK, ::BLOCK])
    Image.fromarray(stored.astype(np.uint8)).save(plain)
    data = plain.read_bytes()
    (tmp_path / "late_label.png").write_bytes(data[:-12] + _chunk(b"eXIf", exif.tobytes()) + data[-12:])
    with pytest.raises(SpgnetError, match="late_label.png: label PNG carries EXIF orientation 6"):
        PartialReader(tmp_path / "late_label.png", label=True)


def test_partial_reader_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(SpgnetError, match="'.*gone.png': image not found"):
        PartialReader(tmp_path / "gone.png")
    rgb = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SpgnetError, match=r"cut.png: unreadable or truncated image \("):
        PartialReader(tmp_path / "cut.png")
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start:start + 4])[0]
    garbage = bytes(np.random.default_rng(2).integers(0, 256, length, dtype=np.uint8))
    (tmp_path / "bad.png").write_bytes(data[:start] + _chunk(b"IDAT", garbage) + data[start + 12 + length:])
    reader = PartialReader(tmp_path / "bad.png")  # only the headers are read on opening
    with pytest.raises(SpgnetError, match=r"bad.png: unreadable or truncated image \("):
        reader.read(10)


def test_read_lines_ignores_bom_line_ends_and_blanks(tmp_path):
    expected = ["2007_000032", "2007_000039 x", "2007_000042"]
    variants = {
        "lf": b"2007_000032\n2007_000039 x\n2007_000042\n",
        "bom-crlf": codecs.BOM_UTF8 + b"2007_000032\r\n2007_000039 x\r\n\r\n2007_000042\r\n",
        "cr": b"2007_000032\r2007_000039 x\r2007_000042",
        "blanks": b"  2007_000032 \t\n\n\t\n2007_000039 x  \n2007_000042\n\n\n",
        "utf16": "2007_000032\r\n2007_000039 x\r\n2007_000042\r\n".encode("utf-16"),
        "two-boms": codecs.BOM_UTF8 + b"2007_000032\n" + codecs.BOM_UTF8 + b"2007_000039 x\n2007_000042\n",
    }
    for name, data in variants.items():
        (tmp_path / name).write_bytes(data)
        assert read_lines(tmp_path / name) == expected, name
    assert read_numbered_lines(tmp_path / "blanks") == [(1, "2007_000032"), (4, "2007_000039 x"), (5, "2007_000042")]
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    with pytest.raises(SpgnetError, match=r"latin1': not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_lines(tmp_path / "latin1")
    with pytest.raises(SpgnetError, match="'.*none.txt': file not found"):
        read_lines(tmp_path / "none.txt")


def test_printable_escapes_invisible_characters():
    assert printable("a.jpg") == "'a.jpg'"
    assert printable(Path("JPEGImages") / "\ufeff2007.jpg") == "'JPEGImages/\\ufeff2007.jpg'"
    assert printable("x\u200by\u00a0z\t") == "'x\\u200by\\xa0z\\t'"


# ------------------------------------------------------------------------------------------------
# Through the readers, the pipeline's lists and prepare-data
# ------------------------------------------------------------------------------------------------


def _voc_tree(root: Path, images: dict[str, tuple[tuple[int, int], int | None]]) -> Path:
    """VOC2012 layout; ``images[id] = ((block rows, block cols), EXIF orientation or None)``. The
    label is upright; the JPEG stores the pixels as a camera with that orientation would."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, (shape, orientation) in images.items():
        upright = _blocks(*shape)
        stored = STORE[orientation or 1](upright)
        _save_jpeg(COLOURS[stored], root / "JPEGImages" / f"{name}.jpg", orientation)
        label = Image.fromarray((upright + 1).astype(np.uint8), mode="P")  # classes 1..6
        label.putpalette(voc_palette())
        label.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets/Segmentation/train.txt").write_text("".join(f"{n}\n" for n in images))
    (root / "ImageSets/Segmentation/val.txt").write_text(f"{next(iter(images))}\n")
    return root


PHOTOS = {"square6": ((2, 2), 6), "wide8": ((2, 3), 8), "tall5": ((3, 2), 5), "plain": ((2, 3), None)}


def test_exif_photos_are_read_upright_and_match_their_labels(tmp_path):
    dataset = build_dataset("voc", _voc_tree(tmp_path / "VOC2012", PHOTOS), "train")
    assert [r.name for r in dataset.records] == list(PHOTOS)
    for index in range(len(dataset)):
        sample = dataset.load(index)
        assert sample["image"].size == (sample["label"].shape[1], sample["label"].shape[0])
        # every block has the colour of its label's class: the image is upright like the label
        assert np.array_equal(_block_ids(sample["image"]), sample["label"][::BLOCK, ::BLOCK] - 1), sample["name"]
        item = dataset[index]
        assert tuple(item["image"].shape[1:]) == tuple(item["label"].shape)


def test_prepare_data_reports_exif_orientations_and_upright_size_mismatches(tmp_path, capsys):
    root = _voc_tree(tmp_path / "VOC2012", PHOTOS)
    assert cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(tmp_path / "lists")]) == 0
    out = capsys.readouterr().out
    assert "(train 4, val 1 images; 4 with a non-identity EXIF orientation, applied on read)" in out
    summary = json.loads((tmp_path / "lists" / "summary.json").read_text())
    assert summary["exif_oriented"] == 4  # train 3 + val 1 (square6 is in both)
    assert (summary["splits"]["train"]["exif_oriented"], summary["splits"]["val"]["exif_oriented"]) == (3, 1)
    # a label drawn on the pixels as stored (not as displayed) no longer fits its turned image
    stored = STORE[8](_blocks(2, 3)).astype(np.uint8)
    label = Image.fromarray(stored + 1, mode="P")
    label.putpalette(voc_palette())
    label.save(root / "SegmentationClass" / "wide8.png")
    assert cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"{root / 'SegmentationClass' / 'wide8.png'}: label is 32x48 but image "
                      f"{root / 'JPEGImages' / 'wide8.jpg'} is 48x32 after applying its EXIF orientation 8")
    assert not (tmp_path / "bad").exists()


def test_voc_and_person_part_lists_from_windows_tools(tmp_path):
    root = _voc_tree(tmp_path / "VOC2012", {"2007_000032": ((2, 2), None), "2007_000039": ((2, 2), None)})
    lists = root / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_bytes(codecs.BOM_UTF8 + b"2007_000032\r\n2007_000039 \r\n\r\n")
    assert [r.name for r in build_dataset("voc", root, "train").records] == ["2007_000032", "2007_000039"]
    # DeepLab-style path pairs, as Person-Part's lists are, with a BOM and CRLF
    person = tmp_path / "person_part"
    (person / "ImageSets" / "Person").mkdir(parents=True)
    for folder, target in (("JPEGImages", "JPEGImages"), ("SegmentationPart", "SegmentationClass")):
        (person / folder).symlink_to(root / target, target_is_directory=True)
    (person / "ImageSets/Person/train.txt").write_bytes(
        codecs.BOM_UTF8 + b"/JPEGImages/2007_000032.jpg /SegmentationPart/2007_000032.png\r\n")
    records = build_dataset("person_part", person, "train").records
    assert [(r.image, r.label) for r in records] == [
        (person / "JPEGImages/2007_000032.jpg", person / "SegmentationPart/2007_000032.png")]


def test_a_bom_list_no_longer_names_an_existing_image_as_missing(tmp_path, capsys):
    root = _voc_tree(tmp_path / "VOC2012", {"2007_000032": ((2, 2), None)})
    (root / "ImageSets/Segmentation/train.txt").write_bytes(codecs.BOM_UTF8 + b"2007_000032\r\n")
    assert cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(tmp_path / "lists")]) == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "lists" / "train.txt").read_text() == "JPEGImages/2007_000032.jpg\tSegmentationClass/2007_000032.png\n"


def test_a_missing_image_message_escapes_invisible_characters(tmp_path, capsys):
    root = _voc_tree(tmp_path / "VOC2012", {"2007_000032": ((2, 2), None)})
    (root / "ImageSets/Segmentation/train.txt").write_text("2007\u200b_000032\n", encoding="utf-8")
    assert cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(tmp_path / "lists")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"'{root}/JPEGImages/2007\\u200b_000032.jpg': missing image "
                      f"(listed in {root}/ImageSets/Segmentation/train.txt:1)")


def test_the_pipeline_lists_edited_by_another_tool_still_read(tmp_path, capsys):
    root = _voc_tree(tmp_path / "VOC2012", {"2007_000032": ((2, 2), 6), "2007_000039": ((2, 3), None)})
    _save_jpeg(COLOURS[_blocks(2, 2)], root / "JPEGImages" / "2008_000001.jpg", None)  # test: no label
    (root / "ImageSets/Segmentation/test.txt").write_text("2008_000001\n")
    lists = tmp_path / "lists"
    assert cli(["prepare-data", "--dataset", "voc", "--root", str(root), "--out", str(lists)]) == 0
    expected = {split: [(r.image, r.label) for r in build_dataset("voc", root, split, list_dir=lists).records]
                for split in ("train", "test")}
    assert expected["test"] == [(root / "JPEGImages/2008_000001.jpg", None)]
    for split in ("train", "test"):  # Notepad: BOM, CRLF, a trailing blank line
        text = (lists / f"{split}.txt").read_text()
        (lists / f"{split}.txt").write_bytes(codecs.BOM_UTF8 + text.replace("\n", "\r\n").encode() + b"\r\n")
        dataset = build_dataset("voc", root, split, list_dir=lists)
        assert [(r.image, r.label) for r in dataset.records] == expected[split]
    sample = build_dataset("voc", root, "train", list_dir=lists).load(0)  # the EXIF photo, upright
    assert np.array_equal(_block_ids(sample["image"]), sample["label"][::BLOCK, ::BLOCK] - 1)
    # a name that became invisibly different is named, escaped, with its list line
    (lists / "train.txt").write_text("JPEGImages/2007_000032.jpg\tSegmentationClass/2007_000032.png\n"
                                     "\n"
                                     "JPEGImages/2007_000039\u200b.jpg\tSegmentationClass/2007_000039.png\n")
    with pytest.raises(SpgnetError) as err:
        build_dataset("voc", root, "train", list_dir=lists)
    assert str(err.value) == f"'{root}/JPEGImages/2007_000039\\u200b.jpg': missing image (listed in {lists}/train.txt:3)"
