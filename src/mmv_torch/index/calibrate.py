"""Calibrated scores: a raw cosine turned into "how unusual is this match for this collection".

For each query kind (see :data:`mmv_torch.index.query.MODES`) an index records, when it is built, the
distribution of the **best** cosine that a *random* query reaches over the whole collection:

| query kind | random queries | searched space |
|---|---|---|
| ``text`` | 1-4 random words of the checkpoint's vocabulary (text tower) | ``video_vt`` |
| ``audio`` | the indexed windows' sounds (their videos in S_va if no file has audio) | ``video_va`` |
| ``video`` | the indexed windows' videos in S_vt | ``video_vt`` |
| ``video-audio`` | the indexed windows' videos in S_va | ``audio_va`` |
| ``audio-audio`` | the indexed windows' sounds (when any file has audio) | ``audio_va`` |

For all but ``text``, matches in the query window's own file are not counted.

The calibrated score of a cosine ``c`` is the fraction of random queries whose best cosine is below
``c`` (the empirical CDF, linear between the recorded quantiles): 0.5 is what a query that matches
nothing in particular reaches with its *top* hit, 1.0 beats every random query. A search whose best
hit scores below :data:`GOOD_MATCH` (0.95) answers "no good match" (the hits are still returned).
The distribution depends on the collection, so ``index build`` and ``index add`` record it again
after every change (``info.calibration``); an index without one is calibrated in memory when opened.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GOOD_MATCH = 0.95
"""A search whose best calibrated score is below this answers "no good match"."""
QUANTILES = 101
"""Recorded quantiles (0, 1, ..., 100 %) of each best-cosine distribution."""


def cdf(cosines: np.ndarray | float, quantiles: list[float]) -> np.ndarray:
    """Calibrated scores in [0, 1] of raw ``cosines`` (any shape) against a recorded distribution
    (``QUANTILES`` sorted best cosines of random queries)."""
    q = np.asarray(quantiles, dtype=np.float64)
    c = np.asarray(cosines, dtype=np.float64)
    if q.size == 0:
        return np.full(c.shape, np.nan)
    if q[-1] - q[0] < 1e-9:  # a degenerate distribution: a step
        return (c > q[0]).astype(np.float64)
    levels = np.linspace(0.0, 1.0, q.size)
    # np.interp needs increasing x: ties in q are spread by a hair so equal quantiles stay in order
    qq = q + np.arange(q.size) * 1e-12
    return np.interp(c, qq, levels, left=0.0, right=1.0)


def _best_other_file(store: Any, space: str, queries: np.ndarray, files: np.ndarray, depth: int = 32) -> np.ndarray:
    """Best cosine of each query row in ``space`` over windows of another file than ``files[i]``."""
    index = store.faiss_index(space)
    if index is None or index.ntotal == 0 or len(queries) == 0:
        return np.zeros(0)
    k = min(depth, index.ntotal)
    scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    owner = _window_files(store, np.unique(ids[ids >= 0]))
    best = []
    for row_s, row_i, f in zip(scores, ids, files):
        other = [s for s, i in zip(row_s, row_i) if i >= 0 and owner.get(int(i)) != int(f)]
        if other:
            best.append(max(other))
    return np.asarray(best, dtype=np.float64)


def _window_files(store: Any, ids: np.ndarray) -> dict[int, int]:
    return {wid: w["file"] for wid, w in store.windows(ids.tolist()).items()}


def _sample_windows(store: Any, space: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    vecs, ids = store.vectors(space)
    if len(ids) == 0:
        return vecs, ids
    # windows in (path, start) order, so the sample does not depend on the ids a build happened to assign
    order = {int(w): i for i, (w,) in enumerate(store.db.execute(
        "SELECT w.id FROM windows w JOIN files f ON f.id = w.file ORDER BY f.path, w.start, w.id"))}
    by_content = np.argsort([order.get(int(w), len(order)) for w in ids], kind="stable")
    vecs, ids = vecs[by_content], ids[by_content]
    pick = np.sort(rng.choice(len(ids), size=min(n, len(ids)), replace=False))
    owner = _window_files(store, ids[pick])
    return vecs[pick], np.asarray([owner[int(i)] for i in ids[pick]])


def random_phrases(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` phrases of 1-4 words drawn from ``words``."""
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 5)))) for _ in range(n)]


def _text_best(store: Any, model: Any, tokenizer: Any, word_mask: bool, n: int, rng: np.random.Generator,
               device: str) -> np.ndarray:
    import torch

    vocab = tokenizer.vocab
    special = {vocab.padding_id, vocab.unk_id}
    words = [w for i, w in enumerate(vocab.words) if w and i not in special and w.isalpha()]
    if not words:
        return np.zeros(0)
    tok = tokenizer(random_phrases(words, n, rng))
    keep = tok.mask.any(dim=1)
    if not bool(keep.any()):
        return np.zeros(0)
    kwargs = {"word_mask": tok.mask[keep].to(device)} if word_mask else {}
    with torch.no_grad():
        emb = model(text=tok.ids[keep].to(device), **kwargs)["text"]["vt"]
    q = torch.nn.functional.normalize(emb.float(), dim=-1).cpu().numpy()
    index = store.faiss_index("video_vt")
    if index is None or index.ntotal == 0:
        return np.zeros(0)
    scores, _ = index.search(np.ascontiguousarray(q, dtype=np.float32), 1)
    return scores[:, 0].astype(np.float64)


def calibrate(store: Any, model: Any = None, tokenizer: Any = None, word_mask: bool = True, queries: int = 256,
              seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """The best-cosine distribution of random queries of every kind over ``store``'s faiss indexes
    (``model`` and ``tokenizer``: for the ``text`` kind, skipped without them). Returns
    ``{"modes": {kind: {"space", "quantiles", "queries"}}, "windows", "good_match"}``: a function of the
    index's contents (files, windows, vectors), not of the order they were added in or of the time."""
    rng = np.random.default_rng(seed)
    modes: dict[str, dict[str, Any]] = {}

    def record(kind: str, space: str, best: np.ndarray) -> None:
        if best.size:
            qs = np.quantile(best, np.linspace(0, 1, QUANTILES))
            modes[kind] = {"space": space, "quantiles": [round(float(x), 6) for x in qs], "queries": int(best.size)}

    if model is not None and tokenizer is not None:
        record("text", "video_vt", _text_best(store, model, tokenizer, word_mask, queries, rng, device))
    audio, audio_files = _sample_windows(store, "audio_va", queries, rng)
    if len(audio) == 0:  # no audio track anywhere: the windows' videos in S_va stand in for sounds
        audio, audio_files = _sample_windows(store, "video_va", queries, rng)
    record("audio", "video_va", _best_other_file(store, "video_va", audio, audio_files))
    video, video_files = _sample_windows(store, "video_vt", queries, rng)
    record("video", "video_vt", _best_other_file(store, "video_vt", video, video_files))
    va, va_files = _sample_windows(store, "video_va", queries, rng)
    record("video-audio", "audio_va", _best_other_file(store, "audio_va", va, va_files))
    if store.committed_vectors("audio_va"):
        record("audio-audio", "audio_va", _best_other_file(store, "audio_va", audio, audio_files))
    return {"modes": modes, "windows": int(store.counts()["windows"]), "good_match": GOOD_MATCH}


def record_calibration(store: Any, model: Any, tokenizer: Any, word_mask: bool, device: str = "cpu"
                       ) -> dict[str, Any]:
    """Calibrate ``store`` (see :func:`calibrate`) and record the result as ``info.calibration``."""
    cal = calibrate(store, model, tokenizer, word_mask, device=device)
    store.set_info(calibration=cal)
    return cal
