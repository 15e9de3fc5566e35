"""Synthetic PASCAL VOC 2012 and Person-Part samples.

VOC: one to three objects of the 20 classes on a textured background. Each class has its own
silhouette (a regular polygon or star with a class-specific number of corners and aspect ratio)
and its own stripe texture (orientation and period), in random colours; labels are 0..20 with a
255 border around every object, as in ``SegmentationClass`` (none for the extra "SBD" images of
``trainaug``, whose annotations mark no borders).

Person-Part: one or two people in random poses, each made of head, torso, upper and lower arms,
upper and lower legs (labels 1..6 on background 0). Torso and upper arms share the top's colour,
upper and lower legs the trousers' colour, so parts are told apart by shape and position.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from spgnet.data.labels import IGNORE_INDEX, voc_palette
from spgnet.data.synthetic.render import NoiseBank, Shape, clip_polygon, frac, jitter_colour, object_map, pixel_groups

_PALETTE = voc_palette()

COLOURS = [(200, 40, 40), (40, 160, 60), (40, 70, 190), (220, 200, 50), (150, 60, 160), (60, 180, 190),
           (230, 130, 40), (120, 120, 120), (40, 40, 40), (230, 230, 225), (140, 90, 50)]
SKIN = [(230, 190, 160), (200, 150, 120), (150, 100, 70), (100, 65, 45)]


def _background(rng, height: int, width: int) -> list[Shape]:
    shapes = [Shape("bg", clip_polygon([(0, 0), (width, 0), (width, height), (0, height)], width, height),
                    {"tex": "bg", "base": jitter_colour(rng, COLOURS[int(rng.integers(len(COLOURS)))], 30) * 0.8,
                     "angle": rng.uniform(0, math.pi), "period": rng.uniform(6, 20)})]
    for _ in range(int(rng.integers(1, 4))):
        x0, y0 = rng.uniform(-0.2, 0.8) * width, rng.uniform(-0.2, 0.8) * height
        x1, y1 = x0 + rng.uniform(0.2, 0.8) * width, y0 + rng.uniform(0.2, 0.8) * height
        poly = clip_polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], width, height)
        if poly:
            shapes.append(Shape("bg", poly, {"tex": "bg", "base": jitter_colour(rng, COLOURS[int(rng.integers(len(COLOURS)))], 30) * 0.8,
                                            "angle": rng.uniform(0, math.pi), "period": rng.uniform(6, 20)}))
    return shapes


def _class_template(c: int, rng) -> list[tuple[float, float]]:
    """Class c's silhouette in the unit square around (0, 0), with a little jitter."""
    corners = 3 + (c % 6)
    star = c >= 11
    aspect = (1.0, 0.65, 1.5)[c % 3]
    points = []
    n = corners * (2 if star else 1)
    rot = rng.uniform(-0.2, 0.2)
    for i in range(n):
        a = 2 * math.pi * i / n + rot
        r = (0.5 if (not star or i % 2 == 0) else 0.25) * (1 + rng.uniform(-0.06, 0.06))
        points.append((r * math.cos(a) * aspect, r * math.sin(a) / aspect))
    return points


def _texture(style, xs, ys, noise, medium=None):
    if style.get("smooth"):
        # Backgrounds: smooth shading, no stripes (objects carry the stripes).
        col = np.asarray(style["base"], np.float32) * (1 + 0.15 * medium)[:, None]
        return col + (xs / 400.0 - ys / 400.0)[:, None] * 40 + 6 * noise[:, None]
    angle, period = style["angle"], style["period"]
    coord = xs * math.cos(angle) + ys * math.sin(angle)
    stripes = (frac(coord / period) < 0.5).astype(np.float32)
    col = np.asarray(style["base"], np.float32) * (0.75 + 0.4 * stripes)[:, None]
    return col + 6 * noise[:, None]


def _paint(shapes: list[Shape], rng, height: int, width: int, colour_of) -> np.ndarray:
    noise = NoiseBank(rng, height, width)
    image = np.zeros((height * width, 3), np.float32)
    objmap = object_map(shapes, width, height)
    fine = noise.fine.ravel()
    for k, idx in pixel_groups(objmap, len(shapes)):
        ys, xs = (idx // width).astype(np.float32), (idx % width).astype(np.float32)
        image[idx] = colour_of(shapes[k - 1].style, xs, ys, fine[idx], noise.medium.ravel()[idx])
    gain = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return np.clip(np.rint(image * gain), 0, 255).astype(np.uint8).reshape(height, width, 3)


def _label_png(values: np.ndarray) -> Image.Image:
    img = Image.fromarray(values.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE)
    return img


def make_voc_sample(rng: np.random.Generator, height: int, width: int, index: int, borders: bool = True):
    """(RGB image, palette label image) of one VOC-style sample; ``borders=False``: no 255 line
    around the objects (SBD's annotations, the extra images of ``trainaug``; the random draws and
    the image are the same either way)."""
    shapes = _background(rng, height, width)
    count = int(rng.integers(1, 4))
    classes = [1 + (index * 7 + k * 3) % 20 if k == 0 else int(rng.integers(1, 21)) for k in range(count)]
    objects = []
    for c in classes:
        size = rng.uniform(0.3, 0.7) * min(height, width)
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        poly = clip_polygon([(cx + x * size, cy + y * size) for x, y in _class_template(c, rng)], width, height)
        if poly:
            style = {"tex": "obj", "class": c, "base": jitter_colour(rng, COLOURS[int(rng.integers(len(COLOURS)))], 25),
                     "angle": (c * 17 % 180) * math.pi / 180, "period": 3.0 + (c % 4) * 2.0}
            objects.append(Shape(str(c), poly, style))
    shapes += objects
    for shape in shapes[: len(shapes) - len(objects)]:
        shape.style["smooth"] = True
    image = _paint(shapes, rng, height, width, lambda st, xs, ys, n, m: _texture(st, xs, ys, n, m))
    label = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(label)
    border = max(1, round(min(height, width) / 100))
    for shape in objects:
        draw.polygon(shape.polygon, fill=shape.style["class"])
    for shape in objects if borders else ():
        draw.line(shape.polygon + [shape.polygon[0]], fill=IGNORE_INDEX, width=border)
    return Image.fromarray(image), _label_png(np.asarray(label))


def _limb(a, b, width_a, width_b):
    (ax, ay), (bx, by) = a, b
    length = math.hypot(bx - ax, by - ay) or 1.0
    nx, ny = -(by - ay) / length, (bx - ax) / length
    return [(ax + nx * width_a, ay + ny * width_a), (bx + nx * width_b, by + ny * width_b),
            (bx - nx * width_b, by - ny * width_b), (ax - nx * width_a, ay - ny * width_a)]


def _person(rng, height: int, width: int) -> list[tuple[int, list, str]]:
    """(part label, polygon, colour key) of one person, back to front."""
    s = rng.uniform(0.55, 0.95) * height  # body height in pixels
    cx = rng.uniform(0.25, 0.75) * width
    top = rng.uniform(0.02, 0.98) * (height - s)
    neck = (cx, top + 0.17 * s)
    hip_c = (cx + rng.uniform(-0.03, 0.03) * s, top + 0.55 * s)
    shoulder_w, hip_w = 0.13 * s, 0.09 * s
    shoulders = [(neck[0] - shoulder_w, neck[1] + 0.03 * s), (neck[0] + shoulder_w, neck[1] + 0.03 * s)]
    hips = [(hip_c[0] - hip_w, hip_c[1]), (hip_c[0] + hip_w, hip_c[1])]
    parts = []
    for side, hip in zip((-1, 1), hips):
        a1 = math.radians(rng.uniform(-20, 20))
        knee = (hip[0] + math.sin(a1) * 0.22 * s, hip[1] + math.cos(a1) * 0.22 * s)
        a2 = a1 + math.radians(rng.uniform(-25, 10)) * side
        ankle = (knee[0] + math.sin(a2) * 0.22 * s, knee[1] + math.cos(a2) * 0.22 * s)
        parts.append((5, _limb(hip, knee, 0.05 * s, 0.04 * s), "bottom"))
        parts.append((6, _limb(knee, ankle, 0.04 * s, 0.03 * s), "bottom"))
    torso = [shoulders[0], shoulders[1], hips[1], hips[0]]
    parts.append((2, torso, "top"))
    for side, shoulder in zip((-1, 1), shoulders):
        a1 = math.radians(rng.uniform(5, 60)) * side
        elbow = (shoulder[0] + math.sin(a1) * 0.17 * s, shoulder[1] + math.cos(a1) * 0.17 * s)
        a2 = a1 + math.radians(rng.uniform(-60, 60))
        wrist = (elbow[0] + math.sin(a2) * 0.16 * s, elbow[1] + math.cos(a2) * 0.16 * s)
        parts.append((3, _limb(shoulder, elbow, 0.035 * s, 0.03 * s), "top"))
        parts.append((4, _limb(elbow, wrist, 0.028 * s, 0.022 * s), "forearm"))
    hr = 0.075 * s
    head_c = (cx + rng.uniform(-0.02, 0.02) * s, top + 0.085 * s)
    head = [(head_c[0] + hr * 0.85 * math.cos(a), head_c[1] + hr * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 14, endpoint=False)]
    parts.append((1, head, "skin"))
    return parts


def make_person_part_sample(rng: np.random.Generator, height: int, width: int, index: int):
    """(RGB image, part label image) of one Person-Part-style sample."""
    shapes = _background(rng, height, width)
    for _ in range(1 if rng.random() < 0.7 else 2):
        colours = {"top": jitter_colour(rng, COLOURS[int(rng.integers(len(COLOURS)))], 25),
                   "bottom": jitter_colour(rng, COLOURS[int(rng.integers(len(COLOURS)))], 25) * 0.7,
                   "skin": jitter_colour(rng, SKIN[int(rng.integers(len(SKIN)))], 10)}
        colours["forearm"] = colours["skin"] if rng.random() < 0.6 else colours["top"]
        for part, polygon, key in _person(rng, height, width):
            poly = clip_polygon(polygon, width, height)
            if poly:
                shapes.append(Shape(str(part), poly, {"tex": "part", "part": part, "base": colours[key],
                                                      "angle": 0.0, "period": 1e9}))
    def colour_of(st, xs, ys, n, m):
        if st["tex"] == "bg":
            return _texture(st, xs, ys, n)
        return np.asarray(st["base"], np.float32) * (1 + 0.08 * m)[:, None] + 5 * n[:, None]
    image = _paint(shapes, rng, height, width, colour_of)
    label = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(label)
    for shape in shapes:
        if shape.style["tex"] == "part":
            draw.polygon(shape.polygon, fill=shape.style["part"])
    return Image.fromarray(image), _label_png(np.asarray(label))
