"""``mmv-torch export --hub DIR``: a checkpoint as a Hugging Face Hub repository folder (the weights folder,
its word list and origin, a model card with YAML metadata), which ``hf-hub:ORG/NAME`` reads back
(:mod:`mmv_torch.weights.hub`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
