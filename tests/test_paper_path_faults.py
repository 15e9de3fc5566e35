"""Faults of the paper path that the CPU rehearsal found (issue 20, point 2), each by its kind:
the MLflow model of a network trained under torchrun, logged once; the norm layers named as they
are; precision per norm (tests/test_precision.py)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.distributed as dist

from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one process (what torchrun sets up), torn down afterwards.
    inplace-abn is imported first: its layers' default group is WORLD as it is at import time, and
    importing it under this group would leave later tests' layers bound to a destroyed one."""
    import inplace_abn  # noqa: F401

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield dist.group.WORLD
    finally:
        dist.destroy_process_group()


def test_a_network_trained_under_torchrun_is_copied_for_mlflow_without_its_process_group(one_process_group):
    from spgnet.config import resolve
    from spgnet.engine.train.distributed import convert_inplace_abn_sync, detached_copy
    from spgnet.serving.mlflow_model import inference_pipeline
    from spgnet.models import build_model_from_config

    cfg = resolve("t3-1stage", "smoke", model={"norm": "inplace_abn"})
    model = convert_inplace_abn_sync(build_model_from_config(cfg.model, device="cpu"))
    synced = [m for m in model.modules() if type(m).__name__ == "InPlaceABNSync"]
    assert synced and all(m.group is one_process_group for m in synced)
    with pytest.raises(TypeError, match="pickle"):
        copy.deepcopy(model)  # what MLflow's logging tripped over
    detached = detached_copy(model)
    assert all(m.group is None for m in detached.modules() if type(m).__name__ == "InPlaceABNSync")
    assert all(m.group is one_process_group for m in synced)  # the training network keeps its group
    pipeline = inference_pipeline(model, cfg)  # as log_trained_model builds it
    with torch.no_grad():
        ids = pipeline(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    assert ids.shape == (1, 64, 64) and ids.dtype == torch.uint8


def test_the_mlflow_model_is_logged_once_per_finished_training(tmp_path, monkeypatch):
    from spgnet.engine.train import run as run_module

    logged = []
    monkeypatch.setattr(run_module, "log_model", lambda run, tracker: logged.append(run.state.iteration))
    cfg = toy_cfg(iterations=4)
    train_with(cfg, tmp_path, model=toy_model(), dataset=ToySet())
    assert logged == [4]
    train_with(cfg, tmp_path, resume=True, model=toy_model(), dataset=ToySet())  # nothing to train
    assert logged == [4]
    longer = toy_cfg(iterations=6)
    train_with(longer, tmp_path, resume=True, model=toy_model(), dataset=ToySet())  # trains 2 more
    assert logged == [4, 6]


def test_the_log_names_the_norm_layers_the_network_has(one_process_group):
    from spgnet.engine.train.distributed import convert_inplace_abn_sync
    from spgnet.engine.train.run import norm_description
    from spgnet.models.norm import norm_act

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), norm_act("inplace_abn")(4))
    two = types.SimpleNamespace(world_size=2)
    assert norm_description(net, "inplace_abn_sync", types.SimpleNamespace(world_size=1)) == (
        "InPlaceABN (inplace_abn_sync; one process: nothing to synchronise)")
    assert norm_description(convert_inplace_abn_sync(net), "inplace_abn_sync", two) == (
        "InPlaceABNSync over 2 processes (inplace_abn_sync)")
    assert norm_description(torch.nn.Sequential(norm_act("abn")(4)), "abn", two) == "ABN (abn)"


def test_a_restarted_job_writes_its_untrained_reference_without_scoring_again(tmp_path, monkeypatch):
    """Snakemake deletes untrained.json (an output) before it restarts an interrupted job: the
    restarted job writes the copy its checkpoint kept instead of scoring the network again."""
    import json

    from spgnet.engine.evaluation import reference

    calls = []

    def fake_scores(cfg, seed):
        calls.append(seed)
        return {"kind": "untrained", "miou": 2.5, "seed": seed}

    monkeypatch.setattr(reference, "untrained_scores", fake_scores)
    out, ref = tmp_path / "run", tmp_path / "run" / "untrained.json"
    train_with(toy_cfg(), out, seed=1, model=toy_model(), dataset=ToySet(), stop_after=2, untrained_out=ref)
    assert calls == [1] and (out / "latest.pt").exists()
    ref.unlink()  # what Snakemake does to a failed job's outputs
    train_with(toy_cfg(), out, seed=1, resume=True, model=toy_model(), dataset=ToySet(), untrained_out=ref)
    assert calls == [1] and json.loads(ref.read_text())["miou"] == 2.5


RANK_THAT_WAITS = '''
import os, sys, time
from spgnet.engine.train import distributed
info = distributed.setup("cpu")
with open(os.path.join(sys.argv[1], f"rank{info.rank}.pid"), "w") as handle:
    handle.write(str(os.getpid()))
time.sleep(120)
'''


def test_ranks_end_when_torchrun_is_killed(tmp_path):
    """torchrun starts its ranks in sessions of their own: after a `kill -9` of torchrun they used
    to train on (the rehearsal found them writing to the run folder a rerun then raced)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "rank.py"
    script.write_text(RANK_THAT_WAITS)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                 str(script), str(tmp_path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = []
    try:
        deadline = time.monotonic() + 120
        while len(pids) < 2 and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.5)
            pids = [int(p.read_text()) for p in tmp_path.glob("rank*.pid") if p.read_text()]
        assert len(pids) == 2, "the ranks did not start"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.monotonic() + 20
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and
                     open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
        assert not alive, f"ranks {alive} outlived their launcher"
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if launcher.poll() is None:
            launcher.kill()
