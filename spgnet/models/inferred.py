"""Architecture details taken from the paper's #Params / #FLOPs columns rather than its text.

The paper leaves several parts of SPGNet open. Its #Params and #FLOPs columns (Tables 1, 3, 5, 6,
7, 9, 11, 12) are precise enough to settle most of them: a configurable re-implementation was
counted for every combination of the open choices and compared with every row
(``docs/architecture-counts.md``, with the arithmetic; the models' docstrings in ``spgnet/models/*.py``).
:data:`INFERRED` lists each such choice with the evidence; ``spgnet report`` renders it as a
section of ``tables.md``, and ``tests/test_report.py`` checks that every ``where`` exists.

The counting convention itself (:data:`CONVENTION`) is also inferred from the counts, so it is
listed first.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferredDetail:
    """One design choice that the counts, not the text, decide."""

    topic: str  # short name of the open question
    text: str  # what the paper's text says (or "not stated")
    choice: str  # what this implementation does
    evidence: str  # the counts that decide it
    where: str  # the file (relative to the project root) that implements it


#: How the paper counts: every measured #Params / #FLOPs cell of the report uses this convention.
CONVENTION = InferredDetail(
    topic="Counting convention",
    text='"#FLOPs take all matrix multiplication into account" (Table 1 footnote); '
         '"w.r.t. a single 1024 x 2048 input" (Sec. 4.3).',
    choice="#FLOPs = multiply-accumulates of convolutions, linear layers and matrix products (one per "
           "MAC; norms, activations, pooling and additions not counted) on a 1025 x 2049 input (the "
           "DeepLab convention for a 1024 x 2048 image); #Params include norm weight and bias and "
           "exclude the ImageNet fc layer.",
    evidence="At 1024 x 2048 every row comes out 1.5-2.0% low; at 1025 x 2049 the differences between "
             "backbones (R101 - R50 = 158.8B, R152 - R101 = 158.4B) match the paper to 0.01B.",
    where="spgnet/analysis/profile.py",
)

INFERRED: tuple[InferredDetail, ...] = (
    CONVENTION,
    InferredDetail(
        topic="Input of the later stages",
        text="The stem (7x7 conv, 3x3 max-pool) is described for the encoder; how a later stage's "
             "encoder takes the SPG output is not stated.",
        choice="Only the first stage has the stem; every later encoder starts at ResNet layer1, fed at "
               "stride 4 by a 1x1 conv D -> 64 (+ norm + activation) from the SPG module.",
        evidence="Needed for the 2- and 3-stage rows (Tables 3, 5, 6, 7, 9) to match: e.g. 23.9M / "
                 "215.5B for the plain 2 x ResNet-18 baseline, 36.2M / 328.5B for 3 stages.",
        where="spgnet/models/backbone.py",
    ),
    InferredDetail(
        topic="Global context branch (GAP / AP)",
        text="Global average pooling on the encoder output starts the decoder (Sec. 3.2); Table 12 "
             "replaces it by average pooling (AP) at test time without giving the kernel.",
        choice="GAP on the stride-32 feature, then a 1x1 conv to D channels. AP: kernel = training crop "
               "// 32 (24 x 24 for 769 crops), stride 1, replicate-padded back; the 1x1 conv runs on "
               "the pooled map.",
        evidence="Counting with AP fits slightly better than with GAP (differences of at most 0.2B); "
                 "Table 12's GAP and AP rows both print 107.6B.",
        where="spgnet/models/decoder.py",
    ),
    InferredDetail(
        topic="Number of upsample modules and their lateral block",
        text="Upsample modules combine encoder features with the previous output via a residual block "
             "(Sec. 3.3, Fig. 2b); their scales and block width are not stated.",
        choice="Modules at strides 32, 16, 8 and 4; the lateral block is a ResNet bottleneck (mid "
               "channels D/4, 1x1 projection shortcut + norm when the channel count changes) to D.",
        evidence="Together with the fusing blocks below, every #Params row rounds to the paper's figure "
                 "and every #FLOPs row is within 0.03%.",
        where="spgnet/models/decoder.py",
    ),
    InferredDetail(
        topic="Fusing blocks per upsample module",
        text='"we further add another residual block to better fuse features" (one block).',
        choice="TWO D -> D bottleneck blocks fuse the sum in every module.",
        evidence="With one block every #FLOPs row is short; with two, all rows of Tables 3, 5, 6, 7, 9, "
                 "11 and 12 match to 0.03% (an extra D -> D bottleneck at the same resolution is "
                 "equivalent).",
        where="spgnet/models/decoder.py",
    ),
    InferredDetail(
        topic="Prediction head of each stage",
        text="Not described: the decoder output goes to a 1x1 conv producing per-class logits (Sec. 3.4).",
        choice="A 3x3 conv D -> D (+ norm + activation) on the stride-4 decoder output before the 1x1 "
               "classifier D -> C, in every stage.",
        evidence="Without it the rows fall short by an amount that grows exactly as D^2 per stage "
                 "(docs/architecture-counts.md: 19.44B at D = 128, 77.76B at D = 256, a ratio of "
                 "four), which pins it to a D -> D conv at stride 4: the 3x3 conv costs "
                 "9 x D^2 x 131,841 multiply-adds per stage (1025 x 2049 input).",
        where="spgnet/models/spgnet.py",
    ),
    InferredDetail(
        topic="Decoder without GAP (Tables 11, 12)",
        text='"we do not use global average pooling" (appendix A).',
        choice="The stride-32 module keeps only its lateral block (nothing to merge into).",
        evidence="Table 11 'Ours' / Table 12 'no GAP': 11.6M / 107.5B, matched.",
        where="spgnet/models/decoder.py",
    ),
    InferredDetail(
        topic="Layers of the SPG module",
        text="1x1 conv to logits, 1x1 conv + sigmoid = guided attention, multiplied with a 1x1-conv "
             "transform of x_d, identity added, another 1x1 conv to the next encoder (Sec. 3.4). Norms "
             "are not stated.",
        choice="Logits: 1x1 conv D -> C; attention: 1x1 conv C -> D + sigmoid; transform: 1x1 conv D -> D "
               "+ norm; then the 1x1 conv D -> 64 (+ norm + activation). The plain 2-stage baseline "
               "already has the first stage's logits conv (deep supervision) and the D -> 64 conv.",
        evidence="SPG adds ~2.5B FLOPs and ~19K parameters over the plain baseline (215.5B -> 218.0B, "
                 "'about 1% increase in FLOPs', Sec. 3.4): exactly the C x D and D x D 1x1 convs at "
                 "stride 4.",
        where="spgnet/models/guidance.py",
    ),
    InferredDetail(
        topic="SPG (sum) variant",
        text='"The sum of the transformed predictions and the 1st stage decoder output" (Sec. 4.4).',
        choice="out = conv(x_l) + T(x_d) + x_d: SPG with the product replaced by a sum and no sigmoid; "
               "the D -> D transform T is kept.",
        evidence="Table 3 prints 218.0B for SPG (sum), the same as SPG (sigmoid); without T it would be "
                 "about 2.2B lower.",
        where="spgnet/models/guidance.py",
    ),
    InferredDetail(
        topic="Cross Stage Feature Aggregation",
        text="As in MSPN [33] (Fig. 2c); layer details not stated.",
        choice="At each of the 4 scales, the previous stage's encoder and decoder features each pass a 1x1 "
               "conv + norm to the current encoder's channel count and are added to the current "
               "encoder's output at that scale (megvii-research/MSPN network.py).",
        evidence="Part of the fit that matches every 2- and 3-stage row (e.g. 55.6M / 467.6B for "
                 "2 x ResNet-50; this implementation 467.66B).",
        where="spgnet/models/spgnet.py",
    ),
    InferredDetail(
        topic="FPN-style decoder (Table 11)",
        text='"we follow [37] to implement FPN decoder module and only use the largest resolution '
             'feature maps for prediction", Inplace-ABN after all convolutions.',
        choice="1x1 lateral convs (+ norm) at 4 levels, nearest-neighbour upsampling, one 3x3 output "
               "conv at the finest level, plus the same 3x3 head; no GAP.",
        evidence="11.60M (+0.85%) and 118.59B (-0.01%) against the paper's 11.5M / 118.6B: the best fit "
                 "among the variants tried.",
        where="spgnet/models/decoder.py",
    ),
)

#: Rows the best fit still misses (beyond rounding), for the report's notes.
RESIDUAL_MISSES = (
    "ResNet-50 2-stage: 467.66B (paper 467.6B)",
    "ResNet-50, 256 channels: 654.99B (paper 654.8B)",
    "ResNet-101, 256 channels: 972.61B (paper 972.4B)",
)
