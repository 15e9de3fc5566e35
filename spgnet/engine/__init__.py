"""Training, evaluation and experiment tracking.

``spgnet.engine.train`` (``spgnet train``), ``spgnet.engine.tracking`` (MLflow), and the helpers
the training loop is made of: ``losses`` (cross-entropy, OHEM, per-stage terms), ``schedule``
(SGD + poly), ``checkpoint`` (atomic save / resume), ``distributed`` (torchrun, DDP) and
``progress`` (progress bar or log lines). Nothing is imported here, so importing a submodule stays
cheap.
"""
