"""MSR-VTT: ``MSRVTT_JSFUSION_test.csv`` (the 1k-A test split, one caption per video) or
``MSRVTT_data.json`` / ``train_val_videodatainfo.json`` with ``--split`` (default ``test``; every caption
of each video of the split) -> a retrieval manifest (``caption`` / ``captions``).

Videos are ``<video_id>.<ext>`` anywhere under the media root (``TrainValVideo/``, ``TestVideo/``); they
are already cut, so the video records' ``"start time"``/``"end time"`` (times in the YouTube original)
are not windows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_dicts, read_text

SPLITS = ("train", "validate", "test")


def _from_csv(path: Path, report: PrepareReport) -> Iterator[Row]:
    for n, r in csv_dicts(path, report, ("video_id", "sentence"), "key,vid_key,video_id,sentence",
                          skipinitialspace=True):
        vid, text = (r.get("video_id") or "").strip(), " ".join((r.get("sentence") or "").split())
        if not vid or not text:
            report.bad(f"{path}:{n}", "empty video_id or sentence")
            continue
        yield Row(vid, f"{path}:{n}", fields={"caption": text})


def _from_json(path: Path, split: str, report: PrepareReport) -> Iterator[Row]:
    data = json.loads(read_text(path))
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list) or not isinstance(
            data.get("sentences"), list):
        raise ValueError(f"{path}: expected an object with 'videos' and 'sentences' lists")
    captions: dict[str, list[str]] = {}
    for i, s in enumerate(data["sentences"]):
        if not isinstance(s, dict) or not s.get("video_id") or not str(s.get("caption") or "").strip():
            report.bad(f"{path}:sentences[{i}]", "needs 'video_id' and a non-empty 'caption'")
            continue
        captions.setdefault(str(s["video_id"]), []).append(" ".join(str(s["caption"]).split()))
    for i, v in enumerate(data["videos"]):
        where = f"{path}:videos[{i}]"
        if not isinstance(v, dict) or not v.get("video_id"):
            report.bad(where, "needs 'video_id'")
            continue
        if v.get("split") != split:
            continue
        vid = str(v["video_id"])
        if vid not in captions:
            report.bad(where, f"{vid} has no caption")
            continue
        yield Row(vid, where, fields={"captions": captions[vid]})


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Rows of the 1k-A CSV (``--split`` not used) or of the full annotation JSON."""
    try:
        if annotations.suffix.lower() == ".csv":
            if options.split not in (None, "test"):
                raise ValueError(f"{annotations.name} is the 1k-A test split; --split {options.split} needs "
                                 "MSRVTT_data.json")
            yield from _from_csv(annotations, report)
            return
        split = options.split or "test"
        if split not in SPLITS:
            raise ValueError(f"--split for msrvtt is one of {list(SPLITS)}, got {split!r}")
        yield from _from_json(annotations, split, report)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {annotations}: {e}") from e


SPEC = DatasetSpec("msrvtt", read, lambda row: [(row.id, False)], ("video",),
                   "MSRVTT_JSFUSION_test.csv (1k-A) or MSRVTT_data.json --split S -> retrieval manifest")
