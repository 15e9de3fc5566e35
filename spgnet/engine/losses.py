"""Training losses: cross-entropy on the final prediction plus each earlier stage, with OHEM.

``model(x)`` returns ``{"out": final logits, "aux": [earlier stages' logits]}`` (all at input
size). :func:`segmentation_loss` returns the total loss and its terms, one per stage, named
``stage1`` ... ``stageS`` (``stageS`` is ``"out"``):

    total = CE(out) + aux_weight * sum_s CE(aux_s)     if model.supervise (Table 3 "Sup.")
    total = CE(out)                                    otherwise (the aux logits get no loss)

With ``train.ohem`` every term is an OHEM cross-entropy (Sec. 4.4: "We apply OHEM to all
stages"). OHEM follows the implementation of the works the paper cites for it (PSPNet/ICNet's
``OhemCrossEntropy2d``): among the labelled pixels of the batch, keep those whose predicted
probability of the true class is at most ``threshold`` (0.7), but never fewer than ``min_kept``:
when fewer than ``min_kept`` pixels fall below the threshold, the threshold rises to the
``min_kept``-th smallest true-class probability. When the batch has at most ``min_kept`` labelled
pixels, all of them are kept. The loss is the mean cross-entropy over the kept pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels (0 when there are none, keeping the graph)."""
    if not (target != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target, ignore_index=ignore_index)


@torch.no_grad()
def ohem_mask(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7, min_kept: int = 100000,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Boolean ``[N,H,W]`` mask of the pixels OHEM keeps (see the module docstring)."""
    valid = target != ignore_index
    num_valid = int(valid.sum())
    if num_valid == 0 or min_kept >= num_valid:
        return valid
    prob = torch.softmax(logits.float(), dim=1)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    true_prob = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    cutoff = float(threshold)
    if min_kept > 0:
        kth = torch.kthvalue(true_prob[valid], min(num_valid, min_kept)).values.item()
        cutoff = max(cutoff, kth)
    return valid & (true_prob <= cutoff)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7,
                       min_kept: int = 100000, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the hard pixels :func:`ohem_mask` keeps."""
    keep = ohem_mask(logits, target, threshold, min_kept, ignore_index)
    hard_target = torch.where(keep, target, torch.full_like(target, ignore_index))
    return cross_entropy(logits, hard_target, ignore_index)


def stage_loss(logits: torch.Tensor, target: torch.Tensor, train_cfg) -> torch.Tensor:
    if train_cfg.ohem:
        return ohem_cross_entropy(logits, target, train_cfg.ohem_threshold, train_cfg.ohem_min_kept)
    return cross_entropy(logits, target)


def segmentation_loss(outputs: dict, target: torch.Tensor, train_cfg, supervise: bool = True
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, {"stage1": ..., "stageS": ...})`` for a model's output dict (module docstring).

    Without supervision only the final stage has a term. Each term is unweighted; the total
    weighs the earlier stages by ``train_cfg.aux_weight``.
    """
    aux = list(outputs.get("aux") or []) if supervise else []
    terms: dict[str, torch.Tensor] = {}
    total = None
    for index, logits in enumerate(aux):
        term = stage_loss(logits, target, train_cfg)
        terms[f"stage{index + 1}"] = term
        total = train_cfg.aux_weight * term if total is None else total + train_cfg.aux_weight * term
    num_stages = len(outputs.get("aux") or []) + 1
    final = stage_loss(outputs["out"], target, train_cfg)
    terms[f"stage{num_stages}"] = final
    total = final if total is None else total + final
    return total, terms
