"""Training checkpoints: paths, listing, loading, saving with RNG state, pruning, and the export.

Checkpoints are ``run_dir/checkpoints/ckpt_<step:08d>.pt``, written to a temporary file in the same
folder, fsynced and renamed (:func:`mmv_torch.fileio.atomic_torch_save`), so a kill mid-write leaves
only a stray temporary file that is ignored; ``latest`` is the highest step among the complete files
(no pointer file to corrupt). A checkpoint is a dict with ``"format"`` :data:`CHECKPOINT_FORMAT`,
``"step"``, ``"model"``, ``"optimizer"``, ``"scaler"``, ``"rng"`` (one :func:`rng_state` per rank),
``"data"`` (the data position), ``"bad_steps"``, ``"last_loss"``, ``"world_size"``, ``"config"`` (the
resolved config as a dict) and ``"words"`` (the text vocabulary or ``None``).

The export (:func:`export_model`, ``run_dir/export/``) is a weights folder
(:mod:`mmv_torch.weights.folder`), the format that ``create_model(checkpoint=...)`` and ``mmv-torch
convert`` share; :mod:`mmv_torch.weights.resolve` finds the weights a ``--checkpoint`` names.
"""

from __future__ import annotations

import contextlib
import errno
import random
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch import dist
from mmv_torch.config import Config
from mmv_torch.fileio import atomic_torch_save
from mmv_torch.weights.folder import write_weights_folder

CKPT_DIR = "checkpoints"
EXPORT_DIR = "export"
CHECKPOINT_FORMAT = 1
_CKPT_RE = re.compile(r"^ckpt_(\d{8})\.pt$")


# ---------------------------------------------------------------------------------------------
# Training checkpoints


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, ``[(step, path)]`` sorted by step (temporary files ignored)."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """``run_dir/checkpoints/ckpt_<step:08d>.pt``."""
    return Path(run_dir) / CKPT_DIR / f"ckpt_{step:08d}.pt"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint on CPU; a ``ValueError`` names the file when it is unreadable or not ours."""
    p = Path(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, unpickling error, ...
        raise ValueError(f"checkpoint {p} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint {p} is not an mmv-torch training checkpoint "
                         f"(format {CHECKPOINT_FORMAT})")
    return ckpt


def load_latest_checkpoint(run_dir: str | Path, option: str = "--resume latest") -> tuple[Path, dict[str, Any]]:
    """The newest readable checkpoint of a run and its content: an unreadable newest file is reported with
    a warning and the next older one is tried. A ``ValueError`` starting with ``option`` when none loads."""
    folder = Path(run_dir) / CKPT_DIR
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise ValueError(f"{option}: no checkpoint in {folder} (the run stopped before its first checkpoint: "
                         "start it afresh with --overwrite, or give another --out)")
    errors = []
    for _, p in reversed(ckpts):
        try:
            return p, load_checkpoint(p)
        except ValueError as e:
            warnings.warn(f"skipping unreadable checkpoint: {e}", stacklevel=3)
            errors.append(str(e))
    raise ValueError(f"{option}: no readable checkpoint in {folder}: {errors}")


def resolve_resume(resume: str | Path, run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """Find and load the checkpoint named by ``resume``: ``"latest"`` (in ``run_dir``), a run folder
    (its latest, see :func:`load_latest_checkpoint`), or a checkpoint file. Raises ``ValueError`` when
    nothing loads."""
    target = Path(run_dir) if str(resume) == "latest" else Path(resume)
    if target.is_file():
        return target, load_checkpoint(target)
    if not target.is_dir():
        raise ValueError(f"--resume {resume}: no such checkpoint file or run folder ({target})")
    return load_latest_checkpoint(target, f"--resume {resume}")


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints of a run."""
    for _, p in list_checkpoints(run_dir)[:-keep]:
        with contextlib.suppress(OSError):
            p.unlink()


def rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (CPU) and CUDA RNG states."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states taken by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """``[rng_state() of rank 0, of rank 1, ...]``; a collective: every rank calls it."""
    state = rng_state()
    if dist.world_size() == 1:
        return [state]
    out: list[Any] = [None] * dist.world_size()
    torch.distributed.all_gather_object(out, state)
    return out


SPACE_MARGIN = 1.1
"""A checkpoint is written only when the free space is at least this times the previous one's size."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (no space left, or another write error); the message says why."""


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def free_bytes(folder: str | Path) -> int:
    """Bytes free for this user in ``folder``'s file system."""
    import shutil

    return int(shutil.disk_usage(folder).free)


def _make_room(run_dir: Path, path: Path, keep: int) -> int:
    """Before writing ``path``: when the free space is below :data:`SPACE_MARGIN` times the newest
    checkpoint's size, delete the checkpoints this save would prune anyway (never the last one), then raise
    :class:`CheckpointWriteError` if it is still too little. Returns the newest checkpoint's size (0: none)."""
    existing = [(s, p) for s, p in list_checkpoints(run_dir) if p != path]
    if not existing:
        return 0
    size = existing[-1][1].stat().st_size
    need = size * SPACE_MARGIN
    while free_bytes(path.parent) < need and len(existing) > max(keep - 1, 1):
        _, old = existing.pop(0)
        with contextlib.suppress(OSError):
            old.unlink()
    free = free_bytes(path.parent)
    if free < need:
        raise CheckpointWriteError(
            f"cannot write checkpoint {path}: no space left on device ({_mb(free)} free, the previous checkpoint "
            f"took {_mb(size)}); free some space, then continue with --resume latest")
    return size


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` (with ``"step"``; ``"format"`` is added) to :func:`checkpoint_path` atomically, then
    keep only the newest ``keep`` checkpoints. Called by one process (rank 0).

    The free space is checked against the previous checkpoint's size first (checkpoints that this save
    prunes anyway go first when it is short); a full disk while writing, which torch reports as an
    ``inline_container`` position error, is a :class:`CheckpointWriteError` saying so. Either way no
    partial file is left and the previous checkpoints stay complete."""
    path = checkpoint_path(run_dir, int(state["step"]))
    previous = _make_room(Path(run_dir), path, keep)
    try:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)
    except (OSError, RuntimeError) as e:
        if isinstance(e, CheckpointWriteError):
            raise
        free = free_bytes(path.parent)
        if getattr(e, "errno", None) == errno.ENOSPC or free < max(2**20, previous):
            raise CheckpointWriteError(f"cannot write checkpoint {path}: no space left on device ({_mb(free)} "
                                       "free); free some space, then continue with --resume latest") from e
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {type(e).__name__}: "
                                   f"{' '.join(str(e).split())}") from e
    prune_checkpoints(run_dir, keep)
    return path


def export_model(model: nn.Module, cfg: Config, out: str | Path, words: Sequence[str] | None = None) -> Path:
    """Write ``model``'s weights, ``cfg`` (and the word list ``words``) as the weights folder ``out``
    (:func:`~mmv_torch.weights.folder.write_weights_folder`), for ``create_model(checkpoint=out)``."""
    return write_weights_folder(out, model.state_dict(), cfg, words)
