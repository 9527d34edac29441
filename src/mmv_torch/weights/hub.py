"""The Hugging Face Hub: ``create_model("hf-hub:ORG/NAME")`` / ``mmv_torch.load("hf-hub:ORG/NAME@REV")`` read a
Hub repository that holds a weights folder (``config.json`` + ``model.safetensors`` [+ ``vocab.txt``]
+ the model card ``README.md``), through ``huggingface_hub`` (``pip install "mmv-torch[hub]"``);
``mmv-torch export --hub DIR`` writes such a folder (:mod:`mmv_torch.weights.hub_export`), ready for
``huggingface-cli upload``.

``HF_HUB_OFFLINE=1`` reads the local cache only (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

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
