"""Manifests: the JSONL files that name a data set's media, read into entries.

Pretraining manifest (JSONL, one video per line; paths relative to the manifest's folder)::

    {"video": "clips/a.mp4", "narration": [{"start": 1.2, "end": 3.4, "text": "cut the onion"}]}

``narration`` absent or empty means no text (AudioSet-style); the text is then masked; noisy narrations
are dropped or clamped (:mod:`mmv_torch.data.narrations`). An optional ``"duration"`` (seconds) saves a
probe of the file; optional ``"start"``/``"end"`` (seconds, in labelled manifests too) name a segment
inside a longer file, which every clip of the entry then comes from. :func:`read_pretrain_manifest`
reads one into :class:`VideoEntry` rows.

Labelled manifest (JSONL): ``{"video"|"audio"|"image": path, "label": "...", "split": "train"|"test",
"caption" | "captions": ...}`` (:func:`read_labelled_manifest` -> :class:`LabelledEntry`); class folders
(``root/<class>/<file>``, :func:`read_class_folders`) and ``official_splits.py`` (the official split files
of UCF101, HMDB51 and ESC-50) give the same entries.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.data.narrations import (
    Narration,
    NarrationIssues,
    validate_narrations,
)

MODALITIES = ("video", "audio", "image")

logger = logging.getLogger("mmv_torch.data")


@dataclass(frozen=True)
class VideoEntry:
    """One line of a pretraining manifest."""

    path: str
    """Absolute path of the video."""
    narrations: tuple[Narration, ...]
    """Narrations sorted by start time (empty: no text)."""
    duration: float | None
    """Seconds, when the manifest gives it."""
    where: str
    """``manifest:line`` for messages."""
    raw: dict
    """The JSON object of the line."""
    window: tuple[float, float] | None = None
    """``(start, end)`` seconds of the segment inside the file (the manifest's ``start``/``end``), or None:
    the whole file."""
    issues: NarrationIssues | None = None
    """Narrations the manifest reader dropped or clamped (None: none)."""


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line; bad JSON raises ``ValueError`` naming file:line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"cannot read manifest {p}: {e}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}:{n}: invalid JSON: {e}") from e
        if not isinstance(obj, dict):
            raise ValueError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    return out


def _resolve(base: Path, rel: str) -> str:
    return str(Path(rel) if os.path.isabs(rel) else (base / rel))


def _parse_narrations(obj: Any, where: str, duration: float | None = None) -> tuple[Narration, ...]:
    """The usable narrations of ``obj`` (:func:`~mmv_torch.data.narrations.validate_narrations`)."""
    return validate_narrations(obj, where, duration)[0]


def read_window(obj: dict, where: str) -> tuple[float, float] | None:
    """The ``(start, end)`` seconds a manifest line's ``start``/``end`` keys name inside its file (None: the
    whole file). ``end`` absent means to the end of the file (``inf``); a bad window raises ``ValueError``."""
    if obj.get("start") is None and obj.get("end") is None:
        return None
    try:
        start = float(obj.get("start") or 0.0)
        end = float(obj["end"]) if obj.get("end") is not None else math.inf
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'start' and 'end' must be numbers (seconds), got {obj.get('start')!r}, "
                         f"{obj.get('end')!r}") from None
    if not (math.isfinite(start) and start >= 0 and end > start):
        raise ValueError(f"{where}: the window start={start}, end={end} is empty or negative")
    return start, end


def read_pretrain_manifest(path: str | Path) -> list[VideoEntry]:
    """Read a pretraining manifest (see the module doc). Missing ``video`` keys raise ``ValueError``;
    noisy narrations are dropped or clamped (:func:`~mmv_torch.data.narrations.validate_narrations`,
    bounded by the line's ``duration`` when given), counted on the entries and logged once per manifest."""
    p = Path(path)
    base = p.parent
    out = []
    dropped = clamped = 0
    reasons: dict[str, int] = {}
    for n, obj in read_jsonl(p):
        where = f"{p}:{n}"
        if not isinstance(obj.get("video"), str):
            raise ValueError(f"{where}: missing string key 'video'")
        dur = obj.get("duration")
        narrations, issues = validate_narrations(obj.get("narration"), where,
                                                 float(dur) if dur is not None else None)
        if issues:
            dropped, clamped = dropped + len(issues.dropped), clamped + len(issues.clamped)
            for k, v in issues.reasons().items():
                reasons[k] = reasons.get(k, 0) + v
        out.append(VideoEntry(_resolve(base, obj["video"]), narrations, float(dur) if dur is not None else None,
                              where, obj, read_window(obj, where), issues or None))
    if dropped or clamped:
        logger.warning("%s: %d narration(s) dropped, %d clamped (%s); `mmv-torch data check --clean` repairs the "
                       "manifest", p, dropped, clamped, ", ".join(f"{k}: {v}" for k, v in reasons.items()))
    return out


@dataclass(frozen=True)
class LabelledEntry:
    """One labelled file."""

    path: str
    """Absolute path."""
    modality: str
    """'video', 'audio' or 'image'."""
    label: str
    """Class name ('' when unlabelled, e.g. retrieval-only captions)."""
    split: str | None
    """'train', 'test' or None."""
    captions: tuple[str, ...] = ()
    """Captions for retrieval."""
    window: tuple[float, float] | None = None
    """``(start, end)`` seconds of the segment inside the file, or None: the whole file."""
    where: str = field(default="", compare=False)
    """``file:line`` the entry was read from, for messages ('' when unknown)."""


def read_labelled_manifest(path: str | Path) -> list[LabelledEntry]:
    """Read a labelled JSONL manifest (see the module doc); paths are relative to its folder."""
    p = Path(path)
    out = []
    for n, obj in read_jsonl(p):
        where = f"{p}:{n}"
        mods = [m for m in MODALITIES if m in obj]
        if len(mods) != 1 or not isinstance(obj[mods[0]], str):
            raise ValueError(f"{where}: needs exactly one string key of {list(MODALITIES)}, found {mods}")
        split = obj.get("split")
        if split not in (None, "train", "test"):
            raise ValueError(f"{where}: 'split' must be 'train' or 'test', got {split!r}")
        caps = obj.get("captions", obj.get("caption", ()))
        caps = (caps,) if isinstance(caps, str) else tuple(str(c) for c in caps)
        label = obj.get("label", "")
        out.append(LabelledEntry(_resolve(p.parent, obj[mods[0]]), mods[0], str(label), split, caps,
                                 read_window(obj, where)))
    return out


def class_names(entries: Sequence[LabelledEntry]) -> list[str]:
    """Sorted distinct non-empty labels."""
    return sorted({e.label for e in entries if e.label})


def _folder_entries(root: Path, split: str | None) -> tuple[list[LabelledEntry], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders")
    kinds = MEDIA_SUFFIXES
    entries = [LabelledEntry(str(f), kinds[f.suffix.lower()], name, split)
               for name in classes for f in sorted((root / name).iterdir()) if f.suffix.lower() in kinds]
    if not entries:
        raise ValueError(f"{root} holds no image, video or audio files in its class folders")
    return entries, classes


def read_class_folders(root: str | Path) -> tuple[list[LabelledEntry], list[str]]:
    """Kinetics/ImageNet-style class folders: ``root/train/<class>/*`` with ``root/val/<class>/*`` (or
    ``test``), or a single ``root/<class>/*`` without splits.

    Files are images, videos or audio by suffix (others are ignored). Returns the entries (split
    'train'/'test' or None) and the sorted class names; the train and test class lists must agree.
    """
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"class folder {r} does not exist")
    test_dir = next((r / n for n in ("val", "test") if (r / n).is_dir()), None)
    if (r / "train").is_dir() and test_dir is not None:
        train, classes = _folder_entries(r / "train", "train")
        test, test_classes = _folder_entries(test_dir, "test")
        if test_classes != classes:
            raise ValueError(f"class folders of {r / 'train'} and {test_dir} differ: "
                             f"{sorted(set(classes) ^ set(test_classes))[:5]}")
        return train + test, classes
    return _folder_entries(r, None)
