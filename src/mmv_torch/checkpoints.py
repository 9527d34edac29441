"""Training checkpoints: paths, listing, loading, saving with RNG state, pruning, the export, and the
resolver behind every ``--checkpoint`` (layer L2).

Checkpoints are ``run_dir/checkpoints/ckpt_<step:08d>.pt``, written to a temporary file in the same
folder, fsynced and renamed (:func:`mmv_torch.fileio.atomic_torch_save`), so a kill mid-write leaves
only a stray temporary file that is ignored; ``latest`` is the highest step among the complete files
(no pointer file to corrupt). A checkpoint is a dict with ``"format"`` :data:`CHECKPOINT_FORMAT`,
``"step"``, ``"model"``, ``"optimizer"``, ``"scaler"``, ``"rng"`` (one :func:`rng_state` per rank),
``"data"`` (the data position), ``"bad_steps"``, ``"last_loss"``, ``"world_size"``, ``"config"`` (the
resolved config as a dict) and ``"words"`` (the text vocabulary or ``None``).

The export (:func:`export_model`) is ``model.safetensors`` + ``config.json`` (+ ``vocab.txt``), the
folder format that ``create_model(checkpoint=...)`` and ``mmv-torch convert`` share.
:func:`resolve_checkpoint` accepts a run folder, such a folder or a ``.pt`` checkpoint.
"""

from __future__ import annotations

import contextlib
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmv_torch import dist
from mmv_torch.config import Config, config_from_dict, load_config, save_config
from mmv_torch.data.captions import VOCAB_FILE
from mmv_torch.data.text.dmvr import dmvr_tokenizer
from mmv_torch.fileio import atomic_torch_save, atomic_write, atomic_write_text
from mmv_torch.models.mmv import MMV, create_model

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
        raise ValueError(f"{option}: no checkpoint in {folder}")
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


def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` (with ``"step"``; ``"format"`` is added) to :func:`checkpoint_path` atomically, then
    keep only the newest ``keep`` checkpoints. Called by one process (rank 0)."""
    path = checkpoint_path(run_dir, int(state["step"]))
    atomic_torch_save({"format": CHECKPOINT_FORMAT, **state}, path)
    prune_checkpoints(run_dir, keep)
    return path


def export_model(model: nn.Module, cfg: Config, out: str | Path, words: Sequence[str] | None = None) -> Path:
    """Write ``out/model.safetensors``, ``out/config.json`` (and ``out/vocab.txt``) for
    ``create_model(checkpoint=out)``."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    save_config(cfg, out / "config.json")
    if words is not None:
        atomic_write_text(out / "vocab.txt", "".join(w + "\n" for w in words))
    return out


# ---------------------------------------------------------------------------------------------
# One resolver behind every --checkpoint


EXPECTED = ("a training run folder (with export/ or checkpoints/ckpt_*.pt), an export or `mmv-torch convert` "
            "folder (config.json + model.safetensors), or a training checkpoint .pt file")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """What a ``--checkpoint`` path names: the weights chosen, their config and vocabulary.

    ``kind`` is ``"folder"`` (``path`` holds ``config.json`` + ``model.safetensors``) or ``"file"``
    (``path`` is a training checkpoint ``.pt``). ``description`` says in one line what was chosen and
    why. ``vocab_path`` is the ``vocab.txt`` read (``None`` when the words come from the ``.pt`` or there
    are none); ``words`` is the word list of the text table (line/row ``i`` is id ``i``) or ``None``.
    """

    kind: str
    path: Path
    description: str
    config: Config
    vocab_path: Path | None = None
    words: list[str] | None = None
    step: int | None = None
    _state: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def load_model(self, device: str | torch.device = "cpu") -> MMV:
        """The model with these weights, in eval mode on ``device``."""
        if self.kind == "folder":
            return create_model(checkpoint=self.path).to(device).eval()
        with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten
            model = MMV(self.config.model)
        try:
            model.load_state_dict(self._state or {})
        except RuntimeError as e:
            raise ValueError(f"checkpoint {self.path}: its weights do not match its config: {e}") from e
        return model.to(device).eval()


def _read_words(path: Path) -> list[str] | None:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else None


def _is_weights_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _from_folder(folder: Path, description: str) -> ResolvedCheckpoint:
    vocab = folder / VOCAB_FILE
    return ResolvedCheckpoint("folder", folder, description, load_config(folder / "config.json"),
                              vocab if vocab.is_file() else None, _read_words(vocab))


def _from_file(path: Path, description: str, ckpt: dict[str, Any],
               run_dir: Path | None = None) -> ResolvedCheckpoint:
    vocab = run_dir / VOCAB_FILE if run_dir is not None else None
    words = ckpt.get("words")
    return ResolvedCheckpoint("file", path, description, config_from_dict(ckpt["config"]),
                              vocab if vocab is not None and vocab.is_file() else None,
                              None if words is None else list(words), int(ckpt["step"]), ckpt["model"])


def resolve_checkpoint(path: str | Path) -> ResolvedCheckpoint:
    """Resolve a ``--checkpoint`` path to one set of weights.

    Accepted, in this order: (b) an export or ``mmv-torch convert`` folder (``config.json`` +
    ``model.safetensors``); (a) a training run folder: its ``export/`` when present (the description
    notes a newer checkpoint, e.g. of a resumed, longer run), else its latest readable checkpoint
    ``checkpoints/ckpt_*.pt``; (c) a training checkpoint ``.pt`` file. Anything else raises a
    ``ValueError`` naming what was expected.
    """
    p = Path(path)
    if p.is_file():
        try:
            ckpt = load_checkpoint(p)
        except ValueError as e:
            raise ValueError(f"--checkpoint {path}: {e}; expected {EXPECTED}") from e
        return _from_file(p, f"checkpoint file {p}: step {int(ckpt['step'])}", ckpt)
    if not p.is_dir():
        raise ValueError(f"--checkpoint {path}: no such file or folder; expected {EXPECTED}")
    if _is_weights_folder(p):
        return _from_folder(p, f"exported weights {p}")
    ckpts = list_checkpoints(p)
    export = p / EXPORT_DIR
    if _is_weights_folder(export):
        note = ""
        if ckpts and ckpts[-1][1].stat().st_mtime > (export / "model.safetensors").stat().st_mtime:
            note = f"; {CKPT_DIR}/{ckpts[-1][1].name} is newer (pass that file to use it)"
        return _from_folder(export, f"run {p}: {EXPORT_DIR}/ (the weights at the end of training){note}")
    if not ckpts:
        raise ValueError(f"--checkpoint {path}: a folder with neither config.json + model.safetensors, "
                         f"{EXPORT_DIR}/ nor {CKPT_DIR}/ckpt_*.pt; expected {EXPECTED}")
    ckpt_path, ckpt = load_latest_checkpoint(p, f"--checkpoint {path}")
    description = f"run {p}: latest checkpoint step {int(ckpt['step'])} (no {EXPORT_DIR}/ yet)"
    return _from_file(ckpt_path, description, ckpt, run_dir=p)


def checkpoint_tokenizer(resolved: ResolvedCheckpoint, cfg: Config | None = None,
                         vocab: str | Path | None = None) -> tuple[Any, str]:
    """The tokenizer of a checkpoint's word table and where its words came from: ``vocab`` (a DMVR
    vocabulary, which brings DMVR's tokenizer, or a plain word list) or the checkpoint's own word list.

    ``cfg`` (default: the checkpoint's) gives the table's rows, the words per sentence and the
    tokenizer the checkpoint takes: one with ``data.tokenizer=dmvr`` needs a DMVR vocabulary. Raises
    ``MissingVocabularyError`` when there is no word list, ``ValueError`` when it does not fit."""
    from mmv_torch.data.text.dmvr import load_vocabulary_file
    from mmv_torch.data.text.tokenizer import MissingVocabularyError, Tokenizer, Vocabulary

    cfg = cfg or resolved.config
    rows = cfg.model.text.vocab_size
    if vocab is not None:
        words, kind = load_vocabulary_file(vocab)
        where = f"{vocab} ({kind})"
    elif resolved.words is not None:
        words, kind, where = resolved.words, "word-list", str(resolved.vocab_path or resolved.path)
    else:
        raise MissingVocabularyError(f"checkpoint {resolved.path} has no vocab.txt (pass its word list with "
                                     "--vocab FILE)")
    if len(words) != rows:
        raise ValueError(f"{where}: {len(words)} words but the checkpoint's word table has {rows} rows; the list "
                         "must give one word per row, in row order")
    if cfg.data.tokenizer == "dmvr" and kind != "dmvr":
        raise ValueError(f"{where}: this checkpoint takes DMVR's tokenizer (data.tokenizer=dmvr), which needs a DMVR "
                         "vocabulary ('idx word' lines with <pad> <bos> <eos> <unk>; `mmv-torch vocab match` writes "
                         "one)")
    if kind == "dmvr":  # a DMVR vocabulary brings DMVR's tokenizer
        return dmvr_tokenizer(vocab, max_words=cfg.data.max_words), where  # type: ignore[arg-type]
    return Tokenizer(Vocabulary(words), max_words=cfg.data.max_words), where
