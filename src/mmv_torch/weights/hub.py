"""The Hugging Face Hub: ``create_model("hf-hub:ORG/NAME")`` / ``mmv_torch.load("hf-hub:ORG/NAME@REV")`` read a
Hub repository that holds a weights folder (``config.json`` + ``model.safetensors`` [+ ``vocab.txt``]
+ the model card ``README.md``), through ``huggingface_hub`` (``pip install "mmv-torch[hub]"``);
``mmv-torch export --hub DIR`` writes such a folder, ready for ``huggingface-cli upload``.

``HF_HUB_OFFLINE=1`` reads the local cache only (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmv_torch.extras import require

FILES = ("config.json", "model.safetensors", "vocab.txt", "README.md")
"""What is downloaded of a repository: the weights folder and its card."""


def parse_hub_id(spec: str) -> tuple[str, str | None]:
    """``ORG/NAME`` or ``ORG/NAME@REVISION`` -> ``(repo_id, revision or None)``; anything else a ``ValueError``."""
    repo, _, revision = spec.partition("@")
    if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo):
        raise ValueError(f"hf-hub:{spec}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo, revision or None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_folder(spec: str) -> Path:
    """The local snapshot folder of the Hub repository ``spec`` (``ORG/NAME[@REVISION]``): downloaded, or
    from the cache (only from there under ``HF_HUB_OFFLINE=1``). Raises ``ValueError`` / ``OSError`` in one
    line when it cannot be had or holds no weights folder."""
    hub = require("huggingface_hub", "hf-hub: checkpoints")
    repo, revision = parse_hub_id(spec)
    try:
        folder = hub.snapshot_download(repo, revision=revision, allow_patterns=list(FILES),
                                       cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                       local_files_only=_offline())
    except Exception as e:  # huggingface_hub raises its own error types (not found, offline, gated, HTTP)
        where = " in the local cache (HF_HUB_OFFLINE is set)" if _offline() else ""
        raise OSError(f"hf-hub:{spec}: cannot get the repository{where}: {type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else e!r}") from e
    path = Path(folder)
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ValueError(f"hf-hub:{spec}: the repository has no config.json + model.safetensors (not an mmv-torch "
                         "weights folder)")
    return path


def _results(files: Sequence[str | Path]) -> list[dict[str, Any]]:
    out = []
    for f in files:
        try:
            r = json.loads(Path(f).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"--metrics {f}: cannot read it as an evaluation JSON ({e})") from e
        if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
            raise ValueError(f"--metrics {f}: not an evaluation JSON (no 'metrics'; `mmv-torch eval ... --json` "
                             "writes them)")
        out.append(r)
    return out


def export_hub(checkpoint: str | Path, out_dir: str | Path, name: str | None = None, licence: str | None = None,
               metrics: Sequence[str | Path] = (), hub_id: str | None = None) -> Path:
    """Write ``out_dir`` as a Hub repository of ``checkpoint`` (anything ``--checkpoint`` takes): its
    weights folder with the word list, the origin of fetched weights, and a model card whose YAML metadata
    holds the licence (``licence``, default the recorded origin's, else ``other``), tags, the library, the
    input contract and the metrics of the evaluation JSONs ``metrics``. Returns ``out_dir``."""
    from mmv_torch.weights.card import model_card
    from mmv_torch.weights.folder import read_origin, write_weights_folder
    from mmv_torch.weights.resolve import resolve_checkpoint

    results = _results(metrics)  # bad metric files fail before the weights are read
    resolved = resolve_checkpoint(checkpoint)
    origin = dict(read_origin(resolved.path) or {}) if resolved.kind == "folder" else {}
    licence = licence or origin.get("licence") or "other (not stated: pass --license)"
    name = name or (hub_id.split("/")[-1] if hub_id else Path(str(checkpoint)).name)
    origin.update(source=str(checkpoint), exported_by="mmv-torch export --hub", licence=licence)
    model = resolved.load_model("cpu")
    card = model_card(resolved.config, name, licence, origin, results, has_vocab=resolved.words is not None,
                      hub_id=hub_id)
    return write_weights_folder(out_dir, model.state_dict(), resolved.config, words=resolved.words,
                                metadata={"format": "pt", "library": "mmv-torch"}, origin=origin, card=card)
