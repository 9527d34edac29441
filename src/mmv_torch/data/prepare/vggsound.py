"""VGGSound: the headerless ``vggsound.csv`` (``ytid,start_seconds,label,split``, labels with commas
quoted) -> a labelled manifest of 10-s segments. ``--split`` keeps ``train`` or ``test``.

Media: ``<ytid>_<start:06d>.<ext>`` (10-s clips), else the full video ``<ytid>.<ext>`` with the segment
``[start, start + 10]`` as a window.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_records

SEGMENT_SECONDS = 10.0


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Rows of ``vggsound.csv``."""
    if options.split not in (None, "train", "test"):
        raise ValueError(f"--split for vggsound is 'train' or 'test', got {options.split!r}")
    for n, fields in csv_records(annotations, report):
        where = f"{annotations}:{n}"
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != 4:
            report.bad(where, f"expected 4 fields (ytid, start, label, split), got {len(fields)}")
            continue
        ytid, start, label, split = (f.strip() for f in fields)
        try:
            s = float(start)
        except ValueError:
            if n == 1:
                continue  # a header some copies add
            report.bad(where, f"start is not a number: {start!r}")
            continue
        if not math.isfinite(s) or s < 0:
            report.bad(where, f"start {start!r} is not a finite number >= 0")
            continue
        if not ytid or not label or split not in ("train", "test"):
            report.bad(where, f"empty id or label, or unknown split ({ytid!r}, {label!r}, {split!r})")
            continue
        if options.split is None or split == options.split:
            yield Row(ytid, where, s, s + SEGMENT_SECONDS, {"label": label, "split": split})


def names(row: Row) -> list[tuple[str, bool]]:
    """The 10-s clip, then the full video."""
    return [(f"{row.id}_{int(row.start or 0):06d}", True), (row.id, False)]


SPEC = DatasetSpec("vggsound", read, names, ("video", "audio"),
                   "headerless ytid,start,label,split CSV -> labelled manifest of 10-s segments")
