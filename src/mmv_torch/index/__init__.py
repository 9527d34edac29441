"""Search a video collection by what is said, seen or heard: sliding-window embeddings of every video
in a faiss index with SQLite metadata (:mod:`.store`, :mod:`.build`), queries by text, audio or video
(:mod:`.query`), the Python API :func:`open` (:mod:`.api`, calibrated scores: :mod:`.calibrate`), a
client for a running server (:mod:`.client`) and a local web page over a JSON API (:mod:`.server`).
See docs/search.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open(path: str | Path, device: str = "cpu", checkpoint: str | Path | None = None,  # noqa: A001
         vocab: str | Path | None = None) -> Any:
    """Open the index folder ``path`` for searching: an :class:`mmv_torch.index.api.Index` whose
    ``.search(text=..., audio=..., video=..., k=..., filters=...)`` returns typed hits with calibrated
    scores; the model and the nearest-neighbour indexes stay loaded between searches."""
    from mmv_torch.index.api import open_index

    return open_index(path, device=device, checkpoint=checkpoint, vocab=vocab)


def build_demo_index(run_dir: str | Path, videos: str | Path, out: str | Path, progress: bool = False
                     ) -> dict[str, Any]:
    """Index ``videos`` (a folder or manifest) with the trained run ``run_dir`` into ``out`` and return
    the build summary with ``serve_command``, the command line that opens the index in a browser."""
    import shlex

    from mmv_torch.index.build import build_index

    summary = build_index(run_dir, videos, out, progress=progress)
    summary["serve_command"] = f"mmv-torch serve {shlex.quote(str(out))}"
    return summary
