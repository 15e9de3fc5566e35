"""Device check (issue 11, point 8; issue 21, point 1): what the paper profile needs from one GPU, in one script.

    python3 benchmarks/gpu_check.py [--wheels .whl] [--budget-s 420] [--only SECTION...] [--json FILE]
    python benchmarks/gpu_check.py --device cpu --tiny        # small sizes on CPU (CI's test)
    python benchmarks/gpu_check.py --device cpu --tiny --cpu-standins   # + the CUDA sections on CPU

Prints, one section after another, in this fixed order of importance (each catches and prints its
own failure and the script goes on; a section, or a row of one, that would start after
``--budget-s`` seconds is skipped, so the whole run stays within about 8 minutes on one GPU;
without CUDA, sections 4, 5, 6, 7 and 8 and the float16 halves of 2 and 3 print ``skipped: no
CUDA`` unless ``--cpu-standins`` runs the sections on CPU, which only shows that the code runs).
``--only SECTION...`` runs the named sections, still in this order (an unknown name: one line,
exit 2; ``--wheels`` installs first even when ``environment`` is left out). The order puts what
a cluster run cannot do without first, cheap correctness checks before the timed sections, and
design questions and tuning last, so that a run cut short still answers the first questions:

1. ``environment``: GPU name, compute capability, torch / CUDA / cuDNN versions, nvcc; with
   ``--wheels DIR`` first installs DIR's wheels (``--no-index --no-deps``) into a temporary
   site folder and builds inplace-abn from DIR's sdist there when it is not importable
   (``TORCH_CUDA_ARCH_LIST`` = this GPU's capability, ``MAX_JOBS`` = CPU count).
2. ``inplace_abn``: InPlaceABN's forward and backward (training mode, leaky ReLU 0.01) against
   batch norm + leaky ReLU in float64: max abs and relative errors of y, dx, dweight, dbias for
   float32 and float16 inputs (float32 parameters, as under autocast).
3. ``imagenet_init``: ImageNet BatchNorm weights converted for Inplace-ABN
   (:func:`spgnet.models.pretrained.fit_to_abs_weight_norms`, ``docs/imagenet-init.md``): a
   torchvision-format ``resnet50`` file fabricated with N(0, 1) gammas (half of them negative),
   nonzero betas and random running statistics (``resnet18`` with ``--tiny``), loaded into
   :class:`spgnet.models.backbone.ResNetEncoder` on the device under ``batchnorm`` and
   ``inplace_abn``, eval mode, a 2x3x512x512 input: in float32 (TF32 off) the four outputs of
   ``inplace_abn`` against ``batchnorm``'s, PASS when max|a - b| / max|b| <= 1e-5; under float16
   autocast each against a float64 ``batchnorm`` encoder, PASS when ``inplace_abn``'s error is at
   most twice ``batchnorm``'s own (inplace-abn's CPU kernels take no half / bfloat16 input: on CPU
   that half is ``skipped: no CUDA``); the conversion counts (``encoder.imagenet_init``).
4. ``ddp``: two ranks on one GPU (gloo, ``torch.multiprocessing.spawn``), one crop each, with
   InPlaceABNSync, against one process with both crops: max weight difference after one SGD step
   of ``t3-1stage`` (TF32 off), beside the largest weight update of that step.
5. ``train_run``: a short real training, :func:`spgnet.engine.train.loop.train` itself: ``t9-r50-d256``
   at the paper profile's settings (crop 769, batch 8, OHEM, poly schedule of 80000 iterations,
   ``train.amp: auto`` = float16 autocast + GradScaler on CUDA, ``cudnn.benchmark``, 8 loader
   workers) from fabricated ``resnet50`` ImageNet files on 8 synthetic 1024x2048 Cityscapes-format
   images written by ``spgnet make-synthetic``'s generator in a temporary folder, for 90 s
   (``--train-run-s``; never past the budget). One process holds the whole batch, so the norm is
   ``inplace_abn`` (not synchronised; the printout says so). Prints iterations/s (overall and
   after the first 10, with the share of that time spent waiting for data), the loss the loop
   logs (OHEM, all stages, and the final stage's term) and the plain cross-entropy of the final
   output over all labelled pixels (computed from the same forward pass) as means over the first
   and the last 10 iterations, skipped steps (the gradient scaler's: a few at the start while it
   lowers its initial scale of 2^16 are normal), peak GiB. The run is ended from ``on_step`` as a
   kill would end it.
6. ``train_step``: for ``t3-1stage``, ``t9-r50-d256``, ``t9-r101-d256``, ``t1-danet``, training
   steps at 769x769 with batch 8 and batch 1 as ``spgnet train`` runs them on CUDA (float16
   autocast, GradScaler, ``cudnn.benchmark``, SGD, the experiment's loss with OHEM's
   ``min_kept`` scaled to the batch; at batch 1 a norm that sees one value per channel uses its
   running statistics, as ``spgnet memory`` does): ms/step, achieved TFLOP/s = 2 x 3 x batch x
   the multiply-adds of :func:`spgnet.analysis.profile.count` at 769x769 (forward + backward
   taken as 3 forwards; 2 FLOPs per multiply-add) / step time, % of the GPU's dense float16 peak
   (:data:`PEAK_TFLOPS`), peak GiB (``torch.cuda.max_memory_allocated``), finite losses.
7. ``inference``: ``spgnet evaluate``'s :func:`spgnet.engine.evaluation.inference.infer_probs` on a 1024x2048
   image with ``t9-r50-d256`` (random weights): AP and TILED at one scale, and the six scales +
   flip of Sec. 4.4: s/image and peak GiB (one timed pass after a warm-up; two before issue 21).
8. ``norm_cost``: the step of section 6 for ``t9-r50-d256`` at batch 8, 769x769: with
   ``batchnorm`` (a network without Inplace-ABN) in NCHW and in ``channels_last`` layout, and with
   ``inplace_abn`` (NCHW, the only layout its kernels take): ms/step and peak GiB of each and
   their ratios, so that the norm's cost on this GPU is a number (``spgnet train`` runs a
   ``batchnorm`` network channels-last on CUDA).
9. ``data_loading``: ``benchmarks/data_loading.py``'s DataLoader throughput (crop-first
   transform, uint8 labels, pinned memory) on fabricated 2048x1024 Cityscapes-like PNGs at 8 and
   16 workers (40 timed batches; 60 before issue 21).

Estimated on one H100 (the script has not run on a GPU yet): environment with the inplace-abn
build 1-2.5 min, sections 2-4 under a minute together, ``train_run`` about 2 min with its set-up,
``train_step`` 1-1.5 min, ``inference``, ``norm_cost`` and ``data_loading`` well under a minute
each; the 420 s budget skips whatever would start later.

``--json FILE`` also writes every figure as JSON, after every section (a run cut short keeps what
it measured).

It needs only PyTorch, torchvision, nvcc and what the device machine's image holds (numpy, Pillow,
PyYAML); the rest travels in ``.whl`` (git-ignored): inplace-abn's sdist, setuptools_scm (its
build needs it), cityscapesscripts (``spgnet.data.labels`` reads its label table) and pydantic
with its three dependencies the image lacks (``spgnet.config`` validates every setting with it).
Tracking is off (``SPGNET_TRACKING=0``); mlflow is not needed. Prepare once, in the repository
root that the device tool sends (the lead's checkout)::

    pip download --no-deps --no-binary :all: --no-build-isolation inplace-abn==1.1.0 -d .whl
    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        setuptools_scm==9.2.2 cityscapesscripts==2.3.0 pydantic==2.14.4 pydantic_core==2.50.5 \\
        annotated_types==0.8.0 typing_inspection==0.4.5 -d .whl

then call the device tool's ``run`` with ``carry: [".whl"]``, ``timeout_s: 560`` and::

    export PYTHONUNBUFFERED=1 SPGNET_TRACKING=0; python3 benchmarks/gpu_check.py --wheels .whl \\
        --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import torch  # noqa: E402

#: Dense (no sparsity) float16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets, by a
#: substring of ``torch.cuda.get_device_name()``; the first match wins (specific names first).
PEAK_TFLOPS = (
    ("H200", 989.5), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.5), ("GH200", 989.5),
    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
    ("A10G", 125.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0),
)
EXPERIMENTS = ("t3-1stage", "t9-r50-d256", "t9-r101-d256", "t1-danet")
GIB = 2.0**30
#: The sections in the order they run (the module docstring says why this order).
SECTIONS = ("environment", "inplace_abn", "imagenet_init", "ddp", "train_run", "train_step", "inference",
            "norm_cost", "data_loading")
#: Sections that need CUDA (``--cpu-standins`` runs them on CPU to test the script).
CUDA_SECTIONS = frozenset({"ddp", "train_run", "train_step", "inference", "norm_cost"})
#: imagenet_init's float32 bound: max|inplace_abn - batchnorm| / max|batchnorm| (tests/test_imagenet_init.py)
INIT_TOLERANCE = 1e-5
#: imagenet_init's float16 bound: inplace_abn's error against float64 <= this x batchnorm's own
INIT_FP16_FACTOR = 2.0
#: train_run: the experiment it trains, and the iterations its means are taken over (first and last)
TRAIN_RUN_EXPERIMENT = "t9-r50-d256"
TRAIN_RUN_WINDOW = 10


def peak_tflops(name: str) -> float | None:
    """The dense float16 peak of the GPU called ``name`` (None when it is not in the table)."""
    return next((value for key, value in PEAK_TFLOPS if key in name), None)


@dataclasses.dataclass
class Sizes:
    """What the sections run: the paper's sizes on a GPU, small ones with ``--tiny``."""

    crop: int = 769
    batches: tuple = (8, 1)
    warmup: int = 2
    steps: int = 5
    image: tuple = (1024, 2048)
    ddp_crop: int = 257
    loader_workers: tuple = (8, 16)
    loader_image: tuple = (1024, 2048)
    loader_batches: int = 40
    inference_repeats: int = 1
    init_backbone: str = "resnet50"  # imagenet_init
    init_input: int = 512
    train_run_s: float = 90.0  # train_run: seconds of training (from its first step)
    train_run_steps: int = 0  # ... and at most this many steps (0: no limit)
    train_run_images: int = 8
    train_run_workers: int = 8


TINY = Sizes(crop=33, batches=(2, 1), warmup=1, steps=1, image=(64, 128), ddp_crop=33, loader_workers=(2,),
             loader_image=(64, 128), loader_batches=2, inference_repeats=1, init_backbone="resnet18", init_input=64,
             train_run_s=60.0, train_run_steps=3, train_run_images=2, train_run_workers=0)


class Budget:
    def __init__(self, seconds: float):
        self.seconds, self.started = float(seconds), time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> bool:
        return self.elapsed() >= self.seconds


def say(text: str) -> None:
    print(text, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None


def single_process_norm() -> str:
    """InPlaceABN (the paper profile's InPlaceABNSync over one process: the same maths) when
    inplace-abn imports, else the project's BatchNorm + leaky ReLU, so that a failed build still
    leaves the speed figures (each line names the norm it ran)."""
    try:
        import inplace_abn  # noqa: F401
    except ImportError:
        return "batchnorm"
    return "inplace_abn"


def _fmt_gib(value: float | None) -> str:
    return "n/a on CPU" if value is None else f"{value:.2f} GiB"


# --------------------------------------------------------------------------------------------
# 1. environment (and the wheels / inplace-abn build)
# --------------------------------------------------------------------------------------------


def cuda_home() -> Path | None:
    """The CUDA toolkit to build with: ``CUDA_HOME``/``CUDA_PATH``, ``/usr/local/cuda``, or the
    folder above the real ``nvcc`` (an ``nvcc`` copied to ``/usr/local/bin`` would make torch's
    own guess ``/usr/local``); the first that holds ``bin/nvcc``."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    return next((Path(c) for c in candidates if c and (Path(c) / "bin" / "nvcc").exists()), None)


def cudart_dir(home: Path, scratch: Path) -> Path | None:
    """A folder where the linker finds ``libcudart.so`` (``-lcudart``): the toolkit's ``lib64``
    or ``lib``, else ``scratch`` with a link to a versioned ``libcudart.so.N`` (the toolkit's or
    the nvidia-cuda-runtime wheel's that torch uses). None when there is none."""
    for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
        if (home / sub / "libcudart.so").exists():
            return home / sub
    import glob

    found = sorted(glob.glob(str(home / "**" / "libcudart.so.*"), recursive=True))
    nvidia = Path(torch.__file__).resolve().parent.parent / "nvidia"
    found += sorted(glob.glob(str(nvidia / "**" / "libcudart.so.*"), recursive=True))
    if not found:
        return None
    scratch.mkdir(parents=True, exist_ok=True)
    link = scratch / "libcudart.so"
    if not link.exists():
        link.symlink_to(found[0])
    return scratch


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """Install ``wheels/*.whl`` into ``site`` and build inplace-abn from ``wheels``' sdist there
    unless it is importable; ``site`` goes on ``sys.path`` and ``PYTHONPATH`` (for spawned
    processes and the build). Returns what was done, one line each."""
    done = []
    site.mkdir(parents=True, exist_ok=True)
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir",
           "--disable-pip-version-check", "--upgrade", "--target", str(site)]
    wheel_files = sorted(str(p) for p in wheels.glob("*.whl"))
    if wheel_files:
        subprocess.run(pip + wheel_files, check=True, capture_output=True, text=True)
        done.append(f"installed {', '.join(Path(w).name for w in wheel_files)}")
    try:
        import inplace_abn  # noqa: F401

        done.append("inplace_abn importable, not rebuilt")
        return done
    except ImportError:
        pass
    sdists = sorted(wheels.glob("inplace*abn-*.tar.gz"))
    if not sdists:
        raise RuntimeError(f"inplace_abn is not importable and {wheels} holds no inplace-abn sdist")
    env = dict(os.environ, MAX_JOBS=str(os.cpu_count() or 4))
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        env["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
    if torch.version.cuda:  # a CUDA build of torch: setup.py builds the CUDA kernels and links libcudart
        home = cuda_home()
        if home is not None:
            env["CUDA_HOME"] = str(home)
            runtime = cudart_dir(home, site.parent / (site.name + "-cudart"))
            if runtime is not None:
                env["LIBRARY_PATH"] = os.pathsep.join([str(runtime)] + [p for p in [env.get("LIBRARY_PATH")] if p])
    started = time.perf_counter()
    result = subprocess.run(pip + ["--no-build-isolation", str(sdists[0])], env=env, capture_output=True, text=True)
    if result.returncode:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise RuntimeError(f"building {sdists[0].name} failed:\n{tail}")
    import importlib

    importlib.invalidate_caches()
    import inplace_abn  # noqa: F401

    done.append(f"built {sdists[0].name} for {env.get('TORCH_CUDA_ARCH_LIST', 'CPU')} in "
                f"{time.perf_counter() - started:.0f} s")
    return done


def section_environment(device: torch.device, args) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": sys.version.split()[0]}
    if args.wheels:
        info["setup"] = install_wheels(Path(args.wheels), Path(args.site))
        for line in info["setup"]:
            say(f"  {line}")
    nvcc = shutil.which("nvcc")
    if nvcc:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        info["nvcc"] = out[-1] if out else nvcc
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                    memory_gib=round(props.total_memory / GIB, 1), multiprocessors=props.multi_processor_count,
                    peak_fp16_tflops=peak_tflops(torch.cuda.get_device_name(device)))
    from spgnet.runtime.hardware import describe_line

    info["cpu"] = describe_line()
    say(f"  GPU: {info.get('gpu', 'none')} capability {info.get('capability')} "
        f"({info.get('memory_gib', '-')} GiB, dense fp16 peak {info.get('peak_fp16_tflops')} TFLOP/s)")
    say(f"  torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, Python {info['python']}, "
        f"nvcc: {info.get('nvcc', 'not found')}")
    say(f"  CPU: {info['cpu']}")
    return info


# --------------------------------------------------------------------------------------------
# 2. InPlaceABN against a float64 reference
# --------------------------------------------------------------------------------------------


def _abn_reference(x, weight, bias, eps, slope):
    y = torch.nn.functional.batch_norm(x, None, None, weight, bias, training=True, eps=eps)
    return torch.nn.functional.leaky_relu(y, slope)


def section_inplace_abn(device: torch.device, sizes: Sizes) -> dict:
    from inplace_abn.functions import inplace_abn

    eps, slope = 1e-5, 0.01
    shape = (4, 32, 33, 33) if sizes is TINY else (8, 256, 97, 97)
    results = {}
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16)):
        if dtype == torch.float16 and device.type != "cuda":
            say(f"  {name}: skipped: no CUDA")
            results[name] = "skipped: no CUDA"
            continue
        g = torch.Generator().manual_seed(0)
        x64 = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 1).to(device)
        w64 = (torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5).to(device)
        b64 = (torch.randn(shape[1], generator=g, dtype=torch.float64) * 0.1).to(device)
        grad64 = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
        # the reference sees the inputs rounded to the tested precision
        xr = x64.to(dtype).double().requires_grad_()
        wr, br = w64.float().double().requires_grad_(), b64.float().double().requires_grad_()
        yr = _abn_reference(xr, wr, br, eps, slope)
        yr.backward(grad64.to(dtype).double())
        x = x64.to(dtype).requires_grad_()
        w, b = w64.float().requires_grad_(), b64.float().requires_grad_()
        running_mean = torch.zeros(shape[1], device=device)
        running_var = torch.ones(shape[1], device=device)
        y = inplace_abn(x * 1, w, b, running_mean, running_var, True, 0.1, eps, "leaky_relu", slope)
        y.backward(grad64.to(dtype))
        errors = {}
        for key, got, ref in (("y", y, yr), ("dx", x.grad, xr.grad), ("dweight", w.grad, wr.grad),
                              ("dbias", b.grad, br.grad)):
            diff = (got.double() - ref.detach()).abs().max().item()
            scale = ref.detach().abs().max().item()
            errors[key] = {"max_abs": diff, "max_rel": diff / max(scale, 1e-30),
                           "finite": bool(torch.isfinite(got).all())}
        results[name] = errors
        say(f"  {name} {list(shape)}: " + ", ".join(
            f"{k} abs {v['max_abs']:.2e} rel {v['max_rel']:.2e}{'' if v['finite'] else ' NON-FINITE'}"
            for k, v in errors.items()))
    return results


# --------------------------------------------------------------------------------------------
# 3. ImageNet BatchNorm weights converted for Inplace-ABN
# --------------------------------------------------------------------------------------------


def _relative_difference(outputs, references) -> float:
    """max over the encoder's outputs of max|a - b| / max|b| (in float64; NaN when not finite)."""
    worst = 0.0
    for a, b in zip(outputs, references):
        a, b = a.detach().double(), b.detach().double()
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            return float("nan")
        worst = max(worst, float((a - b).abs().max() / b.abs().max()))
    return worst


def section_imagenet_init(device: torch.device, sizes: Sizes) -> dict:
    from spgnet.models.backbone import ResNetEncoder, load_imagenet_weights
    from spgnet.models.norm import norm_act
    from spgnet.models.weights import fabricate_weights_file

    backbone, side = sizes.init_backbone, sizes.init_input
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    result = {"backbone": backbone, "input": [2, 3, side, side]}
    try:
        with tempfile.TemporaryDirectory(prefix="spgnet-gpu-check-imagenet-") as tmp:
            fabricate_weights_file(Path(tmp), backbone, seed=0)
            encoders = {}
            for norm in ("batchnorm", "inplace_abn"):
                encoder = ResNetEncoder(backbone, norm_act(norm)).to(device)
                load_imagenet_weights(encoder, tmp)  # converts on the device (it traces conv -> norm there)
                encoders[norm] = encoder.eval()
        result["conversion"] = {k: v for k, v in encoders["inplace_abn"].imagenet_init.items() if k != "file"}
        c = result["conversion"]
        say(f"  fabricated {backbone} file (N(0,1) gammas): {c['norm_layers']} Inplace-ABN layers, {c['channels']} "
            f"channels, {c['sign_to_conv']} negative gammas moved into their convolution, {c['sign_to_input']} into "
            f"an input sign, {c['below_eps']} below eps")
        x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            outputs = {norm: encoder(x.clone()) for norm, encoder in encoders.items()}
            reference = copy.deepcopy(encoders["batchnorm"]).double()(x.double())
        rel = _relative_difference(outputs["inplace_abn"], outputs["batchnorm"])
        result["float32"] = {"max_rel_vs_batchnorm": rel, "bound": INIT_TOLERANCE, "pass": rel <= INIT_TOLERANCE,
                             "batchnorm_vs_float64": _relative_difference(outputs["batchnorm"], reference),
                             "inplace_abn_vs_float64": _relative_difference(outputs["inplace_abn"], reference)}
        f32 = result["float32"]
        say(f"  float32 (TF32 off), {backbone} on 2x3x{side}x{side}, eval: inplace_abn vs batchnorm max|a-b|/max|b| "
            f"{rel:.2e} (bound {INIT_TOLERANCE:.0e}): {'PASS' if f32['pass'] else 'FAIL'}; against float64: batchnorm "
            f"{f32['batchnorm_vs_float64']:.2e}, inplace_abn {f32['inplace_abn_vs_float64']:.2e}")
        if device.type != "cuda":
            say("  float16 autocast: skipped: no CUDA (inplace-abn's CPU kernels take no half or bfloat16 input)")
            result["float16"] = "skipped: no CUDA"
            return result
        try:
            with torch.no_grad(), torch.autocast(device_type="cuda", dtype=torch.float16):
                half = {norm: encoder(x.clone()) for norm, encoder in encoders.items()}
        except Exception as err:  # keep the float32 figures
            say(f"  float16 autocast: FAILED: {type(err).__name__}: {err}")
            result["float16"] = {"error": f"{type(err).__name__}: {err}"}
            return result
        err_bn = _relative_difference(half["batchnorm"], reference)
        err_abn = _relative_difference(half["inplace_abn"], reference)
        passed = err_abn <= INIT_FP16_FACTOR * err_bn  # False when either is NaN
        result["float16"] = {"batchnorm_vs_float64": err_bn, "inplace_abn_vs_float64": err_abn,
                             "ratio": err_abn / err_bn if err_bn > 0 else None, "factor": INIT_FP16_FACTOR,
                             "pass": passed, "dtypes": sorted({str(t.dtype) for t in half["inplace_abn"]})}
        ratio = f"{err_abn / err_bn:.2f}x" if err_bn > 0 else "n/a"
        say(f"  float16 autocast: max|a-ref|/max|ref| against float64 batchnorm: inplace_abn {err_abn:.2e}, "
            f"batchnorm {err_bn:.2e} ({ratio}; bound {INIT_FP16_FACTOR:.0f}x): {'PASS' if passed else 'FAIL'}"
            + ("" if math.isfinite(err_bn) and math.isfinite(err_abn) else " (an output is not finite)"))
        return result
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------------------------
# 4. two ranks on one device (gloo) against one rank with both crops
# --------------------------------------------------------------------------------------------


def _ddp_batch(crop: int, num_classes: int):
    g = torch.Generator().manual_seed(1234)
    images = torch.randn(2, 3, crop, crop, generator=g)
    labels = torch.randint(0, num_classes, (2, crop, crop), generator=g)  # no ignored pixels
    return images, labels


def _ddp_model(name: str, norm: str, device: torch.device, distributed: bool):
    from spgnet.config import get_experiment
    from spgnet.engine.train import distributed as dist_tools
    from spgnet.models import build_model_from_config

    experiment = get_experiment(name)
    if device.type == "cpu":  # InPlaceABNSync's CUDA kernel: on CPU it is built as InPlaceABN, then converted
        norm = "inplace_abn"
    model_cfg = dataclasses.replace(experiment.model, norm=norm, pretrained=None)
    torch.manual_seed(0)
    model = build_model_from_config(model_cfg, device=device)
    if distributed and device.type == "cpu":
        dist_tools.enable_cpu_sync_bn()
        model = dist_tools.convert_inplace_abn_sync(model)
    if distributed:
        dist_tools.set_sync_groups(model)
    for module in model.modules():  # the same maths in one process and two
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return model.to(device).train(), experiment


def _ddp_step(model, experiment, images, labels) -> float:
    from spgnet.engine.train.losses import segmentation_loss
    from spgnet.engine.train.schedule import build_optimizer

    optimizer = build_optimizer(model, experiment.train)
    loss, _ = segmentation_loss(model(images), labels, experiment.train, supervise=experiment.model.supervise)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _ddp_rank(rank: int, world: int, port: int, device_name: str, crop: int, out: str) -> None:
    import torch.distributed as dist

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        device = torch.device(device_name)
        model, experiment = _ddp_model("t3-1stage", "inplace_abn_sync", device, distributed=True)
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if device.type == "cuda" else None)
        images, labels = _ddp_batch(crop, experiment.model.num_classes)
        _ddp_step(net, experiment, images[rank:rank + 1].to(device), labels[rank:rank + 1].to(device))
        if rank == 0:
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_ddp(device: torch.device, sizes: Sizes) -> dict:
    import torch.multiprocessing as mp

    crop = sizes.ddp_crop
    with tempfile.TemporaryDirectory(prefix="spgnet-gpu-check-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        mp.spawn(_ddp_rank, args=(2, _free_port(), str(device), crop, out), nprocs=2, join=True)
        two = torch.load(out, map_location="cpu")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model, experiment = _ddp_model("t3-1stage", "inplace_abn", device, distributed=False)
        before = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        images, labels = _ddp_batch(crop, experiment.model.num_classes)
        _ddp_step(model, experiment, images.to(device), labels.to(device))
        one = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    names = [k for k, v in one.items() if v.is_floating_point() and "running" not in k]
    diff = max((one[k] - two[k]).abs().max().item() for k in names)
    update = max((one[k] - before[k]).abs().max().item() for k in names)
    say(f"  t3-1stage, crops {crop}x{crop}: 2 ranks x 1 crop (gloo, InPlaceABNSync) vs 1 rank x 2 crops: "
        f"max weight difference {diff:.2e} after one step (largest update {update:.2e}; TF32 off)")
    return {"crop": crop, "max_weight_diff": diff, "max_update": update, "tensors": len(names)}


# --------------------------------------------------------------------------------------------
# 5. a short real training (spgnet.engine.train.loop.train)
# --------------------------------------------------------------------------------------------


class _StopTraining(Exception):
    """Raised from train_run's ``on_step``: ends spgnet's training loop as a kill would."""


def _plain_ce(outputs, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean cross-entropy of the final logits over every labelled pixel (no OHEM), one crop at a
    time in float32 (the extra memory of one crop's logits)."""
    import torch.nn.functional as F

    from spgnet.engine.train.losses import IGNORE_INDEX

    logits = outputs.get("out") if isinstance(outputs, dict) else outputs
    if not isinstance(logits, torch.Tensor) or logits.shape[-2:] != labels.shape[-2:]:
        return None
    with torch.no_grad():
        total = sum(F.cross_entropy(logits[k:k + 1].float(), labels[k:k + 1], ignore_index=IGNORE_INDEX,
                                    reduction="sum") for k in range(logits.shape[0]))
        return total / (labels != IGNORE_INDEX).sum().clamp_min(1)


class _Instrumented:
    """``spgnet.engine.train.loop``'s ``train_step``, unchanged, plus: the plain cross-entropy of the
    step's own forward pass (a forward hook), the step's duration, whether it was skipped, and the
    ImageNet conversion counts of the network it trains."""

    def __init__(self, original):
        self.original = original
        self.ce, self.step_s, self.skipped_at, self.conversion = [], [], [], None
        self.first_started = self.precision = self.scaler = None

    def __call__(self, net, batch, *args, **kwargs):
        device = next(net.parameters()).device
        labels = batch["label"].to(device, non_blocking=True).long()
        seen = {}
        handle = net.register_forward_hook(lambda module, inputs, outputs: seen.update(ce=_plain_ce(outputs, labels)))
        started = time.perf_counter()
        if self.first_started is None:
            self.first_started = started
            self.conversion = _conversion_counts(net)
            self.precision, self.scaler = kwargs.get("precision"), kwargs.get("scaler")  # as the loop runs it
        try:
            values, skipped = self.original(net, batch, *args, **kwargs)
        finally:
            handle.remove()
        self.step_s.append(time.perf_counter() - started)  # the step ends with a device sync (its losses)
        ce = seen.get("ce")
        self.ce.append(float(ce) if ce is not None else float("nan"))
        if skipped:
            self.skipped_at.append(len(self.step_s))  # 1-based iteration of this run
        return values, skipped


def _conversion_counts(model) -> dict:
    """Per ImageNet file, the norm channels its loading converted (summed over the stages reading it)."""
    counts = {}
    for module in model.modules():
        done = getattr(module, "imagenet_init", None)
        if done:
            entry = counts.setdefault(done["file"], {})
            for key, value in done.items():
                if key != "file":
                    entry[key] = entry.get(key, 0) + value
    return counts


def _mean(values) -> float | None:
    """Mean of the finite values (a step the gradient scaler skipped may have an infinite loss)."""
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def section_train_run(device: torch.device, sizes: Sizes, budget: Budget, seconds: float | None = None) -> dict:
    import spgnet.engine.train.loop as train_module
    from spgnet.config import load_profile, resolve
    from spgnet.data.synthetic.make import generate
    from spgnet.engine.train.precision import resolve_precision
    from spgnet.models.weights import fabricate_weights_file

    seconds = sizes.train_run_s if seconds is None else seconds
    name, batch, crop = TRAIN_RUN_EXPERIMENT, sizes.batches[0], sizes.crop
    norm = single_process_norm()
    # inplace-abn's CPU kernels take no bfloat16: the CPU stand-in trains in float32
    amp = "auto" if device.type == "cuda" else False
    with tempfile.TemporaryDirectory(prefix="spgnet-gpu-check-train-") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        generate(tmp / "cityscapes", num_train=sizes.train_run_images, num_val=0, num_test=0,
                 height=sizes.image[0], width=sizes.image[1])
        profile = load_profile("paper", data_root=str(tmp))  # cityscapes: tmp/cityscapes
        overrides = {"model": {"norm": norm, "pretrained": str(tmp / "imagenet")},
                     "train": {"device": str(device), "amp": amp, "batch_size": batch, "crop": crop,
                               "workers": sizes.train_run_workers, "val_every": 0}}
        cfg = resolve(name, profile, **overrides)
        overrides["train"]["checkpoint_every"] = cfg.train.iterations  # no checkpoint is written
        cfg = resolve(name, profile, **overrides)
        backbones = tuple(dict.fromkeys(cfg.model.backbones))
        for seed, backbone in enumerate(backbones):
            fabricate_weights_file(tmp / "imagenet", backbone, seed)
        prepared = time.perf_counter() - started
        say(f"  {name}, poly schedule of {cfg.train.iterations} iterations, batch {batch} in one process: norm "
            f"{norm}, not synchronised (the paper: inplace_abn_sync over 8 GPUs x 1 crop); crop {crop}, OHEM "
            f"{cfg.train.ohem_rule} min_kept {cfg.train.ohem_min_kept}, train.amp {cfg.train.amp}, "
            f"{cfg.train.workers} loader workers; {sizes.train_run_images} synthetic {sizes.image[0]}x{sizes.image[1]} "
            f"images and fabricated ImageNet {', '.join(backbones)} file(s) ({prepared:.1f} s to write)")
        # the loop calls spgnet.engine.train.loop.train_step by that name: wrapped while this runs
        step = _Instrumented(getattr(train_module, "train_step", None))
        losses, times = [], []

        def on_step(iteration: int, values: dict) -> None:
            times.append(time.perf_counter())
            losses.append(dict(values))
            if ((sizes.train_run_steps and len(losses) >= sizes.train_run_steps)
                    or times[-1] - (step.first_started or called) >= seconds or budget.spent()):
                raise _StopTraining

        saved_benchmark = torch.backends.cudnn.benchmark
        reset_peak(device)
        called = time.perf_counter()
        error = None
        if step.original is not None:
            train_module.train_step = step
        try:
            train_module.train(cfg, tmp / "run", seed=0, on_step=on_step)
        except _StopTraining:
            pass
        except Exception as err:  # report what ran before it
            error = f"{type(err).__name__}: {err}"
        finally:
            if step.original is not None:
                train_module.train_step = step.original
            benchmark = torch.backends.cudnn.benchmark  # as the loop set it
            torch.backends.cudnn.benchmark = saved_benchmark
    precision = step.precision or resolve_precision(cfg.train.amp, device)  # the loop's, when the wrapper saw it
    say(f"  precision {precision.name}{' + GradScaler' if step.scaler is not None else ''}, cudnn.benchmark "
        f"{benchmark}" + ("" if step.precision else " (precision as resolve_precision gives it: the loop's not seen)"))
    result = _train_run_summary(name, batch, crop, norm, precision, cfg, losses, times, step, called, device)
    result["cudnn_benchmark"] = benchmark
    if error:
        result["error"] = error
        say(f"  FAILED after {len(losses)} iteration(s): {error.splitlines()[0]}")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def _train_run_summary(name, batch, crop, norm, precision, cfg, losses, times, step, called, device) -> dict:
    n = len(losses)
    window = min(TRAIN_RUN_WINDOW, max(1, n // 2))
    final_key = max((k for k in (losses[0] if losses else {}) if k.startswith("loss_stage")),
                    key=lambda k: int(k[len("loss_stage"):]), default=None)
    result = {"experiment": name, "batch": batch, "crop": crop, "norm": norm, "synchronised": False,
              "precision": precision.name, "grad_scaler": step.scaler is not None, "workers": cfg.train.workers,
              "loss_scale": step.scaler.get_scale() if step.scaler is not None else None,
              "ohem": cfg.train.ohem, "iterations": n, "window": window, "skipped_steps": len(step.skipped_at),
              "skipped_at": step.skipped_at[:20],
              "peak_gib": peak_gib(device), "imagenet_conversion": step.conversion}
    if not n:
        return result
    seen = len(step.step_s) == n  # the wrapped train_step saw every step
    if not seen:
        result["skipped_steps"] = result["skipped_at"] = None
        say("  plain cross-entropy, skipped steps and data wait: n/a (spgnet.engine.train.loop's loop no longer calls "
            "its train_step by that name; benchmarks/gpu_check.py's _Instrumented needs the new place)")
    first_started = step.first_started if seen else called
    result["setup_s"] = first_started - called if seen else None
    result["seconds"] = times[-1] - first_started
    result["it_per_s"] = n / result["seconds"] if result["seconds"] > 0 else None
    if n > window:  # after cuDNN's autotuning and the loader's start
        steady = times[-1] - times[window - 1]
        result["it_per_s_after_window"] = (n - window) / steady if steady > 0 else None
        if seen and steady > 0:
            waits = [max(0.0, (times[k] - times[k - 1]) - step.step_s[k]) for k in range(window, n)]
            result["data_wait_share"] = sum(waits) / steady
    ces = step.ce if seen else [float("nan")] * n
    for part, rows, part_ces in (("first", losses[:window], ces[:window]), ("last", losses[-window:], ces[-window:])):
        result[part] = {"loss": _mean(r["loss"] for r in rows),
                        "loss_final_stage": _mean(r[final_key] for r in rows) if final_key else None,
                        "plain_ce_final": _mean(part_ces) if seen else None}
    skipped = set(step.skipped_at) if seen else set()
    nonfinite = sum(not all(math.isfinite(v) for v in r.values()) for r in losses)
    finite = all(math.isfinite(v) for k, r in enumerate(losses, 1) if k not in skipped for v in r.values())
    result["finite"], result["nonfinite_iterations"] = finite, nonfinite
    conversion = "; ".join(f"{f}: {c.get('sign_to_conv', 0)} of {c.get('channels', 0)} gammas negative, sign moved "
                           f"into the convolution" for f, c in (step.conversion or {}).items()) or "none seen"
    say(f"  ImageNet init under {norm}: {conversion}")
    steady = ""
    if result.get("it_per_s_after_window"):
        wait = result.get("data_wait_share")
        steady = (f" ({result['it_per_s_after_window']:.2f} it/s after the first {window}"
                  + (f", waiting for data {100 * wait:.0f}% of that time" if wait is not None else "") + ")")
    setup = f" (set-up before the first: {result['setup_s']:.1f} s)" if result["setup_s"] is not None else ""
    say(f"  {n} iterations in {result['seconds']:.1f} s{setup}: {_fmt(result['it_per_s'], '.2f')} it/s{steady}")
    for part in ("first", "last"):
        r = result[part]
        say(f"  {part} {window}: OHEM loss {_fmt(r['loss'])} (all stages; final stage {_fmt(r['loss_final_stage'])}), "
            f"plain cross-entropy of the final output {_fmt(r['plain_ce_final'])}")
    scaler = (f"gradient scaler, scale now {result['loss_scale']:g}" if step.scaler is not None
              else f"no gradient scaler in {precision.name}")
    at = f" at iteration(s) {', '.join(map(str, step.skipped_at[:10]))}{' ...' if len(step.skipped_at) > 10 else ''}"
    say(f"  skipped steps {len(step.skipped_at) if seen else 'n/a'}{at if seen and step.skipped_at else ''} ({scaler}), "
        f"losses of the steps taken {'finite' if finite else 'NOT FINITE'}"
        + (f" ({nonfinite} iteration(s) with a non-finite loss, left out of the means)" if nonfinite else "")
        + f", peak {_fmt_gib(result['peak_gib'])}")
    return result


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


# --------------------------------------------------------------------------------------------
# 6. training steps (and 8. the norm's cost)
# --------------------------------------------------------------------------------------------


def train_step(name: str, batch: int, device: torch.device, sizes: Sizes, peak: float | None, *,
               norm: str | None = None, channels_last: bool = False) -> dict:
    """Time ``sizes.steps`` training steps of ``name`` (after ``sizes.warmup``) with ``norm`` (default
    :func:`single_process_norm`), in channels-last layout when ``channels_last``."""
    from spgnet.analysis.profile import count
    from spgnet.config import get_experiment
    from spgnet.engine.train.losses import segmentation_loss
    from spgnet.engine.train.schedule import build_optimizer
    from spgnet.models import build_model_from_config
    from spgnet.models.norm import single_value_norms_use_running_stats

    experiment = get_experiment(name)
    crop = sizes.crop
    model_cfg = dataclasses.replace(experiment.model, norm=norm or single_process_norm(), pretrained=None)
    train_cfg = experiment.train
    if train_cfg.ohem:  # the paper's min_kept is per 8-crop batch of 769x769: scale it to this batch
        per_pixel = train_cfg.ohem_min_kept / (8 * 769 * 769)
        train_cfg = dataclasses.replace(train_cfg, ohem_min_kept=max(1, int(per_pixel * batch * crop * crop)))
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model_from_config(model_cfg, device=device).to(device, memory_format=fmt).train()
    fallback = single_value_norms_use_running_stats(model)
    optimizer = build_optimizer(model, train_cfg)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)  # disabled: scale() and step() pass through
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, crop, crop, generator=g).to(device).contiguous(memory_format=fmt)
    labels = torch.randint(0, model_cfg.num_classes, (batch, crop, crop), generator=g, dtype=torch.uint8)
    labels[:, :, -crop // 10:] = 255  # some ignore, as real crops have
    labels = labels.to(device, non_blocking=True).long()
    losses = []

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            loss, _ = segmentation_loss(model(images), labels, train_cfg, supervise=model_cfg.supervise)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())

    for _ in range(sizes.warmup):
        step()
    reset_peak(device)
    started = time.perf_counter()
    for _ in range(sizes.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - started) / sizes.steps
    _, macs = count(model_cfg, (crop, crop), "GAP", None)
    tflops = 2 * 3 * batch * macs / seconds / 1e12
    values = [float(v) for v in losses]
    result = {"experiment": name, "batch": batch, "crop": crop, "ms_per_step": 1000 * seconds,
              "macs_per_crop_forward": macs, "tflops": tflops,
              "percent_of_peak": 100 * tflops / peak if peak else None, "peak_gib": peak_gib(device),
              "losses": values, "finite": all(math.isfinite(v) for v in values), "amp": "float16" if amp else None,
              "norm": model_cfg.norm, "channels_last": channels_last,
              "running_stats_fallback": len(fallback)}
    del model, optimizer, images, labels
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def section_train(device: torch.device, sizes: Sizes, budget: Budget, experiments) -> list:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    results = []
    for name in experiments:
        for batch in sizes.batches:
            if budget.spent():
                say(f"  {name} batch {batch}: skipped: time budget ({budget.seconds:.0f} s) spent")
                continue
            try:
                r = train_step(name, batch, device, sizes, peak)
            except Exception as err:  # one row's failure must not hide the others
                say(f"  {name} batch {batch}: FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                results.append({"experiment": name, "batch": batch, "error": f"{type(err).__name__}: {err}"})
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            say(_step_line(r))
            results.append(r)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    return results


def _step_line(r: dict) -> str:
    pct = f"{r['percent_of_peak']:.1f}% of peak" if r["percent_of_peak"] is not None else "peak unknown"
    layout = ", channels_last" if r.get("channels_last") else ""
    return (f"  {r['experiment']} batch {r['batch']} at {r['crop']}x{r['crop']} ({r['norm']}{layout}): "
            f"{r['ms_per_step']:.1f} ms/step, {r['tflops']:.1f} TFLOP/s ({pct}), peak {_fmt_gib(r['peak_gib'])}, "
            f"losses {'finite' if r['finite'] else 'NOT FINITE'} ({', '.join(f'{v:.3f}' for v in r['losses'])})"
            + (f"; {r['running_stats_fallback']} norm(s) on running stats" if r["running_stats_fallback"] else ""))


def section_norm_cost(device: torch.device, sizes: Sizes, budget: Budget, name: str = "t9-r50-d256") -> dict:
    """ms/step of one network with ``batchnorm`` in NCHW and channels-last layout and with
    ``inplace_abn`` (NCHW), the same step, batch and crop; and the ratios."""
    saved = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak = peak_tflops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    batch = sizes.batches[0]
    rows = {}
    try:
        for key, norm, channels_last in (("batchnorm", "batchnorm", False), ("batchnorm_channels_last", "batchnorm", True),
                                         ("inplace_abn", "inplace_abn", False)):
            if budget.spent():
                say(f"  {name} {key}: skipped: time budget ({budget.seconds:.0f} s) spent")
                continue
            try:
                rows[key] = train_step(name, batch, device, sizes, peak, norm=norm, channels_last=channels_last)
            except Exception as err:  # one row's failure must not hide the others
                say(f"  {name} {key}: FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                rows[key] = {"error": f"{type(err).__name__}: {err}"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            say(_step_line(rows[key]))
    finally:
        torch.backends.cudnn.benchmark = saved

    def ratio(a: str, b: str, field: str = "ms_per_step") -> float | None:
        x, y = (rows.get(k, {}).get(field) for k in (a, b))
        return x / y if x is not None and y else None

    ratios = {"channels_last_vs_nchw": ratio("batchnorm_channels_last", "batchnorm"),
              "inplace_abn_vs_batchnorm": ratio("inplace_abn", "batchnorm"),
              "inplace_abn_vs_batchnorm_channels_last": ratio("inplace_abn", "batchnorm_channels_last"),
              "peak_inplace_abn_vs_batchnorm": ratio("inplace_abn", "batchnorm", "peak_gib")}
    words = {"channels_last_vs_nchw": "batchnorm channels_last / NCHW",
             "inplace_abn_vs_batchnorm": "inplace_abn / batchnorm (both NCHW)",
             "inplace_abn_vs_batchnorm_channels_last": "inplace_abn / batchnorm channels_last (as spgnet train runs each)",
             "peak_inplace_abn_vs_batchnorm": "peak memory inplace_abn / batchnorm"}
    say("  ratios: " + "; ".join(f"{words[k]} {v:.2f}" for k, v in ratios.items() if v is not None))
    return {"rows": rows, "ratios": ratios}


# --------------------------------------------------------------------------------------------
# 7. inference as spgnet evaluate runs it
# --------------------------------------------------------------------------------------------


def section_inference(device: torch.device, sizes: Sizes, budget: Budget, name: str = "t9-r50-d256") -> list:
    from spgnet.config import get_experiment
    from spgnet.engine.evaluation.inference import MULTI_SCALES, infer_probs
    from spgnet.models import build_model_from_config

    experiment = get_experiment(name)
    crop = sizes.crop
    torch.manual_seed(0)
    model_cfg = dataclasses.replace(experiment.model, norm=single_process_norm(), pretrained=None)
    model = build_model_from_config(model_cfg, device=device)
    model = model.to(device).eval()
    image = torch.randn(3, *sizes.image, generator=torch.Generator().manual_seed(0)).to(device)
    runs = (("AP", (1.0,), False), ("TILED", (1.0,), False), (experiment.eval.strategy, MULTI_SCALES, True))
    results = []
    for strategy, scales, flip in runs:
        label = f"{strategy}, {len(scales)} scale(s){' + flip' if flip else ''}"
        if budget.spent():
            say(f"  {label}: skipped: time budget ({budget.seconds:.0f} s) spent")
            continue
        try:
            infer_probs(model, image, scales=scales, flip=flip, strategy=strategy, crop=crop).argmax(0)  # warm-up
            reset_peak(device)
            started = time.perf_counter()
            for _ in range(sizes.inference_repeats):
                infer_probs(model, image, scales=scales, flip=flip, strategy=strategy, crop=crop).argmax(0)
            sync(device)
            seconds = (time.perf_counter() - started) / sizes.inference_repeats
        except Exception as err:
            say(f"  {label}: FAILED: {type(err).__name__}: {err}")
            results.append({"strategy": strategy, "scales": list(scales), "flip": flip, "error": str(err)})
            continue
        r = {"experiment": name, "strategy": strategy, "scales": list(scales), "flip": flip, "norm": model_cfg.norm,
             "image": list(sizes.image), "s_per_image": seconds, "peak_gib": peak_gib(device)}
        say(f"  {name} {label} on {sizes.image[0]}x{sizes.image[1]} ({model_cfg.norm}): {seconds:.3f} s/image, "
            f"peak {_fmt_gib(r['peak_gib'])}")
        results.append(r)
    return results


# --------------------------------------------------------------------------------------------
# 9. data loading
# --------------------------------------------------------------------------------------------


def section_data_loading(device: torch.device, sizes: Sizes, budget: Budget) -> list:
    import data_loading

    count = 2 * max(sizes.loader_workers)
    results = []
    with tempfile.TemporaryDirectory(prefix="spgnet-gpu-check-data-") as tmp:
        root = data_loading.fabricate_cityscapes(Path(tmp), count, sizes.loader_image)
        crop = min(data_loading.CROP, sizes.crop)
        for workers in sizes.loader_workers:
            if budget.spent():
                say(f"  {workers} workers: skipped: time budget ({budget.seconds:.0f} s) spent")
                continue
            rate = data_loading.loader_throughput(root, workers, 8, sizes.loader_batches, crop)
            say(f"  crop-first transform, {workers} workers, batch 8, crop {crop}, "
                f"{sizes.loader_image[1]}x{sizes.loader_image[0]} PNGs: {rate:.1f} samples/s "
                f"(pinned memory: {torch.cuda.is_available()})")
            results.append({"workers": workers, "samples_per_s": rate, "crop": crop,
                            "image": list(sizes.loader_image)})
    return results


# --------------------------------------------------------------------------------------------


def run_sections(args) -> dict:
    """Run the sections of :data:`SECTIONS` that ``args.only`` names (all when None), in that order."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = TINY if args.tiny else Sizes()
    budget = Budget(args.budget_s)
    experiments = args.experiments or (EXPERIMENTS[:1] if args.tiny else EXPERIMENTS)
    only = getattr(args, "only", None)
    report = {"device": str(device), "tiny": bool(args.tiny), "budget_s": args.budget_s,
              "only": list(only) if only else None, "sections": {}}
    runs = {
        "environment": lambda: section_environment(device, args),
        "inplace_abn": lambda: section_inplace_abn(device, sizes),
        "imagenet_init": lambda: section_imagenet_init(device, sizes),
        "ddp": lambda: section_ddp(device, sizes),
        "train_run": lambda: section_train_run(device, sizes, budget, getattr(args, "train_run_s", None)),
        "train_step": lambda: section_train(device, sizes, budget, experiments),
        "inference": lambda: section_inference(device, sizes, budget),
        "norm_cost": lambda: section_norm_cost(device, sizes, budget),
        "data_loading": lambda: section_data_loading(device, sizes, budget),
    }
    assert tuple(runs) == SECTIONS
    selected = [name for name in SECTIONS if not only or name in only]
    if args.wheels and "environment" not in selected:  # the other sections need what it installs
        say(f"== wheels ({budget.elapsed():.0f} s)")
        try:
            report["wheels"] = install_wheels(Path(args.wheels), Path(args.site))
            for line in report["wheels"]:
                say(f"  {line}")
        except Exception as err:
            say(f"  FAILED: {type(err).__name__}: {err}")
            report["wheels"] = {"error": f"{type(err).__name__}: {err}"}
    for name in selected:
        say(f"== {name} ({budget.elapsed():.0f} s)")
        needs_cuda = name in CUDA_SECTIONS
        if needs_cuda and not cuda and not args.cpu_standins:
            say("  skipped: no CUDA")
            report["sections"][name] = "skipped: no CUDA"
            continue
        if needs_cuda and not cuda:
            say("  (no CUDA: the CPU stand-in of this section, to test the script)")
        if budget.spent():
            say(f"  skipped: time budget ({budget.seconds:.0f} s) spent")
            report["sections"][name] = "skipped: time budget"
            continue
        started = time.perf_counter()
        try:
            report["sections"][name] = runs[name]()
        except Exception as err:  # each section reports its own failure; the next one runs
            say(f"  FAILED: {type(err).__name__}: {err}")
            say("  " + "".join(traceback.format_exc().splitlines(keepends=True)[-6:]).replace("\n", "\n  ").rstrip())
            report["sections"][name] = {"error": f"{type(err).__name__}: {err}"}
        say(f"  ({time.perf_counter() - started:.1f} s)")
        _write_report(getattr(args, "json", None), report)  # a run cut short keeps what it measured
    report["seconds"] = budget.elapsed()
    say(f"== done in {report['seconds']:.0f} s")
    return report


def _write_report(path: str | None, report: dict) -> None:
    if path:
        from spgnet.atomic import write_json

        write_json(Path(path), json.loads(json.dumps(report, default=str)))


def main(argv: list[str] | None = None) -> int:
    """The device check, with tracking off while it runs (no MLflow on a bare GPU machine; the
    caller's environment is restored afterwards, so a test calling it leaves none behind)."""
    previous = os.environ.get("SPGNET_TRACKING")
    os.environ["SPGNET_TRACKING"] = "0"
    try:
        return _check(argv)
    finally:
        if previous is None:
            os.environ.pop("SPGNET_TRACKING", None)
        else:
            os.environ["SPGNET_TRACKING"] = previous


def _check(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="small sizes and few steps (a test of the script)")
    parser.add_argument("--cpu-standins", action="store_true",
                        help="without CUDA, run the CUDA sections on CPU (slow; shows that their code runs)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip what would start later (default 420)")
    parser.add_argument("--wheels", help="folder of wheels and inplace-abn's sdist to install first")
    parser.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "spgnet-gpu-check-site"),
                        help="where --wheels installs (default: a folder in the temp dir)")
    parser.add_argument("--experiments", nargs="*", help=f"training-step rows (default: {' '.join(EXPERIMENTS)})")
    parser.add_argument("--only", nargs="+", metavar="SECTION",
                        help=f"run only these sections (still in the order {' '.join(SECTIONS)})")
    parser.add_argument("--train-run-s", type=float,
                        help="train_run: seconds of training (default 90; a few steps with --tiny)")
    parser.add_argument("--json", help="also write every figure to this JSON file (after every section)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only or () if name not in SECTIONS]
    if unknown:
        print(f"gpu_check: unknown section '{unknown[0]}' (valid: {', '.join(SECTIONS)})", file=sys.stderr, flush=True)
        return 2
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        say(f"--device {args.device}: no CUDA device here; the CUDA sections are skipped (try --device cpu --tiny)")
        args.device = "cpu"
    report = run_sections(args)
    _write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
