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
    headers = [line.split()[1] for line in text.splitlines() if line.startswith("== ")]
    assert headers == list(gpu_check.SECTIONS) + ["done"]  # the fixed order
    # float16 InPlaceABN, float16 ImageNet init, ddp, train_run, train_step, inference, norm_cost
    assert text.count("skipped: no CUDA") == 7
    assert "FAILED" not in text and "== done" in text
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert sections["environment"]["torch"] == torch.__version__ and "thread" in sections["environment"]["cpu"]
    fp32 = sections["inplace_abn"]["float32"]
    assert set(fp32) == {"y", "dx", "dweight", "dbias"}
    assert all(v["finite"] and v["max_rel"] < 1e-4 for v in fp32.values())
    assert sections["inplace_abn"]["float16"] == "skipped: no CUDA"
    init = sections["imagenet_init"]
    assert init["float32"]["pass"] and init["float32"]["max_rel_vs_batchnorm"] <= 1e-5
    assert init["conversion"]["sign_to_conv"] > 0.3 * init["conversion"]["channels"]  # N(0, 1) gammas
    assert init["float16"] == "skipped: no CUDA"
    for name in ("ddp", "train_run", "train_step", "inference", "norm_cost"):
        assert sections[name] == "skipped: no CUDA"
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
    assert list(report["sections"]) == list(gpu_check.SECTIONS)
    assert text.count("skipped: time budget") == len(gpu_check.SECTIONS) == 9


def test_only_runs_the_named_sections_in_the_fixed_order(gpu_check, tmp_path, capsys, monkeypatch):
    ran = []
    for name in gpu_check.SECTIONS:
        function = "section_train" if name == "train_step" else f"section_{name}"
        monkeypatch.setattr(gpu_check, function, lambda *args, _name=name, **kwargs: ran.append(_name) or {"ran": _name})
    monkeypatch.setattr(gpu_check, "install_wheels", lambda wheels, site: ran.append("wheels") or ["installed"])
    out = tmp_path / "only.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--cpu-standins", "--json", str(out), "--wheels", str(tmp_path),
                           "--only", "data_loading", "norm_cost", "imagenet_init", "train_run"]) == 0
    # --wheels installs even without the environment section; the sections run in the fixed order
    assert ran == ["wheels", "imagenet_init", "train_run", "norm_cost", "data_loading"]
    text = capsys.readouterr().out
    assert [line.split()[1] for line in text.splitlines() if line.startswith("== ")] == ran + ["done"]
    ran.remove("wheels")
    report = json.loads(out.read_text())
    assert list(report["sections"]) == ran and report["only"] == ["data_loading", "norm_cost", "imagenet_init", "train_run"]


def test_an_unknown_section_is_one_line_and_exit_2(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--only", "train_run", "trian_step"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    (line,) = captured.err.splitlines()
    assert line == ("gpu_check: unknown section 'trian_step' (valid: environment, inplace_abn, imagenet_init, ddp, "
                    "train_run, train_step, inference, norm_cost, data_loading)")


def test_imagenet_init_fails_on_a_plain_copy_of_the_gammas(gpu_check, capsys, monkeypatch, one_thread):
    """The section sees the bug the conversion fixes: gammas copied unchanged into Inplace-ABN."""
    import spgnet.models.pretrained as pretrained

    monkeypatch.setattr(pretrained, "fit_to_abs_weight_norms", lambda *args, **kwargs: pretrained.NormConversion())
    result = gpu_check.section_imagenet_init(torch.device("cpu"), gpu_check.TINY)
    assert not result["float32"]["pass"] and result["float32"]["max_rel_vs_batchnorm"] > 0.1
    assert ": FAIL;" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU form of the script")
def test_cpu_standins_of_the_training_run_and_the_norm_cost(gpu_check, tmp_path, capsys, one_thread):
    import spgnet.engine.train.loop as train_module
    from spgnet.engine.train.step import train_step

    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--tiny", "--cpu-standins", "--only", "train_run", "norm_cost",
                           "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FAILED" not in text and "== environment" not in text
    assert "norm inplace_abn, not synchronised" in text
    assert train_module.train_step is train_step  # the instrumented step is put back
    sections = json.loads(out.read_text())["sections"]
    assert list(sections) == ["train_run", "norm_cost"]
    run = sections["train_run"]
    assert run["iterations"] == gpu_check.TINY.train_run_steps == 3 and run["window"] == 1
    assert run["it_per_s"] > 0 and run["finite"] and run["skipped_steps"] == 0
    # as the loop ran it: inplace-abn's CPU kernels take no bfloat16, so the stand-in trains in float32
    assert run["precision"] == "float32" and not run["grad_scaler"] and run["loss_scale"] is None
    (conversion,) = run["imagenet_conversion"].values()  # both ResNet-50 stages read one file
    assert conversion["norm_layers"] == 53 + 52 and conversion["sign_to_conv"] > 0.3 * conversion["channels"]
    for part in ("first", "last"):
        r = run[part]
        assert r["loss"] > r["loss_final_stage"] > 0  # the aux stage's term is in the total
        # 2 crops of 33x33 hold fewer labelled pixels than min_kept: OHEM keeps them all, so the
        # final stage's OHEM term is the plain cross-entropy computed from the same forward pass
        assert r["plain_ce_final"] == pytest.approx(r["loss_final_stage"], rel=1e-5)
    rows = sections["norm_cost"]["rows"]
    assert [(r["norm"], r["channels_last"]) for r in rows.values()] == [
        ("batchnorm", False), ("batchnorm", True), ("inplace_abn", False)]
    assert all(r["ms_per_step"] > 0 and r["finite"] for r in rows.values())
    ratios = sections["norm_cost"]["ratios"]
    assert ratios["inplace_abn_vs_batchnorm"] == pytest.approx(rows["inplace_abn"]["ms_per_step"]
                                                               / rows["batchnorm"]["ms_per_step"])
    assert ratios["channels_last_vs_nchw"] > 0 and ratios["peak_inplace_abn_vs_batchnorm"] is None  # no peak on CPU


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
