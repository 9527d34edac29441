"""Atomic file writes: the one helper behind every file the package writes (the bottom rung, below every other module).

A writer never leaves a partial file under its final name: the content goes to a hidden temporary
file in the same folder (``.<name>.tmp.<pid>``), is flushed and fsynced, and ``os.replace`` moves it
onto the final name (atomic on POSIX file systems). On any error, a ``KeyboardInterrupt`` included,
the temporary file is removed and the target keeps its old content (or stays absent).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_INFIX = ".tmp."
"""Temporary files are ``.<name>.tmp.<pid>``: hidden, and recognisable by :func:`is_temporary`."""


def temporary_path(path: str | Path) -> Path:
    """The temporary file that :func:`atomic_write` uses for ``path`` in this process."""
    p = Path(path)
    return p.with_name(f".{p.name}{TMP_INFIX}{os.getpid()}")


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is a temporary file left by an interrupted :func:`atomic_write`."""
    name = Path(path).name
    return name.startswith(".") and TMP_INFIX in name


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (the rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, fsync: bool = True) -> Path:
    """Call ``write(tmp)`` to fill a temporary file next to ``path``, then move it onto ``path``.

    ``write`` receives the temporary file's path and must write the whole content there (by path:
    ``save_file(tensors, tmp)``, ``np.save(open(tmp, "wb"), ...)``). With ``fsync`` the file and the
    folder are flushed to disk. The parent folder must exist. Returns ``path``.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Replace ``path`` with ``text`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding), fsync=fsync)


def atomic_write_bytes(path: str | Path, data: bytes, *, fsync: bool = True) -> Path:
    """Replace ``path`` with ``data`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` onto ``path`` atomically (checkpoints)."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files that interrupted writes left in ``folder``; how many were removed."""
    d = Path(folder)
    if not d.is_dir():
        return 0
    count = 0
    for p in d.iterdir():
        if is_temporary(p) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                count += 1
    return count


def check_output(path: str | Path, option: str, *, folder: bool = False, inputs: tuple[str | Path, ...] = (),
                 suffixes: tuple[str, ...] = ()) -> Path:
    """Validate an output path before any work is done; raises ``ValueError`` naming ``option``.

    A file output must not be an existing folder, a folder output not an existing file; the nearest
    existing ancestor must be a writable folder (missing folders are created by the writer); the
    output (and ``path + s`` for each of ``suffixes``, files written beside it) must not be one of
    ``inputs``. Returns ``path`` as a ``Path``.
    """
    p = Path(path)
    if str(path) == "":
        raise ValueError(f"{option}: empty path")
    if folder and p.exists() and not p.is_dir():
        raise ValueError(f"{option} {p}: is a file, expected a folder")
    if not folder and p.is_dir():
        raise ValueError(f"{option} {p}: is a folder, expected a file name")
    ancestor = p if folder else p.parent
    ancestor = ancestor.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{option} {p}: {ancestor} is a file, not a folder")
    try:  # a real probe: permission bits do not tell root, read-only mounts or special file systems
        fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".mmv-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{option} {p}: cannot write in {ancestor} ({e.strerror or e})") from None
    written = [p] + [Path(str(p) + s) for s in suffixes]
    for src in inputs:
        if src is None or str(src) == "":
            continue
        for w in written:
            if w.absolute().resolve() == Path(src).absolute().resolve():
                raise ValueError(f"{option} {p}: would overwrite the input {src}")
    return p


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _remove_stale_folders(out: Path) -> None:
    """Remove the temporary folders that killed writers (their process gone) left next to ``out``."""
    for d in out.parent.glob(f".{glob.escape(out.name)}{TMP_INFIX}*"):
        pid = d.name.rsplit(".", 1)[-1]
        if d.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            warnings.warn(f"removing {d}, left by an interrupted write of {out}", stacklevel=3)
            shutil.rmtree(d, ignore_errors=True)


def replace_folder(tmp: str | Path, out: str | Path) -> None:
    """Put the finished folder ``tmp`` in place of ``out``; the old ``out`` is removed afterwards.

    The old folder is first renamed to ``<out>.old-<timestamp>-<pid>``, then ``tmp`` to ``out``, then
    the old one is deleted. A process killed between the renames leaves no ``out`` but both complete
    folders (the old one under its ``.old-`` name); never one folder mixing both.
    """
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            warnings.warn(f"could not remove the replaced folder {old}", stacklevel=2)


@contextlib.contextmanager
def atomic_folder(out: str | Path) -> Iterator[Path]:
    """Write a folder whole: yields a fresh hidden sibling (``.<name>.tmp.<pid>``) to fill, which
    replaces ``out`` (:func:`replace_folder`) when the block ends without an error. On an error or an
    interrupt ``out`` stays as it was and the temporary folder is removed; temporary folders of killed
    writers are removed first. No file of an earlier content survives in ``out``."""
    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_folders(out)
    tmp = out.with_name(f".{out.name}{TMP_INFIX}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
