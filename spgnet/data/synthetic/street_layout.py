"""The layout of a synthetic street scene: the camera, then sky, ground, facades, walls and fences.

Geometry: a pinhole camera looks down a straight street. A ground point at lateral position X
(road edges at X = -1 and +1, in "road half-widths") and depth d projects to
``x = vx + X*R/d``, ``y = yh + (H - yh)/d``; a point z units above it moves up by ``z*R/d``.
:class:`StreetBuilder` builds a scene back to front from that model (sky, road with lane markings,
sidewalks and grass verges, building / vegetation facades in perspective along both sides and at
the end of the street, walls and fences in front of them); the standing objects come from
:class:`~spgnet.data.synthetic.street_actors.StreetActors`. Every object is one
:class:`~spgnet.data.synthetic.render.Shape` (a Cityscapes label name, a polygon, a style).
"""

from __future__ import annotations

import numpy as np

from spgnet.data.synthetic.render import Shape, clip_polygon, jitter_colour
from spgnet.data.synthetic.street_actors import StreetActors
from spgnet.data.synthetic.street_palette import BUILDING_COLOURS, FENCE_COLOURS, WALL_COLOURS, pick


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


class StreetBuilder(StreetActors):
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
                "tex": "sidewalk", "base": pick(rng, [(150, 145, 140), (125, 125, 128), (165, 130, 125), (175, 170, 160)], 12),
                "tile": rng.uniform(0.1, 0.2), "side": s})
            if s in terrain_sides:
                self.ground_strip("terrain", s * ks[s], s * (kb[s] + 3.0), d_far, d_near, {
                    "tex": "terrain", "base": pick(rng, [(120, 150, 70), (140, 160, 90), (150, 130, 90), (105, 135, 75)], 12)})

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
                    style = {"tex": "wall", "base": pick(rng, WALL_COLOURS, 14), "course": rng.uniform(0.05, 0.09)}
                else:
                    style = {"tex": "fence", "base": pick(rng, FENCE_COLOURS, 14), "gap": pick(rng, [(40, 60, 40), (60, 60, 60), (90, 110, 80)], 12),
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
            return {"tex": "vegetation", "base": pick(rng, [(70, 110, 45), (90, 125, 50), (60, 95, 55), (110, 130, 60)], 14)}
        return {"tex": "building", "base": pick(rng, BUILDING_COLOURS, 16), "windows": bool(rng.random() < 0.85),
                "wp": rng.uniform(0.35, 0.7), "fh": rng.uniform(0.3, 0.45), "wo": rng.uniform(0, 1),
                "wc": jitter_colour(rng, (60, 70, 85), 20), "shop": bool(rng.random() < 0.5)}
