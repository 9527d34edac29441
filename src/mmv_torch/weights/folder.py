"""The weights folder: ``config.json`` + ``model.safetensors`` (+ ``vocab.txt``), the one format that
``mmv-torch convert``, a training run's ``export/`` and ``create_model(checkpoint=...)`` share.

- ``config.json``: the resolved :class:`~mmv_torch.config.Config` (model, and the input contract the
  weights were trained with: frames, fps, crops, sample rate, audio front-end, tokenizer);
- ``model.safetensors``: :class:`~mmv_torch.models.mmv.MMV`'s own ``state_dict`` keys;
- ``vocab.txt`` (optional): the word of each row of the text tower's table, line ``i`` = id ``i``;
- ``README.md`` (optional): a model card (``mmv-torch fetch``, ``mmv-torch export --hub``), and then
  ``config.json`` also records the weights' ``origin`` (URL, licence, checksum; :func:`read_origin`).

:func:`write_weights_folder` writes a folder whole (:func:`mmv_torch.fileio.atomic_folder`): a kill
leaves the old folder or the new one, never a mix, and a folder holding any other file is refused.
:func:`load_model` reads one strictly (every key, every shape).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmv_torch.config import ORIGIN_KEY, Config, ModelConfig, config_to_dict, load_config
from mmv_torch.fileio import atomic_folder, atomic_write_text
from mmv_torch.models.mmv import MMV

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCAB_FILE = "vocab.txt"
CARD_FILE = "README.md"
FOLDER_FILES = frozenset({CONFIG_FILE, WEIGHTS_FILE, VOCAB_FILE, CARD_FILE})
"""What a weights folder may hold; a folder with anything else is not replaced."""


def is_weights_folder(path: str | Path) -> bool:
    """True when ``path`` holds ``config.json`` and ``model.safetensors``."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def check_replaceable(out: str | Path) -> None:
    """Raise ``ValueError`` when ``out`` exists and holds anything but a weights folder's files (writing
    replaces the whole folder)."""
    out = Path(out)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in FOLDER_FILES) if out.is_dir() else []
    if foreign:
        raise ValueError(f"{out} holds files that are not a weights folder (a converted checkpoint or an export): "
                         f"{foreign[:3]}; choose a new or empty folder (its whole content is replaced)")


def write_weights_folder(out: str | Path, state: Mapping[str, torch.Tensor], cfg: Config,
                         words: Sequence[str] | None = None, metadata: Mapping[str, str] | None = None,
                         origin: Mapping[str, Any] | None = None, card: str | None = None) -> Path:
    """Write ``state`` (an :class:`MMV` ``state_dict``), ``cfg`` and the word list ``words`` (when given)
    as the folder ``out``, whole. Raises ``ValueError`` when ``out`` holds files of another kind.

    ``metadata`` goes into the safetensors header (string keys and values); ``origin`` (JSON values:
    where the weights came from, their licence and checksum) into ``config.json`` beside the config;
    ``card`` is written as the model card ``README.md``. Returns ``out``."""
    from safetensors.torch import save_file

    out = Path(out)
    check_replaceable(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_folder(out) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=dict(metadata) if metadata else None)
        data = config_to_dict(cfg)
        if origin is not None:
            data[ORIGIN_KEY] = dict(origin)
        (tmp / CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if card is not None:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        if words is not None:
            (tmp / VOCAB_FILE).write_text("".join(w + "\n" for w in words), encoding="utf-8")
    return out


def read_config(folder: str | Path) -> Config:
    """The folder's ``config.json``; ``ValueError`` when it has none."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"checkpoint folder {folder} has no {CONFIG_FILE}")
    return load_config(path)


def read_origin(folder: str | Path) -> dict[str, Any] | None:
    """Where a folder's weights came from (``config.json``'s ``origin``: URL, licence, checksum), or None."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    origin = data.get(ORIGIN_KEY) if isinstance(data, dict) else None
    return origin if isinstance(origin, dict) else None


def read_words(folder: str | Path) -> list[str] | None:
    """The folder's word list (``vocab.txt``, line ``i`` = row ``i``), or None when it has none."""
    path = Path(folder) / VOCAB_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else None


def write_words(folder: str | Path, words: Sequence[str]) -> Path:
    """Write ``folder/vocab.txt`` (one word per line, line ``i`` = row ``i``) atomically; a training run
    folder keeps its word list there too."""
    return atomic_write_text(Path(folder) / VOCAB_FILE, "".join(w + "\n" for w in words))


def read_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors``; ``ValueError`` when missing, truncated or not safetensors."""
    from safetensors.torch import load_file

    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise ValueError(f"checkpoint folder {folder} has no {WEIGHTS_FILE}")
    try:
        return load_file(str(weights))
    except Exception as e:  # safetensors raises its own error type for truncated or foreign files
        raise ValueError(f"{weights} cannot be read ({type(e).__name__}: {e}); it is truncated or not a "
                         "safetensors file") from e


def load_model(folder: str | Path, model_cfg: ModelConfig | None = None) -> MMV:
    """The :class:`MMV` of a weights folder, in eval mode; ``model_cfg`` (default: the folder's own) is
    the architecture, which must match the weights exactly (a ``ValueError`` lists what does not)."""
    cfg = model_cfg if model_cfg is not None else read_config(folder).model
    state = read_state(folder)
    # Built on the meta device: no random initialisation of weights that are overwritten anyway.
    with torch.device("meta"):
        model = MMV(cfg)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshaped:
        raise ValueError(f"{Path(folder) / WEIGHTS_FILE} does not match the model: missing {missing}, unexpected "
                         f"{unexpected}, mis-shaped {misshaped}")
    # Keep each tensor's own memory format (channels-last weights stay channels-last).
    placed = {k: torch.empty_strided(own[k].shape, own[k].stride(), dtype=own[k].dtype).copy_(v)
              for k, v in state.items()}
    model.load_state_dict(placed, strict=True, assign=True)
    return model.eval()
