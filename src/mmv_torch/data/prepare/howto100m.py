"""HowTo100M: ``caption.json`` (video id -> ``{"start": [...], "end": [...], "text": [...]}``) or MIL-NCE's
folder of per-video ``<id>.csv`` files (``start,end,text``) -> a pretraining manifest with narrations.

Videos are found as ``<id>.<any media extension>`` anywhere under the media root. Narrations keep the
video's own times; noisy ones are dropped or clamped by the loader's rules and counted in the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_dicts, read_text


def _from_json(path: Path, report: PrepareReport) -> Iterator[Row]:
    last: list[list[tuple[str, Any]]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        last[:] = [pairs]  # the outermost object is decoded last: its keys in order, repeats included
        return dict(pairs)

    try:
        data = json.loads(read_text(path), object_pairs_hook=keep_pairs)
    except json.JSONDecodeError as e:
        raise ValueError(f"cannot read {path} as JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object keyed by video id")
    count: dict[str, int] = {}
    for vid, rec in last[0] if last else []:
        count[vid] = count.get(vid, 0) + 1
        where = f"{path}:{vid}" + (f" (key repeated, #{count[vid]})" if count[vid] > 1 else "")
        lists = [rec.get(k) for k in ("start", "end", "text")] if isinstance(rec, dict) else [None]
        if not all(isinstance(x, list) for x in lists):
            report.bad(where, "needs lists 'start', 'end' and 'text'")
            continue
        if len({len(x) for x in lists}) != 1:
            report.bad(where, f"'start', 'end' and 'text' differ in length ({', '.join(str(len(x)) for x in lists)})")
            continue
        yield Row(str(vid), where, fields={"narration": [{"start": s, "end": e, "text": t} for s, e, t in zip(*lists)]})


def _from_csv_folder(folder: Path, report: PrepareReport) -> Iterator[Row]:
    files = sorted(folder.rglob("*.csv"))
    if not files:
        raise ValueError(f"{folder} holds no <video id>.csv caption files")
    for f in files:
        bad = len(report.malformed)
        try:
            rows = [r for _, r in csv_dicts(f, report, ("start", "end", "text"), "start,end,text")]
        except ValueError as e:
            report.bad(str(f), str(e))
            continue
        if len(report.malformed) > bad:
            continue  # an unreadable record: the file's narrations are incomplete
        yield Row(f.stem, str(f), fields={"narration": [{"start": r["start"], "end": r["end"], "text": r["text"]}
                                                        for r in rows]})


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Rows of ``caption.json`` or of a folder of ``<id>.csv`` files."""
    return _from_csv_folder(annotations, report) if annotations.is_dir() else _from_json(annotations, report)


SPEC = DatasetSpec("howto100m", read, lambda row: [(row.id, False)], ("video",),
                   "caption.json or a folder of <id>.csv -> pretraining manifest with narrations")
