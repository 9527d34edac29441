"""The writer lock of an index folder: one process at a time builds, adds to, prunes or repairs an index.

``INDEX/.lock`` is locked with ``flock(LOCK_EX)`` by the writer, which records its pid, host, start
time and command line in the file (as the run folder's lock of :mod:`mmv_torch.runs` does). The
kernel releases the lock when its owner exits, however it exits (kill -9 included), so a lock is never
stale. A second writer waits for the lock (saying once whom it waits for) or, with ``wait=False``,
stops with one line naming the owner. Readers (search, ``serve``, ``index check`` without
``--repair``) never take the lock and never wait: SQLite's WAL and atomically replaced files give them
a consistent view; :func:`active_writer` tells them whether a write is under way.

Within one process the lock is shared: every :class:`IndexStore` of a folder that writes holds the
same lock, released when the last of them closes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mmv_torch.fileio import pid_alive

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


class IndexBusyError(ValueError):
    """Another process is writing the index and the caller asked not to wait."""


def read_owner(folder: str | Path) -> dict[str, Any] | None:
    """The writer recorded in ``folder``'s lock file (``None``: none recorded, or unreadable)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def active_writer(folder: str | Path) -> dict[str, Any] | None:
    """The process writing the index ``folder`` right now, or ``None``. A lock file left by a process
    that no longer runs on this host (the kernel released its lock) does not count; an owner on
    another host is taken at its word."""
    owner = read_owner(folder)
    if not owner:
        return None
    if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1))):
        return None
    return owner


def describe(owner: dict[str, Any] | None) -> str:
    """``process PID on HOST (COMMAND, since TIME)`` for messages."""
    if not owner:
        return "another process"
    argv = owner.get("argv") or []
    cmd = " ".join(["mmv-torch", *argv[1:]]) if argv else "?"
    return f"process {owner.get('pid')} on {owner.get('host')} ({cmd}, since {owner.get('started')})"


class _Held:
    """One process's hold on one folder's lock: the open file and how many stores share it."""

    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 0


_HELD: dict[str, _Held] = {}
_HELD_LOCK = threading.RLock()  # re-entrant: a store's __del__ may release inside acquire


class IndexLock:
    """The writer lock of index ``folder`` (``INDEX/.lock``); a context manager that releases it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.key = str(self.folder.resolve())
        self.held = False

    def acquire(self, wait: bool = True) -> IndexLock:
        """Take the lock: wait for another writer (``wait``; Ctrl-C stops the wait) or raise
        :class:`IndexBusyError` naming it. Returns ``self``."""
        if self.held:
            return self
        with _HELD_LOCK:
            held = _HELD.get(self.key)
            if held is not None:
                held.count += 1
                self.held = True
                return self
        fd = self._lock_file(wait)  # may wait: outside the registry's lock
        with _HELD_LOCK:
            held = _HELD.setdefault(self.key, _Held(fd))
            if held.fd != fd:  # another thread of this process took it meanwhile: share that one
                os.close(fd)
            held.count += 1
        self.held = True
        return self

    def _lock_file(self, wait: bool) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = read_owner(self.folder)
                    if not wait:
                        raise IndexBusyError(f"{self.folder} is being written by {describe(owner)}; run the command "
                                             "again when it finishes") from None
                    print(f"{self.folder}: waiting for {describe(owner)} to finish writing the index (Ctrl-C to "
                          "stop)", file=sys.stderr, flush=True)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "argv": sys.argv}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def release(self) -> None:
        """Give the lock back (the file stays, emptied) once no store of this process holds it."""
        if not self.held:
            return
        self.held = False
        with _HELD_LOCK:
            held = _HELD.get(self.key)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[self.key]
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            os.close(held.fd)  # closing the descriptor releases the flock

    def __enter__(self) -> IndexLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
