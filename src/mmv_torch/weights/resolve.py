"""What a ``--checkpoint`` (or ``create_model(checkpoint=...)``) names, resolved to one set of weights,
its config and its vocabulary.

:func:`resolve_checkpoint` accepts a weights folder (:mod:`mmv_torch.weights.folder`: an export or a
``mmv-torch convert`` folder), a training run folder (its ``export/``, else its latest checkpoint) or a
training checkpoint ``.pt``; :func:`checkpoint_tokenizer` builds the tokenizer of its word table;
:func:`create_model` builds a preset or loads a weights folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmv_torch.config import Config, ModelConfig, apply_overrides, config_from_dict, get_preset
from mmv_torch.models.mmv import MMV
from mmv_torch.weights.checkpoint import (
    CKPT_DIR,
    EXPORT_DIR,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
)
from mmv_torch.weights.folder import (
    VOCAB_FILE,
    WEIGHTS_FILE,
    is_weights_folder,
    load_model,
    read_config,
    read_words,
)

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
            return load_model(self.path, self.config.model).to(device).eval()
        with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten
            model = MMV(self.config.model)
        try:
            model.load_state_dict(self._state or {})
        except RuntimeError as e:
            raise ValueError(f"checkpoint {self.path}: its weights do not match its config: {e}") from e
        return model.to(device).eval()


def _from_folder(folder: Path, description: str) -> ResolvedCheckpoint:
    vocab = folder / VOCAB_FILE
    return ResolvedCheckpoint("folder", folder, description, read_config(folder),
                              vocab if vocab.is_file() else None, read_words(folder))


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
    ``checkpoints/ckpt_*.pt``; (c) a training checkpoint ``.pt`` file; (d) ``hf-hub:ORG/NAME[@REVISION]``,
    a Hub repository's weights folder (:mod:`mmv_torch.weights.hub`). Anything else raises a
    ``ValueError`` naming what was expected.
    """
    p = Path(_local(path))
    if p.is_file():
        try:
            ckpt = load_checkpoint(p)
        except ValueError as e:
            raise ValueError(f"--checkpoint {path}: {e}; expected {EXPECTED}") from e
        return _from_file(p, f"checkpoint file {p}: step {int(ckpt['step'])}", ckpt)
    if not p.is_dir():
        raise ValueError(f"--checkpoint {path}: no such file or folder; expected {EXPECTED}")
    if is_weights_folder(p):
        return _from_folder(p, f"exported weights {p}")
    ckpts = list_checkpoints(p)
    export = p / EXPORT_DIR
    if is_weights_folder(export):
        note = ""
        if ckpts and ckpts[-1][1].stat().st_mtime > (export / WEIGHTS_FILE).stat().st_mtime:
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
    from mmv_torch.data.text.dmvr import dmvr_tokenizer, load_vocabulary_file
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


def _split_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``create_model`` keyword overrides -> dotted ModelConfig keys (``video__width_mult`` -> ``video.width_mult``)."""
    return {k.replace("__", "."): v for k, v in overrides.items()}


HUB_PREFIX = "hf-hub:"
"""``create_model("hf-hub:ORG/NAME")`` and ``--checkpoint hf-hub:ORG/NAME[@REVISION]``: a Hugging Face Hub
repository holding a weights folder (:mod:`mmv_torch.weights.hub`)."""


def _local(checkpoint: str | Path) -> str | Path:
    """``checkpoint``, or for an ``hf-hub:`` id the local folder of its snapshot (downloaded or cached)."""
    if isinstance(checkpoint, str) and checkpoint.startswith(HUB_PREFIX):
        from mmv_torch.weights.hub import hub_folder

        return hub_folder(checkpoint[len(HUB_PREFIX):])
    return checkpoint


def resolve_model_config(name: str | None = None, checkpoint: str | Path | None = None,
                         **overrides: Any) -> ModelConfig:
    """The ModelConfig ``create_model`` would build (the checkpoint's config, else the preset's)."""
    if checkpoint is not None:
        model_cfg = resolve_checkpoint(checkpoint).config.model
    elif name is not None:
        model_cfg = get_preset(name).model
    else:
        raise ValueError("create_model needs a preset name or a checkpoint folder")
    if overrides:
        model_cfg = apply_overrides(model_cfg, _split_overrides(overrides))
    return model_cfg


def create_model(name: str | None = None, checkpoint: str | Path | None = None, **overrides: Any) -> MMV:
    """Build a preset (``mmv_s3d``, ``mmv_tsm_r50``, ``mmv_tsm_r50x2``, ``va_r2plus1d_18``, ``tiny``) or load
    a checkpoint.

    ``checkpoint`` is anything ``--checkpoint`` takes (:func:`resolve_checkpoint`): a weights folder
    written by ``mmv-torch convert`` or a training run's export (``config.json`` + ``model.safetensors``,
    :mod:`mmv_torch.weights.folder`), a training run folder (its export, else its latest checkpoint), a
    training checkpoint ``.pt``, or ``hf-hub:ORG/NAME`` (also accepted as ``name``). The config comes
    from there and the weights are loaded strictly. Keyword overrides replace ModelConfig fields, nested
    with ``__`` (``create_model("tiny", graph="disjoint", video__width_mult=0.5)``). A model loaded from
    a checkpoint is returned in eval mode; a fresh one in train mode.
    """
    if checkpoint is None and name is not None and name.startswith(HUB_PREFIX):
        name, checkpoint = None, name
    if checkpoint is None:
        return MMV(resolve_model_config(name, None, **overrides))
    resolved = resolve_checkpoint(checkpoint)
    if overrides:
        from dataclasses import replace

        model_cfg = apply_overrides(resolved.config.model, _split_overrides(overrides))
        resolved = replace(resolved, config=replace(resolved.config, model=model_cfg))
    return resolved.load_model()
