"""Synthetic street scenes in the Cityscapes format: :func:`make_sample` draws one.

The scene's layout is built by :mod:`~spgnet.data.synthetic.street_layout` and
:mod:`~spgnet.data.synthetic.street_actors`, its image painted by
:mod:`~spgnet.data.synthetic.street_paint`; this module turns them into the Cityscapes files.

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

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import createLabelImage
from PIL import Image

from spgnet.data.synthetic.render import Shape
from spgnet.data.synthetic.street_layout import StreetBuilder
from spgnet.data.synthetic.street_paint import paint

#: City folders per split (real Cityscapes city names; images are spread over them in turn).
CITIES = {
    "train": ("aachen", "bochum", "bremen", "cologne", "darmstadt"),
    "val": ("frankfurt", "lindau", "munster"),
    "test": ("berlin", "bielefeld", "bonn"),
}
RARE_CYCLE = ("truck", "bus", "train", "motorcycle", "bicycle")
STUFF_CYCLE = ("wall", "fence", "terrain")


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
