"""The run folder's writers besides the checkpoints: the metrics log (``log.jsonl`` and TensorBoard) and
the cleanup of a fresh run that fails before its first checkpoint."""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmv_torch import dist
from mmv_torch.fileio import atomic_write_text

__all__ = ["RunLogger", "discard_unsaved_run"]


class RunLogger:
    """Rank-0 metrics sink: ``log.jsonl`` (one object per line, flushed) and TensorBoard if installed."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool = True) -> None:
        self.enabled = dist.is_main()
        self.path = run_dir / "log.jsonl"
        self.writer = None
        if not self.enabled:
            return
        if self.path.exists():  # drop lines of steps after the resumed checkpoint (lost work of a killed run)
            kept = [ln for ln in self._readable_lines() if json.loads(ln).get("step", 0) <= start_step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in kept))
        self.file = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to log.jsonl only "
                              "(pip install \"mmv-torch[train]\" adds it)", stacklevel=2)
            else:
                self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)

    def _readable_lines(self) -> list[str]:
        """The log's records as lines. A last line cut by a kill or a full disk is dropped with a warning
        (the log is appended line by line); a bad line before it is a ``ValueError`` naming file and line."""
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except OSError as e:
            raise ValueError(f"cannot read the run's log {self.path}: {e.strerror or e}") from None
        numbered = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        for k, (n, ln) in enumerate(numbered):
            try:
                ok = isinstance(json.loads(ln), dict)
            except ValueError:
                ok = False
            if ok:
                continue
            if k == len(numbered) - 1:
                warnings.warn(f"{self.path}: dropping its last line, cut short by an interrupted run: "
                              f"{ln[:60]!r}", stacklevel=3)
                return [x for _, x in numbered[:-1]]
            raise ValueError(f"{self.path}:{n}: not a JSON record ({ln[:60]!r}); remove or fix that line, then "
                             "resume again")
        return [x for _, x in numbered]

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (``record["step"]`` is the x axis in TensorBoard)."""
        if not self.enabled:
            return
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")  # strict JSON: NaN/Inf become null
        self.file.flush()
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    group = "loss" if k.startswith("loss") else "train"
                    self.writer.add_scalar(f"{group}/{k}", v, record["step"])

    def close(self) -> None:
        """Flush and close the sinks."""
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def discard_unsaved_run(run_dir: str | Path, *, fresh: bool, created: bool) -> Iterator[None]:
    """Within the block a fresh run (``fresh``: not resumed) owns ``run_dir``; when the block fails before
    the run's first checkpoint (a bad file at step 0, too many skipped files, Ctrl-C, a full disk), what it
    wrote there is removed, and the folder too when ``created`` (it did not exist before the command), so
    the same command works again without ``--overwrite``. Entries that were there before are kept; a run
    with a checkpoint is kept for ``--resume latest``. Enter it after the run folder's lock is held."""
    from mmv_torch.runs import LOCK_NAME
    from mmv_torch.weights.checkpoint import list_checkpoints

    d = Path(run_dir)
    before = {p.name for p in d.iterdir()} if d.is_dir() else set()
    try:
        yield
    except BaseException:
        if fresh and d.is_dir() and not list_checkpoints(d):
            import shutil

            for entry in sorted(set(os.listdir(d)) - before - {LOCK_NAME}):
                path = d / entry
                with contextlib.suppress(OSError):
                    shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            if created and set(os.listdir(d)) <= {LOCK_NAME}:
                with contextlib.suppress(OSError):
                    (d / LOCK_NAME).unlink(missing_ok=True)
                    d.rmdir()
        raise
