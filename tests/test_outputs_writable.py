"""An unwritable output is found before the work, a full disk is one line (issue 22, case 6,
mlflow#10450): every output argument of a verb is checked writable before the verb runs
(spgnet.cli.OUTPUT_ARGS, spgnet.atomic.check_writable); a write that fails for lack of space or
permission is one SpgnetError naming the target, and the previous file stays."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from spgnet import cli
from spgnet.atomic import atomic_path, check_writable, write_json
from spgnet.errors import SpgnetError


def _unwritable_folder() -> Path | None:
    """A folder of this machine that refuses new files even to root (sysfs), if there is one."""
    try:
        with open("/sys/.spgnet-write-check", "w"):
            pass
    except OSError:
        return Path("/sys")
    os.unlink("/sys/.spgnet-write-check")
    return None


def test_check_writable_names_the_output_and_the_reason(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "metrics.json")  # missing folders are fine: they will be made
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SpgnetError, match=r"metrics\.json: cannot write \(.*a-file is not a folder\)"):
        check_writable(blocker / "eval" / "metrics.json")
    folder = _unwritable_folder()
    if folder is not None:
        with pytest.raises(SpgnetError, match=r"^/sys/spgnet/out\.json: cannot write \(.+\) in /sys$"):
            check_writable(folder / "spgnet" / "out.json")


@pytest.mark.parametrize("verb", ["evaluate", "train", "predict"])
def test_a_verb_into_an_unwritable_folder_stops_in_one_line_before_its_work(verb, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    ran = []
    targets = {"evaluate": "spgnet.engine.evaluation.evaluate", "train": "spgnet.engine.train.loop",
               "predict": "spgnet.serving.predict_files"}
    import importlib

    module = importlib.import_module(targets[verb])
    monkeypatch.setattr(module, "main", lambda args: ran.append(args) or 0)
    argv = {"evaluate": ["evaluate", "t3-1stage", "--checkpoint", "c.pt", "--out", str(blocker / "m.json")],
            "train": ["train", "t3-1stage", "--out", str(blocker / "run")],
            "predict": ["predict", "t3-1stage", "--checkpoint", "c.pt", "--input", "x.png", "--out", str(blocker / "p")]}
    assert cli.main(argv[verb]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"spgnet {verb}: error: {blocker}/") and "not a folder" in err
    assert ran == []  # nothing ran


def test_a_full_disk_at_a_write_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json(target, {"miou": 1.0})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SpgnetError, match=r"metrics\.json: cannot write \(No space left on device\); nothing was written"):
        write_json(target, {"miou": 2.0})
    monkeypatch.undo()
    assert target.read_text() == '{\n  "miou": 1.0\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_a_full_disk_at_a_checkpoint_save_is_one_line_and_the_last_checkpoint_stays(tmp_path, monkeypatch):
    from spgnet.engine.train.checkpoint import load_checkpoint, save_checkpoint

    latest = tmp_path / "latest.pt"
    save_checkpoint(latest, {"iteration": 4})

    def torch_save_on_a_full_disk(obj, handle):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1216 vs 1144")

    monkeypatch.setattr(torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(SpgnetError) as caught:
        save_checkpoint(latest, {"iteration": 6})
    message = str(caught.value)
    assert message.startswith(f"{latest}: cannot write the checkpoint (") and "unexpected pos" in message
    assert message.endswith("is the disk full?); the checkpoint already there is untouched") and "\n" not in message
    monkeypatch.undo()
    assert load_checkpoint(latest)["iteration"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_a_training_whose_checkpoint_cannot_be_written_ends_in_one_line(tmp_path, monkeypatch, capsys):
    """Through `spgnet train`'s own error path: the toy training's second checkpoint hits a full disk."""
    from tests.helpers_train import ToySet, toy_cfg, toy_model, train_with

    real = torch.save
    saves = []

    def second_save_fails(obj, handle):
        saves.append(1)
        if len(saves) == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1216 vs 1144")
        return real(obj, handle)

    monkeypatch.setattr(torch, "save", second_save_fails)
    monkeypatch.setenv("SPGNET_TRACKING", "0")
    with pytest.raises(SpgnetError, match="cannot write the checkpoint"):
        train_with(toy_cfg(iterations=4, checkpoint_every=2), tmp_path / "run", model=toy_model(), dataset=ToySet())
    monkeypatch.undo()
    assert torch.load(tmp_path / "run" / "latest.pt", weights_only=False)["iteration"] == 2


def test_atomic_path_keeps_other_errors_as_they_are(tmp_path):
    with pytest.raises(OSError) as caught:
        with atomic_path(tmp_path / "x.json"):
            raise OSError(errno.EIO, "device error")
    assert caught.value.errno == errno.EIO and not isinstance(caught.value, SpgnetError)
