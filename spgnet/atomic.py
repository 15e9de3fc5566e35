"""Write files and folders all-or-nothing: a temporary one beside the target, renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a new empty folder beside ``path``; on success it replaces ``path``, else it is removed.

    The folder is hidden (``.<name>.partial-*``) in ``path``'s parent, so the final step is a rename
    on the same file system: readers see the old tree or the new one, never a half-written one. An
    existing ``path`` (which the caller has decided may go) is first moved aside, then deleted once
    the new folder is in place; if the swap fails, it is moved back.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "partial", make=True)
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = _sibling(path, "old", make=False)
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _sibling(path: Path, tag: str, make: bool) -> Path:
    """A hidden, unused name ``.<name>.<tag>-<pid>-<random>`` beside ``path`` (made as a folder,
    with the usual permissions, when ``make``)."""
    while True:
        candidate = path.parent / f".{path.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
        if make:
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            return candidate
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate


def write_json(path: Path, obj, *, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON (and a final newline) at ``path``, written through :func:`atomic_path`.
    ``allow_nan=False`` refuses NaN/inf instead of writing JSON that strict readers reject."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, allow_nan=allow_nan)
        handle.write("\n")
