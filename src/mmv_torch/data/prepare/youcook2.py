"""YouCook2: ``youcookii_annotations_trainval.json`` with ``--split validation`` (default) or ``training``,
or MIL-NCE's ``validation_youcook.csv`` (``end,start,task,text,video_id``) -> one retrieval line per
annotated segment: the full video with the segment's ``start``/``end`` window and its sentence.

Videos are ``<youtube id>.<mp4|mkv|webm>`` anywhere under the media root
(``raw_videos/<subset>/<recipe_type>/``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_dicts, parse_segment, read_text

SPLITS = ("validation", "training")


def _from_json(path: Path, split: str, report: PrepareReport) -> Iterator[Row]:
    data = json.loads(read_text(path))
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{path}: expected an object with 'database'")
    for vid, rec in db.items():
        if not isinstance(rec, dict) or rec.get("subset") != split:
            continue
        anns = rec.get("annotations") or []
        if not isinstance(anns, list):
            report.bad(f"{path}:{vid}", f"'annotations' is not a list: {type(anns).__name__}")
            continue
        for i, ann in enumerate(anns):
            where = f"{path}:{vid}[{i}]"
            seg = ann.get("segment") if isinstance(ann, dict) else None
            text = " ".join(str(ann.get("sentence") or "").split()) if isinstance(ann, dict) else ""
            if not isinstance(seg, (list, tuple)) or len(seg) != 2:
                report.bad(where, f"'segment' is not [start, end]: {seg!r}")
                continue
            try:
                s, e = parse_segment(seg[0], seg[1])
            except ValueError as err:
                report.bad(where, str(err))
                continue
            if not text:
                report.bad(where, "empty sentence")
                continue
            yield Row(str(vid), where, s, e, {"caption": text, "segment": f"{vid}_{ann.get('id', i)}",
                                               "recipe_type": str(rec.get("recipe_type", ""))})


def _from_csv(path: Path, report: PrepareReport) -> Iterator[Row]:
    for n, r in csv_dicts(path, report, ("start", "end", "text", "video_id"), "end,start,task,text,video_id"):
        where = f"{path}:{n}"
        text, vid = " ".join((r["text"] or "").split()), (r["video_id"] or "").strip()
        try:
            s, e = parse_segment(r["start"], r["end"])
        except ValueError as err:
            report.bad(where, str(err))
            continue
        if not text or not vid:
            report.bad(where, f"empty text or video_id ({vid!r}, {text!r})")
            continue
        yield Row(vid, where, s, e, {"caption": text, "segment": f"{vid}_{int(s)}_{int(e)}"})


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Segments of the annotation JSON (one split) or of MIL-NCE's CSV."""
    try:
        if annotations.suffix.lower() == ".csv":
            yield from _from_csv(annotations, report)
            return
        split = options.split or "validation"
        if split not in SPLITS:
            raise ValueError(f"--split for youcook2 is one of {list(SPLITS)} (test captions are not public), got "
                             f"{split!r}")
        yield from _from_json(annotations, split, report)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {annotations}: {e}") from e


SPEC = DatasetSpec("youcook2", read, lambda row: [(row.id, False)], ("video",),
                   "youcookii_annotations_trainval.json or validation_youcook.csv -> segment retrieval manifest")
