"""The training loop (:mod:`spgnet.engine.train.loop`, ``spgnet train``): kill-and-resume is
bit-identical, seeds, refused resumes, NaN losses, the device, bfloat16 on CPU, progress lines,
extending a finished run, failed runs, the untrained reference, validation while training and
the steps a gradient scaler skips."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from spgnet.config import resolve
from spgnet.engine.train import checkpoint as ckpt
from spgnet.engine.train.loop import NonFiniteLossError
from spgnet.errors import SpgnetError
from tests.helpers_train import NUM_CLASSES, ToyNet, ToySet, toy_cfg, toy_model, train_with

pytestmark = pytest.mark.usefixtures("no_tracking")


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in ("seconds", "it_per_s", "segments")}


def test_kill_and_resume_is_bit_identical(tmp_path):
    cfg = toy_cfg()
    full = train_with(cfg, tmp_path / "full", seed=3, model=toy_model(), dataset=ToySet())
    # "Killed" after iteration 3: the last checkpoint is iteration 2, the log already has row 3.
    partial = tmp_path / "killed"
    train_with(cfg, partial, seed=3, model=toy_model(), dataset=ToySet(), stop_after=3)
    assert ckpt.load_checkpoint(partial / "latest.pt")["iteration"] == 2
    assert not (partial / "checkpoint.pt").exists()  # only a finished run writes it
    assert len(_read_csv(partial / "train_log.csv")) == 3
    assert not (partial / "train_metrics.json").exists()
    resumed = train_with(cfg, partial, seed=3, resume=True, model=toy_model(), dataset=ToySet())
    assert resumed["segments"] == [0, 2] and full["segments"] == [0]

    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = ckpt.load_checkpoint(partial / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 6
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(partial / "train_log.csv")
    ma = json.loads((tmp_path / "full" / "train_metrics.json").read_text())
    mb = json.loads((partial / "train_metrics.json").read_text())
    assert _comparable(ma) == _comparable(mb)
    assert ma["iterations"] == 6 and math.isfinite(ma["final_loss"])
    rows = _read_csv(partial / "train_log.csv")
    assert list(rows[0]) == ["step", "loss", "lr", "loss_stage1", "loss_stage2"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[0]["lr"]) == pytest.approx(0.01)
    assert float(rows[5]["lr"]) == pytest.approx(0.01 * (1 / 6) ** 0.9)


def test_different_seed_gives_different_weights(tmp_path):
    cfg = toy_cfg(iterations=2)
    train_with(cfg, tmp_path / "a", seed=0, model=toy_model(), dataset=ToySet())
    train_with(cfg, tmp_path / "b", seed=1, model=toy_model(), dataset=ToySet())
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert not torch.equal(a["heads.1.weight"], b["heads.1.weight"])


def test_resume_refuses_another_config(tmp_path):
    train_with(toy_cfg(iterations=2), tmp_path, seed=0, model=toy_model(), dataset=ToySet())
    with pytest.raises(SpgnetError, match="another configuration"):
        train_with(toy_cfg(iterations=4, lr=0.02), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = toy_cfg(iterations=8, batch_size=10, checkpoint_every=2)
    # Batch = the whole set, so the NaN sample is drawn at every iteration after we switch it on.
    dataset = ToySet(n=10)
    model = ToyNet()

    def poison(iteration, losses):
        if iteration == 3:
            dataset.nan_index = 4

    with pytest.raises(NonFiniteLossError, match=r"iteration 4.*latest.pt \(iteration 2\)"):
        train_with(cfg, tmp_path, seed=0, model=model, dataset=dataset, on_step=poison)
    state = ckpt.load_checkpoint(tmp_path / "latest.pt")
    assert state["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "train_metrics.json").exists()


def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SpgnetError, match="CUDA is not available"):
        train_with(toy_cfg(device="cuda"), tmp_path, model=toy_model(), dataset=ToySet())


def test_amp_on_cpu_trains_in_bfloat16(tmp_path):
    model = toy_model()
    seen = []
    model.heads[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    metrics = train_with(toy_cfg(iterations=2, amp=True), tmp_path, seed=0, model=model, dataset=ToySet())
    assert seen and set(seen) == {torch.bfloat16}
    assert metrics["amp"] is True and math.isfinite(metrics["final_loss"])
    # the weights stay float32 (autocast casts per op), so checkpoints look the same either way
    state = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float32}


def test_progress_lines_when_not_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPGNET_PROGRESS", "lines")
    train_with(toy_cfg(iterations=4, log_every=2), tmp_path, model=toy_model(), dataset=ToySet())
    err = capsys.readouterr().err
    assert "it 2/4 loss" in err and "it 4/4 loss" in err and "it/s" in err and " lr " in err



# --------------------------------------------------------------------------------------------
# The real network (2-stage SPGNet, ResNet-18) resumes bit-identically too
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_spgnet_kill_and_resume(tmp_path):
    models = pytest.importorskip("spgnet.models")
    cfg = resolve("t3-spg-sigmoid", "mini",
                  train=dict(iterations=3, batch_size=2, checkpoint_every=1, log_every=1, workers=0, crop=33),
                  model={"num_classes": NUM_CLASSES, "channels": 16})

    def build():
        torch.manual_seed(0)
        return models.build_model_from_config(cfg.model, device="cpu")

    train_with(cfg, tmp_path / "full", seed=0, model=build(), dataset=ToySet(n=4, size=33))
    train_with(cfg, tmp_path / "part", seed=0, model=build(), dataset=ToySet(n=4, size=33), stop_after=1)
    train_with(cfg, tmp_path / "part", seed=0, resume=True, model=build(), dataset=ToySet(n=4, size=33))
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "part" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(tmp_path / "part" / "train_log.csv")



# --------------------------------------------------------------------------------------------
# The command line, killed for real (SIGKILL) and resumed
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_sigkill_and_resume(tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from spgnet.config import PARAMS_DIR

    root = tmp_path / "project"
    shutil.copytree(PARAMS_DIR, root / "params")
    env = dict(os.environ, SPGNET_ROOT=str(root), SPGNET_TRACKING="0", SPGNET_PROGRESS="lines",
               PYTHONWARNINGS="ignore")
    spgnet = [sys.executable, "-m", "spgnet"]
    subprocess.run(spgnet + ["make-synthetic", "--out", str(root / "data/synthetic-smoke/cityscapes"),
                             "--num-train", "4", "--num-val", "1", "--num-test", "0",
                             "--height", "96", "--width", "192"], env=env, check=True, capture_output=True)
    command = spgnet + ["train", "t3-1stage", "--profile", "smoke", "--iterations", "5", "--seed", "2"]
    full = subprocess.run(command + ["--out", str(tmp_path / "full")], env=env, capture_output=True, text=True)
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command + ["--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    at = None
    while time.time() < deadline and proc.poll() is None:
        if (killed / "latest.pt").exists():
            at = ckpt.load_checkpoint(killed / "latest.pt")["iteration"]
            if at >= 2:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.05)
    proc.wait()
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed")
    assert not (killed / "train_metrics.json").exists()
    resumed = subprocess.run(command + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = ckpt.load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = ckpt.load_checkpoint(killed / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 5 and b["state"]["segments"][0] == 0 and len(b["state"]["segments"]) == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _read_csv(tmp_path / "full" / "train_log.csv") == _read_csv(killed / "train_log.csv")
    ma = json.loads((tmp_path / "full" / "train_metrics.json").read_text())
    mb = json.loads((killed / "train_metrics.json").read_text())
    assert _comparable(ma) == _comparable(mb)



# --------------------------------------------------------------------------------------------
# Extending a finished run, failed runs, validation while training, skipped fp16 steps
# --------------------------------------------------------------------------------------------


def test_resume_with_more_iterations_extends_a_finished_run(tmp_path, capsys):
    train_with(toy_cfg(iterations=4), tmp_path, seed=0, model=toy_model(), dataset=ToySet())
    assert not (tmp_path / "latest.pt").exists()  # a finished run keeps checkpoint.pt only
    metrics = train_with(toy_cfg(iterations=6), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())
    assert "resuming from iteration 4" in capsys.readouterr().err
    assert metrics["iterations"] == 6 and metrics["segments"] == [0, 4]
    rows = _read_csv(tmp_path / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # the poly schedule of the new length from the resumed iteration on
    assert float(rows[4]["lr"]) == pytest.approx(0.01 * (1 - 4 / 6) ** 0.9)
    assert ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["iteration"] == 6
    with pytest.raises(SpgnetError, match="already at iteration 6, beyond train.iterations 5"):
        train_with(toy_cfg(iterations=5), tmp_path, seed=0, resume=True, model=toy_model(), dataset=ToySet())


class _Broken(ToySet):
    def __getitem__(self, key):
        raise RuntimeError("unreadable sample")


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing_behind(tmp_path):
    with pytest.raises(RuntimeError, match="unreadable sample"):
        train_with(toy_cfg(), tmp_path / "new", model=toy_model(), dataset=_Broken())
    assert not (tmp_path / "new").exists()
    (tmp_path / "given").mkdir()  # a folder made beforehand (as Snakemake does) stays, empty
    with pytest.raises(RuntimeError):
        train_with(toy_cfg(), tmp_path / "given", resume=True, model=toy_model(), dataset=_Broken())
    assert list((tmp_path / "given").iterdir()) == []


def test_the_untrained_reference_is_written_before_training_and_changes_nothing(tmp_path, monkeypatch):
    from spgnet.engine.evaluation import reference

    calls = []

    def fake_scores(cfg, seed):
        calls.append((cfg.eval.split, cfg.eval.scales, cfg.eval.flip, seed))
        torch.rand(1000)  # draws from the global generator, as building a network does
        return {"kind": "untrained", "miou": 1.5, "seed": seed}

    monkeypatch.setattr(reference, "untrained_scores", fake_scores)
    train_with(toy_cfg(), tmp_path / "plain", seed=2, model=toy_model(), dataset=ToySet())
    train_with(toy_cfg(), tmp_path / "ref", seed=2, model=toy_model(), dataset=ToySet(),
               untrained_out=tmp_path / "ref" / "untrained.json")
    assert calls == [("val", (1.0,), False, 2)]
    assert json.loads((tmp_path / "ref" / "untrained.json").read_text())["miou"] == 1.5
    a = ckpt.load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # every step reseeds: the run is the same
    # a run killed before its first checkpoint leaves no reference behind; started again, it writes it
    (tmp_path / "killed").mkdir()
    with pytest.raises(RuntimeError):
        train_with(toy_cfg(), tmp_path / "killed", seed=2, model=toy_model(), dataset=_Broken(),
                   untrained_out=tmp_path / "killed" / "untrained.json")
    assert list((tmp_path / "killed").iterdir()) == []
    # resumed from a checkpoint, the job scores the network as the seed builds it, not the resumed one
    train_with(toy_cfg(), tmp_path / "part", seed=2, model=toy_model(), dataset=ToySet(), stop_after=2)
    train_with(toy_cfg(), tmp_path / "part", seed=2, resume=True, model=toy_model(), dataset=ToySet(),
               untrained_out=tmp_path / "part" / "untrained.json")
    assert calls[-1] == ("val", (1.0,), False, 2) and (tmp_path / "part" / "untrained.json").exists()


def test_predictions_without_evaluate_out_is_an_error():
    import argparse

    from spgnet.engine.train.loop import main

    with pytest.raises(SpgnetError, match="--predictions needs --evaluate-out"):
        main(argparse.Namespace(predictions="preds", evaluate_out=None))


def test_a_run_that_fails_after_a_checkpoint_keeps_it(tmp_path):
    dataset = ToySet(n=10)

    def fail(iteration, losses):
        if iteration == 3:
            dataset.__class__ = _Broken

    with pytest.raises(RuntimeError):
        train_with(toy_cfg(checkpoint_every=2), tmp_path, model=toy_model(), dataset=dataset, on_step=fail)
    assert ckpt.load_checkpoint(tmp_path / "latest.pt")["iteration"] == 2
    assert (tmp_path / "train_log.csv").exists()


def test_validation_while_training_logs_val_miou_and_keeps_the_best(tmp_path, monkeypatch):
    from spgnet.engine.evaluation import evaluate

    scores = {2: 10.0, 4: 30.0, 6: 20.0}
    seen = []

    def fake_validation(model, cfg, device):
        seen.append(model.training)
        return scores[2 * len(seen)]

    monkeypatch.setattr(evaluate, "validation_miou", fake_validation)
    metrics = train_with(toy_cfg(iterations=6, val_every=2), tmp_path, model=toy_model(), dataset=ToySet())
    assert seen == [False, False, False]  # evaluated in eval mode
    rows = _read_csv(tmp_path / "train_log.csv")
    assert [r["val_miou"] for r in rows] == ["", "10.0", "", "30.0", "", "20.0"]
    assert metrics["best"] == {"val_miou": 30.0, "iteration": 4}
    best = ckpt.load_checkpoint(tmp_path / "best.pt")
    assert best["iteration"] == 4 and best["val_miou"] == 30.0
    assert not torch.equal(best["model"]["heads.1.weight"],
                           ckpt.load_checkpoint(tmp_path / "checkpoint.pt")["model"]["heads.1.weight"])


def test_with_a_gradient_scaler_non_finite_steps_are_skipped(tmp_path, monkeypatch):
    """fp16's gradient scaler (imitated on CPU): a step whose loss is NaN is skipped, training goes
    on; only NONFINITE_PATIENCE of them in a row stop the run."""
    from spgnet.engine.train import precision as precision_module
    from spgnet.engine.train import loop as train_module

    monkeypatch.setattr(train_module, "resolve_precision",
                        lambda amp, device, **_: precision_module.Precision(None, True, "test: scaler on CPU"))
    dataset = ToySet(n=10)

    def poison(iteration, losses):
        dataset.nan_index = 4 if iteration in (2, 3) else None  # iterations 3 and 4 see a NaN crop

    cfg = toy_cfg(iterations=6, batch_size=10)
    metrics = train_with(cfg, tmp_path / "a", model=toy_model(), dataset=dataset, on_step=poison)
    assert metrics["skipped_steps"] == 2 and math.isfinite(metrics["final_loss"])
    # weights and the norm's running statistics stayed finite
    state = ckpt.load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())

    monkeypatch.setattr(train_module, "NONFINITE_PATIENCE", 3)
    dataset.nan_index = 4
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row"):
        train_with(cfg, tmp_path / "b", model=toy_model(), dataset=dataset, on_step=lambda i, v: None)


def test_gradient_overflow_lowers_the_scale_and_skips_the_update(tmp_path, monkeypatch):
    """fp16's usual overflow is in the gradients, not the loss: the scaler skips those steps and
    lowers its scale, the run trains on (gradients made infinite at iterations 3 and 4)."""
    from spgnet.engine.train import precision as precision_module
    from spgnet.engine.train import loop as train_module

    monkeypatch.setattr(train_module, "resolve_precision",
                        lambda amp, device, **_: precision_module.Precision(None, True, "test: scaler on CPU"))
    model = toy_model()
    overflow = {"on": False}
    model.heads[1].weight.register_hook(lambda grad: grad * float("inf") if overflow["on"] else grad)

    def toggle(iteration, losses):
        overflow["on"] = iteration in (2, 3)

    metrics = train_with(toy_cfg(iterations=6), tmp_path, model=model, dataset=ToySet(), on_step=toggle)
    assert metrics["skipped_steps"] == 2 and math.isfinite(metrics["final_loss"])
    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    assert float(saved["scaler"]["scale"]) == 2.0 ** 16 / 4  # halved once per skipped step
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_resume_removes_the_partial_checkpoint_a_killed_job_left(tmp_path):
    """SIGTERM (a SLURM time limit, scancel) ends a job inside an atomic checkpoint write without
    its cleanup; the next start removes that temporary file and resumes from latest.pt."""
    train_with(toy_cfg(iterations=2, checkpoint_every=1), tmp_path, seed=0, model=toy_model(), dataset=ToySet())
    partial = tmp_path / ".latest.pt.k1ll3d.tmp"
    partial.write_bytes(b"half a checkpoint")
    other = tmp_path / ".train_metrics.json.x.tmp"  # not a checkpoint's: left alone
    other.write_bytes(b"")
    train_with(toy_cfg(iterations=3, checkpoint_every=1), tmp_path, seed=0, resume=True, model=toy_model(),
               dataset=ToySet())
    assert not partial.exists() and other.exists()
