"""The synthetic data sets of the embedded profiles (``spgnet make-synthetic``).

One job a module:

* :mod:`~spgnet.data.synthetic.make` -- the verb: arguments, the folder layouts of Cityscapes /
  VOC / Person-Part, the manifest, deterministic per-image random streams, atomic output;
* :mod:`~spgnet.data.synthetic.render` -- shared pieces: polygons, clipping, the object map,
  noise fields;
* :mod:`~spgnet.data.synthetic.street` -- one Cityscapes-format street scene (image, polygons
  JSON, label images), from :mod:`~spgnet.data.synthetic.street_layout` (camera, ground,
  facades, walls and fences), :mod:`~spgnet.data.synthetic.street_actors` (trees, poles, signs,
  lights, persons, vehicles, riders), :mod:`~spgnet.data.synthetic.street_paint` (textures) and
  :mod:`~spgnet.data.synthetic.street_palette` (colours);
* :mod:`~spgnet.data.synthetic.pascal` -- one PASCAL VOC 2012 or Person-Part sample.

``generate(out, kind=..., seed=..., ...)`` is :func:`spgnet.data.synthetic.make.generate`.
"""

from spgnet.data.synthetic.make import KINDS, MANIFEST, generate, is_generated

__all__ = ["KINDS", "MANIFEST", "generate", "is_generated"]
