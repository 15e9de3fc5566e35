"""``spgnet train``: Sec. 4.2's training recipe (:mod:`spgnet.engine.train.loop` is the command).

``loop`` (the iterations, resume, outputs), ``run`` (what the loop builds once, and what the run
records about itself: ``train_metrics.json``, its MLflow tags, params and model), ``step`` (one
step: forward, loss, backward, update), ``data`` (this process's share of each global batch),
``losses`` (cross-entropy per stage, OHEM),
``schedule`` (SGD + poly and the parameter groups), ``checkpoint`` (atomic save / resume),
``precision`` (``train.amp`` per device), ``distributed`` (torchrun, DDP, InPlaceABNSync on CPU),
``state`` (what the loop carries between iterations, its CSV log), ``scores`` (the untrained
reference and the run's own evaluation a training job writes) and ``progress`` (bar or log lines).
Nothing is imported here.
"""
