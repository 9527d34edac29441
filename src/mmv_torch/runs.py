"""Run folders are owned: a lock file per run folder, and no silent reuse of a folder that holds a run.

``mmv-torch train --out RUN`` (and ``eval finetune --out RUN``) call :func:`claim_run_dir` before any
work. It

1. takes ``RUN/.lock`` (created exclusively; JSON with the owner's pid, host, start time and command
   line). A second process on the same folder stops with a message naming the owner. A lock left by a
   process that no longer runs on this host is stale: it is reported and replaced. A lock from another
   host cannot be checked and is never broken automatically;
2. refuses a folder that already holds a run (a config, a log, checkpoints or an export) unless the
   caller resumes it or asks to overwrite it, in which case the old run is moved aside to
   ``RUN.old-<time>/`` (never deleted).

The lock is released (its file removed) when the owner exits normally, on an exception or on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmv_torch.fileio import pid_alive

LOCK_NAME = ".lock"
RUN_MARKERS = ("config.json", "log.jsonl", "checkpoints", "export", "finetune.pt", "finetune_log.jsonl")
"""Entries whose presence means a folder holds a run (training or fine-tuning)."""


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (in use, or holds a run that would be overwritten)."""


def read_lock(run_dir: str | Path) -> dict[str, Any] | None:
    """The owner recorded in ``run_dir``'s lock file, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return None


def lock_is_stale(owner: dict[str, Any]) -> bool:
    """Whether a lock's owner is known to be gone: same host, process no longer running."""
    return owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1)))


class RunLock:
    """An exclusive lock on a run folder (``RUN/.lock``); a context manager that releases it."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        """Create the lock file exclusively; a stale lock is replaced, a live one raises :class:`RunFolderError`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "argv": sys.argv}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = read_lock(self.run_dir)
                if owner is None:  # being written by its owner right now, or garbage: look again shortly
                    time.sleep(0.2)
                    owner = read_lock(self.run_dir) or {}
                if owner and not lock_is_stale(owner):
                    raise RunFolderError(
                        f"{self.run_dir} is in use by process {owner.get('pid')} on {owner.get('host')} (since "
                        f"{owner.get('started')}); wait for it or use another folder. If no such process runs, "
                        f"delete {self.path}") from None
                warnings.warn(f"{self.path}: removing a stale lock of process {owner.get('pid')} on "
                              f"{owner.get('host')}, which no longer runs", stacklevel=2)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise RunFolderError(f"could not lock {self.run_dir}: another process keeps taking {self.path}")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            owner = read_lock(self.run_dir)
            if owner is not None and owner.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self.held = False

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_contents(run_dir: str | Path, markers: Iterable[str] = RUN_MARKERS) -> list[str]:
    """The run markers present in ``run_dir`` (empty: the folder holds no run)."""
    d = Path(run_dir)
    return [m for m in markers if (d / m).exists()]


def move_aside(path: str | Path, keep: Iterable[str] = ()) -> Path:
    """Move ``path`` to a fresh ``<name>.old-<YYYYmmdd-HHMMSS>[-k]`` sibling and return the new name.

    With ``keep``, ``path`` itself stays and only its other entries move (e.g. the lock file stays with
    its owner)."""
    p = Path(path)
    base = f"{p.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"
    aside, k = p.with_name(base), 1
    while aside.exists():
        aside, k = p.with_name(f"{base}-{k}"), k + 1
    keep = set(keep)
    if not keep:
        p.rename(aside)
        return aside
    aside.mkdir()
    for entry in sorted(p.iterdir()):
        if entry.name not in keep:
            entry.rename(aside / entry.name)
    return aside


def claim_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool, command: str = "mmv-torch train",
                  markers: Iterable[str] = RUN_MARKERS) -> RunLock:
    """Lock ``run_dir`` for a run and make sure nothing in it is lost; returns the held :class:`RunLock`.

    A folder that holds a run (``markers``) is refused unless ``resume`` (the caller continues it) or
    ``overwrite`` (the old run is moved aside to ``<run_dir>.old-<time>/``). Raises
    :class:`RunFolderError`."""
    if resume and overwrite:
        raise RunFolderError("--resume continues a run and --overwrite moves it aside: give one of them")
    lock = RunLock(run_dir).acquire()
    try:
        found = run_contents(run_dir, markers)
        if found and not resume:
            if not overwrite:
                raise RunFolderError(
                    f"{run_dir} already holds a run ({', '.join(found)}); continue it with `{command} ... --resume "
                    f"latest`, pass --overwrite to move it aside (it is kept, not deleted), or choose another --out")
            aside = move_aside(run_dir, keep=(LOCK_NAME,))
            print(f"{run_dir}: the previous run was moved to {aside}", file=sys.stderr)
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------------
# Stopping on SIGINT / SIGTERM at a step boundary


class Interrupted(KeyboardInterrupt):
    """A run stopped on a signal after saving its state: ``step`` reached, ``signum``, ``checkpoint`` written."""

    def __init__(self, step: int, signum: int, checkpoint: str | Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.signum, self.checkpoint = step, signum, checkpoint

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class StopSignals:
    """Within the context, SIGINT and SIGTERM ask the loop to stop at its next step boundary instead of
    killing it mid-step (``requested`` / ``signum``); a second SIGINT raises ``KeyboardInterrupt`` at
    once. Preemptible clusters (SLURM, Kubernetes) send SIGTERM before they kill a job: this is the
    window to save. Outside the main thread it does nothing (signals go to the main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after the current step (saving a checkpoint); "
              "Ctrl-C again to stop at once", file=sys.stderr)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()


def ignore_stop_signals(worker_id: int = 0) -> None:
    """``worker_init_fn`` of data-loading processes: SIGINT and SIGTERM are the main process's to handle
    (it stops at a step boundary and shuts its workers down), so a Ctrl-C in the terminal, which reaches
    the whole process group, does not kill a worker under a batch the main process still waits for."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
