"""Colours of the synthetic street scenes: wide, overlapping palettes per class (grey road, grey
sidewalks, grey buildings, grey poles, grey cars; green trees, grass, fences and cars), so that
colour alone does not give the class (:mod:`spgnet.data.synthetic.street`)."""

from __future__ import annotations

from spgnet.data.synthetic.render import jitter_colour

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


def pick(rng, colours, amount=12.0):
    return jitter_colour(rng, colours[int(rng.integers(len(colours)))], amount)
