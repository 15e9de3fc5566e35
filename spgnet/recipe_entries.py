"""The recipe's entries (:data:`RECIPE`): one :class:`RecipeEntry` per setting of
:class:`spgnet.config.TrainConfig` and :class:`spgnet.config.EvalConfig`, plus the normalisation layer
and the encoders' initialisation. Their texts only; :mod:`spgnet.recipe` reads the values from the
configs and renders ``docs/recipe.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_STATED = "not stated"


@dataclass(frozen=True)
class RecipeEntry:
    """One setting of the recipe. ``paper``, ``why`` and ``alternative`` may quote the
    configuration as ``{name.section.key}`` or a derived fact ``{name}`` (:func:`spgnet.recipe._facts`); other
    braces are text."""

    part: str  # "Training", "Evaluation" or "Networks"
    topic: str
    keys: tuple[str, ...]  # config keys ("train.lr", ...); () for a choice that is not a setting
    paper: str  # the paper's words (section), or NOT_STATED
    why: str  # why this value: the work followed, with the paper's reference number
    alternative: str  # what else a reviewer may expect, and the setting that switches to it
    link: str | None = None  # a page under docs/ that tells the rest


T = RecipeEntry
RECIPE: tuple[RecipeEntry, ...] = (
    # ------------------------------------------------------------------------------- data, schedule
    T("Training", "Data set", ("train.dataset",),
      'Cityscapes: "We perform experiments on the Cityscapes dataset [14]" (Sec. 4.1); "we perform more '
      'experiments on the PASCAL VOC 2012 [16] and PASCAL Person-Part [12]" (Sec. 4.6).',
      "The paper's; each registry row names its data set.",
      "None: a row of another data set is another experiment."),
    T("Training", "Training split", ("train.split",),
      '"We train the model for 80,000 iterations on "train" set for ablation study. To evaluate our model on the '
      '"test" set, we train the model on the concatenation of "train" and "val" set." (Sec. 4.2). VOC and '
      f"Person-Part: {NOT_STATED}.",
      "Cityscapes: the paper's. PASCAL VOC 2012: the `trainaug` set of DeepLabV3+ [11] (VOC 2012 train plus the "
      'SBD annotations, less VOC 2012 val), since Sec. 4.6 says "we follow the settings in [11]". Person-Part: '
      "its training split.",
      "VOC 2012's own `train` images alone: `train.split=train` on `voc-spgnet`."),
    T("Training", "Crop size", ("train.crop",),
      "Cityscapes: " + NOT_STATED + ' in Sec. 4.2; appendix A\'s study of the global pooling says "train with crop '
      'size 769 x 769" and TILED uses patches of the training crop size "(e.g. 769 x 769)". VOC and Person-Part: '
      '"a crop size of 513 x 513" (Sec. 4.6).',
      "The paper's: appendix A's 769 for every Cityscapes row, Sec. 4.6's 513 for the others.",
      "None needed (`train.crop` trains another)."),
    T("Training", "Batch size", ("train.batch_size",),
      '"mini-batch SGD momentum optimizer with batch size 8" (Sec. 4.2); "batch size of 28" (Sec. 4.6). How many '
      f"GPUs share it: {NOT_STATED}.",
      "The paper's. The paper profile trains on {gpus} GPUs (`resources.train.gpus`); every loss is the mean over "
      "the global batch and the synchronized Inplace-ABN merges statistics over the processes, so the split of "
      "crops over GPUs does not change the training (`spgnet/engine/train/losses.py`, `spgnet/engine/train/loop.py`).",
      "None needed (`train.batch_size` sets another)."),
    T("Training", "Iterations", ("train.iterations",),
      '"We train the model for 80,000 iterations on "train" set for ablation study" (Sec. 4.2); "for 30,000 '
      'iterations" (Sec. 4.6). The train+val model of Table 1: ' + NOT_STATED + ".",
      "The paper's; the train+val model keeps the ablations' schedule.",
      "A longer train+val schedule: `train.iterations` on `t1-spgnet`."),
    T("Training", "Learning rate", ("train.lr",),
      '"initial learning rate 0.01" (Sec. 4.2). VOC and Person-Part: ' + NOT_STATED + ' ("we follow the settings '
      'in [11] to train the model with a crop size of 513 x 513, batch size of 28 for 30,000 iterations", Sec. 4.6).',
      "A judgement call between two readings of Sec. 4.6, named as such. Kept: Sec. 4.2's 0.01, reading Sec. 4.6 as "
      "listing the settings that change (crop, batch, iterations). Equally natural: \"follow the settings in [11]\" "
      "as adopting [11]'s recipe, whose crop 513 and 30,000 iterations Sec. 4.6 repeats, and with it [11]'s "
      "0.007 (TensorFlow DeepLab's `train.py`: \"Use 0.007 when training on PASCAL augmented training set\"), "
      "though [11] uses it with a batch of 16, not 28.",
      "[11]'s rate: `train.lr=0.007` on `voc-spgnet`, `t10-spgnet`."),
    T("Training", "Momentum", ("train.momentum",),
      '"momentum 0.9" (Sec. 4.2).', "The paper's.", "None needed."),
    T("Training", "Weight decay", ("train.weight_decay",),
      '"weight decay 0.0001" (Sec. 4.2).', "The paper's.", "None needed."),
    T("Training", "Weight decay of the normalisation layers", ("train.weight_decay_norm",),
      NOT_STATED + ' (one "weight decay 0.0001", Sec. 4.2).',
      "null: the same decay on every parameter, as the sentence reads and as CCNet [26]'s code (two of its "
      "authors are SPGNet's; one SGD parameter group, synchronized Inplace-ABN) and PyTorch's SGD do.",
      "No decay on the norms' weight and bias: `train.weight_decay_norm=0` (detectron2's "
      "`SOLVER.WEIGHT_DECAY_NORM` defaults to 0; torchvision's reference recipes pass `--norm-weight-decay 0.0`)."),
    T("Training", "Weight decay of the biases", ("train.weight_decay_bias",),
      NOT_STATED + ".",
      "null: the same decay, as for the norms. The convolutions SPGNet follows by a norm have no bias, so this "
      "reaches only the few convolutions that have one (the per-class classifiers, the SPG attention convolution); "
      "a norm's bias follows `train.weight_decay_norm`.",
      "No decay on biases (Detectron v1's custom): `train.weight_decay_bias=0` (detectron2's "
      "`SOLVER.WEIGHT_DECAY_BIAS`, torchvision's `--bias-weight-decay`; both give a norm's bias this value "
      "rather than the norm one)."),
    T("Training", "Learning rate of the new layers", ("train.lr_mult_new_layers",),
      NOT_STATED + ' (one "initial learning rate 0.01", Sec. 4.2).',
      "1: one rate for the ImageNet encoders and the layers added to them, as the sentence reads and as CCNet "
      "[26]'s code does (one parameter group at the base rate).",
      "Ten times the rate for every layer outside the ImageNet encoders (decoders, heads, SPG links, CSFA; a "
      "peer's head and its new stem), as PSPNet [75]'s code (hszhao/semseg: `base_lr * 10` for the new modules, "
      "kept by its poly schedule) and mmsegmentation's SegFormer configs (`paramwise_cfg=dict(custom_keys={'head': "
      "dict(lr_mult=10.)})`; its CNN baselines keep one rate, as does TensorFlow DeepLab, whose "
      "`last_layer_gradient_multiplier` defaults to 1) do: `train.lr_mult_new_layers=10`. The poly schedule scales "
      "every group alike (`spgnet/engine/train/schedule.py`)."),
    T("Training", "Learning-rate schedule", ("train.poly_power",),
      '"Following prior works [39], we use the "poly" learning rate schedule where the learning rate is scaled by '
      '(1 - iter/iter_max)^0.9" (Sec. 4.2).',
      "The paper's, updated every iteration.", "None needed."),
    T("Training", "Scale augmentation", ("train.scale_min", "train.scale_max", "train.scale_step"),
      '"random scale between [0.5, 2.0] with a step size of 0.25, random flip and random crop" (Sec. 4.2). VOC and '
      "Person-Part: " + NOT_STATED + ".",
      "The paper's, on every data set: it is also [11]'s (TensorFlow DeepLab's `min_scale_factor`, "
      "`max_scale_factor`, `scale_factor_step_size` default to 0.5, 2.0, 0.25). The flip (probability 1/2) "
      "and the crop are not settings.",
      "None needed."),
    # ------------------------------------------------------------------------------- loss
    T("Training", "OHEM", ("train.ohem",),
      '"We study the effects of on-line hard example (or pixel) mining (OHEM) [4, 63, 67] in Table 8. We apply '
      'OHEM to all stages (i.e., the decoder output in each stage)" (Sec. 4.4); Table 9\'s rows "use OHEM in '
      "training\". VOC and Person-Part: " + NOT_STATED + ".",
      "The paper's for Tables 8 and 9, and for Table 9's best variant that Table 1 submits (Sec. 4.3); VOC and "
      "Person-Part take that best Cityscapes setting (ResNet-50, 256 channels, OHEM), as their registry rows say.",
      "Plain cross-entropy: `train.ohem=false`; on `voc-spgnet`, `t10-spgnet` that is also [11]'s settings, which "
      "Sec. 4.6 follows (TensorFlow DeepLab's `top_k_percent_pixels` defaults to 1: no mining)."),
    T("Training", "OHEM rule", ("train.ohem_rule",),
      NOT_STATED + " (the paper cites [4] loss max-pooling, [63] online bootstrapping of hard pixels and [67] "
      "DeeperLab's hard pixel mining).",
      "`threshold`, a judgement call named as such: the rule of `OhemCrossEntropy2d` in CCNet [26]'s code "
      "(speedinghzl/CCNet `utils/loss.py`; two of its authors are SPGNet's), whose Cityscapes recipe SPGNet's "
      "matches (synchronized Inplace-ABN, batch 8, crop 769, lr 0.01, poly 0.9), as in OCNet and HRNet-Seg: keep the "
      "labelled pixels whose true-class probability is at most a threshold, never fewer than `min_kept`. (CCNet "
      "finds the threshold on a copy downsampled 8 times, with `min_kept / 64`; here it is found at full "
      "resolution.) The other rule has as strong a claim: DeeperLab [67], the one work of [4, 63, 67] with public "
      "code and two of SPGNet's authors among its own, keeps the top k% of pixels, and so does detectron2's "
      "Panoptic-DeepLab port (SPGNet's first author's; `LOSS_TYPE: hard_pixel_mining`, `LOSS_TOP_K: 0.2`).",
      "The top-k rule of DeeperLab [67] (TensorFlow DeepLab's `top_k_percent_pixels` in `utils/train_utils.py`; "
      "detectron2's `DeepLabCE`): keep the `train.ohem_top_k` fraction of the pixels with the largest loss: "
      "`train.ohem_rule=top_k`."),
    T("Training", "OHEM threshold rule: threshold and minimum kept", ("train.ohem_threshold", "train.ohem_min_kept"),
      NOT_STATED + ".",
      "The defaults of CCNet [26]'s `OhemCrossEntropy2d` and `CriterionOhemDSN`, and the values its README's "
      "training command and `run_local.sh` pass (`--ohem-thres 0.7 --ohem-keep 100000`; its `train.py` flags "
      "default to 0.6 and 200000), per GPU: CCNet mines each GPU's crops (`train.ohem_scope`). "
      "{cityscapes.train.ohem_min_kept} pixels are {cityscapes_per_gpu_share} of one {cityscapes.train.crop}^2 "
      "crop (the paper profile's {gpus} GPUs x 1 crop), {cityscapes_share} of a whole Cityscapes batch, "
      "{voc_share} of a whole VOC or Person-Part batch ({voc.train.batch_size} x {voc.train.crop}^2).",
      "Other values: `train.ohem_threshold=0.6 train.ohem_min_kept=200000` (CCNet's `train.py` flags)."),
    T("Training", "OHEM top-k rule: fraction kept", ("train.ohem_top_k",),
      NOT_STATED + ".",
      "Used only with `train.ohem_rule=top_k`: the value detectron2's DeepLab heads give `DeepLabCE` "
      "(`top_k_percent_pixels=0.2`). Counted as TensorFlow DeepLab counts it: k = floor(fraction x all pixels, "
      "ignored ones included), the loss averaged over the kept pixels with a non-zero loss "
      "(`spgnet/engine/train/losses.py`); per clone there, over `train.ohem_scope` here.",
      "Another fraction: `train.ohem_top_k` takes any in (0, 1]. (TensorFlow DeepLab's "
      "`hard_example_mining_step`, which lowers the fraction from 1 to k over the first steps, is not a setting.)"),
    T("Training", "OHEM over the global batch or per GPU", ("train.ohem_scope",),
      NOT_STATED + ".",
      "`process`: each GPU mines its own crops, as every code base the paper's OHEM can be traced to does (CCNet "
      "[26]: per process under DDP, `DataParallelCriterion` in its older branch; TensorFlow DeepLab per clone; "
      "detectron2's `DeepLabCE` per process). On the paper profile's {gpus} GPUs that keeps at least "
      "{cityscapes_per_gpu_share} of each GPU's Cityscapes crop and {voc_per_gpu_share} of a VOC or Person-Part "
      "GPU's {voc_per_gpu} crops, {per_gpu_factor} more than counted over the global batch. It makes OHEM depend "
      "on the number of GPUs: fewer GPUs (`--resources gpu=K`) keep fewer hard pixels per crop.",
      "Over the global batch: `train.ohem_scope=batch`: `min_kept` (or top-k's k) and the ranking count the pixels "
      "of the whole batch ({cityscapes_share} of a Cityscapes batch kept at least), so the training is the same "
      "however the batch is split over GPUs."),
    T("Training", "Weight of the earlier stages' losses", ("train.aux_weight",),
      NOT_STATED + ' as a number: "During training, we minimize the loss of last-stage semantic prediction and '
      'per-class logits x_l in all previous stages" (Sec. 3.4); "It is possible that by carefully balancing the '
      'loss weights among stages the performance might be better [...] However, for simplicity, [...]" (Sec. 4.4); '
      '"We apply OHEM to all stages" (Sec. 4.4).',
      "1: the stages' losses summed unweighted, as the two sentences read (no balancing, \"for simplicity\").",
      "The 0.4 of PSPNet [75]'s and CCNet [26]'s auxiliary loss: `train.aux_weight=0.4` (CCNet mines only its "
      "main output and weighs a plain cross-entropy of the auxiliary one; here OHEM applies to every stage, "
      "Sec. 4.4)."),
    # ------------------------------------------------------------------------------- how it runs
    T("Training", "Device and precision", ("train.device", "train.amp"),
      NOT_STATED + ".",
      "GPUs; `auto`: float16 autocast with a gradient scaler on CUDA (`spgnet/engine/train/precision.py`), for speed. "
      "Not neutral under Inplace-ABN: it keeps float16 outputs and recovers x_hat in the backward pass by dividing "
      "by |weight| + eps (and, under the leaky ReLU, multiplying negative outputs by 100), which magnifies float16 "
      "rounding; `benchmarks/gpu_check.py`'s `inplace_abn` section measures that error against float64 on the GPU.",
      "float32 throughout, as 2019's PyTorch code bases (CCNet [26]) trained: `train.amp=false` (convolutions "
      "then use TF32 on Ampere and newer GPUs, PyTorch's default for cuDNN)."),
    T("Training", "Bookkeeping", ("train.checkpoint_every", "train.log_every", "train.workers", "train.val_every"),
      NOT_STATED + ".",
      "They do not change the trained network: every random draw derives from (seed, iteration) "
      "(`spgnet/engine/train/loop.py`), and the final weights are evaluated (`train.val_every` only logs a "
      "validation mIoU and keeps `best.pt` beside them).",
      "Validation every 5000 iterations while training: `train.val_every=5000`."),
    # ------------------------------------------------------------------------------- evaluation
    T("Evaluation", "Evaluation split", ("eval.split",),
      '"ablation studies on Cityscapes val set" (Sec. 4.4); "we report our Cityscape "test" set result" (Sec. '
      "4.3). VOC and Person-Part: " + NOT_STATED + ".",
      "The paper's; VOC and Person-Part: their val split, as the registry rows (Sec. 4.6 sets the VOC result "
      "beside a DeepLabV3+ [11] ablation, which [11] runs on VOC 2012 val).", "None needed."),
    T("Evaluation", "Global pooling at test time", ("eval.strategy",),
      'Appendix A, Table 12: "the AP strategy is more efficient than the TILED strategy and performs slightly '
      'better". Which strategy the other tables use: ' + NOT_STATED + ".",
      "AP for every row but Table 12's GAP and TILED rows, with kernel training crop // 32 (24 for 769, 16 for "
      "513), the paper's \"training crop size divided by the stride\" (appendix A) read as a floor; the stride-32 "
      "map a 769 crop gives in training is 25 x 25 (ceil), the other reading.",
      "`eval.strategy=TILED` or `eval.strategy=GAP`."),
    T("Evaluation", "Test scales", ("eval.scales",),
      'Table 1: "we use the multi-scale inputs (scales = {0.75, 1.0, 1.25, 1.5, 1.75, 2.0}) during inference" '
      '(Sec. 4.3); "By adding scales = {0.75, 1.0, 1.25, 1.5, 1.75, 2.0}, the performance further improves from '
      '80.91 to 81.86" (Sec. 4.4). Person-Part: "68.36 mIoU with multi-scale inputs" (Sec. 4.6), scales '
      + NOT_STATED + ".",
      "The paper's; Person-Part's multi-scale row takes the Cityscapes set, a judgement call: Person-Part trains "
      "under [11]'s settings at crop 513 and Table 10 compares with DPC [6], so DeepLab's PASCAL protocol (the "
      "alternative) is at least as defensible.",
      "TensorFlow DeepLab's PASCAL evaluation (the code of [11], its model zoo: scales [0.5:0.25:1.75] with "
      "left-right flip): `eval.scales=[0.5,0.75,1.0,1.25,1.5,1.75] eval.flip=true` on `t10-spgnet-ms`."),
    T("Evaluation", "Flip at test time", ("eval.flip",),
      '"We further add flip and multi-scale test to the best model" (Sec. 4.4); Table 1\'s test result names '
      "only the multi-scale inputs (Sec. 4.3); Person-Part: " + NOT_STATED + ".",
      "The paper's words: flip only on Sec. 4.4's row. Flip on Table 1's row is at least as defensible: Sec. 4.3 "
      "submits the best variant and Sec. 4.4 adds \"flip and multi-scale test to the best model\".",
      "Flip on Table 1's row: `eval.flip=true` on `t1-spgnet`; on Person-Part's: on `t10-spgnet-ms`."),
    T("Evaluation", "Padding of the test image", ("eval.pad_to",),
      NOT_STATED + ".",
      "null: every image is run whole, as it is (PASCAL images are at most 500 x 500); the AP kernel stays that "
      "of the training crop.",
      "[11]'s evaluation on a 513 x 513 canvas (TensorFlow DeepLab `--eval_crop_size=513,513`, padded with the "
      "mean colour): `eval.pad_to=513` on `voc-spgnet`."),
    T("Evaluation", "Tile overlap (TILED)", ("eval.tile_overlap",),
      '"use 1/3 overlap between patches" (appendix A).', "The paper's.", "None needed."),
    T("Evaluation", "Test-server files", ("eval.submission",),
      'Table 1\'s "Cityscapes test set" result (Sec. 4.3).',
      "Label-id PNGs of the test images for Cityscapes' evaluation server.", "None needed."),
    T("Evaluation", "Scale cap of a profile", ("eval.max_scale",),
      NOT_STATED + " (not part of the recipe).",
      "null on the paper profile: every scale of a row is run (the mini profile caps them to save time).",
      "None needed."),
    # ------------------------------------------------------------------------------- networks
    T("Networks", "Normalisation layer", ("model.norm",),
      '"We replace BatchNorm layers with synchronized Inplace-ABN [49]" (Sec. 4.2).',
      "The paper's, in every layer of every network (`spgnet/models/norm.py`).",
      "Plain BatchNorm: `model.norm=batchnorm` (or `abn`, `inplace_abn`)."),
    T("Networks", "Encoder initialisation", ("model.pretrained",),
      '"Hourglass networks [42] ... making it unavailable to use pre-trained weights on ImageNet [15]. In contrast, '
      'Feature Pyramid Networks (FPN) [37] use well-designed classification networks for encoder" (Sec. 3.2). '
      "Which ImageNet weights: " + NOT_STATED + ".",
      "torchvision's ImageNet file of each ResNet, from the profile's `weights_root` (`spgnet train "
      "--weights-root DIR` replaces it); the run records each file's SHA-256.",
      "Random initialisation: `weights_root: null` in the profile. inplace-abn's own ImageNet ResNet-50 and "
      "ResNet-101 (trained with synchronized Inplace-ABN and leaky ReLU 0.01, 7x7 stem; no ResNet-18 or -152), "
      "which need no conversion: not a setting (another file format). How torchvision's files are read: the "
      "page linked.",
      link="imagenet-init.md"),
    T("Networks", "Activation of the ImageNet encoders", (),
      NOT_STATED + " (Inplace-ABN [49] fuses a leaky ReLU into its layers by default).",
      "Leaky ReLU with slope {leaky_slope} in place of every ReLU, the ImageNet encoders' included (fused into the "
      "norm where the norm feeds it, after the residual sum otherwise); inplace-abn's maintainers report no "
      "significant drop from switching BN + ReLU to Inplace-ABN + leaky ReLU (mapillary/inplace_abn#70).",
      "ReLU in the encoders, as CCNet [26]'s ResNet keeps it (`InPlaceABNSync` without activation, then "
      "`nn.ReLU`). Not a setting: the page linked says why.",
      link="imagenet-init.md"),
    T("Networks", "ImageNet weights in Inplace-ABN", (),
      NOT_STATED + ".",
      "Inplace-ABN scales by |weight| + eps, not by weight, so torchvision's BatchNorm weights are converted as "
      "they are loaded: the page linked.",
      "The page linked.",
      link="imagenet-init.md"),
)
del T
