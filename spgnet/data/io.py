"""Reading files that other tools wrote: images with EXIF orientation, text lists with a BOM.

One place for every image and list the project reads, so training, evaluation and inference see
the same pixels:

- :func:`read_image`: any PNG/JPEG mode (RGB, RGBA, palette, grayscale, CMYK, 16-bit) as an RGB
  image, turned upright by its EXIF orientation tag (phone and camera pictures store the sensor's
  pixels and an orientation tag; PIL does not apply it on open).
- :func:`read_lines`: a text list (split lists, VOC ``ImageSets``) whatever its UTF-8 BOM, line
  ends (LF, CRLF, CR) or trailing blanks; blank lines are dropped.
- :func:`printable`: a path or name with invisible characters escaped, for error messages
  ("missing image 'JPEGImages/\\ufeff2007_000032.jpg'" instead of a name that looks right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

#: EXIF tag 0x0112 (Orientation); 1 is upright, 2-8 flip and/or rotate.
EXIF_ORIENTATION = 0x0112


def exif_orientation(img: Image.Image) -> int:
    """The image's EXIF orientation (1-8); 1 when it has none or an invalid one."""
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1))
    except (TypeError, ValueError, SyntaxError):  # malformed EXIF blocks
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
    return img.convert("RGB")


def read_image(path: str | Path, *, with_orientation: bool = False):
    """The picture at ``path`` as an upright RGB :class:`PIL.Image.Image` (uint8 per channel).

    EXIF orientation is applied (``ImageOps.exif_transpose``); transparent pixels are composited
    on black; 16-bit grayscale keeps its top 8 bits. With ``with_orientation`` returns
    ``(image, orientation)`` where ``orientation`` is the EXIF value that was applied (1 = none).
    Raises ``OSError``/``PIL.UnidentifiedImageError`` for unreadable files (callers name the file).
    """
    with Image.open(path) as img:
        orientation = exif_orientation(img)
        upright = ImageOps.exif_transpose(img) if orientation != 1 else img
        rgb = _to_rgb(upright)
        rgb.load()
    return (rgb, orientation) if with_orientation else rgb


def read_lines(path: str | Path) -> list[str]:
    """Non-blank lines of the text file at ``path``, stripped; UTF-8 with or without a BOM,
    any line ends. ``FileNotFoundError`` propagates (callers name the file)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    return [line.strip() for line in text.splitlines() if line.strip()]


def printable(value: str | Path) -> str:
    """``value`` quoted, with invisible or non-ASCII characters escaped (Python's ``ascii``)."""
    return ascii(str(value))
