"""benchmarks/gpu_check.py in its CPU form: every section reports, CUDA-only ones say so."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_check():
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))  # as when the script runs; its DDP ranks import it by name
    return importlib.import_module("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU form of the script")
def test_tiny_cpu_run_reports_every_section(gpu_check, tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("environment", "inplace_abn", "ddp", "train_step", "inference", "data_loading"):
        assert f"== {name}" in text
    assert text.count("skipped: no CUDA") == 4  # float16 InPlaceABN, ddp, train_step, inference
    assert "FAILED" not in text and "== done" in text
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert sections["environment"]["torch"] == torch.__version__ and "thread" in sections["environment"]["cpu"]
    fp32 = sections["inplace_abn"]["float32"]
    assert set(fp32) == {"y", "dx", "dweight", "dbias"}
    assert all(v["finite"] and v["max_rel"] < 1e-4 for v in fp32.values())
    assert sections["inplace_abn"]["float16"] == "skipped: no CUDA"
    assert sections["ddp"] == sections["train_step"] == sections["inference"] == "skipped: no CUDA"
    (loading,) = sections["data_loading"]
    assert loading["workers"] == 2 and loading["samples_per_s"] > 0


def test_a_failing_section_does_not_stop_the_others(gpu_check, capsys, monkeypatch):
    def broken(device, sizes):
        raise RuntimeError("kernel image not found")

    monkeypatch.setattr(gpu_check, "section_inplace_abn", broken)
    monkeypatch.setattr(gpu_check, "section_data_loading", lambda device, sizes, budget: [{"workers": 0}])
    report = gpu_check.run_sections(gpu_check.argparse.Namespace(
        device="cpu", tiny=True, budget_s=600.0, wheels=None, site="", experiments=None, cpu_standins=False))
    text = capsys.readouterr().out
    assert "FAILED: RuntimeError: kernel image not found" in text
    assert report["sections"]["inplace_abn"] == {"error": "RuntimeError: kernel image not found"}
    assert report["sections"]["data_loading"] == [{"workers": 0}] and "== done" in text


def test_spent_budget_skips_sections(gpu_check, capsys):
    report = gpu_check.run_sections(gpu_check.argparse.Namespace(
        device="cpu", tiny=True, budget_s=0.0, wheels=None, site="", experiments=None, cpu_standins=True))
    text = capsys.readouterr().out
    assert set(report["sections"].values()) == {"skipped: time budget"}
    assert text.count("skipped: time budget") == 6


def test_peak_table_prefers_the_specific_name(gpu_check):
    table = dict(gpu_check.PEAK_TFLOPS)
    assert gpu_check.peak_tflops("NVIDIA H200") == table["H200"]
    assert gpu_check.peak_tflops("NVIDIA H100 PCIe") == table["H100 PCIe"] != table["H100"]
    assert gpu_check.peak_tflops("NVIDIA H100 80GB HBM3") == table["H100"]
    assert gpu_check.peak_tflops("NVIDIA L40S") == table["L40S"] != table["L4"]
    assert gpu_check.peak_tflops("NVIDIA L4") == table["L4"]
    assert gpu_check.peak_tflops("Tesla T4") == table["T4"]
    assert gpu_check.peak_tflops("Some Future GPU") is None


def test_build_finds_the_cuda_runtime_to_link(gpu_check, tmp_path, monkeypatch):
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    assert gpu_check.cuda_home() == toolkit
    versioned = toolkit / "targets" / "sbsa" / "libcudart.so.13"  # no unversioned name: link one
    versioned.parent.mkdir(parents=True)
    versioned.write_text("")
    scratch = gpu_check.cudart_dir(toolkit, tmp_path / "scratch")
    assert scratch == tmp_path / "scratch" and (scratch / "libcudart.so").resolve() == versioned
    (toolkit / "lib64").mkdir()
    (toolkit / "lib64" / "libcudart.so").write_text("")
    assert gpu_check.cudart_dir(toolkit, tmp_path / "other") == toolkit / "lib64"
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    found = gpu_check.cuda_home()
    assert found is None or (found / "bin" / "nvcc").exists()  # /usr/local/cuda where installed
