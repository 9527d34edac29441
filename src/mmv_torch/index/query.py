"""Searching an index: queries (text, an audio file, a video file) embedded with the index's
checkpoint, nearest windows found, adjacent windows of one file merged into one hit.

| query | query embedding | searched space |
|---|---|---|
| text | text tower, S_vt | ``video_vt`` |
| audio file | audio tower, S_va | ``video_va`` (audio -> video) |
| video file | video tower, S_va | ``audio_va`` (video -> audio) |
| video file | video tower, S_vt | ``video_vt`` (video -> video) |
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.index.store import IndexStore

MODES = {"text": ("text", "video_vt"), "audio": ("audio", "video_va"), "video-audio": ("video_va", "audio_va"),
         "video": ("video_vt", "video_vt"), "audio-audio": ("audio", "audio_va")}
"""Search mode -> (query embedding, searched space)."""


def merge_hits(scores: np.ndarray, ids: np.ndarray, windows: dict[int, dict[str, Any]], stride_s: float,
               k: int) -> list[dict[str, Any]]:
    """Nearest windows -> at most ``k`` hits: windows of one file that touch or overlap (a start no
    more than one stride after the previous window's start) become one hit spanning them, scored by its
    best window; hits sorted by score."""
    by_file: dict[int, list[tuple[float, float, float, int]]] = {}
    for s, wid in zip(scores.tolist(), ids.tolist()):
        w = windows.get(int(wid))
        if w is not None:
            by_file.setdefault(w["file"], []).append((w["start"], w["end"], float(s), int(wid)))
    hits = []
    for fid, wins in by_file.items():
        wins.sort()
        group = [wins[0]]
        for w in wins[1:]:
            if w[0] - group[-1][0] <= stride_s + 1e-6:
                group.append(w)
                continue
            hits.append(_hit(fid, group, windows))
            group = [w]
        hits.append(_hit(fid, group, windows))
    hits.sort(key=lambda h: -h["score"])
    return hits[:k]


def _hit(fid: int, group: list[tuple[float, float, float, int]], windows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    best = max(group, key=lambda g: g[2])
    w = windows[best[3]]
    return {"file": fid, "path": w["path"], "root": w["root"], "start": min(g[0] for g in group),
            "end": max(g[1] for g in group), "score": round(best[2], 6), "window": best[3],
            "windows": len(group)}


@dataclass
class Searcher:
    """An open index with its model: embeds queries and returns merged hits. Thread-safe."""

    store: IndexStore
    model: Any
    cfg: Any
    tokenizer: Any
    device: str = "cpu"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        info = self.store.info()
        self.window_s = float(info["window_s"])
        self.stride_s = float(info["stride_s"])
        self.word_mask = bool(info.get("word_mask", True))

    def embed(self, mode: str, *, text: str | None = None, path: str | Path | None = None,
              start_s: float | None = None) -> np.ndarray:
        """The query embedding of ``mode`` (see :data:`MODES`)."""
        from mmv_torch.index.embedding import embed_audio_file, embed_text, embed_video_file

        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        with self._lock:
            if mode == "text":
                if self.tokenizer is None:
                    raise ValueError("this index's checkpoint has no word list: text search needs one (build the "
                                     "index with --vocab FILE)")
                vec, known = embed_text(self.model, self.tokenizer, text or "", self.word_mask, self.device)
                if known == 0:
                    raise ValueError(f"no word of {text!r} is in the checkpoint's vocabulary")
                return vec
            if mode in ("audio", "audio-audio"):
                return embed_audio_file(self.model, self.cfg, path, device=self.device)  # type: ignore[arg-type]
            start_s = self.check_start(path, start_s)  # type: ignore[arg-type]
            emb = embed_video_file(self.model, self.cfg, path, start_s, self.window_s,  # type: ignore[arg-type]
                                   self.device)
            return emb[MODES[mode][0]]

    def check_start(self, path: str | Path, start_s: float | None) -> float:
        """The start of the query window of video ``path``: ``start_s``, or its middle window when
        ``None``. A start that is not finite, negative or past the last whole window (``duration -
        window``) is refused with a ``ValueError``."""
        from mmv_torch.data.media.decode import probe

        duration = float(probe(path).duration)
        last = max(0.0, duration - self.window_s)
        if start_s is None:
            return round(last / 2, 6)
        start = float(start_s)
        if not math.isfinite(start) or start < 0 or start > last + 1e-3:
            raise ValueError(f"start {start:g} s is outside {Path(path).name}: it lasts {duration:.2f} s, so a "
                             f"{self.window_s:g} s window starts between 0 and {last:.2f} s")
        return start

    def search_vector(self, space: str, vec: np.ndarray, k: int = 10) -> list[dict[str, Any]]:
        """Hits of an embedding in ``space``: windows fetched until ``k`` merged hits exist or the index
        is exhausted."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        fetch = 4 * k
        while True:
            scores, ids = self.store.search(space, vec, fetch)
            hits = merge_hits(scores, ids, self.store.windows(ids), self.stride_s, k)
            index = self.store.faiss_index(space)
            total = 0 if index is None else index.ntotal
            if len(hits) >= k or fetch >= total:
                return hits
            fetch *= 4

    def search(self, mode: str, k: int = 10, **query: Any) -> list[dict[str, Any]]:
        """Embed the query of ``mode`` and return its hits."""
        return self.search_vector(MODES[mode][1], self.embed(mode, **query), k)


def open_searcher(index: str | Path, device: str = "cpu", checkpoint: str | Path | None = None,
                  vocab: str | Path | None = None) -> Searcher:
    """An index folder with the model it was built with (or ``checkpoint``, which must give embeddings
    of the same widths); text search needs a vocabulary (the checkpoint's own, the one recorded at
    build time, or ``vocab``)."""
    from mmv_torch.data.text.tokenizer import MissingVocabularyError
    from mmv_torch.weights.resolve import checkpoint_tokenizer, resolve_checkpoint

    store = IndexStore(index)
    info = store.info()
    if "window_s" not in info:
        raise ValueError(f"{index}: an index whose build has not started (run `mmv-torch index build` again)")
    if checkpoint is None and not Path(info["checkpoint"]).exists():
        raise ValueError(f"{index} was built with the checkpoint {info['checkpoint']}, which is gone: move it back, "
                         "or pass the same weights from their new place (Python: checkpoint=PATH)")
    resolved = resolve_checkpoint(checkpoint or info["checkpoint"])
    try:
        tokenizer = checkpoint_tokenizer(resolved, resolved.config, vocab or info.get("vocab"))[0]
    except MissingVocabularyError:
        tokenizer = None
    model = resolved.load_model(device)
    return Searcher(store, model, resolved.config, tokenizer, device)
