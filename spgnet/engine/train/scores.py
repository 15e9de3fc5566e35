"""What a training job scores besides training: its untrained network and its finished checkpoint.

Both exist so that the workflows need no process of their own for them (each process first spends
about 3 s importing torch and torchvision on a CPU; README, "The pipeline"):

* :func:`write_untrained_reference` (``spgnet train --untrained-out``): the report's untrained
  reference of the run and seed (:func:`spgnet.engine.evaluation.reference.untrained_scores`: the network
  built afresh with ``torch.manual_seed(seed)``, as training builds it, on ``val`` with one scale);
* :func:`evaluate_finished_run` (``spgnet train --evaluate-out``, CPU profiles'
  ``evaluate_in_train_job``): the experiment's own evaluation of ``checkpoint.pt``, exactly as
  ``spgnet evaluate`` runs it (:func:`spgnet.engine.evaluation.evaluate.evaluate_checkpoint`: a fresh network
  loaded from the file, norms folded), so the two write the same files, timings aside.

Under ``torchrun`` rank 0 scores and the others wait. Every training step reseeds
(:mod:`spgnet.engine.train.loop`), so scoring before the first step changes nothing in the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spgnet.atomic import write_json
from spgnet.config import RunConfig
from spgnet.engine.train import distributed


def write_untrained_reference(cfg: RunConfig, seed: int, info, path: Path, scored: dict | None = None) -> dict | None:
    """Write the untrained reference JSON of ``cfg`` under ``seed`` to ``path`` (keys of
    :func:`spgnet.engine.evaluation.reference.untrained_scores`; mIoU in percent) and return it (None on
    the processes other than the main one). ``scored``: the scores a resumed run kept in its
    checkpoint, written again instead of scoring the untrained network a second time (Snakemake
    deletes the job's outputs, ``path`` among them, before it restarts an interrupted job)."""
    from spgnet.engine.evaluation.reference import EVAL_SPLIT, untrained_config, untrained_scores

    scores = None
    if info.is_main:
        scores = scored if scored is not None else untrained_scores(untrained_config(cfg), seed)
        write_json(path, scores, allow_nan=False)
        source = " (kept in the checkpoint)" if scored is not None else ""
        print(f"spgnet train: untrained network (seed {seed}): mIoU {scores['miou']:.2f} on {EVAL_SPLIT}{source} "
              f"-> {path}", file=sys.stderr)
    distributed.broadcast_object(None, info)
    return scores


def evaluate_finished_run(cfg: RunConfig, checkpoint: Path, info, path: Path,
                          predictions: str | Path | None = None, threads: int | None = None) -> None:
    """Evaluate ``checkpoint`` with ``cfg``'s eval section into ``path`` (the metrics JSON of
    :mod:`spgnet.engine.evaluation.evaluate`, its confusion matrix and figure beside it), with
    ``threads`` intra-op threads (None: as the training ran; :mod:`spgnet.runtime.threads`)."""
    import torch

    from spgnet.engine.evaluation.evaluate import evaluate_checkpoint, result_line

    if info.is_main:
        trained_with = torch.get_num_threads()
        torch.set_num_threads(threads or trained_with)
        try:
            metrics = evaluate_checkpoint(cfg, checkpoint, path, predictions)
        finally:
            torch.set_num_threads(trained_with)
        print(f"spgnet train: evaluated {result_line(cfg, metrics, path)}", file=sys.stderr)
    distributed.broadcast_object(None, info)
