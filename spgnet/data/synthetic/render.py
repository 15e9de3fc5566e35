"""Shared pieces of the synthetic generators: polygons, object maps, noise fields, textures.

A scene is a list of :class:`Shape` (a label, an integer polygon and a style). The label image is
rasterised from the polygons (for Cityscapes by cityscapesscripts' own ``createLabelImage``), and
the RGB image is painted object by object: every pixel gets the texture of the last polygon
drawn over it, evaluated in the object's own coordinates (its *frame*), so what the image shows
always agrees with the label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Shape:
    label: str
    polygon: list[tuple[int, int]]
    style: dict = field(default_factory=dict)


def clip_polygon(points, width: int, height: int) -> list[tuple[int, int]]:
    """Sutherland-Hodgman clipping of a polygon to [0, width-1] x [0, height-1], rounded to
    integer pixel coordinates without consecutive duplicates ([] when nothing is left)."""
    poly = [(float(x), float(y)) for x, y in points]
    bounds = ((0, 0.0, 1), (0, width - 1.0, -1), (1, 0.0, 1), (1, height - 1.0, -1))
    for axis, limit, sign in bounds:
        if not poly:
            break
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            cur_in = sign * (cur[axis] - limit) >= 0
            prev_in = sign * (prev[axis] - limit) >= 0
            if cur_in != prev_in:
                frac = (limit - prev[axis]) / (cur[axis] - prev[axis])
                other = 1 - axis
                point = [0.0, 0.0]
                point[axis] = limit
                point[other] = prev[other] + frac * (cur[other] - prev[other])
                out.append(tuple(point))
            if cur_in:
                out.append(cur)
        poly = out
    result: list[tuple[int, int]] = []
    for x, y in poly:
        p = (int(round(x)), int(round(y)))
        if not result or result[-1] != p:
            result.append(p)
    while len(result) > 1 and result[0] == result[-1]:
        result.pop()
    return result if len(result) >= 3 else []


def object_map(shapes: list[Shape], width: int, height: int) -> np.ndarray:
    """HxW int32 map: 1 + index of the last shape covering each pixel (0 where none does),
    drawn exactly like cityscapesscripts draws polygons (in order, later on top)."""
    canvas = Image.new("I", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for k, shape in enumerate(shapes, start=1):
        draw.polygon(shape.polygon, fill=k)
    return np.asarray(canvas, dtype=np.int32)


def pixel_groups(objmap: np.ndarray, count: int):
    """Yield (k, flat pixel indices) for each object k (1-based) that owns pixels."""
    flat = objmap.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=count + 1))])
    for k in range(1, count + 1):
        if bounds[k + 1] > bounds[k]:
            yield k, order[bounds[k] : bounds[k + 1]]


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about ``cell`` pixels (bilinear upsampling)."""
    gh, gw = max(2, height // cell + 2), max(2, width // cell + 2)
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    up = Image.fromarray(coarse, mode="F").resize((gw * cell, gh * cell), Image.BILINEAR)
    return np.asarray(up, dtype=np.float32)[:height, :width].copy()


class NoiseBank:
    """Per-image noise fields shared by all textures."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        scale = max(1, min(height, width) // 64)
        self.fine = rng.standard_normal((height, width), dtype=np.float32)
        self.medium = smooth_noise(rng, height, width, 2 * scale)
        self.coarse = smooth_noise(rng, height, width, 8 * scale)
        self.large = smooth_noise(rng, height, width, 32 * scale)


def jitter_colour(rng: np.random.Generator, base, amount: float) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def frac(values: np.ndarray) -> np.ndarray:
    return values - np.floor(values)
