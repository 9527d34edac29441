"""Timed narrations (ASR segments) of a pretraining manifest: the one validation that the loaders,
``mmv-torch data check`` and ``mmv-torch data prepare`` share, the nearest-in-time choice and encoding.

Real annotations are noisy (overlapping and repeated ASR segments, an end before its start, times past
the end of the downloaded video, NaN, empty text). None of it stops a run: :func:`validate_narrations`
keeps what is usable, repairs what can be repaired and reports the rest:

- dropped: a segment that is not an object with ``start``, ``end`` and ``text``; a time that is not a
  finite number; empty (or whitespace-only) text; ``end <= start``; a segment that starts at or after
  the end of the video (when its duration is known) or ends at or before 0;
- clamped: a start before 0 becomes 0, an end past the video's duration becomes the duration.

Only a ``narration`` value that is not a list (a malformed manifest line, not a noisy segment) is an
error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

Tokenize = Callable[[str], Sequence[Any]]
"""``text -> (ids (N,), word_mask (N,), ...)``: ids padded with 0 to N words; extra items are ignored
(``mmv_torch.data.text.tokenizer.Tokenizer.encode`` fits)."""


@dataclass(frozen=True)
class Narration:
    """One timed narration (ASR) segment."""

    start: float
    end: float
    text: str


@dataclass
class NarrationIssues:
    """What :func:`validate_narrations` dropped and clamped in one list of segments."""

    dropped: list[tuple[int, str]] = field(default_factory=list)
    """``(segment index, reason)`` of every dropped segment."""
    clamped: list[tuple[int, str]] = field(default_factory=list)
    """``(segment index, what changed)`` of every repaired segment."""

    def __len__(self) -> int:
        return len(self.dropped) + len(self.clamped)

    def reasons(self) -> dict[str, int]:
        """Count per kind of problem, e.g. ``{"end <= start": 2, "clamped: end past the video": 1}``."""
        counts = Counter(r for _, r in self.dropped)
        counts.update(f"clamped: {r}" for _, r in self.clamped)
        return dict(sorted(counts.items()))

    def as_dict(self) -> dict[str, Any]:
        """The JSON form used by reports: counts and the reason of each segment."""
        return {"dropped": len(self.dropped), "clamped": len(self.clamped), "reasons": self.reasons(),
                "segments": [{"index": i, "dropped": r} for i, r in self.dropped]
                + [{"index": i, "clamped": r} for i, r in self.clamped]}


def _time(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def validate_narrations(obj: Any, where: str, duration: float | None = None
                        ) -> tuple[tuple[Narration, ...], NarrationIssues]:
    """The usable narrations of a manifest line's ``narration`` value, sorted by (start, end), and what
    was dropped or clamped (rules: module doc). ``duration`` (seconds of the video, when known) bounds
    the times. ``None`` means no narration. Raises ``ValueError`` naming ``where`` only when ``obj`` is
    not a list."""
    issues = NarrationIssues()
    if obj is None:
        return (), issues
    if not isinstance(obj, list):
        raise ValueError(f"{where}: 'narration' must be a list of {{start, end, text}}")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        duration = None
    out = []
    for i, seg in enumerate(obj):
        if not isinstance(seg, dict) or not {"start", "end", "text"} <= set(seg):
            issues.dropped.append((i, "not an object with start, end and text"))
            continue
        start, end = _time(seg["start"]), _time(seg["end"])
        text = "" if seg["text"] is None else " ".join(str(seg["text"]).split())
        if start is None or end is None:
            issues.dropped.append((i, "time is not a finite number"))
        elif not text or text.lower() == "nan":
            issues.dropped.append((i, "empty text"))
        elif end <= start:
            issues.dropped.append((i, "end <= start"))
        elif end <= 0 or (duration is not None and start >= duration):
            issues.dropped.append((i, "outside the video"))
        else:
            if start < 0:
                issues.clamped.append((i, "start before 0"))
                start = 0.0
            if duration is not None and end > duration:
                issues.clamped.append((i, "end past the video"))
                end = float(duration)
            out.append(Narration(start, end, text))
    return tuple(sorted(out, key=lambda s: (s.start, s.end))), issues


def nearest_narrations(narrations: Sequence[Narration], start: float, end: float, k: int) -> list[Narration]:
    """The ``k`` narrations nearest in time to the clip ``[start, end]``, nearest first.

    Distance is 0 for a narration overlapping the clip, else the gap between the intervals; ties go
    to the narration whose centre is nearer the clip's centre.
    """
    centre = (start + end) / 2

    def key(s: Narration) -> tuple[float, float]:
        gap = max(0.0, s.start - end, start - s.end)
        return gap, abs((s.start + s.end) / 2 - centre)

    return sorted(narrations, key=key)[:k]


def encode_narrations(narrations: Sequence[Narration], tokenize: Tokenize | None, k: int, max_words: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokenise up to ``k`` narrations → ``text`` int64 (K,N), ``text_mask`` bool (K,), ``word_mask`` bool (K,N)."""
    text = torch.zeros(k, max_words, dtype=torch.int64)
    word_mask = torch.zeros(k, max_words, dtype=torch.bool)
    text_mask = torch.zeros(k, dtype=torch.bool)
    if tokenize is None:
        return text, text_mask, word_mask
    for i, seg in enumerate(narrations[:k]):
        enc = tokenize(seg.text)
        ids = torch.as_tensor(np.asarray(enc[0]), dtype=torch.int64)
        mask = torch.as_tensor(np.asarray(enc[1]), dtype=torch.bool)
        if ids.shape != (max_words,) or mask.shape != (max_words,):
            raise ValueError(f"tokenize must return ids and mask of shape ({max_words},), got "
                             f"{tuple(ids.shape)} and {tuple(mask.shape)}")
        text[i], word_mask[i], text_mask[i] = ids, mask, True
    return text, text_mask, word_mask
