"""Write files and folders all-or-nothing: a temporary one beside the target, renamed into place.

Every file output of the project goes through here (:func:`atomic_path` and the helpers built on
it: :func:`write_text`, :func:`write_json`; checkpoints, ``profile.json``, the DVC plan, figures,
reports), so every file

* appears whole or not at all (written under a hidden name in the same folder, then
  ``os.replace``; on any exception the temporary file is removed and the target is untouched);
* is on disk before it has its name (``fsync`` of the file before the rename, and of the folder
  after it, so a crash right after a write leaves the old file or the new one, never an empty one);
* has the same mode: ``0644`` less the process's umask (:func:`file_mode`), as ``open`` would
  give a new file under the usual umask 022 (``mkstemp`` alone would leave ``0600``);
* fails in one line: a full disk, a read-only or unwritable folder (:data:`STORAGE_ERRNOS`) is a
  :class:`~spgnet.errors.SpgnetError` naming the target and the reason, after the temporary file is
  removed; :func:`check_writable` finds an unwritable output before the work that would fill it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from spgnet.errors import SpgnetError


#: The mode of every file written here, before the umask is applied.
FILE_MODE = 0o644
#: Errors of the storage rather than of the program: reported in one line naming the target.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR,
                            errno.EFBIG})


def storage_error(path: Path, err: OSError) -> SpgnetError | None:
    """The one-line error of a write to ``path`` that failed with ``err``, or None when ``err`` is
    not a storage error (:data:`STORAGE_ERRNOS`)."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    return SpgnetError(f"{path}: cannot write ({err.strerror or os.strerror(err.errno)}); nothing was written there")


def check_writable(path: str | Path) -> None:
    """Raise :class:`SpgnetError` when an output at ``path`` (a file or a folder, existing or not)
    could not be written: the nearest existing folder on its way (``path`` itself when it is a
    folder, else its parent, else theirs) must take a new file. Called before the work whose result
    would be written there (``spgnet`` checks every output argument of a verb before running it)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise SpgnetError(f"{path}: cannot write ({folder} is not a folder)")
    try:
        with tempfile.NamedTemporaryFile(prefix=".spgnet-write-check-", dir=folder):
            pass
    except OSError as err:
        raise SpgnetError(f"{path}: cannot write ({err.strerror or err}) in {folder}") from None


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux gives it (reading it with
    ``os.umask`` means setting it for a moment, which other threads could see), else by
    ``os.umask``."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode every output file gets: :data:`FILE_MODE` less the umask (``0o644`` under 022)."""
    return FILE_MODE & ~_umask()


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path (``str``) next to ``path``; write the file there. When the block ends
    without an exception the file is flushed to disk, given :func:`file_mode` and renamed over
    ``path`` (parents are created); on an exception it is removed and ``path`` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise (storage_error(path, err) or err) from None
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # the writer has closed its handle; fsync reaches the file's data
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and storage_error(path, err) is not None:
            raise storage_error(path, err) from None
        raise
    _fsync_dir(path.parent)


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


def write_text(path: Path, text: str) -> None:
    """``text`` (UTF-8, exactly as given: no newline added) at ``path``, through :func:`atomic_path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: Path, obj, *, allow_nan: bool = True) -> None:
    """``obj`` as indented JSON (and a final newline) at ``path``, written through :func:`atomic_path`.
    ``allow_nan=False`` refuses NaN/inf instead of writing JSON that strict readers reject."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=2, allow_nan=allow_nan)
        handle.write("\n")
