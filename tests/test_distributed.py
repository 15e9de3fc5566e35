"""Distributed training on CPU: sharding, InPlaceABNSync's statistics merge, 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from spgnet.engine.train import checkpoint as ckpt
from spgnet.engine.train import distributed
from spgnet.errors import SpgnetError


def test_shard_splits_the_global_batch():
    batch = list(range(8))
    assert distributed.shard(batch, 0, 2) == [0, 2, 4, 6]
    assert distributed.shard(batch, 1, 2) == [1, 3, 5, 7]
    assert sorted(distributed.shard(batch, 0, 4) + distributed.shard(batch, 1, 4)
                  + distributed.shard(batch, 2, 4) + distributed.shard(batch, 3, 4)) == batch
    # VOC / Person-Part's batch of 28 on 8 GPUs: shares of 4 and 3 crops, every crop dealt once
    shares = [distributed.shard(list(range(28)), rank, 8) for rank in range(8)]
    assert [len(s) for s in shares] == [4, 4, 4, 4, 3, 3, 3, 3]
    assert sorted(sum(shares, [])) == list(range(28))
    with pytest.raises(SpgnetError, match="smaller than the 4 processes"):
        distributed.shard(list(range(3)), 0, 4)


def test_setup_without_torchrun_is_one_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.setup("cpu")
    assert (info.rank, info.world_size, info.distributed, info.is_main) == (0, 1, False, True)
    assert info.device == torch.device("cpu")


def test_merge_statistics_equals_statistics_of_the_union():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 4, 3, 3, generator=g) * (i + 1) + i for i, n in enumerate((2, 5))]
    means = torch.stack([p.mean(dim=(0, 2, 3)) for p in parts])
    variances = torch.stack([p.var(dim=(0, 2, 3), unbiased=False) for p in parts])
    counts = torch.tensor([[p.shape[0] * 9] for p in parts])
    mean, var, count = distributed.merge_statistics(means, variances, counts)
    union = torch.cat(parts)
    assert torch.allclose(mean, union.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(var, union.var(dim=(0, 2, 3), unbiased=False), atol=1e-5)
    assert count.tolist() == [63]


def test_convert_inplace_abn_sync_shares_parameters():
    from inplace_abn import InPlaceABN, InPlaceABNSync

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), InPlaceABN(4))
    model.eval()
    bn = model[1]
    converted = distributed.convert_inplace_abn_sync(model)
    assert isinstance(converted[1], InPlaceABNSync)
    assert converted[1].weight is bn.weight and converted[1].running_var is bn.running_var
    assert converted[1].training is False
    assert set(dict(converted.state_dict())) == set(dict(model.state_dict()))


#: What both training scripts below start with: imports and an 8-image toy data set.
_SCRIPT_COMMON = '''
import json, os, sys
import torch
from torch import nn
from inplace_abn import InPlaceABN
from unittest import mock
from spgnet.config import resolve
from spgnet.engine.train import loop


def train(cfg, out, seed, model, dataset):
    """spgnet's train() of this network on this data set (as tests/helpers_train.py's train_with)."""
    with mock.patch.object(loop, "build_network", lambda cfg, device: model), \
            mock.patch.object(loop, "build_train_dataset", lambda cfg, seed: dataset):
        return loop.train(cfg, out, seed)


class Toy(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, key):
        index, rng = key
        g = torch.Generator().manual_seed(int(index))
        image = torch.randn(3, 12, 12, generator=g) * (1 + index)
        label = (image[0] > 0).long() + (image[1] > 0).long()
        label[: index % 5] = 255  # a different number of labelled pixels in each crop
        return {"image": image, "label": label, "name": str(index), "path": ""}
'''

_SCRIPT = _SCRIPT_COMMON + textwrap.dedent(
    '''
    class SyncToy(nn.Module):
        """No dropout: one process and two must compute the same thing."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = InPlaceABN(8)
            self.heads = nn.ModuleList(nn.Conv2d(8, 3, 1) for _ in range(2))

        def forward(self, x):
            f = self.bn(self.conv(x))
            return {"out": self.heads[1](f), "aux": [self.heads[0](f)]}


    out = sys.argv[1]
    cfg = resolve("t3-spg-sigmoid", "mini", model={"norm": "inplace_abn_sync", "num_classes": 3},
                  train=dict(iterations=4, batch_size=4, checkpoint_every=2, log_every=1, workers=0,
                             device="cpu", amp=False))
    torch.manual_seed(0)
    metrics = train(cfg, out, seed=0, model=SyncToy(), dataset=Toy())
    rank = int(os.environ.get("RANK", "0"))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump({"norm": metrics["norm_layer"], "world": metrics["world_size"], "loss": metrics["final_loss"]}, handle)
    '''
)


def _launch(script_text: str, tmp_path, out: str, *args: str, processes: int, timeout: int) -> list[dict]:
    """Run ``script_text`` as one process, or under torchrun with ``processes`` (gloo), writing to
    ``tmp_path/out``; returns what each rank wrote to ``rank<r>.json``."""
    script = tmp_path / f"train_{out}.py"
    script.write_text(script_text)
    env = dict(os.environ, SPGNET_TRACKING="0", SPGNET_PROGRESS="off", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={processes}"]
    proc = subprocess.run(launcher + [str(script), str(tmp_path / out), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads((tmp_path / out / f"rank{r}.json").read_text()) for r in range(processes)]


def _assert_same_weights(run_a, run_b) -> dict:
    """The two run folders' final checkpoints hold the same tensors (to float rounding); returns b's."""
    a = ckpt.load_checkpoint(run_a / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(run_b / "checkpoint.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=1e-4, atol=1e-5), key
    return b


def test_cpu_ddp_two_processes_match_one_process(tmp_path):
    """torchrun --nproc_per_node=2 (gloo, InPlaceABNSync with the Python reduction) gives the
    weights of one process on the same global batch."""
    one = _launch(_SCRIPT, tmp_path, "one", processes=1, timeout=120)[0]
    two = _launch(_SCRIPT, tmp_path, "two", processes=2, timeout=180)
    assert one["world"] == 1 and one["norm"] == "InPlaceABN"
    assert all(r["world"] == 2 and r["norm"] == "InPlaceABNSync" for r in two)
    assert two[0]["loss"] == pytest.approx(one["loss"], rel=1e-4)
    # Only rank 0 writes the run folder.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.pt", "rank0.json", "rank1.json", "train_log.csv", "train_metrics.json"]
    _assert_same_weights(tmp_path / "one", tmp_path / "two")


# --------------------------------------------------------------------------------------------
# One crop per process: the decoder's GAP branch normalises a 1x1 map (one value per channel)
# --------------------------------------------------------------------------------------------

_GAP_SCRIPT = _SCRIPT_COMMON + textwrap.dedent(
    '''
    from spgnet.errors import SpgnetError
    from spgnet.models.decoder import GlobalContext
    from spgnet.models.norm import norm_act


    class GapToy(nn.Module):
        """A feature plus SPGNet's GAP branch (GAP, 1x1 conv, norm on the 1x1 map)."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = InPlaceABN(8)
            self.context = GlobalContext(8, 8, norm_act("inplace_abn"))
            self.heads = nn.ModuleList(nn.Conv2d(8, 3, 1) for _ in range(2))

        def forward(self, x):
            f = self.bn(self.conv(x))
            f = f + self.context(f)
            return {"out": self.heads[1](f), "aux": [self.heads[0](f)]}


    out, norm, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # OHEM over the global batch: the scope under which the split of crops changes nothing
    ohem = dict(ohem=True, ohem_threshold=0.3, ohem_min_kept=int(sys.argv[4]), ohem_scope="batch") if len(sys.argv) > 4 else {}
    cfg = resolve("t3-spg-sigmoid", "mini", model={"norm": norm, "num_classes": 3},
                  train=dict(iterations=3, batch_size=batch, checkpoint_every=3, log_every=1, workers=0,
                             device="cpu", amp=False, **ohem))
    torch.manual_seed(0)
    rank = int(os.environ.get("RANK", "0"))
    os.makedirs(out, exist_ok=True)
    try:
        metrics = train(cfg, out, seed=0, model=GapToy(), dataset=Toy())
        result = {"norm": metrics["norm_layer"], "world": metrics["world_size"], "loss": metrics["final_loss"]}
    except SpgnetError as err:
        result = {"error": str(err)}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    '''
)


def _run_gap_script(tmp_path, out: str, norm: str, batch: int, processes: int, *extra: str) -> list[dict]:
    return _launch(_GAP_SCRIPT, tmp_path, out, norm, str(batch), *extra, processes=processes, timeout=240)


@pytest.mark.parametrize("batch, ohem_min_kept", [(2, None), (2, "150"), (3, "150")],
                         ids=["2x1-vs-1x2", "2x1-vs-1x2-ohem", "uneven-2+1-vs-1x3-ohem"])
def test_the_split_of_crops_over_processes_does_not_change_training(tmp_path, batch, ohem_min_kept):
    """The global batch trains the same network on 1 process or 2 (to 1e-6): the losses are means
    over the global batch's pixels (crops hold different numbers of labelled pixels), OHEM keeps
    min_kept pixels of the global batch (min_kept 150 of ~250 labelled pixels at threshold 0.3
    raises the threshold), InPlaceABNSync merges the GAP branch's statistics, and a batch of 3
    on 2 processes (2 + 1 crops, like 28 on 8 GPUs) weighs every crop alike."""
    extra = (ohem_min_kept,) if ohem_min_kept else ()
    one = _run_gap_script(tmp_path, "one", "inplace_abn_sync", batch, 1, *extra)[0]
    two = _run_gap_script(tmp_path, "two", "inplace_abn_sync", batch, 2, *extra)
    assert "error" not in one and all("error" not in r for r in two), (one, two)
    assert two[0]["loss"] == pytest.approx(one["loss"], rel=1e-6)
    a = ckpt.load_checkpoint(tmp_path / "one" / "checkpoint.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "two" / "checkpoint.pt")["model"]
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), rtol=0, atol=1e-6), (key, (a[key] - b[key]).abs().max())


def test_sync_norm_trains_the_gap_branch_on_one_crop_per_process(tmp_path):
    """2 gloo processes x 1 crop with InPlaceABNSync (the paper's 8 GPUs x 1 crop, in small)
    train, and give the weights of one process on both crops: the GAP branch's statistics are
    merged over the processes."""
    one = _run_gap_script(tmp_path, "one", "inplace_abn_sync", batch=2, processes=1)[0]
    two = _run_gap_script(tmp_path, "two", "inplace_abn_sync", batch=2, processes=2)
    assert one["world"] == 1 and one["norm"] == "InPlaceABN"
    assert all(r.get("world") == 2 and r.get("norm") == "InPlaceABNSync" for r in two), two
    assert two[0]["loss"] == pytest.approx(one["loss"], rel=1e-4)
    b = _assert_same_weights(tmp_path / "one", tmp_path / "two")
    # the GAP norm's running statistics were updated from the 2 merged values
    assert not torch.equal(b["context.conv.1.running_var"], torch.ones(8))


def test_unsynchronised_norm_on_one_crop_per_process_names_the_fixes(tmp_path):
    """Without synchronisation one value per channel stays an error (as torch's BatchNorm2d in
    torchvision's ASPPPooling): the message names both ways out."""
    results = _run_gap_script(tmp_path, "two", "inplace_abn", batch=2, processes=2)
    for result in results:
        assert "one value per channel" in result["error"]
        assert "at least 2 crops per process" in result["error"]
        assert "'inplace_abn_sync' over at least 2 processes" in result["error"]
        assert "not synchronised" in result["error"]


def test_sync_norm_on_one_process_with_one_crop_names_the_fixes(tmp_path):
    result = _run_gap_script(tmp_path, "one", "inplace_abn_sync", batch=1, processes=1)[0]
    assert "one value per channel" in result["error"]
    assert "synchronised over one process" in result["error"]
    assert "at least 2 crops per process" in result["error"]


# --------------------------------------------------------------------------------------------
# OHEM over the global batch or over each process's crops (train.ohem_scope)
# --------------------------------------------------------------------------------------------

_SCOPE_SCRIPT = textwrap.dedent(
    '''
    import dataclasses, json, os, sys
    import torch
    import torch.distributed as dist
    from spgnet.config import resolve
    from spgnet.engine.train.losses import stage_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, 6, 6, generator=g) * 2  # the global batch: 4 crops
    logits[1::2] *= 0.1  # rank 1's crops: unsure everywhere (losses near log 3), rank 0's: hard and easy pixels
    target = torch.randint(0, 3, (4, 6, 6), generator=g)
    target[0, :2] = 255  # crops with different numbers of labelled pixels
    target[3, :, :1] = 255
    mine = slice(rank, None, world)  # batch[rank::world], as spgnet.engine.train.distributed.shard deals it
    base = resolve("t8-r50-ohem", "mini").train
    results = {}
    for rule, extra in (("threshold", dict(ohem_threshold=0.2, ohem_min_kept=50)), ("top_k", dict(ohem_top_k=0.1))):
        for scope in ("batch", "process"):
            t = dataclasses.replace(base, ohem_rule=rule, ohem_scope=scope, **extra)
            share = stage_loss(logits[mine], target[mine], t, sync=True)
            total = share.detach().clone()
            dist.all_reduce(total)  # what the trainer logs and, times world size, backpropagates
            results[f"{rule}/{scope}"] = total.item()
            results[f"{rule}/{scope}/whole"] = stage_loss(logits, target, t).item()  # 1 process, every crop
            results[f"{rule}/{scope}/own"] = stage_loss(logits[mine], target[mine], t).item()  # 1 process, its crops
    os.makedirs(sys.argv[1], exist_ok=True)
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as handle:
        json.dump(results, handle)
    dist.destroy_process_group()
    '''
)


def test_ohem_scope_batch_mines_the_global_batch_and_process_each_processs_crops(tmp_path):
    """2 gloo processes x 2 crops: with ``ohem_scope: batch`` the OHEM term (threshold or top-k
    rule) is that of one process on all 4 crops; with ``process`` it is the mean of each process's
    OHEM term on its own 2 crops (min_kept / k counted per process, as per-GPU PSPNet-style code)."""
    ranks = _launch(_SCOPE_SCRIPT, tmp_path, "scope", processes=2, timeout=180)
    for rule in ("threshold", "top_k"):
        for rank in ranks:
            assert rank[f"{rule}/batch"] == pytest.approx(rank[f"{rule}/batch/whole"], rel=1e-6)
            per_process = (ranks[0][f"{rule}/process/own"] + ranks[1][f"{rule}/process/own"]) / 2
            assert rank[f"{rule}/process"] == pytest.approx(per_process, rel=1e-6)
        # the scopes keep different pixels: over the 4 crops the hardest are mostly rank 0's; per process,
        # rank 1 keeps its own share (min_kept 50 raises the threshold on each process)
        assert ranks[0][f"{rule}/process"] < 0.9 * ranks[0][f"{rule}/batch"]
