"""Reading files that other tools wrote: images with EXIF orientation, text lists with a BOM.

One place for every image, label and list the project reads, so training, evaluation and
inference see the same pixels:

- :func:`read_image`: any PNG/JPEG mode (RGB, RGBA, palette, grayscale, CMYK, 16-bit) as an RGB
  image, turned upright by its EXIF orientation tag (phone and camera pictures store the sensor's
  pixels and an orientation tag; PIL does not apply it on open).
- :func:`read_label`: the raw values of a single-channel (L or P) label PNG (or, for a folder data
  set's colour masks, the colours of an RGB one). A label carrying a
  non-identity EXIF orientation is rejected: label PNGs of the supported data sets never carry
  one, and whether a tool stored the pixels upright or as the sensor saw them cannot be told from
  the file, so it must be fixed at the source instead of guessed (see ``data/README.md``).
- :func:`read_lines` / :func:`read_numbered_lines`: a text list (split lists, VOC ``ImageSets``) whatever its BOM (UTF-8, or
  UTF-16 as Windows Notepad's "Unicode"), line ends (LF, CRLF, CR) or trailing blanks; blank
  lines are dropped.
- :class:`PartialReader`: an image or label file whose upright size is known before decoding and
  whose top rows can be decoded without the rest (training reads only the rows its crop needs).
- :func:`printable`: a path or name with invisible characters escaped, for error messages
  ("missing image 'JPEGImages/\\ufeff2007_000032.jpg'" instead of a name that looks right).

Every failure is a :class:`~spgnet.errors.SpgnetError` whose one-line message names the file.
This module imports neither torch nor the readers, so ``spgnet prepare-data`` starts quickly.
"""

from __future__ import annotations

import codecs
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from spgnet.errors import SpgnetError

#: EXIF tag 0x0112 (Orientation); 1 is upright, 2-8 flip and/or rotate (EXIF 2.32, Sec. 4.6.5).
EXIF_ORIENTATION = 0x0112

#: Characters no file name means to contain: the byte-order mark (U+FEFF), which Windows tools put
#: at the start of a file and which `cat`-ing two such files leaves inside one.
_INVISIBLE_IN_LINES = "\ufeff"


def printable(value: str | Path) -> str:
    """``value`` quoted, with invisible or non-ASCII characters escaped (Python's ``ascii``):
    ``printable("\\ufeffa.jpg") == "'\\\\ufeffa.jpg'"``. Used for every file name in an error."""
    return ascii(str(value))


def one_line(err: BaseException) -> str:
    """``"ErrorType: message"`` of an exception, on one line."""
    text = " ".join(str(err).split()) or err.__class__.__name__
    return f"{err.__class__.__name__}: {text}" if text != err.__class__.__name__ else text


def exif_orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1-8); 1 when it has none or an invalid one."""
    return _orientation(img.getexif)


def _orientation(getexif) -> int:
    try:
        value = int(getexif().get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError, SyntaxError, OSError):  # malformed EXIF blocks
        return 1
    return value if 1 <= value <= 8 else 1


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the top 8 of the 16 bits
        values = np.asarray(img, dtype=np.uint32)
        img = Image.fromarray((values >> 8).clip(0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        values = np.asarray(img, dtype=np.float32)
        img = Image.fromarray(values.clip(0, 255).astype(np.uint8), mode="L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: str | Path, *, with_orientation: bool = False):
    """The picture at ``path`` as an upright RGB :class:`PIL.Image.Image` (uint8 per channel).

    EXIF orientation is applied (``ImageOps.exif_transpose``, so width and height swap for
    orientations 5-8); transparent pixels are composited on black; 16-bit grayscale keeps its top
    8 bits (16-bit RGB likewise, by PIL). With ``with_orientation`` returns ``(image,
    orientation)`` where ``orientation`` is the EXIF value that was applied (1 = none).

    Raises :class:`SpgnetError` "'<path>': image not found" (the name as :func:`printable`
    shows it) or "<path>: unreadable or truncated image (<reason>)".
    """
    try:
        with Image.open(path) as img:
            orientation = exif_orientation(img)
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
            rgb = _to_rgb(upright)
            rgb.load()
    except FileNotFoundError:
        raise SpgnetError(f"{printable(path)}: image not found") from None
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for broken files
        raise SpgnetError(f"{path}: unreadable or truncated image ({one_line(err)})") from None
    return (rgb, orientation) if with_orientation else rgb


#: Modes a colour-mask label may be stored in (read as its RGB colours; an alpha channel is dropped).
COLOUR_LABEL_MODES = ("RGB", "RGBA", "P", "L")


def read_label(path: str | Path, *, colour: bool = False) -> np.ndarray:
    """The raw values of the single-channel (L or P) label PNG at ``path``: HxW uint8; with
    ``colour``, the colours of a colour-mask label (RGB, RGBA, palette or grey): HxWx3 uint8.

    Raises :class:`SpgnetError` naming the file when it is missing, unreadable or truncated, not
    single-channel (not of :data:`COLOUR_LABEL_MODES` with ``colour``), or carries a non-identity
    EXIF orientation (see the module docstring).
    """
    modes = COLOUR_LABEL_MODES if colour else ("L", "P")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            values = None
            if mode in modes:
                values = np.array(img.convert("RGB") if colour and mode != "RGB" else img, dtype=np.uint8)
            orientation = exif_orientation(img)
    except FileNotFoundError:
        raise SpgnetError(f"{printable(path)}: label not found") from None
    except Exception as err:  # as in read_image
        raise SpgnetError(f"{path}: unreadable or truncated label ({one_line(err)})") from None
    if values is None:
        expected = "an 8-bit colour (RGB, RGBA or P) PNG" if colour else "a single-channel (L or P) PNG"
        raise SpgnetError(f"{path}: label image has mode {mode}, expected {expected}")
    if orientation != 1:
        raise SpgnetError(
            f"{path}: label PNG carries EXIF orientation {orientation}; labels are read as stored, "
            "so store it upright (matching its image as displayed) without an orientation tag"
        )
    return values


def read_numbered_lines(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, line)`` of every non-blank line of the text file at ``path`` (numbers
    count from 1 over all lines, blank ones included, as an editor shows them); each line stripped
    of blanks and byte-order marks.

    UTF-8 with or without a BOM, or UTF-16 with a BOM; any line ends (LF, CRLF, CR). Raises
    :class:`SpgnetError` naming the file when it is missing or not text in those encodings.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpgnetError(f"{printable(path)}: file not found") from None
    except OSError as err:
        raise SpgnetError(f"{path}: unreadable ({one_line(err)})") from None
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpgnetError(
            f"{printable(path)}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})"
        ) from None
    lines = ((n, line.replace(_INVISIBLE_IN_LINES, "").strip()) for n, line in enumerate(text.splitlines(), 1))
    return [(n, line) for n, line in lines if line]


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of :func:`read_numbered_lines`, without their numbers."""
    return [line for _, line in read_numbered_lines(path)]


#: PNG chunk framing (PNG spec, Sec. 5.3): 4-byte big-endian length, 4-byte type, data, 4-byte CRC.
_CHUNK = struct.Struct(">I4s")


def png_pixel_stream(img: Image.Image, modes: tuple[str, ...]) -> bytes | None:
    """The zlib stream of a PNG whose top rows can be decoded alone and need no turning, or None.

    This is the one place that decides whether a partial decode is right. It is, and the returned
    bytes are the file's IDAT payloads joined, when ``img`` (just opened, not loaded) is a
    single-frame, non-interlaced 8-bit PNG of one of ``modes``, without a transparency key, whose
    chunks after the pixels are only IEND (so every metadata chunk has been read at opening) and
    whose EXIF orientation, as Pillow reads it from those chunks (eXIf, raw EXIF profile or XMP
    ``tiff:Orientation``), is 1. PNG rows are filtered and compressed as one stream, top to
    bottom, so the first k rows need only the start of the stream. Anything else (JPEG, a rotated
    or interlaced PNG, metadata stored after the pixels, an unparsable file) gets None: read it
    whole with :func:`read_image` / :func:`read_label`.
    """
    if (img.format != "PNG" or img.mode not in modes or len(img.tile) != 1 or img.tile[0].args != img.mode
            or img.info.get("interlace") or "transparency" in img.info or getattr(img, "n_frames", 1) != 1):
        return None
    assert img.fp is not None
    img.fp.seek(img.tile[0].offset - _CHUNK.size)
    data = memoryview(img.fp.read())
    parts, pos = [], 0
    while pos + _CHUNK.size <= len(data):
        length, kind = _CHUNK.unpack_from(data, pos)
        if kind != b"IDAT":
            break
        parts.append(data[pos + _CHUNK.size:pos + _CHUNK.size + length])
        pos += _CHUNK.size + length + 4
    if pos + _CHUNK.size > len(data) or _CHUNK.unpack_from(data, pos)[1] != b"IEND":
        return None
    # PngImageFile.getexif would decode the pixels to look for chunks after them; there are none,
    # so Pillow's reading of what was parsed at opening is the whole answer.
    return b"".join(parts) if _orientation(lambda: Image.Image.getexif(img)) == 1 else None


class PartialReader:
    """An image (or, with ``label=True``, a label) file: its upright ``size`` (width, height) known
    before decoding and its top rows read without decoding the rest (:meth:`read`).

    Where :func:`png_pixel_stream` allows it (Cityscapes' PNGs), opening reads the compressed bytes
    only and ``read(rows)`` inflates the first ``rows`` rows, stopping there; the pixels equal
    those of :func:`read_image` / :func:`read_label` row for row. Any other file is read whole on
    opening by those functions (EXIF orientation applied, errors as they raise them) and
    ``read(rows)`` returns its top rows.

    Raises :class:`SpgnetError` naming the file when it is missing, unreadable or truncated (a
    truncated PNG may only show when :meth:`read` reaches the missing rows).
    """

    def __init__(self, path: str | Path, *, label: bool = False, colour: bool = False):
        self.path = path
        self.label = label
        self.colour = colour and label  # a colour-mask label: read() gives HxWx3 colours
        self._stream = self._whole = None
        #: The EXIF orientation applied (1 where a partial decode is used: see png_pixel_stream).
        self.orientation = 1
        modes = (("RGB",) if self.colour else ("L", "P")) if label else ("RGB", "L")
        try:
            with Image.open(path) as img:
                self._stream = png_pixel_stream(img, modes)
                self.mode, self.size = img.mode, img.size
        except Exception:  # missing or unreadable: the whole-file readers say which, below
            self._stream = None
        if self._stream is None:
            if label:
                self._whole = read_label(path, colour=self.colour)
                self.size = (self._whole.shape[1], self._whole.shape[0])
            else:
                self._whole, self.orientation = read_image(path, with_orientation=True)
                self.size = self._whole.size

    def read(self, rows: int | None = None):
        """The top ``rows`` rows (all when None or more than the height): an RGB PIL image, or for
        a label the HxW uint8 array of its raw values (a colour label: HxWx3 colours)."""
        width, height = self.size
        rows = height if rows is None else max(0, min(int(rows), height))
        if self._whole is not None:
            if self.label:
                return self._whole[:rows]
            return self._whole if rows == height else self._whole.crop((0, 0, width, rows))
        try:
            part = Image.frombytes(self.mode, (width, rows), self._stream, "zip", self.mode)
        except Exception as err:  # truncated or corrupt stream (ValueError, OSError)
            what = "label" if self.label else "image"
            raise SpgnetError(f"{self.path}: unreadable or truncated {what} ({one_line(err)})") from None
        return np.asarray(part) if self.label else _to_rgb(part)
