"""Device check (issue 11, point 8): what the paper profile needs from one GPU, in one script.

    python3 benchmarks/gpu_check.py [--wheels .whl] [--budget-s 420] [--json FILE]
    python benchmarks/gpu_check.py --device cpu --tiny        # small sizes on CPU (CI's test)
    python benchmarks/gpu_check.py --device cpu --tiny --cpu-standins   # + the CUDA sections on CPU

Prints, one section after another (each catches and prints its own failure and the script goes
on; a section that would start after ``--budget-s`` seconds is skipped, so the whole run stays
within about 8 minutes; without CUDA, sections 3-5 and the float16 half of 2 print ``skipped: no
CUDA`` unless ``--cpu-standins`` runs them on CPU, which only shows that the code runs):

1. ``environment``: GPU name, compute capability, torch / CUDA / cuDNN versions, nvcc; with
   ``--wheels DIR`` first installs DIR's wheels (``--no-index --no-deps``) into a temporary
   site folder and builds inplace-abn from DIR's sdist there when it is not importable
   (``TORCH_CUDA_ARCH_LIST`` = this GPU's capability, ``MAX_JOBS`` = CPU count).
2. ``inplace_abn``: InPlaceABN's forward and backward (training mode, leaky ReLU 0.01) against
   batch norm + leaky ReLU in float64: max abs and relative errors of y, dx, dweight, dbias for
   float32 and float16 inputs (float32 parameters, as under autocast).
3. ``ddp``: two ranks on one GPU (gloo, ``torch.multiprocessing.spawn``), one crop each, with
   InPlaceABNSync, against one process with both crops: max weight difference after one SGD step
   of ``t3-1stage`` (TF32 off), beside the largest weight update of that step.
4. ``train_step``: for ``t3-1stage``, ``t9-r50-d256``, ``t9-r101-d256``, ``t1-danet``, training
   steps at 769x769 with batch 8 and batch 1 as ``spgnet train`` runs them on CUDA (float16
   autocast, GradScaler, ``cudnn.benchmark``, SGD, the experiment's loss with OHEM's
   ``min_kept`` scaled to the batch; at batch 1 a norm that sees one value per channel uses its
   running statistics, as ``spgnet memory`` does): ms/step, achieved TFLOP/s = 2 x 3 x batch x
   the multiply-adds of :func:`spgnet.analysis.profile.count` at 769x769 (forward + backward
   taken as 3 forwards; 2 FLOPs per multiply-add) / step time, % of the GPU's dense float16 peak
   (:data:`PEAK_TFLOPS`), peak GiB (``torch.cuda.max_memory_allocated``), finite losses.
5. ``inference``: ``spgnet evaluate``'s :func:`spgnet.engine.inference.predict` on a 1024x2048
   image with ``t9-r50-d256`` (random weights): AP and TILED at one scale, and the six scales +
   flip of Sec. 4.4: s/image and peak GiB.
6. ``data_loading``: ``benchmarks/data_loading.py``'s DataLoader throughput (crop-first
   transform, uint8 labels, pinned memory) on fabricated 2048x1024 Cityscapes-like PNGs at 8 and
   16 workers.

``--json FILE`` also writes every figure as JSON.

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
    loader_batches: int = 60
    inference_repeats: int = 2


TINY = Sizes(crop=33, batches=(2, 1), warmup=1, steps=1, image=(64, 128), ddp_crop=33, loader_workers=(2,),
             loader_image=(64, 128), loader_batches=2, inference_repeats=1)


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
    from spgnet.engine.hardware import describe_line

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
# 3. two ranks on one device (gloo) against one rank with both crops
# --------------------------------------------------------------------------------------------


def _ddp_batch(crop: int, num_classes: int):
    g = torch.Generator().manual_seed(1234)
    images = torch.randn(2, 3, crop, crop, generator=g)
    labels = torch.randint(0, num_classes, (2, crop, crop), generator=g)  # no ignored pixels
    return images, labels


def _ddp_model(name: str, norm: str, device: torch.device, distributed: bool):
    from spgnet.config import get_experiment
    from spgnet.engine import distributed as dist_tools
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
    from spgnet.engine.losses import segmentation_loss
    from spgnet.engine.schedule import build_optimizer

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
# 4. training steps
# --------------------------------------------------------------------------------------------


def train_step(name: str, batch: int, device: torch.device, sizes: Sizes, peak: float | None) -> dict:
    from spgnet.analysis.profile import count
    from spgnet.config import get_experiment
    from spgnet.engine.losses import segmentation_loss
    from spgnet.engine.schedule import build_optimizer
    from spgnet.models import build_model_from_config
    from spgnet.models.norm import single_value_norms_use_running_stats

    experiment = get_experiment(name)
    crop = sizes.crop
    model_cfg = dataclasses.replace(experiment.model, norm=single_process_norm(), pretrained=None)
    train_cfg = experiment.train
    if train_cfg.ohem:  # the paper's min_kept is per 8-crop batch of 769x769: scale it to this batch
        per_pixel = train_cfg.ohem_min_kept / (8 * 769 * 769)
        train_cfg = dataclasses.replace(train_cfg, ohem_min_kept=max(1, int(per_pixel * batch * crop * crop)))
    torch.manual_seed(0)
    model = build_model_from_config(model_cfg, device=device).to(device).train()
    fallback = single_value_norms_use_running_stats(model)
    optimizer = build_optimizer(model, train_cfg)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)  # disabled: scale() and step() pass through
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, crop, crop, generator=g).to(device)
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
              "norm": model_cfg.norm,
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
            pct = f"{r['percent_of_peak']:.1f}% of peak" if r["percent_of_peak"] is not None else "peak unknown"
            say(f"  {name} batch {batch} at {r['crop']}x{r['crop']} ({r['norm']}): {r['ms_per_step']:.1f} ms/step, "
                f"{r['tflops']:.1f} TFLOP/s ({pct}), peak {_fmt_gib(r['peak_gib'])}, "
                f"losses {'finite' if r['finite'] else 'NOT FINITE'} ({', '.join(f'{v:.3f}' for v in r['losses'])})"
                + (f"; {r['running_stats_fallback']} norm(s) on running stats" if r["running_stats_fallback"] else ""))
            results.append(r)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
    return results


# --------------------------------------------------------------------------------------------
# 5. inference as spgnet evaluate runs it
# --------------------------------------------------------------------------------------------


def section_inference(device: torch.device, sizes: Sizes, budget: Budget, name: str = "t9-r50-d256") -> list:
    from spgnet.config import get_experiment
    from spgnet.engine.inference import MULTI_SCALES, predict
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
            predict(model, image, scales=scales, flip=flip, strategy=strategy, crop=crop).argmax(0)  # warm-up
            reset_peak(device)
            started = time.perf_counter()
            for _ in range(sizes.inference_repeats):
                predict(model, image, scales=scales, flip=flip, strategy=strategy, crop=crop).argmax(0)
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
# 6. data loading
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
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = TINY if args.tiny else Sizes()
    budget = Budget(args.budget_s)
    experiments = args.experiments or (EXPERIMENTS[:1] if args.tiny else EXPERIMENTS)
    report = {"device": str(device), "tiny": bool(args.tiny), "budget_s": args.budget_s, "sections": {}}
    sections = (
        ("environment", lambda: section_environment(device, args), False),
        ("inplace_abn", lambda: section_inplace_abn(device, sizes), False),
        ("ddp", lambda: section_ddp(device, sizes), True),
        ("train_step", lambda: section_train(device, sizes, budget, experiments), True),
        ("inference", lambda: section_inference(device, sizes, budget), True),
        ("data_loading", lambda: section_data_loading(device, sizes, budget), False),
    )
    for name, run, needs_cuda in sections:
        say(f"== {name} ({budget.elapsed():.0f} s)")
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
            report["sections"][name] = run()
        except Exception as err:  # each section reports its own failure; the next one runs
            say(f"  FAILED: {type(err).__name__}: {err}")
            say("  " + "".join(traceback.format_exc().splitlines(keepends=True)[-6:]).replace("\n", "\n  ").rstrip())
            report["sections"][name] = {"error": f"{type(err).__name__}: {err}"}
        say(f"  ({time.perf_counter() - started:.1f} s)")
    report["seconds"] = budget.elapsed()
    say(f"== done in {report['seconds']:.0f} s")
    return report


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
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        say(f"--device {args.device}: no CUDA device here; the CUDA sections are skipped (try --device cpu --tiny)")
        args.device = "cpu"
    report = run_sections(args)
    if args.json:
        from spgnet.atomic import write_json

        write_json(Path(args.json), json.loads(json.dumps(report, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
