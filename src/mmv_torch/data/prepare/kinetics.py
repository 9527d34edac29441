"""Kinetics-400/600/700: the per-split CSVs ``label,youtube_id,time_start,time_end,split`` (Kinetics-400
adds ``is_cc``; the test CSV has no label) -> a labelled manifest. The validation split is spelled
``validate`` and becomes ``split: "test"`` (the probe's test set); ``--split`` keeps one CSV split.

Media: trimmed clips ``<youtube_id>_<start:06d>_<end:06d>.<ext>`` (in ``<split>/<label>/`` folders or
flat), else the full video ``<youtube_id>.<ext>`` with the segment as a window.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_dicts, parse_segment

SPLIT_NAMES = {"train": "train", "validate": "test", "val": "test", "test": "test"}


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Rows of one Kinetics CSV (a row of the train or validate split without a label is malformed)."""
    want = options.split
    if want is not None and want not in SPLIT_NAMES:
        raise ValueError(f"--split for kinetics is one of {list(SPLIT_NAMES)}, got {want!r}")
    accept = None if want is None else ({"val", "validate"} if want in ("val", "validate") else {want})
    rows = csv_dicts(annotations, report, ("youtube_id", "time_start", "time_end"),
                     "label,youtube_id,time_start,time_end,split", skipinitialspace=True)
    for n, r in rows:
        where = f"{annotations}:{n}"
        split = (r.get("split") or "").strip()
        if accept is not None and split not in accept:
            continue
        vid, label = (r.get("youtube_id") or "").strip(), (r.get("label") or "").strip()
        try:
            s, e = parse_segment(r.get("time_start"), r.get("time_end"))
        except ValueError as err:
            report.bad(where, str(err))
            continue
        if not vid:
            report.bad(where, "empty youtube_id")
            continue
        if split and split not in SPLIT_NAMES:
            report.bad(where, f"unknown split {split!r}")
            continue
        if not label and split != "test":
            report.bad(where, f"no label (a {split or 'row without a split'} row needs one)")
            continue
        yield Row(vid, where, s, e, {"label": label, "split": SPLIT_NAMES.get(split)})


def names(row: Row) -> list[tuple[str, bool]]:
    """The trimmed clip, then the full video."""
    return [(f"{row.id}_{int(row.start or 0):06d}_{int(row.end or 0):06d}", True), (row.id, False)]


SPEC = DatasetSpec("kinetics", read, names, ("video",),
                   "label,youtube_id,time_start,time_end,split CSV -> labelled manifest (validate -> test)")
