"""train.amp = auto / true / false: the precision per device and CPU capability (issue 12, point 1)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from spgnet.config import ConfigError, resolve
from spgnet.engine.train import precision
from spgnet.runtime import hardware
from spgnet.engine.train.precision import native_bf16, parse_amp, resolve_precision


@pytest.fixture
def bf16(monkeypatch):
    """Patch the CPU's native-bfloat16 capability: ``bf16(True)`` / ``bf16(False)``."""
    def set_native(value: bool):
        monkeypatch.setattr(precision, "native_bf16", lambda: value)
    return set_native


@pytest.mark.parametrize("native", [True, False])
def test_cpu_auto_uses_bfloat16_only_where_native(bf16, native):
    bf16(native)
    p = resolve_precision("auto", "cpu")
    assert p.dtype == (torch.bfloat16 if native else None)
    assert p.name == ("bfloat16" if native else "float32")
    assert p.enabled is native and not p.use_grad_scaler and not p.emulated
    assert ("natively" if native else "no native bfloat16") in p.reason


def test_cpu_true_without_native_bf16_is_bfloat16_with_a_warning(bf16, capsys):
    bf16(False)
    p = resolve_precision(True, torch.device("cpu"))
    assert p.dtype == torch.bfloat16 and p.emulated and not p.use_grad_scaler
    p.log()
    err = capsys.readouterr().err
    assert err.startswith("spgnet train: warning: precision bfloat16:") and "emulated" in err
    assert err.count("\n") == 1


def test_cpu_true_with_native_bf16_is_not_a_warning(bf16):
    bf16(True)
    p = resolve_precision(True, "cpu")
    assert p.dtype == torch.bfloat16 and not p.emulated and "warning" not in p.line()


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("amp", ["auto", True, "true"])
def test_cuda_is_float16_with_a_grad_scaler(bf16, native, amp):
    bf16(native)  # the CPU's capability does not matter on CUDA
    p = resolve_precision(amp, torch.device("cuda", 0))  # only the device type is read
    assert p.dtype == torch.float16 and p.use_grad_scaler and p.name == "float16"


@pytest.mark.parametrize("amp", ["auto", True])
def test_inplace_abn_trains_in_float32_on_a_bfloat16_cpu_and_in_float16_on_cuda(bf16, amp):
    """inplace-abn has no bfloat16 kernels: on a CPU with native bfloat16 its networks stay in
    float32 (the paper profile's first step died there), on CUDA they take float16."""
    bf16(True)
    p = resolve_precision(amp, "cpu", inplace_abn=True)
    assert p.dtype is None and not p.use_grad_scaler and "InPlaceABN layers have no bfloat16" in p.reason
    assert resolve_precision(amp, "cpu", inplace_abn=False).dtype == torch.bfloat16
    assert resolve_precision(amp, "cuda", inplace_abn=True).dtype == torch.float16


def test_a_training_of_an_inplace_abn_network_on_a_bfloat16_cpu_runs_in_float32(tmp_path, bf16, capsys):
    from spgnet.engine.train.precision import uses_inplace_abn
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with
    from spgnet.models.norm import norm_act

    bf16(True)
    model = toy_model()
    model.stem[1] = norm_act("inplace_abn")(8, activation="identity")  # the toy's one norm, now inplace-abn's
    assert uses_inplace_abn(model) and not uses_inplace_abn(toy_model())
    metrics = train_with(toy_cfg(iterations=2, amp="auto"), tmp_path, seed=0, model=model, dataset=ToySet())
    assert metrics["precision"] == "float32" and math.isfinite(metrics["final_loss"])
    assert "have no bfloat16 kernels on CPU (inplace-abn): float32" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
@pytest.mark.parametrize("native", [True, False])
def test_false_is_float32_everywhere(bf16, device, native):
    bf16(native)
    p = resolve_precision(False, device)
    assert p.dtype is None and not p.use_grad_scaler and p.name == "float32"


def test_other_devices_stay_float32(bf16):
    bf16(True)
    assert resolve_precision("auto", "mps").dtype is None


@pytest.mark.parametrize("value, expected", [("auto", "auto"), ("AUTO", "auto"), (True, True), (False, False),
                                             ("true", True), ("false", False)])
def test_parse_amp_accepts_what_people_type(value, expected):
    assert parse_amp(value) == expected


@pytest.mark.parametrize("value", ["bf16", "", "maybe", 2])
def test_parse_amp_rejects_other_values(value):
    with pytest.raises(ConfigError, match="train.amp"):
        resolve_precision(value, "cpu")


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16": True}, True), ({"amx_bf16": True}, True),
                                             ({"avx512f": True}, False), ({"avx2": True}, False)])
def test_native_bf16_reads_the_cpu_flags_on_x86(monkeypatch, flags, expected):
    """AVX-512 without avx512_bf16 (Skylake-class) emulates bfloat16, whatever torch's check says."""
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    all_flags = {flag: False for flag in hardware.RELEVANT_FLAGS}
    all_flags.update(flags)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: all_flags)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    assert native_bf16() is expected


@pytest.mark.parametrize("torch_says", [True, False])
def test_native_bf16_asks_torch_elsewhere(monkeypatch, torch_says):
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: torch_says, raising=False)
    assert native_bf16() is torch_says


def test_every_profile_defaults_to_auto():
    from spgnet.config import TrainConfig, available_profiles, load_profile

    assert TrainConfig().amp == "auto"
    for name in available_profiles():
        assert load_profile(name, data_root="/data").train.get("amp") == "auto", name


# --------------------------------------------------------------------------------------------
# What a training run uses and records
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False])
def test_training_uses_and_records_the_resolved_precision(tmp_path, bf16, native, capsys):
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with

    bf16(native)
    model = toy_model()
    seen = []
    model.heads[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    metrics = train_with(toy_cfg(iterations=2, amp="auto"), tmp_path, seed=0, model=model, dataset=ToySet())
    expected = "bfloat16" if native else "float32"
    assert set(seen) == {getattr(torch, expected)}
    saved = json.loads((tmp_path / "train_metrics.json").read_text())
    assert saved["precision"] == metrics["precision"] == expected
    assert saved["amp"] is native and math.isfinite(saved["final_loss"])
    err = capsys.readouterr().err
    assert f"spgnet train: precision {expected}: train.amp is auto" in err


def test_training_records_run_precision_in_mlflow(tmp_path, bf16, monkeypatch):
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with
    from spgnet.tracking import search_runs

    bf16(False)
    monkeypatch.setenv("SPGNET_TRACKING", "1")
    for name in ("SPGNET_INVOCATION", "SPGNET_PARENT_RUN_ID", "SPGNET_TRACKING_SPOOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    train_with(toy_cfg(iterations=1, amp=True), tmp_path / "run", seed=0, model=toy_model(), dataset=ToySet())
    runs = search_runs("mini")
    assert list(runs["params.run.precision"]) == ["bfloat16"]
    assert list(runs["params.train.amp"]) == ["True"]


def test_evaluation_runs_in_float32_on_a_bfloat16_cpu(bf16):
    """infer_probs() never enables autocast: the network's convolutions see float32 on every CPU."""
    from spgnet.engine.evaluation.inference import infer_probs

    bf16(True)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 1)).eval()
    seen = []
    for module in net:
        module.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    probs = infer_probs(net, torch.randn(1, 3, 16, 16), scales=(1.0, 0.75), flip=True, strategy="GAP")
    assert seen and set(seen) == {torch.float32} and probs.dtype == torch.float32
