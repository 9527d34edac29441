"""The Python search API: ``mmv_torch.index.open(INDEX).search(text=..., audio=..., video=..., k=...,
filters=...)``.

An :class:`Index` keeps the model and the faiss indexes loaded, so every search after the first is
only a query embedding and a nearest-neighbour lookup. A search returns a :class:`SearchResult` of
typed :class:`Hit` objects:

- ``score``: the calibrated score (:mod:`mmv_torch.index.calibrate`), in [0, 1]; ``cosine``: the raw
  cosine; ``parts``: one :class:`Part` per query part (its space, calibrated score and cosine);
- a query of several parts (text + a sound (+ a video clip)) is fused by the **mean of the parts'
  calibrated scores** over the windows that any part finds (each part's cosine is computed for every
  such window); ``cosine`` is then the mean of the parts' cosines;
- windows of one file that touch or overlap are merged into one hit, scored by its best window;
- a video query (a file or an indexed window: "more like this") never returns itself: the query
  window and the windows of its file that overlap or touch it are excluded (``exclude_source=True``: the
  whole source video);
- :class:`Filters` (path glob, duration, has audio, modification time) select files from the index's
  SQLite before the nearest-neighbour search.
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.index.calibrate import GOOD_MATCH, calibrate, cdf
from mmv_torch.index.query import MODES, Searcher

PART_OF = {"text": "text", "audio": "audio", "video": "video", "video-audio": "video", "audio-audio": "audio"}
"""Query kind -> the argument of :meth:`Index.search` it comes from."""


@dataclass(frozen=True)
class Part:
    """One query part's match of a window: the query kind (``text``, ``audio``, ``video``,
    ``video-audio``), the searched space, its calibrated score and its raw cosine."""

    kind: str
    space: str
    score: float | None
    cosine: float


@dataclass(frozen=True)
class Hit:
    """A merged run of matching windows of one file (``start``-``end`` seconds); its best window
    ``window`` gives ``score`` (calibrated; fused over ``parts``), ``cosine`` (raw) and ``parts``."""

    path: str
    start: float
    end: float
    score: float | None
    cosine: float
    spaces: tuple[str, ...]
    parts: dict[str, Part]
    window: int
    windows: int
    file: int
    root: int
    duration: float | None = None
    has_audio: bool = False
    moment: tuple[float, float] = (0.0, 0.0)
    """The best window's own (start, end)."""
    has_video: bool = True
    """False for an audio-only window (its file's video cannot be decoded): found by sound, no thumbnail."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``None`` for an uncalibrated score)."""
        d = asdict(self)
        d["spaces"] = list(self.spaces)
        d["moment"] = list(self.moment)
        return d


@dataclass
class SearchResult:
    """The hits of one search, best first, and whether the best one is a good match (its calibrated
    score at least ``threshold``; ``None`` when the index could not be calibrated)."""

    hits: list[Hit]
    kinds: tuple[str, ...]
    threshold: float = GOOD_MATCH
    good_match: bool | None = None
    excluded: int = 0
    """Windows left out as self-matches."""

    def __iter__(self):  # noqa: ANN204
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]

    @property
    def message(self) -> str | None:
        """``"no good match"`` (with the best score) when the best hit is below the threshold."""
        if not self.hits:
            return "no hits"
        if self.good_match is False:
            return (f"no good match: the best score {self.hits[0].score:.2f} is below {self.threshold:.2f} "
                    "(a random query reaches it)")
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``results``, ``good_match``, ``threshold``, ``message``, ``kinds``."""
        return {"results": [h.to_dict() for h in self.hits], "good_match": self.good_match,
                "threshold": self.threshold, "message": self.message, "kinds": list(self.kinds),
                "excluded": self.excluded}


def _timestamp(value: float | str | datetime | None, name: str) -> float | None:
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: expected an ISO date (2024-01-31 or 2024-01-31T12:00), got {value!r}") from None
    return value.timestamp()


@dataclass(frozen=True)
class Filters:
    """Which files a search may return. ``path``: a glob matched against the absolute path or the path
    relative to its indexed root (``*.avi``, ``kitchen/*``); durations in seconds; ``has_audio``;
    ``modified_after`` / ``modified_before``: a file's mtime as epoch seconds, a ``datetime`` or an ISO
    date string."""

    path: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None
    has_audio: bool | None = None
    modified_after: float | str | datetime | None = None
    modified_before: float | str | datetime | None = None

    def active(self) -> bool:
        """Whether any filter is set."""
        return any(v is not None and v != "" for v in asdict(self).values())

    def file_ids(self, store: Any) -> set[int]:
        """The ids of the indexed (done) files that pass."""
        after = _timestamp(self.modified_after, "modified_after")
        before = _timestamp(self.modified_before, "modified_before")
        roots = store.roots()
        ok = set()
        rows = store.db.execute("SELECT id, path, root, mtime, duration, has_audio FROM files WHERE status = 'done'")
        for fid, path, root, mtime, duration, has_audio in rows:
            if self.path:
                rel = path
                if root in roots:
                    try:
                        rel = Path(path).relative_to(roots[root]).as_posix()
                    except ValueError:
                        pass
                if not (fnmatch.fnmatchcase(path, self.path) or fnmatch.fnmatchcase(rel, self.path)):
                    continue
            d = duration or 0.0
            if (self.min_duration is not None and d < self.min_duration) or (
                    self.max_duration is not None and d > self.max_duration):
                continue
            if self.has_audio is not None and bool(has_audio) != bool(self.has_audio):
                continue
            if (after is not None and mtime < after) or (before is not None and mtime > before):
                continue
            ok.add(int(fid))
        return ok


@dataclass
class _Query:
    kind: str
    space: str
    vec: np.ndarray


@dataclass
class _Self:
    """A video query's own place in the index: its file and time span."""

    file: int
    start: float
    end: float


class Index:
    """An open index with its model, loaded once (see the module docstring). Thread-safe."""

    def __init__(self, searcher: Searcher, cache_files: int = 512) -> None:
        self.searcher = searcher
        self.store = searcher.store
        self._vec_cache: OrderedDict[int, dict[str, tuple[list[int], np.ndarray]]] = OrderedDict()
        self._cache_files = cache_files
        self._lock = threading.Lock()
        info = self.store.info()
        cal = info.get("calibration")
        if not cal or cal.get("windows") != self.store.counts()["windows"]:
            cal = calibrate(self.store, searcher.model, searcher.tokenizer, searcher.word_mask,
                            device=searcher.device)
        self.calibration: dict[str, Any] = cal

    @property
    def window_s(self) -> float:
        """Window length of the index, seconds."""
        return self.searcher.window_s

    def info(self) -> dict[str, Any]:
        """Counts and settings."""
        i = self.store.info()
        return {**self.store.counts(), "window_s": i.get("window_s"), "stride_s": i.get("stride_s"),
                "text_search": self.searcher.tokenizer is not None, "good_match": GOOD_MATCH,
                "calibrated": sorted(self.calibration.get("modes", {}))}

    # -- vectors of given windows -----------------------------------------------------------------
    def _file_vectors(self, fid: int) -> dict[str, tuple[list[int], np.ndarray]]:
        with self._lock:
            if fid in self._vec_cache:
                self._vec_cache.move_to_end(fid)
                return self._vec_cache[fid]
        from mmv_torch.index.store import VECTORS

        with np.load(self.store.folder / VECTORS / f"{fid}.npz") as z:
            out = {s: (self.store.window_ids(fid, s), z[s]) for s in z.files}
        with self._lock:
            self._vec_cache[fid] = out
            while len(self._vec_cache) > self._cache_files:
                self._vec_cache.popitem(last=False)
        return out

    def _cosines(self, space: str, vec: np.ndarray, windows: dict[int, dict[str, Any]]) -> dict[int, float]:
        """Cosine of ``vec`` with each of ``windows`` in ``space`` (windows without audio are absent
        for ``audio_va``)."""
        out: dict[int, float] = {}
        by_file: dict[int, list[int]] = {}
        for wid, w in windows.items():
            by_file.setdefault(w["file"], []).append(wid)
        for fid, wids in by_file.items():
            ids, arr = self._file_vectors(fid)[space]
            pos = {w: i for i, w in enumerate(ids)}
            rows = [pos[w] for w in wids if w in pos]
            if rows:
                sims = arr[rows] @ vec
                out.update({w: float(s) for w, s in zip([w for w in wids if w in pos], sims)})
        return out

    # -- search -----------------------------------------------------------------------------------
    def _nearest(self, space: str, vec: np.ndarray, n: int, allowed: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray]:
        index = self.store.faiss_index(space)
        if index is None or index.ntotal == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if allowed is not None and allowed.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        scores, ids = index.search(vec[None], min(n, index.ntotal), params=index.search_params(allowed))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _score(self, kind: str, cosine: float) -> float | None:
        q = self.calibration.get("modes", {}).get(kind, {}).get("quantiles")
        return None if not q else round(float(cdf(cosine, q)), 6)

    def _excluded(self, me: _Self | None, exclude_source: bool) -> set[int]:
        if me is None:
            return set()
        rows = self.store.db.execute("SELECT id, start, end FROM windows WHERE file = ?", (me.file,)).fetchall()
        return {int(w) for w, s, e in rows if exclude_source or (s <= me.end + 1e-6 and e >= me.start - 1e-6)}

    def _search_parts(self, parts: list[_Query], k: int, filters: Filters | None, me: _Self | None,
                      exclude_source: bool) -> SearchResult:
        if not 1 <= k <= 10_000:
            raise ValueError(f"k must be in [1, 10000], got {k}")
        excluded = self._excluded(me, exclude_source)
        allowed = None
        if filters is not None and filters.active():
            fids = filters.file_ids(self.store)
            ids: list[int] = []
            for chunk in range(0, len(fids), 500):
                part = sorted(fids)[chunk:chunk + 500]
                ids += [w for (w,) in self.store.db.execute(
                    f"SELECT id FROM windows WHERE file IN ({','.join('?' * len(part))})", part)]
            allowed = np.asarray(sorted(set(ids) - excluded), dtype=np.int64)
        total = max((self.store.faiss_index(p.space).ntotal if self.store.faiss_index(p.space) is not None else 0)
                    for p in parts)
        fetch = 4 * k + len(excluded)
        while True:
            found: dict[int, dict[str, float]] = {}
            for p in parts:
                scores, ids_ = self._nearest(p.space, p.vec, fetch, allowed)
                for s, w in zip(scores.tolist(), ids_.tolist()):
                    if w not in excluded:
                        found.setdefault(int(w), {})[p.kind] = float(s)
            windows = self.store.windows(found)
            if len(parts) > 1:  # every part's cosine for every window any part found
                for p in parts:
                    missing = {w: windows[w] for w in windows if p.kind not in found[w]}
                    for w, c in self._cosines(p.space, p.vec, missing).items():
                        found[w][p.kind] = c
            hits = self._merge(found, windows, parts, k)
            if len(hits) >= k or fetch >= total:
                break
            fetch *= 4
        best = hits[0].score if hits else None
        good = None if best is None else bool(best >= GOOD_MATCH)
        return SearchResult(hits, tuple(p.kind for p in parts), GOOD_MATCH, good, len(excluded))

    def _merge(self, found: dict[int, dict[str, float]], windows: dict[int, dict[str, Any]], parts: list[_Query],
               k: int) -> list[Hit]:
        scored = {}
        for w, cos in found.items():
            if w not in windows:
                continue
            part = {p.kind: Part(p.kind, p.space, self._score(p.kind, cos[p.kind]), round(cos[p.kind], 6))
                    for p in parts if p.kind in cos}
            if not part:
                continue
            cals = [x.score for x in part.values()]
            # a part missing for a window (no audio track for video -> audio) counts as score 0
            fused = None if any(c is None for c in cals) else sum(cals) / len(parts)  # type: ignore[arg-type]
            cosine = sum(x.cosine for x in part.values()) / len(parts)
            scored[w] = (fused, cosine, part)
        by_file: dict[int, list[int]] = {}
        for w in scored:
            by_file.setdefault(windows[w]["file"], []).append(w)
        stride = self.searcher.stride_s
        hits = []
        for wins in by_file.values():
            wins.sort(key=lambda w: windows[w]["start"])
            group = [wins[0]]
            for w in wins[1:]:
                if windows[w]["start"] - windows[group[-1]]["start"] <= stride + 1e-6:
                    group.append(w)
                    continue
                hits.append(self._hit(group, windows, scored, parts))
                group = [w]
            hits.append(self._hit(group, windows, scored, parts))
        hits.sort(key=lambda h: (-(h.score if h.score is not None else -1.0), -h.cosine))
        return hits[:k]

    def _hit(self, group: list[int], windows: dict[int, dict[str, Any]], scored: dict[int, Any],
             parts: list[_Query]) -> Hit:
        best = max(group, key=lambda w: (scored[w][0] if scored[w][0] is not None else -1.0, scored[w][1]))
        fused, cosine, part = scored[best]
        w = windows[best]
        rec = self.store.file_by_id(w["file"])
        return Hit(path=w["path"], start=min(windows[g]["start"] for g in group),
                   end=max(windows[g]["end"] for g in group), score=None if fused is None else round(fused, 6),
                   cosine=round(cosine, 6), spaces=tuple(dict.fromkeys(p.space for p in parts)), parts=part,
                   window=best, windows=len(group), file=w["file"], root=w["root"],
                   duration=None if rec is None else rec.duration, has_audio=bool(rec and rec.has_audio),
                   moment=(w["start"], w["end"]), has_video=w["has_video"])

    def search(self, text: str | None = None, audio: str | Path | None = None, video: str | Path | None = None, *,
               start: float | None = None, window: int | None = None, k: int = 10, filters: Filters | None = None,
               target: str = "video", exclude_self: bool = True, exclude_source: bool = False,
               source: str | Path | None = None) -> SearchResult:
        """Search by any combination of ``text``, an ``audio`` file and a ``video`` (a file at
        ``start`` seconds (default: its middle window), or the indexed ``window`` id: "more like
        this"). ``target="audio"`` searches the indexed sounds (S_va: audio-only windows included) instead of
        videos (S_vt for a video, S_va for a sound).
        ``exclude_self`` leaves out the query window and its overlapping windows when the video is an
        indexed file (``source``: the indexed path it is a copy of, e.g. an upload's original name);
        ``exclude_source`` its whole file."""
        if target not in ("video", "audio"):
            raise ValueError(f"target must be 'video' or 'audio', got {target!r}")
        if video is not None and window is not None:
            raise ValueError("give a video file or an indexed window, not both")
        parts: list[_Query] = []
        me: _Self | None = None
        if text is not None:
            if not text.strip():
                raise ValueError("empty text query")
            parts.append(_Query("text", MODES["text"][1], self.searcher.embed("text", text=text)))
        if audio is not None:
            sound = "audio" if target == "video" else "audio-audio"
            parts.append(_Query(sound, MODES[sound][1], self.searcher.embed(sound, path=audio)))
        kind = "video" if target == "video" else "video-audio"
        if video is not None:
            start = self.searcher.check_start(video, start)
            parts.append(_Query(kind, MODES[kind][1], self.searcher.embed(kind, path=video, start_s=start)))
            rec = self.store.file(source if source is not None else video)
            if rec is not None and rec.status == "done":
                me = _Self(rec.id, start, start + self.window_s)
        if window is not None:
            vec = self.store.window_vector(MODES[kind][0], int(window)) if 0 < int(window) < 2 ** 63 else None
            if vec is None:
                w = self.store.windows([int(window)]).get(int(window))
                if w is not None and not w["has_video"]:
                    raise ValueError(f"window {window} is audio-only (its video cannot be decoded): search by its "
                                     "sound instead")
                raise LookupError(f"no window {window} in the index")
            parts.append(_Query(kind, MODES[kind][1], vec))
            w = self.store.windows([int(window)])[int(window)]
            me = _Self(w["file"], w["start"], w["end"])
        if not parts:
            raise ValueError("give text, audio, video or window")
        if not exclude_self and not exclude_source:
            me = None
        return self._search_parts(parts, k, filters, me, exclude_source)

    def similar(self, window: int, k: int = 10, filters: Filters | None = None, exclude_source: bool = False
                ) -> SearchResult:
        """More like this: the windows nearest to indexed ``window`` in S_vt, itself and its overlapping
        windows excluded (``exclude_source``: its whole video)."""
        return self.search(window=window, k=k, filters=filters, exclude_source=exclude_source)


def open_index(path: str | Path, device: str = "cpu", checkpoint: str | Path | None = None,
               vocab: str | Path | None = None) -> Index:
    """Open the index folder ``path`` with its model (see :func:`mmv_torch.index.query.open_searcher`)."""
    from mmv_torch.index.query import open_searcher

    return Index(open_searcher(path, device=device, checkpoint=checkpoint, vocab=vocab))


def clean(value: Any) -> Any:
    """``value`` with NaN floats replaced by ``None`` (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


__all__ = ["Filters", "Hit", "Index", "Part", "SearchResult", "open_index"]
