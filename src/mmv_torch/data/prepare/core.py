"""What every data set of ``mmv-torch data prepare`` shares: annotation rows, the media index of
``--media-root``, ``--pattern`` names, the report of missing media and malformed rows, and the manifest.

A data set module reads its official annotation files into :class:`Row` objects (one per manifest
line: a video id, optionally the segment's times inside the full video, and the manifest fields it
adds) and names the files a row's media are usually saved as (:attr:`DatasetSpec.names`). The core
finds those files under the media root whatever their container extension
(:data:`~mmv_torch.data.media.suffixes.MEDIA_SUFFIXES`) and in whatever sub-folder, and writes one manifest line
per row whose media exist, each carrying ``"dataset"`` (the data set's name, which evaluation reads to pick
the benchmark's protocol):

- a pre-cut file (its name carries the segment's times, or ``--pattern`` uses ``{start}``): the whole
  file is the segment, no ``start``/``end`` in the line;
- a full video: the line carries ``start``/``end`` (seconds), the window every loader reads from.
"""

from __future__ import annotations

import csv
import json
import math
import os
import string
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.data.narrations import validate_narrations
from mmv_torch.fileio import atomic_write_text, check_output


@dataclass
class Row:
    """One manifest line to be: a video id, its segment (seconds inside the full video, or None) and the
    fields the line adds (``caption``, ``captions``, ``label``, ``labels``, ``split``, ``narration``...)."""

    id: str
    where: str
    """``file:line`` (or ``file:key``) of the annotation, for the report."""
    start: float | None = None
    end: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Options:
    """The command's options that the readers use."""

    split: str | None = None
    labels: Path | None = None
    """``--labels``: a class list (AudioSet's ``class_labels_indices.csv``, ImageNet's synset mapping)."""
    media_root: Path | None = None
    """``--media-root`` (ImageNet reads its class folders there when ``--annotations`` is the CSV)."""


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: how to read its annotations and what its media files are usually called."""

    name: str
    read: Callable[[Path, Options, PrepareReport], Iterable[Row]]
    """Rows of the annotation file or folder; malformed ones go to the report."""
    names: Callable[[Row], list[tuple[str, bool]]]
    """``(file stem or relative path without extension, pre-cut)`` candidates for a row, in order."""
    prefer: tuple[str, ...] = ("video", "audio")
    """Modalities in order of preference when several files share a name."""
    description: str = ""


class PrepareReport:
    """Counts and reasons: malformed annotation rows, rows whose media were not found, narrations
    dropped or clamped, names matched by several files."""

    def __init__(self) -> None:
        self.rows = 0
        self.malformed: list[dict[str, str]] = []
        self.missing: list[dict[str, Any]] = []
        self.ambiguous: list[dict[str, Any]] = []
        self.narrations = {"dropped": 0, "clamped": 0, "reasons": {}}

    def bad(self, where: str, reason: str) -> None:
        """A row that cannot be read (it is left out of the manifest)."""
        self.malformed.append({"where": where, "reason": reason})

    def add_narration_issues(self, reasons: dict[str, int], dropped: int, clamped: int) -> None:
        """Count narrations that the shared validation dropped or clamped."""
        self.narrations["dropped"] += dropped
        self.narrations["clamped"] += clamped
        for k, v in reasons.items():
            self.narrations["reasons"][k] = self.narrations["reasons"].get(k, 0) + v


def read_text(path: Path, what: str = "") -> str:
    """The text of an annotation file (UTF-8; a byte order mark, as Excel writes, is dropped). A file that
    cannot be read, or is not UTF-8, is a ``ValueError`` naming it (and the line of the first bad byte)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read {what + ' ' if what else ''}{path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None


def csv_records(path: Path, report: PrepareReport, text: str | None = None, **fmt: Any
                ) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of every record of a CSV file (:func:`read_text`); a record the csv module
    cannot read (a field over its size limit, a stray quote) goes to the report as malformed."""
    reader = csv.reader((read_text(path) if text is None else text).splitlines(), **fmt)
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            report.bad(f"{path}:{reader.line_num}", f"unreadable CSV record: {e}")
            continue
        yield reader.line_num, fields


def csv_dicts(path: Path, report: PrepareReport, required: Iterable[str], columns: str, **fmt: Any
              ) -> Iterator[tuple[int, dict[str, str | None]]]:
    """``(line number, {column: value})`` of a CSV file with a header (a missing value is None; an empty
    file has no rows); a header without the ``required`` columns is a ``ValueError`` that names
    ``columns``, the expected header."""
    records = csv_records(path, report, **fmt)
    first = next(records, None)
    if first is None:
        return  # an empty file
    header = [h.strip() for h in first[1]]
    if not set(required) <= set(header):
        raise ValueError(f"{path}: needs the columns {columns} (the header is {','.join(header)!r})")
    for n, fields in records:
        if not "".join(fields).strip():
            continue
        yield n, {h: (fields[i] if i < len(fields) else None) for i, h in enumerate(header)}


def parse_segment(start: Any, end: Any) -> tuple[float, float]:
    """``(start, end)`` seconds of a segment: finite numbers with ``end > start >= 0``, else a
    ``ValueError`` with the reason (the row is then malformed)."""
    try:
        s, e = float(start), float(end)
    except (TypeError, ValueError):
        raise ValueError(f"times are not numbers: {start!r}, {end!r}") from None
    if not (math.isfinite(s) and math.isfinite(e)):
        raise ValueError(f"times are not finite: {start!r}, {end!r}")
    if not e > s >= 0:
        raise ValueError(f"empty or negative segment ({s:g}, {e:g})")
    return s, e


class MediaIndex:
    """Every media file under a folder (recursively, hidden entries skipped), by stem and by relative
    path without extension."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"--media-root {self.root} is not a folder")
        self.by_stem: dict[str, list[Path]] = {}
        self.by_rel: dict[str, list[Path]] = {}
        self.count = 0
        for dirpath, dirnames, files in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(files):
                p = Path(dirpath) / name
                if name.startswith(".") or p.suffix.lower() not in MEDIA_SUFFIXES:
                    continue
                self.count += 1
                self.by_stem.setdefault(p.stem, []).append(p)
                self.by_rel.setdefault(p.relative_to(self.root).with_suffix("").as_posix(), []).append(p)

    def find(self, name: str) -> list[Path]:
        """Files called ``name``: a stem (any folder, any media extension), or a path relative to the root
        (with ``/``); a media extension in ``name`` must then match too."""
        suffix = Path(name).suffix.lower()
        exact = suffix in MEDIA_SUFFIXES
        key = name[: -len(suffix)] if exact else name
        found = self.by_rel.get(key.strip("/"), []) if "/" in key else self.by_stem.get(key, [])
        return [p for p in found if p.suffix.lower() == suffix] if exact else found


PATTERN_FIELDS = ("id", "start", "end")
"""The fields a ``--pattern`` may use."""


def pattern_fields(pattern: str) -> set[str]:
    """The fields ``pattern`` uses; a ``ValueError`` for anything but ``{id}``, ``{start}`` and ``{end}``
    (with an optional format spec): no attribute or index access, no conversions, no nested fields."""
    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise ValueError(f"--pattern {pattern!r}: {e}") from None
    used = set()
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PATTERN_FIELDS or conversion is not None or "{" in (spec or ""):
            raise ValueError(f"--pattern {pattern!r}: only {{id}}, {{start}} and {{end}} (with a format spec such as "
                             f"{{start:06d}}) can be used, got {{{name}{'!' + conversion if conversion else ''}}}")
        used.add(name)
    return used


def pattern_names(pattern: str, row: Row) -> list[tuple[str, bool]]:
    """``--pattern`` for a row: ``{id}``, ``{start}``, ``{end}`` (integer seconds; format specs such as
    ``{start:06d}`` work). A pattern using ``{start}`` names pre-cut files."""
    used = pattern_fields(pattern)
    if used & {"start", "end"} and row.start is None:
        raise ValueError(f"--pattern {pattern!r}: {{start}}/{{end}} need segment times, which this data set's "
                         "annotations do not have")
    values = {"id": row.id, "start": int(row.start or 0), "end": int(row.end or 0)}
    try:
        name = string.Formatter().vformat(pattern, (), values)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"--pattern {pattern!r}: {e}") from None
    return [(name, "start" in used)]


def _choose(found: list[Path], prefer: tuple[str, ...]) -> Path:
    rank = {m: i for i, m in enumerate(prefer)}
    return min(found, key=lambda p: (rank.get(MEDIA_SUFFIXES[p.suffix.lower()], len(rank)), str(p)))


def manifest_line(row: Row, path: Path, precut: bool, out_dir: Path) -> dict[str, Any]:
    """The manifest object of a row whose media file is ``path``."""
    modality = MEDIA_SUFFIXES[path.suffix.lower()]
    obj: dict[str, Any] = {modality: os.path.relpath(path.absolute(), out_dir.absolute())}
    if not precut and row.start is not None:
        obj["start"], obj["end"] = row.start, row.end
    obj["id"] = row.id
    obj.update(row.fields)
    return obj


def _clean_narrations(row: Row, report: PrepareReport) -> None:
    """Apply the loader's narration validation to a row (a video left without narrations still serves the
    video-audio loss)."""
    if "narration" in row.fields:
        kept, issues = validate_narrations(row.fields["narration"], row.where)
        report.add_narration_issues(issues.reasons(), len(issues.dropped), len(issues.clamped))
        row.fields["narration"] = [{"start": n.start, "end": n.end, "text": n.text} for n in kept]


def _bad_name(row_id: str) -> str | None:
    """Why a row's id cannot name a media file (None: it can): empty, absolute or with ``..``."""
    if not row_id.strip():
        return "empty id"
    parts = row_id.replace("\\", "/").split("/")
    if row_id.startswith(("/", "\\")) or ".." in parts or (len(row_id) > 1 and row_id[1] == ":"):
        return f"the name {row_id!r} points outside the media root (absolute or with '..')"
    return None


class _Seen:
    """Rows already read, by (id, start, end): a repeat in the same split is a duplicate (reported and left
    out), one in another split a leak between the splits (an error)."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, float | None, float | None], tuple[str, Any]] = {}
        self.leaks: list[str] = []

    def repeat(self, row: Row, report: PrepareReport) -> bool:
        key, split = (row.id, row.start, row.end), row.fields.get("split")
        if key not in self.first:
            self.first[key] = (row.where, split)
            return False
        where, first_split = self.first[key]
        if split != first_split:
            self.leaks.append(f"{row.id} is {first_split!r} at {where} and {split!r} at {row.where}")
        else:
            report.bad(row.where, f"duplicate of {where} (same id and segment); the first is kept")
        return True


def build_manifest(spec: DatasetSpec, annotations: Path, index: MediaIndex, out: Path, options: Options,
                   pattern: str | None, report: PrepareReport) -> list[dict[str, Any]]:
    """The manifest objects of every row whose media exist (report filled in on the way). Repeated rows
    are reported as duplicates; a video in two splits (train and test) is a ``ValueError``."""
    lines = []
    seen = _Seen()
    if pattern:
        pattern_fields(pattern)
    for row in spec.read(annotations, options, report):
        report.rows += 1
        why = _bad_name(row.id)
        if why is not None:
            report.bad(row.where, why)
            continue
        if seen.repeat(row, report):
            continue
        _clean_narrations(row, report)
        names = pattern_names(pattern, row) if pattern else spec.names(row)
        hit = next(((name, precut, found) for name, precut in names if (found := index.find(name))), None)
        if hit is None:
            report.missing.append({"id": row.id, "where": row.where, "reason": "no media file named "
                                   + " or ".join(repr(n) for n, _ in names) + " (any media extension)"})
            continue
        name, precut, found = hit
        path = _choose(found, spec.prefer)
        if len(found) > 1:
            report.ambiguous.append({"id": row.id, "name": name, "used": str(path),
                                     "others": [str(p) for p in found if p != path]})
        lines.append({**manifest_line(row, path, precut, out.parent), "dataset": spec.name})
    if seen.leaks:
        raise ValueError(f"data prepare {spec.name}: {len(seen.leaks)} video(s) in two splits, a leak between "
                         f"them (fix the annotation files); first: {seen.leaks[0]}")
    return lines


def prepare(spec: DatasetSpec, annotations: str | Path, media_root: str | Path, out: str | Path,
            options: Options = Options(), pattern: str | None = None, json_out: str | Path | None = None
            ) -> dict[str, Any]:
    """Write the manifest ``out`` for data set ``spec`` from its annotation file(s) and media folder.

    Returns the report (also written to ``json_out``): counts of rows, lines written, missing media and
    malformed rows, each listed with its reason, narrations dropped or clamped, and names that matched
    several files (the preferred modality, then the first path, is used). Raises ``ValueError`` when no
    row's media were found (after writing the report; the manifest is then not written).
    """
    ann, out = Path(annotations), Path(out)
    if not ann.exists():
        raise ValueError(f"--annotations {ann} does not exist")
    inputs = tuple(str(p) for p in (ann, options.labels, media_root) if p is not None)
    check_output(out, "--out", inputs=inputs)
    if json_out is not None:
        check_output(json_out, "--json", inputs=(*inputs, str(out)))
    index = MediaIndex(media_root)
    report = PrepareReport()
    lines = build_manifest(spec, ann, index, out, options, pattern, report)
    result = {"dataset": spec.name, "annotations": str(ann), "media_root": str(media_root), "out": str(out),
              "split": options.split, "pattern": pattern, "media_files": index.count, "rows": report.rows,
              "written": len(lines), "num_missing": len(report.missing), "num_malformed": len(report.malformed),
              "num_ambiguous": len(report.ambiguous), "narrations": report.narrations,
              "missing": report.missing, "malformed": report.malformed, "ambiguous": report.ambiguous}
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_out, json.dumps(result, indent=2) + "\n")
    if not lines:
        why = (f"{report.rows} annotation rows, none with media under {media_root} ({index.count} media files "
               f"there)" if report.rows else f"no usable annotation rows in {ann}")
        first = (report.missing or report.malformed or [{}])[0]
        raise ValueError(f"data prepare {spec.name}: nothing found: {why}"
                         + (f"; first: {first.get('reason')}" if first else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "".join(json.dumps(x) + "\n" for x in lines))
    return result
