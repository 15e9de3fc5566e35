"""Training losses: cross-entropy on the final prediction plus each earlier stage, with OHEM.

``model(x)`` returns ``{"out": final logits, "aux": [earlier stages' logits]}`` (all at input
size). :func:`segmentation_loss` returns the total loss and its terms, one per stage, named
``stage1`` ... ``stageS`` (``stageS`` is ``"out"``):

    total = CE(out) + aux_weight * sum_s CE(aux_s)     if model.supervise (Table 3 "Sup.")
    total = CE(out)                                    otherwise (the aux logits get no loss)

With ``train.ohem`` every term is an OHEM cross-entropy (Sec. 4.4: "We apply OHEM to all
stages"), the mean cross-entropy over the pixels one of two rules keeps (``train.ohem_rule``; the
paper cites [4, 63, 67] and gives no rule, ``docs/recipe.md``):

``threshold``  (default) the rule of ``OhemCrossEntropy2d`` in CCNet [26]'s code (speedinghzl/CCNet,
               whose authors include two of SPGNet's) and the PSPNet-style code bases: among the
               labelled pixels, keep those whose predicted probability of the true class is at most
               ``ohem_threshold`` (0.7), but never fewer than ``ohem_min_kept``: when fewer fall
               below the threshold, it rises to the ``min_kept``-th smallest true-class probability;
               with at most ``min_kept`` labelled pixels, all of them are kept.
``top_k``      TensorFlow DeepLab's ``top_k_percent_pixels`` (``train_utils.py``; DeeperLab [67];
               detectron2's ``DeepLabCE`` ports it): of ``k = floor(ohem_top_k x pixels)``, the
               pixels counted ignored ones included, keep the ``k`` with the largest cross-entropy
               (ignored pixels count 0) and average over those with a positive loss (TF DeepLab
               divides by the number of non-zero losses among the top ``k``; detectron2 divides by
               ``k``). Pixels tied with the ``k``-th largest loss are all kept.

A model that predicts semantic boundaries as well returns them under ``"border"`` (a list of
one-channel logits at input size; DFN's Border Network, Table 1's "DFN [71]"). Each gets a term
``border1`` ... ``borderB``, whatever ``supervise`` says (the output exists only for this loss):

    total += BORDER_WEIGHT * sum_b FL(border_b, border_target(target))

as in DFN (Yu et al., CVPR 2018, Sec. 3.3: "l = l_s + lambda * l_b", the border loss a focal loss
against boundaries of the semantic ground truth; the authors' TorchSeg trains every border output
with ``SigmoidFocalLoss(gamma=2, alpha=0.25)`` and ``aux_loss_alpha = 0.1``). The boundary map
(:func:`border_target`) replaces DFN's Canny edges of the label map, dilated by a 7 x 7 square:
a labelled pixel is a boundary pixel when a labelled pixel within the same 7 x 7 window has
another label; ignored pixels, and labelled ones whose window holds ignored pixels but no other
label (a boundary may hide there), are left out of the border loss. Models without ``"border"``
get exactly the loss above.

Processes. Under ``torchrun`` each process holds part of the global batch (3 or 4 of 28 crops on 8
GPUs, 1 of 8, ...). With ``sync=True`` every mean above is taken over the global batch, not over
the process's crops: a process returns ``sum of its pixels' terms / number of pixels over all
processes`` (its *share*; the shares add up to the global mean). The trainer backpropagates
``world_size x share``, so DDP's gradient average is the gradient of the global mean. OHEM, by
``train.ohem_scope``: ``process`` (the default) mines each process's crops on their own, as the
code bases the paper's OHEM follows do, one GPU or clone at a time (CCNet under DDP, TensorFlow
DeepLab's per-clone top-k, detectron2's ``DeepLabCE``): ``min_kept`` / ``k`` count that process's
pixels, and its OHEM term is the mean over its own kept pixels divided by ``world_size`` (summed
over processes: the mean of the per-process means); on the paper's 8 GPUs x 1 crop that is
``min_kept`` per crop. ``batch`` applies ``min_kept`` and the raised threshold (or top-k's ``k``)
to the global batch (each process all-gathers only its ``min_kept`` / ``k`` hardest values): the
same training whatever the split of crops over processes (``8x1``, ``4x2``, ``1x8``, uneven
shares). With one process the two scopes are the same.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

IGNORE_INDEX = 255
#: ``train.ohem_rule`` and ``train.ohem_scope`` (the names spgnet.config.types lists)
OHEM_RULES = ("threshold", "top_k")
OHEM_SCOPES = ("batch", "process")

#: DFN's lambda (Sec. 3.3; TorchSeg ``C.aux_loss_alpha = 0.1``): weight of the border terms.
BORDER_WEIGHT = 0.1
#: Focal loss parameters of DFN's border supervision (TorchSeg ``SigmoidFocalLoss``; Lin et al.'s defaults).
FOCAL_GAMMA = 2.0
FOCAL_ALPHA = 0.25
#: Half-width of the boundary window: 7 x 7, the square TorchSeg dilates its Canny edges with.
BORDER_RADIUS = 3


def _process_sum(value: torch.Tensor, sync: bool) -> torch.Tensor:
    """``value`` summed over the processes of the default group (a copy; ``value`` when not ``sync``)."""
    if not sync:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def _share(per_pixel: torch.Tensor, mask: torch.Tensor, sync: bool) -> torch.Tensor:
    """This process's share of the mean of ``per_pixel`` over the pixels ``mask`` selects in the
    global batch: ``sum over its own selected pixels / number selected over all processes`` (the
    shares of the processes add up to the global mean; 0, keeping the graph, when none is selected)."""
    count = _process_sum(mask.sum().to(per_pixel.dtype), sync)
    if float(count) == 0:
        return per_pixel.sum() * 0.0
    return (per_pixel * mask).sum() / count


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                  *, sync: bool = False) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels (0 when there are none, keeping the graph); with
    ``sync`` this process's share of the mean over the global batch (see :func:`_share`)."""
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    return _share(per_pixel, target != ignore_index, sync)


@torch.no_grad()
def _kth_smallest(values: torch.Tensor, k: int, sync: bool) -> float:
    """The ``k``-th smallest of ``values`` (1-based), over every process's values when ``sync``.

    Each process contributes only its ``k`` smallest values (the global ``k``-th smallest is among
    them), padded with +inf to ``k`` so the all-gather has one size everywhere.
    """
    local = torch.topk(values, min(k, values.numel()), largest=False).values
    if not sync:
        return torch.kthvalue(local, k).values.item()
    padded = torch.full((k,), float("inf"), dtype=values.dtype, device=values.device)
    padded[: local.numel()] = local
    gathered = [torch.empty_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, padded)
    return torch.kthvalue(torch.cat(gathered), k).values.item()


@torch.no_grad()
def ohem_mask(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7, min_kept: int = 100000,
              ignore_index: int = IGNORE_INDEX, *, sync: bool = False) -> torch.Tensor:
    """Boolean ``[N,H,W]`` mask of the pixels OHEM keeps (see the module docstring); with ``sync``
    ``min_kept`` and the raised threshold hold for the global batch over all processes, so the same
    pixels are kept whatever the split of crops over processes."""
    valid = target != ignore_index
    num_valid = int(_process_sum(valid.sum(), sync))
    if num_valid == 0 or min_kept >= num_valid:
        return valid
    prob = torch.softmax(logits.float(), dim=1)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    true_prob = prob.gather(1, safe_target.unsqueeze(1)).squeeze(1)
    cutoff = float(threshold)
    if min_kept > 0:
        below = int(_process_sum((valid & (true_prob <= cutoff)).sum(), sync))
        if below < min_kept:  # the threshold rises to the min_kept-th smallest true-class probability
            cutoff = max(cutoff, _kth_smallest(true_prob[valid], min_kept, sync))
    return valid & (true_prob <= cutoff)


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.7,
                       min_kept: int = 100000, ignore_index: int = IGNORE_INDEX, *, sync: bool = False
                       ) -> torch.Tensor:
    """Mean cross-entropy over the hard pixels :func:`ohem_mask` keeps (a share of it with ``sync``)."""
    keep = ohem_mask(logits, target, threshold, min_kept, ignore_index, sync=sync)
    hard_target = torch.where(keep, target, torch.full_like(target, ignore_index))
    return cross_entropy(logits, hard_target, ignore_index, sync=sync)


@torch.no_grad()
def top_k_mask(logits: torch.Tensor, target: torch.Tensor, fraction: float = 0.2,
               ignore_index: int = IGNORE_INDEX, *, sync: bool = False) -> torch.Tensor:
    """Boolean ``[N,H,W]`` mask of the ``top_k`` rule (module docstring): the ``floor(fraction x
    pixels)`` pixels with the largest cross-entropy, ignored pixels counted among the pixels with
    a loss of 0, less those whose loss is 0; with ``sync`` ``k`` and the ranking are the global
    batch's."""
    losses = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    pixels = int(_process_sum(torch.tensor(target.numel(), device=target.device), sync))
    k = int(fraction * pixels)
    if k == 0:
        return torch.zeros_like(target, dtype=torch.bool)
    cutoff = -_kth_smallest(-losses.flatten(), k, sync)  # the k-th largest loss
    return (target != ignore_index) & (losses >= cutoff) & (losses > 0)


def top_k_cross_entropy(logits: torch.Tensor, target: torch.Tensor, fraction: float = 0.2,
                        ignore_index: int = IGNORE_INDEX, *, sync: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the pixels :func:`top_k_mask` keeps (a share of it with ``sync``)."""
    keep = top_k_mask(logits, target, fraction, ignore_index, sync=sync)
    hard_target = torch.where(keep, target, torch.full_like(target, ignore_index))
    return cross_entropy(logits, hard_target, ignore_index, sync=sync)


def _hard_pixel_loss(logits: torch.Tensor, target: torch.Tensor, train_cfg, *, sync: bool) -> torch.Tensor:
    """The OHEM term of ``train_cfg.ohem_rule`` over the global batch (``sync``) or this process's crops."""
    if train_cfg.ohem_rule == "top_k":
        return top_k_cross_entropy(logits, target, train_cfg.ohem_top_k, sync=sync)
    return ohem_cross_entropy(logits, target, train_cfg.ohem_threshold, train_cfg.ohem_min_kept, sync=sync)


def stage_loss(logits: torch.Tensor, target: torch.Tensor, train_cfg, *, sync: bool = False) -> torch.Tensor:
    """One stage's term: cross-entropy, or with ``train.ohem`` the OHEM term of ``train.ohem_rule``,
    mined over the global batch or, with ``ohem_scope: process`` and several processes, over each
    process's own crops (its mean then weighs ``1 / world_size``, see "Processes")."""
    if not train_cfg.ohem:
        return cross_entropy(logits, target, sync=sync)
    if sync and train_cfg.ohem_scope == "process":
        return _hard_pixel_loss(logits, target, train_cfg, sync=False) / dist.get_world_size()
    return _hard_pixel_loss(logits, target, train_cfg, sync=sync)


@torch.no_grad()
def border_target(target: torch.Tensor, radius: int = BORDER_RADIUS, ignore_index: int = IGNORE_INDEX
                  ) -> torch.Tensor:
    """Semantic boundaries of a ``[N,H,W]`` label map, as ``[N,H,W]`` long: 1 where a labelled pixel
    of another label lies within the ``(2 radius + 1)``-square window, 0 where the window's labelled
    pixels all agree, ``ignore_index`` on ignored pixels and on labelled pixels whose window has
    ignored pixels but no other label (a boundary may hide under the ignored region)."""
    labels = target.long()
    valid = labels != ignore_index
    size, pad = 2 * radius + 1, radius

    def window_max(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x[:, None], size, stride=1, padding=pad)[:, 0]

    values = labels.float()
    highest = window_max(torch.where(valid, values, torch.full_like(values, -1.0)))
    lowest = -window_max(torch.where(valid, -values, torch.full_like(values, -float(ignore_index) - 1.0)))
    near_ignored = window_max((~valid).float()) > 0
    border = valid & (highest != lowest)
    out = torch.where(border, torch.ones_like(labels), torch.zeros_like(labels))
    return torch.where(~valid | (near_ignored & ~border), torch.full_like(labels, ignore_index), out)


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = FOCAL_GAMMA,
                       alpha: float = FOCAL_ALPHA, ignore_index: int = IGNORE_INDEX, *, sync: bool = False
                       ) -> torch.Tensor:
    """Binary focal loss (Lin et al., ICCV 2017) of ``[N,1,H,W]`` (or ``[N,H,W]``) logits against a
    0/1 ``[N,H,W]`` target: ``-alpha_t (1 - p_t)^gamma log p_t``, with ``p_t = sigmoid(x)`` and
    ``alpha_t = alpha`` on boundary pixels, ``1 - sigmoid(x)`` and ``1 - alpha`` elsewhere; mean over
    the pixels that are not ``ignore_index`` (0 when there are none, keeping the graph; with ``sync``
    this process's share of the mean over the global batch)."""
    logits = logits.float().reshape(target.shape)
    valid = target != ignore_index
    y = torch.where(valid, target, torch.zeros_like(target)).float()
    log_pt = -F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    alpha_t = alpha * y + (1.0 - alpha) * (1.0 - y)
    return _share(-alpha_t * (1.0 - log_pt.exp()) ** gamma * log_pt, valid, sync)


def segmentation_loss(outputs: dict, target: torch.Tensor, train_cfg, supervise: bool = True, *,
                      sync: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(total, {"stage1": ..., "stageS": ..., ["border1": ...]})`` for a model's output dict
    (module docstring).

    Without supervision only the final stage has a term. Each term is unweighted; the total
    weighs the earlier stages by ``train_cfg.aux_weight`` and the border terms by
    :data:`BORDER_WEIGHT`. With ``sync`` (several processes, see "Processes" above) every value is
    this process's share: summed over the processes it is the global batch's loss.
    """
    aux = list(outputs.get("aux") or []) if supervise else []
    terms: dict[str, torch.Tensor] = {}
    total = None
    for index, logits in enumerate(aux):
        term = stage_loss(logits, target, train_cfg, sync=sync)
        terms[f"stage{index + 1}"] = term
        total = train_cfg.aux_weight * term if total is None else total + train_cfg.aux_weight * term
    num_stages = len(outputs.get("aux") or []) + 1
    final = stage_loss(outputs["out"], target, train_cfg, sync=sync)
    terms[f"stage{num_stages}"] = final
    total = final if total is None else total + final
    borders = list(outputs.get("border") or [])
    edges = border_target(target) if borders else None
    for index, logits in enumerate(borders):
        term = sigmoid_focal_loss(logits, edges, sync=sync)
        terms[f"border{index + 1}"] = term
        total = total + BORDER_WEIGHT * term
    return total, terms
