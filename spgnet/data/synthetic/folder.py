"""A synthetic folder data set (``spgnet make-synthetic --kind folder``): a data set of your own's
layout, described by its ``dataset.yaml`` (:mod:`spgnet.config.description`, ``docs/own-data.md``).

Five classes (:data:`CLASSES`: background, road, car, tree, sky) in colour-mask labels
(``label_encoding: rgb``, each class its :data:`PALETTE` colour) with an ignore colour
(:data:`IGNORE_COLOR`) on every car's outline, JPEG images of slightly different, non-square sizes
(the first of each split at ``--height x --width``, the others up to 16 px narrower and 8 px
lower), and a test split without labels::

    <out>/dataset.yaml
    <out>/images/{train,val,test}/<split>_NNNN.jpg
    <out>/labels/{train,val}/<split>_NNNN.png          RGB colour masks

A scene is a street seen from the road: sky above a horizon, a skyline of buildings
(background, with window grids), the road narrowing to a vanishing point (lane dashes), trees on
both sides (a trunk and a blotchy crown) and cars on the road, smaller towards the horizon. Every
class has its own position, shape and texture, so a small network beats the majority class after
a few dozen iterations.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from spgnet.data.labels import IGNORE_INDEX

CLASSES = ("background", "road", "car", "tree", "sky")
BACKGROUND, ROAD, CAR, TREE, SKY = range(len(CLASSES))
PALETTE = ((70, 70, 70), (128, 64, 128), (0, 0, 142), (107, 142, 35), (70, 130, 180))
IGNORE_COLOR = (0, 0, 0)
IMAGE_SUFFIX = ".jpg"
LABEL_SUFFIX = ".png"
IMAGE_DIR, LABEL_DIR = "images", "labels"
#: The most an image is narrower / lower than ``--width`` / ``--height`` (in 4 px steps).
SHRINK_W, SHRINK_H = 16, 8

_BUILDING_COLOURS = [(150, 140, 130), (120, 110, 100), (170, 160, 140), (110, 100, 95), (140, 125, 110)]
_CAR_COLOURS = [(200, 30, 30), (30, 60, 200), (230, 200, 40), (235, 235, 235), (20, 20, 25), (40, 150, 60)]
_GROUND = (150, 140, 110)


def description_text(height: int, width: int, test: bool) -> str:
    """The ``dataset.yaml`` of the generated set."""
    palette = ", ".join(f"[{r}, {g}, {b}]" for r, g, b in PALETTE)
    lines = [
        "# A synthetic folder data set written by `spgnet make-synthetic --kind folder` (docs/own-data.md).",
        f"classes: [{', '.join(CLASSES)}]",
        f"palette: [{palette}]",
        "label_encoding: rgb",
        f"ignore_color: [{', '.join(str(c) for c in IGNORE_COLOR)}]",
        f"image_suffix: {IMAGE_SUFFIX}",
        f"label_suffix: {LABEL_SUFFIX}",
        f"image_size: [{height}, {width}]",
        "splits:",
        f"  train: {{images: {IMAGE_DIR}/train, labels: {LABEL_DIR}/train}}",
        f"  val: {{images: {IMAGE_DIR}/val, labels: {LABEL_DIR}/val}}",
    ]
    if test:
        lines.append(f"  test: {{images: {IMAGE_DIR}/test}}")
    return "\n".join(lines) + "\n"


def colour_lut() -> np.ndarray:
    """``uint8 [256, 3]``: a class value's colour in the masks (255: the ignore colour)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(PALETTE)] = PALETTE
    lut[IGNORE_INDEX] = IGNORE_COLOR
    return lut


def sample_size(rng: np.random.Generator, height: int, width: int, index: int) -> tuple[int, int]:
    """(height, width) of image ``index``: the first at full size, the others a little smaller."""
    if index == 0:
        return height, width
    return height - 4 * int(rng.integers(0, SHRINK_H // 4 + 1)), width - 4 * int(rng.integers(0, SHRINK_W // 4 + 1))


def _jitter(rng, colour, amount: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.asarray(colour, float) + rng.uniform(-amount, amount, 3), 0, 255))


class _Canvas:
    """The label (class values) and the flat colours, drawn in lockstep, later on top."""

    def __init__(self, height: int, width: int):
        self.label = Image.new("L", (width, height), BACKGROUND)
        self.image = Image.new("RGB", (width, height), _GROUND)
        self._label, self._image = ImageDraw.Draw(self.label), ImageDraw.Draw(self.image)

    def polygon(self, points, value: int, colour) -> None:
        points = [(float(x), float(y)) for x, y in points]
        self._label.polygon(points, fill=value)
        self._image.polygon(points, fill=colour)

    def rectangle(self, box, value: int | None, colour) -> None:
        box = [float(v) for v in box]
        if value is not None:
            self._label.rectangle(box, fill=value)
        self._image.rectangle(box, fill=colour)

    def ellipse(self, box, value: int, colour) -> None:
        box = [float(v) for v in box]
        self._label.ellipse(box, fill=value)
        self._image.ellipse(box, fill=colour)

    def outline(self, points, value: int) -> None:
        self._label.line([(float(x), float(y)) for x, y in points] + [tuple(map(float, points[0]))], fill=value, width=1)


def make_folder_sample(rng: np.random.Generator, height: int, width: int) -> tuple[Image.Image, Image.Image]:
    """(RGB image, RGB colour-mask label) of one street scene of ``height x width`` pixels."""
    canvas = _Canvas(height, width)
    horizon = rng.uniform(0.32, 0.45) * height
    canvas.rectangle((0, 0, width, horizon), SKY, _jitter(rng, (110, 160, 220), 20))
    x = -rng.uniform(0, 0.1) * width  # the skyline, left to right
    while x < width:
        wide = rng.uniform(0.12, 0.3) * width
        top = rng.uniform(0.1, 0.75) * horizon
        colour = _jitter(rng, _BUILDING_COLOURS[int(rng.integers(len(_BUILDING_COLOURS)))], 15)
        canvas.rectangle((x, top, x + wide, horizon + 1), BACKGROUND, colour)
        dark = tuple(int(c * 0.55) for c in colour)
        step = max(4.0, wide / 5)
        for wx in np.arange(x + step / 3, x + wide - step / 2, step):  # windows: image only
            for wy in np.arange(top + step / 3, horizon - step / 2, step):
                canvas.rectangle((wx, wy, wx + step / 2.5, wy + step / 2.5), None, dark)
        x += wide + rng.uniform(0, 0.08) * width
    vx = rng.uniform(0.4, 0.6) * width
    left, right = rng.uniform(-0.15, 0.12) * width, rng.uniform(0.88, 1.15) * width
    canvas.polygon([(vx - 0.02 * width, horizon), (vx + 0.02 * width, horizon), (right, height), (left, height)],
                   ROAD, _jitter(rng, (85, 85, 90), 10))
    depth = height - horizon
    for t0 in np.arange(0.08, 1.0, 0.16):  # lane dashes along the middle: road (image only)
        t1 = t0 + 0.07
        xa, xb = vx + (left + right - 2 * vx) / 2 * t0, vx + (left + right - 2 * vx) / 2 * t1
        ya, yb = horizon + depth * t0, horizon + depth * t1
        half_a, half_b = 0.004 * width + 0.01 * width * t0, 0.004 * width + 0.01 * width * t1
        canvas._image.polygon([(xa - half_a, ya), (xa + half_a, ya), (xb + half_b, yb), (xb - half_b, yb)], fill=(225, 225, 215))
    for side in (-1, 1):  # trees on both sides of the road
        for _ in range(int(rng.integers(1, 3))):
            base_y = horizon + rng.uniform(0.15, 0.6) * depth
            scale = (base_y - horizon) / depth
            cx = (rng.uniform(0.02, 0.22) if side < 0 else rng.uniform(0.78, 0.98)) * width
            trunk_h, trunk_w = (0.5 + scale) * 0.35 * height, max(2.0, 0.025 * width * (0.5 + scale))
            radius = (0.5 + scale) * 0.16 * height
            canvas.rectangle((cx - trunk_w / 2, base_y - trunk_h, cx + trunk_w / 2, base_y), TREE, (90, 60, 35))
            crown_y = base_y - trunk_h
            canvas.ellipse((cx - radius, crown_y - radius, cx + radius, crown_y + radius * 0.8), TREE,
                           _jitter(rng, (50, 120, 40), 20))
    cars = sorted(rng.uniform(0.25, 0.95, int(rng.integers(1, 4))) * depth + horizon)  # far to near
    for bottom in cars:
        scale = (bottom - horizon) / depth
        car_w, car_h = (0.18 + 0.35 * scale) * width, (0.1 + 0.22 * scale) * height
        road_l = vx + (left - vx) * scale
        road_r = vx + (right - vx) * scale
        cx = rng.uniform(road_l + car_w / 2, max(road_l + car_w / 2, road_r - car_w / 2) + 1)
        colour = _jitter(rng, _CAR_COLOURS[int(rng.integers(len(_CAR_COLOURS)))], 20)
        body = [(cx - car_w / 2, bottom - car_h * 0.6), (cx + car_w / 2, bottom - car_h * 0.6),
                (cx + car_w / 2, bottom), (cx - car_w / 2, bottom)]
        cabin = [(cx - car_w * 0.32, bottom - car_h * 0.6), (cx - car_w * 0.22, bottom - car_h),
                 (cx + car_w * 0.22, bottom - car_h), (cx + car_w * 0.32, bottom - car_h * 0.6)]
        canvas.polygon(body, CAR, colour)
        canvas.polygon(cabin, CAR, colour)
        glass = [(cx - car_w * 0.26, bottom - car_h * 0.62), (cx - car_w * 0.19, bottom - car_h * 0.93),
                 (cx + car_w * 0.19, bottom - car_h * 0.93), (cx + car_w * 0.26, bottom - car_h * 0.62)]
        canvas._image.polygon(glass, fill=(40, 50, 60))
        wheel = car_h * 0.18
        for wx in (cx - car_w * 0.3, cx + car_w * 0.3):
            canvas._image.ellipse((wx - wheel, bottom - wheel, wx + wheel, bottom + wheel * 0.4), fill=(15, 15, 15))
        canvas.outline([body[3], body[0], *cabin, body[1], body[2]], IGNORE_INDEX)  # the car's outline: ignore
    values = np.asarray(canvas.label)
    image = np.asarray(canvas.image, dtype=np.float32)
    image = image + _texture(rng, values, height, width)
    image = np.clip(np.rint(image * rng.uniform(0.9, 1.1, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(image), Image.fromarray(colour_lut()[values], mode="RGB")


def _texture(rng: np.random.Generator, values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-class shading added to the flat colours: a sky gradient, blotchy leaves, fine road grain."""
    from spgnet.data.synthetic.render import smooth_noise

    fine = rng.standard_normal((height, width)).astype(np.float32)
    blotch = smooth_noise(rng, height, width, max(2, min(height, width) // 24))
    ys = np.arange(height, dtype=np.float32)[:, None] / height
    shade = 4.0 * fine
    shade = np.where(values == SKY, 60.0 * ys - 10.0 + 2.0 * fine, shade)
    shade = np.where(values == TREE, 28.0 * blotch + 8.0 * fine, shade)
    shade = np.where(values == ROAD, 7.0 * fine, shade)
    return shade[..., None].astype(np.float32)


__all__ = ["CLASSES", "IGNORE_COLOR", "IMAGE_SUFFIX", "LABEL_SUFFIX", "PALETTE", "colour_lut", "description_text",
           "make_folder_sample", "sample_size"]
