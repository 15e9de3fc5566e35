"""spgnet.atomic: files and folders appear whole or not at all."""

from __future__ import annotations

import pytest

from spgnet.atomic import atomic_dir, atomic_path


def test_atomic_dir_creates_and_replaces(tmp_path):
    out = tmp_path / "sub" / "out"
    with atomic_dir(out) as tmp:
        assert tmp.is_dir() and tmp.parent == out.parent and not out.exists()
        (tmp / "a.txt").write_text("one")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("two")
        assert (out / "a.txt").read_text() == "one"  # the old tree stays until the swap
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no temporary or old folder left


def test_atomic_dir_leaves_nothing_behind_on_an_exception(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_atomic_dir_puts_the_old_tree_back_when_the_swap_fails(tmp_path, monkeypatch):
    import os

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    real = os.rename
    calls = []

    def rename(src, dst):
        calls.append(src)
        if len(calls) == 2:  # the new tree into place
            raise OSError("no space")
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="no space"):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "keep.txt").read_text() == "old"


def test_atomic_path_leaves_nothing_behind_on_an_exception(tmp_path):
    target = tmp_path / "file.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as handle:
                handle.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_atomic_and_refuses_nan_when_asked(tmp_path):
    from spgnet.atomic import write_json

    target = tmp_path / "sub" / "m.json"
    write_json(target, {"miou": 1.5})
    assert target.read_text() == '{\n  "miou": 1.5\n}\n'
    with pytest.raises(ValueError):
        write_json(target, {"miou": float("nan")}, allow_nan=False)
    assert target.read_text() == '{\n  "miou": 1.5\n}\n'  # the old file, untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]


@pytest.fixture
def umask():
    """Set the process umask for one test (``umask(0o077)``), restoring it afterwards."""
    import os

    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_every_writer_gives_0644_less_the_umask(tmp_path, umask):
    """checkpoint.pt (once left at mkstemp's 0600), JSON and text outputs: all the same mode."""
    import stat

    import torch

    from spgnet.atomic import file_mode, write_json, write_text
    from spgnet.engine.train.checkpoint import load_checkpoint, save_checkpoint

    def modes(folder):
        return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}

    for mask, expected in ((0o022, 0o644), (0o002, 0o644), (0o077, 0o600), (0o027, 0o640)):
        umask(mask)
        folder = tmp_path / f"umask{mask:03o}"
        save_checkpoint(folder / "checkpoint.pt", {"model": {"w": torch.ones(2)}, "iteration": 3})
        write_json(folder / "metrics.json", {"miou": 1.0})
        write_text(folder / "profile.json", "{}")
        assert file_mode() == expected
        assert modes(folder) == {"checkpoint.pt": expected, "metrics.json": expected, "profile.json": expected}
    assert load_checkpoint(tmp_path / "umask022" / "checkpoint.pt")["iteration"] == 3


def test_atomic_path_flushes_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    from spgnet.atomic import write_text

    write_text(tmp_path / "out.txt", "text")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(".out.txt.") and events[1][1] == "out.txt" and events[2][1] == tmp_path.name
    assert (tmp_path / "out.txt").read_text() == "text"


def test_a_failed_checkpoint_leaves_the_previous_one(tmp_path):
    import torch

    from spgnet.engine.train.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "checkpoint.pt", {"iteration": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"iteration": 2, "bad": lambda: None})  # not picklable
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert torch.load(path, weights_only=True) == {"iteration": 1}
