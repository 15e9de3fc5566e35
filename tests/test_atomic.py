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
