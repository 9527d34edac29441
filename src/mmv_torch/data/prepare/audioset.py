"""AudioSet: the segment CSVs (``balanced_train_segments.csv``, ``unbalanced_train_segments.csv``,
``eval_segments.csv``) with ``class_labels_indices.csv`` -> one manifest whose lines (no text) carry their
``labels`` (display names) and ``split``, for pretraining and for the multi-label AudioSet probe.

Quirks handled: ``#`` comment lines, ``", "`` separators, quoted comma-separated label lists, ids that
start with ``-``, display names with commas. Media are looked for as pre-cut files
``<id>_<start>_<end>`` (times as integers, as written in the CSV, or zero-padded to 6 digits) or
``Y<id>``, then as the full video ``<id>`` (the segment becomes a window inside it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.prepare.core import (
    DatasetSpec,
    Options,
    PrepareReport,
    Row,
    csv_dicts,
    csv_records,
    parse_segment,
    read_text,
)

LABELS_FILE = "class_labels_indices.csv"


def read_class_labels(path: Path) -> dict[str, str]:
    """``mid -> display_name`` from ``class_labels_indices.csv`` (``index,mid,display_name``)."""
    report = PrepareReport()
    out = {(r["mid"] or "").strip(): (r.get("display_name") or "").strip()
           for _, r in csv_dicts(path, report, ("mid", "display_name"), "index,mid,display_name",
                                 skipinitialspace=True)}
    if report.malformed:
        raise ValueError(f"{report.malformed[0]['where']}: {report.malformed[0]['reason']}")
    return out


def _split(annotations: Path, options: Options) -> str:
    if options.split is None:
        return "test" if "eval" in annotations.name else "train"
    if options.split not in ("train", "test"):
        raise ValueError(f"--split for audioset is 'train' or 'test' (default: from the file name), got "
                         f"{options.split!r}")
    return options.split


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Rows of one segment CSV; labels mapped to display names."""
    labels_file = options.labels or annotations.parent / LABELS_FILE
    if not labels_file.is_file():
        raise ValueError(f"no AudioSet class list: {labels_file} does not exist (give --labels "
                         f"{LABELS_FILE})")
    names = read_class_labels(labels_file)
    split = _split(annotations, options)
    text = read_text(annotations)
    for n, fields in csv_records(annotations, report, text, skipinitialspace=True):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        where = f"{annotations}:{n}"
        if len(fields) != 4:
            report.bad(where, f"expected 4 fields (YTID, start, end, labels), got {len(fields)}")
            continue
        ytid, start, end, mids = (f.strip() for f in fields)
        try:
            s, e = parse_segment(start, end)
        except ValueError as err:
            report.bad(where, str(err))
            continue
        if not ytid:
            report.bad(where, "empty YTID")
            continue
        unknown = [m for m in mids.split(",") if m.strip() not in names]
        if unknown or not mids:
            report.bad(where, f"label ids not in {labels_file.name}: {unknown or mids!r}")
            continue
        labels = [names[m.strip()] for m in mids.split(",")]
        yield Row(ytid, where, s, e, {"labels": labels, "split": split})


def names(row: Row) -> list[tuple[str, bool]]:
    """Pre-cut names first, then the full video."""
    s, e = int(row.start or 0), int(row.end or 0)
    cut = [f"{row.id}_{s}_{e}", f"{row.id}_{s:06d}_{e:06d}", f"{row.id}_{row.start:.3f}_{row.end:.3f}",
           f"{row.id}_{s * 1000}_{e * 1000}", f"Y{row.id}"]
    return [(c, True) for c in cut] + [(row.id, False)]


SPEC = DatasetSpec("audioset", read, names, ("video", "audio"),
                   "segment CSV + class_labels_indices.csv -> manifest with labels (pretraining and probe)")
