"""``spgnet export EXPERIMENT --checkpoint CKPT --format onnx|exported-program --out FILE``.

The exported graph is :class:`LogitsModel` around :func:`spgnet.serving.predictor.load_model`'s
network (eval mode, norms folded): input ``image`` ``float32 [N, 3, H, W]`` normalised with
ImageNet's mean and standard deviation (:func:`spgnet.data.transforms.normalize`), output
``logits`` ``float32 [N, C, H, W]`` at the input's resolution (softmax and arg-max are left to
the caller). ``N``, ``H`` and ``W`` are dynamic.

``onnx``: ``torch.onnx.export(..., dynamo=True)`` (needs ``onnx`` and ``onnxscript``), then run by
``onnxruntime`` on the CPU. ``exported-program``: ``torch.export.export`` saved with
``torch.export.save`` (a ``.pt2`` file; ``torch.export.load(FILE).module()`` runs it). Either way
the written file is read back and run on two input sizes (the example and a larger one of odd
size) beside the PyTorch network; the largest absolute logit difference is printed, and a
difference above ``--tolerance`` (default 1e-3) is an error that leaves no file behind.

Global pooling: the graph holds the experiment's test pooling (Table 12). ``AP`` averages over a
``crop // 32`` window of the stride-32 features, a constant of the graph, so an AP graph needs
inputs of at least :func:`min_side` pixels a side (the exported program checks this; the ONNX
graph does not). TILED is a way of running the network, not part of it: it exports the GAP graph.
``torch.jit.script`` is not offered: see ``docs/export.md``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spgnet.errors import SpgnetError

FORMATS = ("onnx", "exported-program")
#: ONNX opset of the exported graph.
OPSET = 18


class LogitsModel(nn.Module):
    """``float32 [N, 3, H, W]`` normalised images -> ``float32 [N, C, H, W]`` logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        from spgnet.engine.evaluation.inference import logits_of

        logits = logits_of(self.model(image))
        if logits.shape[-2:] != image.shape[-2:]:
            logits = nn.functional.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def min_side(strategy: str, crop: int) -> int:
    """Smallest input (and example) side an exported graph is valid for: ``32 * (crop // 32) + 1``
    for AP (the stride-32 features must exceed the AP kernel, else the pooled map has one row
    and the tracer specialises it), 65 otherwise (stride-32 features of at least 3 pixels).
    For crops of the form ``32 k + 1`` (97, 513, 769) the AP minimum is the crop itself."""
    from spgnet.engine.evaluation.inference import ap_kernel

    return 32 * ap_kernel(crop) + 1 if strategy == "AP" else 65


def _dynamic_shapes():
    dim = torch.export.Dim.DYNAMIC
    return {"image": {0: dim, 2: dim, 3: dim}}


def check_sizes(example: tuple[int, int]) -> list[tuple[int, int]]:
    """The two input sizes an export is checked on: the example and a larger one of odd size."""
    h, w = example
    return [(h, w), (h + h // 4 + 7, w + w // 3 + 5)]


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """Write ``module`` as ONNX (dynamic batch, height and width) to ``path``."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), None, dynamo=True, input_names=["image"],
                                    output_names=["logits"], dynamic_shapes=_dynamic_shapes(),
                                    opset_version=OPSET, verbose=False, report=False)
    program.save(str(path))


def onnx_runner(path: str | Path):
    """A function ``float32 [N, 3, H, W]`` tensor -> numpy logits that runs ``path`` in onnxruntime."""
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.detach().cpu().numpy()})[0]


def export_program(module: nn.Module, example: torch.Tensor, path: str | Path) -> None:
    """Write ``torch.export.export(module)`` (dynamic batch, height and width) to ``path``."""
    program = torch.export.export(module, (example,), dynamic_shapes=_dynamic_shapes())
    with open(path, "wb") as handle:  # a handle: the temporary name does not end in .pt2
        torch.export.save(program, handle)


def program_runner(path: str | Path):
    with open(path, "rb") as handle:
        program = torch.export.load(handle).module()
    return lambda x: program(x).detach().cpu().numpy()


def max_difference(reference: nn.Module, runner, sizes: list[tuple[int, int]], seed: int = 0) -> list[float]:
    """Largest ``|logit difference|`` between ``reference`` and ``runner`` on a random normalised
    image of each size."""
    generator = torch.Generator().manual_seed(seed)
    differences = []
    for h, w in sizes:
        x = torch.randn(1, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = reference(x).float().numpy()
        got = runner(x)
        if got.shape != expected.shape:
            raise SpgnetError(f"exported graph gives logits {list(got.shape)} for a {h}x{w} input, "
                              f"PyTorch {list(expected.shape)}")
        differences.append(float(np.abs(got.astype(np.float32) - expected).max()))
    return differences


def export(model: nn.Module, fmt: str, out: str | Path, *, size: tuple[int, int], tolerance: float = 1e-3) -> list[float]:
    """Export ``model`` (a network of :func:`spgnet.serving.predictor.load_model`, on the CPU) in
    format ``fmt`` to ``out`` (written atomically), read it back and compare it with PyTorch on
    :func:`check_sizes` ``(size)``; returns the two largest absolute logit differences. A
    difference above ``tolerance`` raises :class:`SpgnetError` and leaves no file."""
    from spgnet.atomic import atomic_path

    if fmt not in FORMATS:
        raise SpgnetError(f"unknown export format '{fmt}' (valid: {', '.join(FORMATS)})")
    module = LogitsModel(model).eval()
    example = torch.zeros(2, 3, *size)  # batch 2: a batch of 1 would be specialised to 1
    sizes = check_sizes(size)
    with atomic_path(Path(out)) as tmp:
        if fmt == "onnx":
            export_onnx(module, example, tmp)
            runner = onnx_runner(tmp)
        else:
            export_program(module, example, tmp)
            runner = program_runner(tmp)
        differences = max_difference(module, runner, sizes)
        worst = max(differences)
        if not worst <= tolerance:
            raise SpgnetError(f"{out}: exported graph differs from PyTorch by {worst:.3g} > tolerance {tolerance:g} "
                              f"(sizes {sizes}); nothing written")
    return differences


def main(args) -> int:
    from spgnet.serving.predictor import load_model, prepare_for_inference, settings_of

    model = load_model(args.experiment, args.checkpoint, profile=args.profile, overrides=getattr(args, "set", None),
                       device="cpu", experiments=getattr(args, "experiments", None))
    settings = settings_of(model)
    strategy = args.strategy or ("GAP" if settings.strategy == "TILED" else settings.strategy)
    if strategy != settings.strategy:
        model = prepare_for_inference(model, settings.replace(strategy=strategy))
    smallest = min_side(strategy, settings.crop)
    side = max(settings.crop, smallest)
    size = tuple(args.size) if args.size else (side, side)
    if min(size) < smallest:
        raise SpgnetError(f"--size {size[0]} {size[1]}: the {strategy} graph needs inputs of at least "
                          f"{smallest} pixels a side")
    start = time.perf_counter()
    differences = export(model, args.format, args.out, size=size, tolerance=args.tolerance)
    sizes = check_sizes(size)
    checked = ", ".join(f"{d:.2e} at {h}x{w}" for d, (h, w) in zip(differences, sizes))
    print(f"{settings.experiment} [{strategy}] -> {args.out} ({args.format}, {time.perf_counter() - start:.0f} s); "
          f"max |logit difference| against PyTorch: {checked}")
    print(f"note: the graph is valid for inputs of at least {smallest} pixels a side", file=sys.stderr)
    return 0
