"""Synthetic street scenes in the Cityscapes format.

Geometry: a pinhole camera looks down a straight street. A ground point at lateral position X
(road edges at X = -1 and +1, in "road half-widths") and depth d projects to
``x = vx + X*R/d``, ``y = yh + (H - yh)/d``; a point z units above it moves up by ``z*R/d``. Scenes
are built back to front from that model: sky, road with lane markings, sidewalks and grass
verges, building / vegetation facades in perspective along both sides and at the end of the
street, walls and fences in front of them, then the standing objects sorted far to near (trees,
poles with traffic signs and lights, persons, parked and moving cars, trucks, buses, trams,
motorcycles and bicycles with their riders), and sometimes the ego vehicle's bonnet. Every object
is one polygon with a Cityscapes label name; vehicles are projected 3-D boxes.

Appearance: each class has its own texture evaluated in the object's own coordinates (window
grids on facades, pavers on sidewalks, slats on fences, courses on walls, blotchy leaves, smooth
grass, lane markings, vehicle glass / lights / wheels, clothes, ...). Colours are drawn from wide,
overlapping palettes (grey road, grey sidewalks, grey buildings, grey poles, grey cars; green
trees, grass, fences and cars) plus a per-image colour cast, so colour alone does not give the
class; texture, shape and position do.

Frequencies follow Cityscapes roughly (road, building and vegetation dominate; poles are thin;
trucks, buses and trains are rare). So that every split of five or more images holds every
class, image ``i`` of a split always contains the rare class ``RARE_CYCLE[i % 5]`` and the stuff
class ``STUFF_CYCLE[i % 3]``.
"""

from __future__ import annotations

import json
import math

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from spgnet.data.render import NoiseBank, Shape, clip_polygon, frac, jitter_colour, object_map, pixel_groups

#: City folders per split (real Cityscapes city names; images are spread over them in turn).
CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn"),
}
RARE_CYCLE = ("truck", "bus", "train", "motorcycle", "bicycle")
STUFF_CYCLE = ("wall", "fence", "terrain")

GLASS = (45, 55, 70)
TYRE = (22, 22, 24)
BUILDING_COLOURS = [(150, 140, 128), (118, 118, 120), (150, 95, 75), (192, 182, 160), (100, 104, 114), (170, 160, 140)]
WALL_COLOURS = [(150, 145, 135), (120, 118, 115), (165, 110, 90), (195, 190, 175), (105, 108, 112)]
FENCE_COLOURS = [(130, 100, 70), (120, 120, 118), (70, 100, 70), (160, 150, 130), (60, 60, 62)]
VEHICLE_COLOURS = [(40, 40, 44), (200, 200, 205), (128, 130, 135), (160, 30, 30), (30, 50, 120),
                   (40, 80, 50), (220, 220, 215), (90, 90, 95), (180, 150, 60), (110, 40, 70)]
BUS_COLOURS = [(215, 180, 40), (190, 40, 35), (225, 225, 220), (40, 90, 160), (50, 130, 80)]
TRAIN_COLOURS = [(230, 230, 225), (200, 40, 35), (230, 200, 50), (60, 110, 170)]
CLOTHES = [(30, 30, 35), (60, 60, 70), (150, 150, 155), (30, 45, 100), (120, 30, 35), (200, 200, 195),
           (90, 70, 50), (40, 90, 60), (180, 140, 60), (100, 50, 110), (160, 80, 40)]
SKIN = [(230, 190, 160), (200, 150, 120), (150, 100, 70), (100, 65, 45)]
HAIR = [(30, 25, 20), (90, 60, 35), (160, 130, 80), (120, 120, 120)]


def _pick(rng, colours, amount=12.0):
    return jitter_colour(rng, colours[int(rng.integers(len(colours)))], amount)


class Camera:
    def __init__(self, height: int, width: int, yh: float, vx: float, focal: float):
        self.H, self.W, self.yh, self.vx, self.R = height, width, yh, vx, focal
        self.cam_height = (height - yh) / focal  # in road half-widths

    def point(self, X: float, d: float, z: float = 0.0) -> tuple[float, float]:
        t = 1.0 / d
        return self.vx + X * self.R * t, self.yh + (self.cam_height - z) * self.R * t

    def scale(self, d: float) -> float:
        """Pixels per unit at depth d."""
        return self.R / d


# ----------------------------------------------------------------------------------------------
# Scene construction
# ----------------------------------------------------------------------------------------------


class StreetBuilder:
    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng = rng
        self.H, self.W = height, width
        self.cam = Camera(
            height, width,
            yh=height * rng.uniform(0.36, 0.46),
            vx=width * rng.uniform(0.42, 0.58),
            focal=width * rng.uniform(0.5, 0.62),
        )
        self.shapes: list[Shape] = []

    # -- helpers -------------------------------------------------------------------------------
    def add(self, label: str, points, style: dict) -> bool:
        polygon = clip_polygon(points, self.W, self.H)
        if polygon:
            self.shapes.append(Shape(label, polygon, style))
            return True
        return False

    def ground_strip(self, label: str, X0: float, X1: float, d_far: float, d_near: float, style: dict) -> None:
        c = self.cam
        self.add(label, [c.point(X0, d_far), c.point(X1, d_far), c.point(X1, d_near), c.point(X0, d_near)],
                 {"frame": "ground", **style})

    def plane(self, label: str, X: float, d0: float, length: float, h: float, template, style: dict) -> bool:
        """A vertical plane along the street at lateral X from depth d0 to d0+length."""
        c = self.cam
        points = [c.point(X, d0 + u * length, v * h) for u, v in template]
        return self.add(label, points, {"frame": "plane", "X": X, "d0": d0, "L": length, "h": h, **style})

    def box(self, label: str, X: float, d: float, w: float, h: float, template, style: dict, z0: float = 0.0) -> bool:
        """A screen-aligned shape standing at (X, d): template u in [-0.5, 0.5], v in [0, 1]."""
        c = self.cam
        cx, yb = c.point(X, d, z0)
        s = c.scale(d)
        points = [(cx + u * w * s, yb - v * h * s) for u, v in template]
        return self.add(label, points, {"frame": "box", "cx": cx, "yb": yb, "sx": w * s, "sy": h * s, "w": w, "h": h, **style})

    # -- layout --------------------------------------------------------------------------------
    def build(self, forced_rare: str, forced_stuff: str) -> list[Shape]:
        rng, c = self.rng, self.cam
        self.d_far = d_far = rng.uniform(9.0, 13.0)
        d_near = 0.45
        sky = {"tex": "sky", "overcast": bool(rng.random() < 0.3), "top": jitter_colour(rng, (70, 125, 195), 20),
               "bottom": jitter_colour(rng, (185, 205, 225), 15), "cloud": rng.uniform(0.0, 0.6)}
        self.add("sky", [(0, 0), (self.W - 1, 0), (self.W - 1, self.H - 1), (0, self.H - 1)], {"frame": "screen", **sky})

        # Ground: road, sidewalks, verges.
        ks = {s: 1.0 + rng.uniform(0.25, 0.6) for s in (-1, 1)}
        terrain_sides = [s for s in (-1, 1) if rng.random() < 0.35]
        if forced_stuff == "terrain" and not terrain_sides:
            terrain_sides = [int(rng.choice([-1, 1]))]
        kt = {s: ks[s] + (rng.uniform(0.25, 0.7) if s in terrain_sides else 0.0) for s in (-1, 1)}
        kb = {s: kt[s] + rng.uniform(0.0, 0.1) for s in (-1, 1)}
        self.ks, self.kt = ks, kt
        lanes = [0.0] if rng.random() < 0.7 else [-0.5, 0.5]
        self.ground_strip("road", -1.0, 1.0, d_far, d_near, {
            "tex": "road", "base": jitter_colour(rng, (95, 92, 100), 14), "lanes": lanes,
            "dash": rng.uniform(0.8, 1.6), "edge": bool(rng.random() < 0.5),
            "mark": jitter_colour(rng, (225, 225, 220), 10)})
        if rng.random() < 0.2:
            side = int(rng.choice([-1, 1]))
            d0 = rng.uniform(1.5, 4.0)
            self.ground_strip("parking", side * 0.72, side * 1.0, d0 + rng.uniform(1.0, 3.0), d0,
                              {"tex": "flat", "base": jitter_colour(rng, (120, 110, 115), 15)})
        for s in (-1, 1):
            self.ground_strip("sidewalk", s * 1.0, s * ks[s], d_far, d_near, {
                "tex": "sidewalk", "base": _pick(rng, [(150, 145, 140), (125, 125, 128), (165, 130, 125), (175, 170, 160)], 12),
                "tile": rng.uniform(0.1, 0.2), "side": s})
            if s in terrain_sides:
                self.ground_strip("terrain", s * ks[s], s * (kb[s] + 3.0), d_far, d_near, {
                    "tex": "terrain", "base": _pick(rng, [(120, 150, 70), (140, 160, 90), (150, 130, 90), (105, 135, 75)], 12)})

        # Facades: the end of the street, then both sides from far to near.
        x_left, _ = c.point(-kb[-1] - 3.0, d_far)
        x_right, _ = c.point(kb[1] + 3.0, d_far)
        edges = np.sort(rng.uniform(x_left, x_right, int(rng.integers(1, 4))))
        xs = [x_left, *edges.tolist(), x_right]
        for xa, xb in zip(xs[:-1], xs[1:]):
            Xa, Xb = (xa - c.vx) * d_far / c.R, (xb - c.vx) * d_far / c.R
            kind = "building" if rng.random() < 0.7 else "vegetation"
            h = rng.uniform(1.2, 4.0) if kind == "building" else rng.uniform(0.9, 1.8)
            w = Xb - Xa
            self.box(kind, (Xa + Xb) / 2, d_far, w, h, self._facade_template(kind),
                     self._facade_style(kind, w))
        for s in (-1, 1):
            d = d_far
            while d > 0.5:
                length = rng.uniform(1.5, 4.5)
                d0 = max(d - length, 0.4)
                kind = "building" if rng.random() < 0.72 else "vegetation"
                h = rng.uniform(1.2, 5.0) if kind == "building" else rng.uniform(0.9, 2.0)
                self.plane(kind, s * kb[s], d0, d - d0, h, self._facade_template(kind), self._facade_style(kind, d - d0))
                d = d0

        # Walls and fences in front of the facades.
        for kind, p in (("wall", 0.3), ("fence", 0.35)):
            sides = [s for s in (-1, 1) if rng.random() < p]
            if forced_stuff == kind and not sides:
                sides = [int(rng.choice([-1, 1]))]
            for s in sides:
                d0 = rng.uniform(1.8, 4.0) if forced_stuff == kind else rng.uniform(1.5, 7.0)
                length = rng.uniform(1.5, 6.0)
                h = rng.uniform(0.2, 0.45) if kind == "wall" else rng.uniform(0.25, 0.5)
                X = s * (kt[s] - 0.02)
                template = [(0, 0), (1, 0), (1, 1), (0, 1)]
                if kind == "wall":
                    style = {"tex": "wall", "base": _pick(rng, WALL_COLOURS, 14), "course": rng.uniform(0.05, 0.09)}
                else:
                    style = {"tex": "fence", "base": _pick(rng, FENCE_COLOURS, 14), "gap": _pick(rng, [(40, 60, 40), (60, 60, 60), (90, 110, 80)], 12),
                             "period": rng.uniform(0.06, 0.12), "duty": rng.uniform(0.35, 0.6), "mesh": bool(rng.random() < 0.35)}
                self.plane(kind, X, d0, length, h, template, style)

        # Standing objects, drawn far to near.
        actors: list[tuple[float, list]] = []
        actors += self._trees(terrain_sides)
        actors += self._poles()
        actors += self._persons()
        actors += self._vehicles(forced_rare)
        actors += self._void_objects()
        actors.sort(key=lambda item: -item[0])
        for _, calls in actors:
            for call in calls:
                call()
        if rng.random() < 0.4:
            self._ego_vehicle()
        return self.shapes

    # -- facades ---------------------------------------------------------------------------------
    def _facade_template(self, kind: str):
        if kind == "building":
            return [(0, 0), (1, 0), (1, 1), (0, 1)]
        n = 8
        top = [(1 - i / n, 1.0 - self.rng.uniform(0.0, 0.3)) for i in range(n + 1)]
        return [(0, 0), (1, 0), *top]

    def _facade_style(self, kind: str, length: float) -> dict:
        rng = self.rng
        if kind == "vegetation":
            return {"tex": "vegetation", "base": _pick(rng, [(70, 110, 45), (90, 125, 50), (60, 95, 55), (110, 130, 60)], 14)}
        return {"tex": "building", "base": _pick(rng, BUILDING_COLOURS, 16), "windows": bool(rng.random() < 0.85),
                "wp": rng.uniform(0.35, 0.7), "fh": rng.uniform(0.3, 0.45), "wo": rng.uniform(0, 1),
                "wc": jitter_colour(rng, (60, 70, 85), 20), "shop": bool(rng.random() < 0.5)}

    # -- actors ----------------------------------------------------------------------------------
    def _trees(self, terrain_sides):
        rng, actors = self.rng, []
        for s in (-1, 1):
            if s in terrain_sides:
                count, X0, X1 = int(rng.integers(1, 5)), self.ks[s] + 0.1, self.kt[s] - 0.05
            elif rng.random() < 0.5:
                count, X0, X1 = int(rng.integers(1, 4)), self.ks[s] - 0.1, self.ks[s] - 0.05
            else:
                continue
            for _ in range(count):
                X = s * rng.uniform(min(X0, X1), max(X0, X1))
                d = rng.uniform(1.6, self.d_far * 0.8)
                trunk_h = rng.uniform(0.4, 0.8)
                r = rng.uniform(0.25, 0.55)
                n = 14
                crown = []
                for i in range(n):
                    a = 2 * math.pi * i / n
                    rr = 1.0 + rng.uniform(-0.25, 0.25)
                    crown.append((0.5 * rr * math.cos(a), 0.5 + 0.5 * rr * math.sin(a)))
                base = _pick(rng, [(65, 105, 40), (85, 120, 45), (55, 90, 50), (120, 125, 50)], 14)
                bark = jitter_colour(rng, (85, 70, 55), 12)
                actors.append((d, [
                    lambda X=X, d=d, trunk_h=trunk_h, bark=bark: self.box(
                        "vegetation", X, d, 0.05, trunk_h + 0.05, [(-0.5, 0), (0.5, 0), (0.5, 1), (-0.5, 1)],
                        {"tex": "bark", "base": bark}),
                    lambda X=X, d=d, trunk_h=trunk_h, r=r, crown=crown, base=base: self.box(
                        "vegetation", X, d, 2 * r, 2 * r, crown, {"tex": "vegetation", "base": base}, z0=trunk_h - 0.2 * r),
                ]))
        return actors

    def _poles(self):
        rng, actors = self.rng, []
        poles = []
        for s in (-1, 1):
            for _ in range(1 + int(rng.poisson(1.0))):
                poles.append((s * rng.uniform(1.06, 1.2), rng.uniform(1.8, 9.0)))
        has = {"sign": False, "light": False}
        specs = []
        for X, d in poles:
            h = rng.uniform(0.9, 1.4)
            sign = rng.random() < 0.5
            light = rng.random() < 0.35
            has["sign"] |= sign
            has["light"] |= light
            specs.append([X, d, h, sign, light])
        near = min(range(len(specs)), key=lambda i: specs[i][1])
        if not has["sign"]:
            specs[near][3] = True
        if not has["light"]:
            specs[(near + 1) % len(specs)][4] = True
        for X, d, h, sign, light in specs:
            calls = [lambda X=X, d=d, h=h, style={"tex": "pole", "base": _pick(self.rng, [(130, 130, 132), (110, 115, 110), (70, 80, 75), (150, 150, 145)], 10)}:
                     self.box("pole", X, d, 0.045, h, [(-0.5, 0), (0.5, 0), (0.5, 1), (-0.5, 1)], style)]
            top = h
            if light:
                lw, lh = 0.09, 0.26
                calls.append(lambda X=X, d=d, top=top, lw=lw, lh=lh, style=self._light_style(): self.box(
                    "traffic light", X, d, lw, lh, [(-0.5, 0), (0.5, 0), (0.5, 1), (-0.5, 1)], style, z0=top - lh * 0.6))
                top -= lh * 0.7
            if sign:
                size = rng.uniform(0.16, 0.24)
                shape = ["circle", "square", "triangle", "diamond"][int(rng.integers(4))]
                calls.append(lambda X=X, d=d, top=top, size=size, shape=shape, style=self._sign_style(): self.box(
                    "traffic sign", X, d, size, size, _sign_template(shape), {**style, "shape": shape}, z0=top - size * 0.9))
            actors.append((d, calls))
        return actors

    def _light_style(self) -> dict:
        rng = self.rng
        return {"tex": "light", "base": jitter_colour(rng, (38, 40, 38), 10), "lit": int(rng.integers(3)),
                "back": bool(rng.random() < 0.25),
                "lamp": [(230, 40, 30), (240, 190, 40), (60, 220, 110)][int(rng.integers(3))]}

    def _sign_style(self) -> dict:
        rng = self.rng
        faces = [((240, 240, 235), (200, 30, 30)), ((30, 70, 170), (235, 235, 235)),
                 ((235, 200, 30), (30, 30, 30)), ((235, 235, 235), (30, 30, 30))]
        face, border = faces[int(rng.integers(len(faces)))]
        return {"tex": "sign", "face": jitter_colour(rng, face, 12), "border": jitter_colour(rng, border, 12),
                "back": bool(rng.random() < 0.2)}

    def _person_style(self, rider: bool) -> dict:
        rng = self.rng
        return {"tex": "person", "top": _pick(rng, CLOTHES, 15), "bottom": _pick(rng, CLOTHES[:6], 12),
                "skin": _pick(rng, SKIN, 10), "hair": _pick(rng, HAIR, 10), "rider": rider,
                "helmet": _pick(rng, [(230, 230, 230), (30, 30, 30), (200, 40, 40), (40, 60, 160)], 10),
                "stripes": bool(rng.random() < 0.25)}

    def _persons(self):
        rng, actors = self.rng, []
        spots = []
        for s in (-1, 1):
            for _ in range(int(rng.poisson(1.8))):
                spots.append((s * rng.uniform(1.05, self.ks[s] - 0.03), rng.uniform(1.4, 10.0)))
        if rng.random() < 0.15:
            spots.append((rng.uniform(-0.9, 0.9), rng.uniform(2.0, 6.0)))
        if not spots:
            s = int(rng.choice([-1, 1]))
            spots.append((s * rng.uniform(1.05, self.ks[s] - 0.03), rng.uniform(1.6, 5.0)))
        for X, d in spots:
            h = rng.uniform(0.34, 0.42)
            template = _person_template(rng.uniform(0.0, 0.12))
            actors.append((d, [lambda X=X, d=d, h=h, template=template, style=self._person_style(False):
                               self.box("person", X, d, 0.4 * h, h, template, style)]))
        return actors

    def _vehicle(self, label: str, Xc: float, d0: float, w: float, length: float, h: float, style: dict):
        """A projected 3-D box (cars get a cabin) as one polygon, seen from behind (or the front)."""
        c = self.cam
        side = 1 if Xc > 0 else -1
        Xi, Xo = Xc - side * w / 2, Xc + side * w / 2
        car = label == "car"
        if car:
            rear_profile = [(0.0, 0.55), (0.18, 1.0), (0.82, 1.0), (1.0, 0.55)]
            side_profile = [(0.0, 0.55), (0.2, 0.6), (0.32, 1.0), (0.75, 1.0), (0.85, 0.6), (1.0, 0.55)]
        elif label in ("motorcycle", "bicycle"):
            rear_profile = [(0.0, 0.7), (0.25, 1.0), (0.75, 1.0), (1.0, 0.7)]
            side_profile = [(0.0, 0.7), (0.12, 0.75), (0.45, 0.6), (0.75, 1.0), (0.9, 1.0), (1.0, 0.65)]
        else:
            rear_profile = [(0.0, 1.0), (1.0, 1.0)]
            side_profile = [(0.0, 1.0), (1.0, 1.0)]
        sees_side = abs(Xc) > w / 2 + 0.03
        points = [c.point(Xo, d0), c.point(Xi, d0)]
        if sees_side:
            points.append(c.point(Xi, d0 + length))
            points += [c.point(Xi, d0 + u * length, v * h) for u, v in reversed(side_profile)]
        points += [c.point(Xo + a * (Xi - Xo), d0, v * h) for a, v in reversed(rear_profile)]
        cx, yb = c.point(Xc, d0)
        s = c.scale(d0)
        style = {"frame": "vehicle", "cx": cx, "yb": yb, "sx": w * s, "sy": h * s, "w": w, "h": h,
                 "X": Xi, "d0": d0, "L": length, "sees_side": sees_side, **style}
        return lambda: self.add(label, points, style)

    def _vehicle_style(self, kind: str, front: bool) -> dict:
        rng = self.rng
        palette = {"bus": BUS_COLOURS, "train": TRAIN_COLOURS}.get(kind, VEHICLE_COLOURS)
        return {"tex": "vehicle", "kind": kind, "body": _pick(rng, palette, 14), "second": _pick(rng, VEHICLE_COLOURS, 14),
                "front": front, "glass": jitter_colour(rng, GLASS, 12)}

    def _vehicles(self, forced_rare: str):
        rng, actors = self.rng, []
        sizes = {"car": (0.38, 0.9, 0.32), "truck": (0.5, 1.6, 0.7), "bus": (0.52, 2.5, 0.66),
                 "train": (0.5, 4.5, 0.72), "motorcycle": (0.16, 0.45, 0.3), "bicycle": (0.09, 0.4, 0.3)}
        wanted = []
        for s in (-1, 1):
            wanted += [("car", "parked", s)] * int(rng.poisson(2.2))
        wanted += [("car", "lane", 0)] * (int(rng.poisson(1.5)) + (1 if rng.random() < 0.4 else 0))
        for kind, p in (("truck", 0.12), ("bus", 0.1), ("train", 0.05), ("motorcycle", 0.12), ("bicycle", 0.3)):
            if rng.random() < p or forced_rare == kind:
                wanted.append((kind, "lane", 0))
        if not any(k == "car" for k, _, _ in wanted):
            wanted.append(("car", "lane", 0))
        if rng.random() < 0.25:
            wanted.append(("bicycle", "sidewalk", int(rng.choice([-1, 1]))))
        for kind, where, s in wanted:
            w, length, h = sizes[kind]
            forced = kind == forced_rare
            if kind in ("truck", "bus", "train"):
                length *= rng.uniform(0.85, 1.2)
            if where == "parked":
                Xc, d0, front = s * rng.uniform(0.7, 0.8), rng.uniform(1.6, 9.0), False
            elif where == "sidewalk":
                Xc, d0, front = s * rng.uniform(1.08, self.ks[s] - 0.05), rng.uniform(1.8, 6.0), False
            elif kind == "train":
                Xc, d0, front = float(rng.choice([-1, 1])) * rng.uniform(0.3, 0.45), rng.uniform(2.0, 4.0), bool(rng.random() < 0.5)
            elif kind in ("motorcycle", "bicycle"):
                s = float(rng.choice([-1, 1]))
                Xc = s * rng.uniform(0.55, 0.9)
                d0 = rng.uniform(1.3, 2.5) if forced else rng.uniform(1.5, 8.0)
                front = bool(rng.random() < 0.3)
            else:
                s = float(rng.choice([-1, 1]))
                Xc = s * rng.uniform(0.35, 0.65)
                d0 = rng.uniform(2.0, 5.0) if forced else rng.uniform(1.6, 10.0)
                front = s < 0 and rng.random() < 0.6
            style = self._vehicle_style(kind, front)
            calls = [self._vehicle(kind, Xc, d0, w, length, h, style)]
            if kind in ("motorcycle", "bicycle") and where == "lane":
                rh = rng.uniform(0.3, 0.36)
                rider_style = self._person_style(True)
                template = _rider_template()
                z0 = 0.12 if kind == "motorcycle" else 0.16
                calls.append(lambda Xc=Xc, d0=d0, rh=rh, z0=z0, template=template, rider_style=rider_style: self.box(
                    "rider", Xc, d0 + 0.02, 0.45 * rh, rh, template, rider_style, z0=z0))
            actors.append((d0, calls))
        return actors

    def _void_objects(self):
        rng, actors = self.rng, []
        if rng.random() < 0.3:
            s = int(rng.choice([-1, 1]))
            X, d = s * rng.uniform(1.1, self.ks[s] - 0.05), rng.uniform(1.8, 6.0)
            w, h = rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25)
            style = {"tex": "flat", "base": _pick(rng, [(60, 70, 60), (120, 100, 80), (150, 150, 150)], 20)}
            actors.append((d, [lambda X=X, d=d, w=w, h=h, style=style: self.box(
                "static", X, d, w, h, [(-0.5, 0), (0.5, 0), (0.5, 1), (-0.5, 1)], style)]))
        return actors

    def _ego_vehicle(self) -> None:
        rng = self.rng
        cy = self.H * (1.0 + rng.uniform(0.0, 0.05))
        ry = self.H * rng.uniform(0.08, 0.14)
        rx = self.W * 0.8
        points = [(self.W / 2 + rx * math.cos(a), cy - ry * math.sin(a)) for a in np.linspace(0, math.pi, 17)]
        self.add("ego vehicle", points, {"frame": "screen", "tex": "flat", "base": _pick(rng, VEHICLE_COLOURS[:3], 10)})


def _sign_template(shape: str):
    if shape == "circle":
        return [(0.5 * math.cos(a), 0.5 + 0.5 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)]
    if shape == "triangle":
        return [(-0.5, 1.0), (0.5, 1.0), (0.0, 0.1)]
    if shape == "diamond":
        return [(0.0, 0.0), (0.5, 0.5), (0.0, 1.0), (-0.5, 0.5)]
    return [(-0.45, 0.05), (0.45, 0.05), (0.45, 0.95), (-0.45, 0.95)]


def _person_template(stride: float):
    """Front view of a standing person: u in [-0.5, 0.5] (0.4 x height wide), v up."""
    s = stride
    return [(-0.3 - s, 0.0), (-0.1, 0.0), (0.0, 0.42), (0.1, 0.0), (0.3 + s, 0.0), (0.22, 0.46), (0.42, 0.5),
            (0.38, 0.8), (0.22, 0.84), (0.14, 0.86), (0.17, 0.93), (0.1, 1.0), (-0.1, 1.0), (-0.17, 0.93),
            (-0.14, 0.86), (-0.22, 0.84), (-0.38, 0.8), (-0.42, 0.5), (-0.22, 0.46)]


def _rider_template():
    """A seated rider seen from behind/front: bent legs, arms reaching forward-down."""
    return [(-0.35, 0.0), (-0.15, 0.0), (-0.1, 0.3), (0.1, 0.3), (0.15, 0.0), (0.35, 0.0), (0.3, 0.35),
            (0.5, 0.45), (0.4, 0.75), (0.18, 0.82), (0.14, 0.85), (0.18, 0.93), (0.1, 1.0), (-0.1, 1.0),
            (-0.18, 0.93), (-0.14, 0.85), (-0.18, 0.82), (-0.4, 0.75), (-0.5, 0.45), (-0.3, 0.35)]


# ----------------------------------------------------------------------------------------------
# Painting
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# One Cityscapes sample
# ----------------------------------------------------------------------------------------------


def polygons_json(shapes: list[Shape], height: int, width: int) -> dict:
    return {
        "imgHeight": height,
        "imgWidth": width,
        "objects": [
            {"date": "", "deleted": 0, "id": k, "label": s.label, "polygon": [list(pt) for pt in s.polygon],
             "user": "spgnet-synthetic", "verified": 1}
            for k, s in enumerate(shapes)
        ],
    }


def make_sample(rng: np.random.Generator, height: int, width: int, index: int):
    """(RGB image, polygons JSON text, labelIds, instanceIds (uint16), colour image) of one scene.

    The label images are made by cityscapesscripts from the JSON text itself, exactly as its
    ``json2labelImg`` / ``json2instanceImg`` would (the instance image is returned as uint16
    because Pillow no longer writes 32-bit PNGs).
    """
    builder = StreetBuilder(rng, height, width)
    shapes = builder.build(RARE_CYCLE[index % len(RARE_CYCLE)], STUFF_CYCLE[index % len(STUFF_CYCLE)])
    image = paint(shapes, rng, builder.cam)
    text = json.dumps(polygons_json(shapes, height, width), sort_keys=True) + "\n"
    annotation = Annotation()
    annotation.fromJsonText(text)
    label_ids = createLabelImage(annotation, "ids")
    instance = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.int64)
    colour = createLabelImage(annotation, "color")
    return Image.fromarray(image), text, label_ids, instance.astype(np.uint16), colour
