"""The appearance of a synthetic street scene: every class's texture, evaluated in the object's own
coordinates (window grids on facades, pavers on sidewalks, slats on fences, courses on walls,
blotchy leaves, smooth grass, lane markings, vehicle glass / lights / wheels, clothes, ...), then a
per-image colour cast (:func:`paint`)."""

from __future__ import annotations

import numpy as np

from spgnet.data.synthetic.render import NoiseBank, Shape, frac, object_map, pixel_groups
from spgnet.data.synthetic.street_layout import Camera
from spgnet.data.synthetic.street_palette import TYRE


class Pixels:
    """The pixels of one object: coordinates and the image's noise fields sampled there."""

    def __init__(self, idx: np.ndarray, width: int, noise: NoiseBank, cam: Camera):
        self.idx = idx
        self.ys = (idx // width).astype(np.float32)
        self.xs = (idx % width).astype(np.float32)
        self.cam = cam
        self.n = len(idx)
        self._noise = noise

    def noise(self, name: str) -> np.ndarray:
        return getattr(self._noise, name).ravel()[self.idx]

    def ground(self):
        """(X, d) of ground pixels."""
        c = self.cam
        t = np.maximum((self.ys - c.yh) / (c.H - c.yh), 1e-3)
        return (self.xs - c.vx) / (c.R * t), 1.0 / t

    def plane(self, st):
        """(along, z) in units on the vertical plane of a plane-frame style."""
        c = self.cam
        t = np.clip((self.xs - c.vx) / (st["X"] * c.R), 1e-3, None)
        along = 1.0 / t - st["d0"]
        z = c.cam_height - (self.ys - c.yh) / (c.R * t)
        return along, z

    def box(self, st):
        """(u, v) in [-0.5, 0.5] x [0, 1] of a box-frame style."""
        return (self.xs - st["cx"]) / st["sx"], (st["yb"] - self.ys) / st["sy"]


def _fill(p: Pixels, colour) -> np.ndarray:
    return np.broadcast_to(np.asarray(colour, dtype=np.float32), (p.n, 3)).copy()


def _where(mask, colour, out):
    out[mask] = np.asarray(colour, dtype=np.float32)


def tex_sky(st, p: Pixels):
    g = np.clip(p.ys / max(p.cam.yh, 1.0), 0, 1)[:, None]
    if st["overcast"]:
        top = np.array([175, 180, 188], np.float32)
        bottom = np.array([205, 208, 212], np.float32)
    else:
        top, bottom = st["top"], st["bottom"]
    col = top * (1 - g) + bottom * g
    cloud = np.clip(p.noise("large"), 0, None)[:, None] * st["cloud"]
    return col + (240 - col) * np.clip(cloud, 0, 1) + 1.5 * p.noise("fine")[:, None]


def tex_road(st, p: Pixels):
    X, d = p.ground()
    col = _fill(p, st["base"]) * (1 + 0.05 * p.noise("coarse"))[:, None] + 5 * p.noise("fine")[:, None]
    mark = np.zeros(p.n, bool)
    for lane in st["lanes"]:
        mark |= (np.abs(X - lane) < 0.025) & (frac(d / st["dash"]) < 0.45)
    if st["edge"]:
        mark |= (np.abs(X) > 0.9) & (np.abs(X) < 0.935)
    col[mark] = st["mark"] + 6 * p.noise("fine")[mark, None]
    return col


def tex_sidewalk(st, p: Pixels):
    X, d = p.ground()
    tile = st["tile"]
    a, b = np.abs(X) / tile, d / (tile * 1.5)
    h = frac(np.sin(np.floor(a) * 12.9898 + np.floor(b) * 78.233) * 43758.5453)
    col = _fill(p, st["base"]) * (0.93 + 0.14 * h)[:, None] + 4 * p.noise("fine")[:, None]
    joint = (frac(a) < 0.1) | (frac(b) < 0.1)
    col[joint] *= 0.72
    curb = np.abs(X) < 1.04
    col[curb] = st["base"] * 1.15 + 3 * p.noise("fine")[curb, None]
    return col


def tex_terrain(st, p: Pixels):
    col = _fill(p, st["base"]) * (1 + 0.1 * p.noise("coarse") + 0.04 * p.noise("medium"))[:, None]
    return col + 5 * p.noise("fine")[:, None]


def tex_flat(st, p: Pixels):
    return _fill(p, st["base"]) * (1 + 0.05 * p.noise("coarse"))[:, None] + 4 * p.noise("fine")[:, None]


def _facade_coords(st, p: Pixels):
    if st["frame"] == "plane":
        return p.plane(st)
    u, v = p.box(st)
    return (u + 0.5) * st["w"], v * st["h"]


def tex_building(st, p: Pixels):
    along, z = _facade_coords(st, p)
    col = _fill(p, st["base"]) * (1 + 0.03 * p.noise("coarse"))[:, None] + 5 * p.noise("fine")[:, None]
    if st["windows"]:
        a = frac(along / st["wp"] + st["wo"])
        b = frac(z / st["fh"])
        cell = np.floor(along / st["wp"] + st["wo"]) * 7.1 + np.floor(z / st["fh"]) * 3.7
        shade = 0.75 + 0.5 * frac(np.sin(cell) * 4375.85)
        win = (a > 0.25) & (a < 0.72) & (b > 0.3) & (b < 0.8) & (z > 0.35)
        col[win] = st["wc"] * shade[win, None] + 3 * p.noise("fine")[win, None]
        ledge = (b < 0.06) & (z > 0.35)
        col[ledge] *= 0.8
        if st["shop"]:
            shop = (z > 0.04) & (z < 0.3) & (frac(along / (2 * st["wp"])) > 0.1) & (frac(along / (2 * st["wp"])) < 0.8)
            col[shop] = st["wc"] * 1.3 + 6 * p.noise("medium")[shop, None]
    return col


def tex_wall(st, p: Pixels):
    along, z = _facade_coords(st, p)
    course = st["course"]
    col = _fill(p, st["base"]) * (1 + 0.04 * p.noise("medium"))[:, None] + 6 * p.noise("fine")[:, None]
    row = np.floor(z / course)
    mortar = (frac(z / course) < 0.14) | (frac(along / (3 * course) + 0.5 * row) < 0.06)
    col[mortar] *= 0.78
    top = z > st["h"] * 0.9
    col[top] *= 0.7
    return col


def tex_fence(st, p: Pixels):
    along, z = _facade_coords(st, p)
    per = st["period"]
    if st["mesh"]:
        wire = (frac((along + z) / per) < 0.22) | (frac((along - z) / per) < 0.22)
    else:
        wire = frac(along / per) < st["duty"]
    rail = (np.abs(z / st["h"] - 0.15) < 0.05) | (z / st["h"] > 0.9)
    col = _fill(p, st["gap"]) * (1 + 0.15 * p.noise("medium"))[:, None]
    solid = wire | rail
    col[solid] = st["base"] * (1 + 0.04 * p.noise("fine")[solid, None])
    return col + 3 * p.noise("fine")[:, None]


def tex_vegetation(st, p: Pixels):
    m = p.noise("medium")
    col = _fill(p, st["base"]) * (0.8 + 0.25 * np.tanh(m))[:, None] + 9 * p.noise("fine")[:, None]
    col[m < -0.9] *= 0.45
    lit = p.noise("fine") > 1.7
    col[lit] *= 1.3
    return col


def tex_bark(st, p: Pixels):
    u, _ = p.box(st)
    return _fill(p, st["base"]) * (0.8 + 0.3 * np.cos(np.pi * u))[:, None] + 6 * p.noise("fine")[:, None]


def tex_pole(st, p: Pixels):
    u, _ = p.box(st)
    return _fill(p, st["base"]) * (0.75 + 0.4 * np.cos(np.pi * np.clip(u, -0.5, 0.5)))[:, None] + 3 * p.noise("fine")[:, None]


def tex_light(st, p: Pixels):
    u, v = p.box(st)
    col = _fill(p, st["base"]) + 4 * p.noise("fine")[:, None]
    if st["back"]:
        return col
    du, dv = u * st["w"], v * st["h"]
    for k, centre in enumerate((0.8, 0.5, 0.2)):
        lamp = du * du + (dv - centre * st["h"]) ** 2 < (0.3 * st["w"]) ** 2
        col[lamp] = st["lamp"] if k == st["lit"] else (70, 70, 65)
    return col


def tex_sign(st, p: Pixels):
    u, v = p.box(st)
    col = _fill(p, (150, 150, 152)) + 4 * p.noise("fine")[:, None]
    if st["back"]:
        return col
    cu, cv = 2 * u, 2 * v - 1
    r = {"circle": np.hypot(cu, cv), "square": np.maximum(np.abs(cu), np.abs(cv)) / 0.9,
         "diamond": np.abs(cu) + np.abs(cv), "triangle": np.maximum(np.abs(cu) * 1.3, np.abs(cv))}[st["shape"]]
    col[:] = st["border"]
    inner = r < 0.72
    col[inner] = st["face"]
    symbol = r < 0.25
    col[symbol] = st["border"] * 0.6
    return col + 4 * p.noise("fine")[:, None]


def tex_person(st, p: Pixels):
    u, v = p.box(st)
    col = _fill(p, st["bottom"])
    hip, neck = (0.32, 0.84) if st["rider"] else (0.44, 0.86)
    torso = (v >= hip) & (v < neck)
    col[torso] = st["top"]
    if st["stripes"]:
        band = torso & (frac(v * 18) < 0.4)
        col[band] *= 0.6
    head = v >= neck
    col[head] = st["helmet"] if st["rider"] else st["skin"]
    if not st["rider"]:
        col[head & (v > 0.95)] = st["hair"]
    shoes = v < 0.04
    col[shoes] = (35, 30, 30)
    shade = 0.85 + 0.25 * np.cos(np.pi * np.clip(u, -0.5, 0.5))
    return col * shade[:, None] + 5 * p.noise("fine")[:, None]


def _vehicle_rear(st, u, v, out, glass, kind):
    """Rear (or front) face details in (u, v), u in [-0.5, 0.5]."""
    front = st["front"]
    if kind in ("car",):
        win = (v > 0.62) & (v < 0.93) & (np.abs(u) < 0.4 - (v - 0.62) * 0.4)
        _where(win, glass, out)
        lights = (v > 0.42) & (v < 0.54) & (np.abs(u) > 0.32) & (np.abs(u) < 0.47)
        _where(lights, (235, 235, 215) if front else (200, 25, 25), out)
        plate = (v > 0.2) & (v < 0.3) & (np.abs(u) < 0.12)
        _where(plate, (225, 225, 222), out)
        out[(v > 0.06) & (v < 0.18)] *= 0.55
        _where(v < 0.07, TYRE, out)
    elif kind in ("truck", "bus", "train"):
        top = {"truck": 0.8, "bus": 0.9, "train": 0.9}[kind]
        win_lo = {"truck": 0.55 if front else 2.0, "bus": 0.5 if front else 0.62, "train": 0.5}[kind]
        win = (v > win_lo) & (v < top) & (np.abs(u) < 0.42)
        _where(win, glass, out)
        if kind == "truck" and not front:
            doors = (frac((u + 0.5) * 4) < 0.05) & (v > 0.12)
            out[doors] *= 0.7
        lights = (v > 0.12) & (v < 0.2) & (np.abs(u) > 0.34) & (np.abs(u) < 0.46)
        _where(lights, (235, 235, 215) if front else (200, 25, 25), out)
        if kind == "bus":
            _where((v > 0.92) & (np.abs(u) < 0.3), (240, 160, 40), out)
        out[v < 0.1] *= 0.4
    elif kind == "motorcycle":
        _where(v < 0.45, TYRE, out)
        _where((v > 0.8) & (np.abs(u) > 0.3), (60, 60, 60), out)
        _where((v > 0.5) & (v < 0.6) & (np.abs(u) < 0.2), (200, 25, 25) if not front else (235, 235, 215), out)
    elif kind == "bicycle":
        wheel = np.abs(u) < 0.25
        _where(wheel & (v < 0.55), TYRE, out)
        _where(v > 0.85, (50, 50, 50), out)


def _vehicle_side(st, along, z, out, glass, kind):
    """Side details in units: along from the rear (0) to the front (L), z up."""
    L, h = st["L"], st["h"]
    u, v = along / L, z / h
    if kind == "car":
        win = (v > 0.62) & (v < 0.93) & (u > 0.3) & (u < 0.8)
        _where(win, glass, out)
        out[win & (np.abs(u - 0.55) < 0.02)] = st["body"]
        wheels = [(0.18 * L, 0.3 * h * 0.5), (0.82 * L, 0.3 * h * 0.5)]
        radius = 0.16 * h * 1.2
    elif kind in ("truck", "bus", "train"):
        lo, hi = {"truck": (0.5, 0.7), "bus": (0.5, 0.88), "train": (0.45, 0.85)}[kind]
        span = (u > 0.03) & (u < (0.22 if kind == "truck" else 0.97))
        win = (v > lo) & (v < hi) & span
        pillar = frac(along / (0.35 if kind == "train" else 0.45)) < 0.12
        _where(win & ~pillar, glass, out)
        if kind == "truck":
            cargo = u > 0.25
            out[cargo] = st["second"]
            out[cargo & (frac(along / 0.3) < 0.06)] *= 0.8
        if kind in ("bus", "train"):
            _where((v > 0.12) & (v < 0.22), st["second"], out)
        wheels = [(0.12 * L, 0.12 * h), (0.85 * L, 0.12 * h)] if kind != "train" else []
        radius = 0.13 * h
        out[v < 0.08] *= 0.35
    elif kind in ("motorcycle", "bicycle"):
        wheels = [(0.18 * L, 0.33 * h), (0.82 * L, 0.33 * h)]
        radius = 0.33 * h
        if kind == "bicycle":
            for wx, wz in wheels:
                rr = np.hypot(along - wx, z - wz)
                _where((rr < radius) & (rr > radius * 0.75), TYRE, out)
                _where(rr <= radius * 0.75, (150, 150, 150), out)
            return
    else:
        return
    for wx, wz in wheels:
        rr = np.hypot(along - wx, z - wz)
        _where(rr < radius, TYRE, out)
        _where(rr < radius * 0.45, (140, 140, 140), out)


def tex_vehicle(st, p: Pixels):
    kind = st["kind"]
    out = _fill(p, st["body"])
    u, v = p.box(st)
    c = p.cam
    if st["sees_side"]:
        t = np.clip((p.xs - c.vx) / (st["X"] * c.R), 1e-3, None)
        side = 1.0 / t > st["d0"] + 1e-6
    else:
        side = np.zeros(p.n, bool)
    rear = ~side
    if rear.any():
        sub = out[rear]
        _vehicle_rear(st, u[rear], v[rear], sub, st["glass"], kind)
        out[rear] = sub
    if side.any():
        along, z = p.plane(st)
        sub = out[side] * 0.85
        _vehicle_side(st, along[side], z[side], sub, st["glass"], kind)
        out[side] = sub
    highlight = np.clip(1 - np.abs(v - 0.5) * 6, 0, 1)
    return out * (1 + 0.12 * highlight)[:, None] + 4 * p.noise("fine")[:, None]


TEXTURES = {
    "sky": tex_sky, "road": tex_road, "sidewalk": tex_sidewalk, "terrain": tex_terrain, "flat": tex_flat,
    "building": tex_building, "wall": tex_wall, "fence": tex_fence, "vegetation": tex_vegetation,
    "bark": tex_bark, "pole": tex_pole, "light": tex_light, "sign": tex_sign, "person": tex_person,
    "vehicle": tex_vehicle,
}


def paint(shapes: list[Shape], rng: np.random.Generator, cam: Camera) -> np.ndarray:
    """The RGB image (HxWx3 uint8) of a scene."""
    height, width = cam.H, cam.W
    noise = NoiseBank(rng, height, width)
    image = np.zeros((height * width, 3), dtype=np.float32)
    objmap = object_map(shapes, width, height)
    for k, idx in pixel_groups(objmap, len(shapes)):
        style = shapes[k - 1].style
        image[idx] = TEXTURES[style["tex"]](style, Pixels(idx, width, noise, cam))
    gain = rng.uniform(0.92, 1.08, 3).astype(np.float32) * np.float32(rng.uniform(0.8, 1.15))
    image = image * gain + 2.0 * noise.fine.ravel()[:, None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8).reshape(height, width, 3)
