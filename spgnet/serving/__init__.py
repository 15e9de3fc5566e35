"""A trained network for users: :func:`spgnet.serving.predictor.load_model` and
:func:`spgnet.serving.predictor.predict` (``spgnet.load_model`` / ``spgnet.predict``, the hub entry
``hubconf.py``), ``spgnet predict`` over files and folders (:mod:`.predict_files`), ``spgnet export``
to ONNX or an ExportedProgram (:mod:`.export`) and the MLflow model a paper-profile run logs and
registers (:mod:`.mlflow_model`). It reads the engine (:mod:`spgnet.engine`); the engine never
reads it. Nothing is imported here.
"""
