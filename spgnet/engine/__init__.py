"""The engine: what turns a run's settings and data into a trained network and its scores.

Two rooms, each a package:

* :mod:`spgnet.engine.train`: ``spgnet train`` (Sec. 4.2): the loop (``loop``), one step
  (``step``), its data (``data``), losses with OHEM (``losses``), SGD + poly (``schedule``),
  checkpoints (``checkpoint``), precision (``precision``), torchrun/DDP (``distributed``), the
  loop's state and log (``state``), the scores a training job writes besides training (``scores``)
  and its progress display (``progress``);
* :mod:`spgnet.engine.evaluation`: ``spgnet evaluate`` / ``score`` / ``baseline`` (Sec. 4.3,
  Table 12): test-time inference (``inference``), the metric (``metrics``, equal to
  cityscapesscripts), the confusion matrix (``confusion``) and the reference scores
  (``reference``).

Serving a trained network (``spgnet predict`` / ``export``, the MLflow model, the hub entry) lives
in :mod:`spgnet.serving`, MLflow tracking in :mod:`spgnet.tracking`, the process's allocator and
machine description in :mod:`spgnet.runtime`. Nothing is imported here, so importing a submodule
stays cheap.
"""
