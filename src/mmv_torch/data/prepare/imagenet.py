"""ImageNet (ILSVRC-2012 CLS-LOC): class folders ``train/<wnid>/*.JPEG`` and the validation images, as
class folders ``val/<wnid>/*`` or flat ``val/*.JPEG`` labelled by ``LOC_val_solution.csv``
(``ImageId,PredictionString``; the string is ``wnid x1 y1 x2 y2`` per box) -> one manifest line per
image with ``image``, ``label`` (the wnid: class names are not unique, e.g. two "crane"), ``split``
(train; validation -> test, the probe's test set) and, with ``LOC_synset_mapping.txt`` (``n01440764
tench, Tinca tinca``), ``name``.

``--annotations``: the folder holding ``train/`` and ``val/`` (the CSV and the synset mapping are looked
for there and up to three folders above, where the Kaggle download puts them), or the CSV itself (the
class folders are then those of ``--media-root``). ``--labels``: the synset mapping, when elsewhere.
``--split train|val`` keeps one part. The unlabelled ``test/`` folder is not read.

Quirks handled: upper-case ``.JPEG``, images nested below their class folder, a CSV row whose boxes
name several classes, no box, an odd token count or a class outside the synset mapping / the train
folders (each reported as malformed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from mmv_torch.data.media.suffixes import MEDIA_SUFFIXES
from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row, csv_records, read_text

VAL_SOLUTION = "LOC_val_solution.csv"
SYNSET_MAPPING = "LOC_synset_mapping.txt"
SPLITS = {"train": "train", "val": "test"}


def _find_up(start: Path, name: str, levels: int = 3) -> Path | None:
    for d in [start, *list(start.parents)[:levels]]:
        if (d / name).is_file():
            return d / name
    return None


def read_synset_mapping(path: Path) -> dict[str, str]:
    """``wnid -> names`` from ``LOC_synset_mapping.txt`` (``wnid name, name, ...`` lines)."""
    lines = read_text(path, "the synset mapping").splitlines()
    out = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        wnid, _, name = line.strip().partition(" ")
        if not wnid.startswith("n") or not name.strip():
            raise ValueError(f"{path}:{n}: expected 'wnid name, ...', got {line.strip()!r}")
        out[wnid] = name.strip()
    return out


def _images(folder: Path) -> Iterator[Path]:
    for dirpath, dirnames, files in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and MEDIA_SUFFIXES.get(Path(name).suffix.lower()) == "image":
                yield Path(dirpath) / name


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) if folder.is_dir() else []


def _folder_rows(root: Path, part: str, known: dict[str, str] | None, report: PrepareReport) -> Iterator[Row]:
    for d in _class_dirs(root / part):
        if known is not None and d.name not in known:
            report.bad(str(d), f"class folder {d.name!r} is not in {SYNSET_MAPPING}")
            continue
        for p in _images(d):
            rel = p.relative_to(root).with_suffix("").as_posix()
            yield Row(rel, str(p), fields={"label": d.name, "split": SPLITS[part]})


def _solution_rows(path: Path, known: set[str] | None, report: PrepareReport) -> Iterator[Row]:
    records = csv_records(path, report)
    first = next(records, None)
    if first is None or [c.strip() for c in first[1][:2]] != ["ImageId", "PredictionString"]:
        raise ValueError(f"{path}: expected the header ImageId,PredictionString")
    for n, r in records:
        where = f"{path}:{n}"
        if not r or not "".join(r).strip():
            continue
        tokens = r[1].split() if len(r) == 2 else []
        if len(r) != 2 or not r[0].strip() or not tokens or len(tokens) % 5:
            report.bad(where, f"expected ImageId,'wnid x1 y1 x2 y2 ...', got {','.join(r)!r}")
            continue
        wnids = sorted(set(tokens[::5]))
        if len(wnids) != 1:
            report.bad(where, f"boxes of several classes {wnids}")
            continue
        if known is not None and wnids[0] not in known:
            report.bad(where, f"class {wnids[0]!r} is not among the known classes ({SYNSET_MAPPING} or train/)")
            continue
        image_id = r[0].strip()
        yield Row(image_id, where, fields={"label": wnids[0], "split": "test"})


def read(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """Train class folders, then the validation images (class folders, or the CSV for a flat folder)."""
    given_csv = annotations if annotations.is_file() else None
    root = annotations if given_csv is None else options.media_root
    if root is None or not root.is_dir():
        raise ValueError(f"imagenet: no folder to read class folders from ({root})")
    solution = given_csv or _find_up(root, VAL_SOLUTION)
    mapping_file = options.labels or _find_up(given_csv.parent if given_csv else root, SYNSET_MAPPING)
    mapping = read_synset_mapping(mapping_file) if mapping_file else None
    if options.split is not None and options.split not in SPLITS:
        raise ValueError(f"--split for imagenet is 'train' or 'val' (default: both), got {options.split!r}")
    parts = [options.split] if options.split else list(SPLITS)
    train_classes = {d.name for d in _class_dirs(root / "train")}
    if not train_classes and not (root / "val").is_dir() and given_csv is None:
        raise ValueError(f"{root}: expected ImageNet's train/<wnid>/ class folders and/or val/")
    known = set(mapping) if mapping is not None else (train_classes or None)
    rows: Iterator[Row] = iter(())
    for part in parts:
        val_classes = part == "val" and given_csv is None and any(True for d in _class_dirs(root / "val")
                                                                  if any(_images(d)))
        if part == "train" or val_classes:
            rows = _folder_rows(root, part, mapping, report)
        elif solution is not None:
            rows = _solution_rows(solution, known, report)
        elif (root / "val").is_dir():
            raise ValueError(f"{root / 'val'} is a flat folder: its labels come from {VAL_SOLUTION} (give it as "
                             "--annotations)")
        else:
            continue
        for row in rows:
            if mapping is not None:
                row.fields["name"] = mapping.get(row.fields["label"], "")
            yield row


def names(row: Row) -> list[tuple[str, bool]]:
    """The path below the media root, then (validation ``val/<id>``) the file name in any folder."""
    base = row.id if "/" in row.id else f"val/{row.id}"
    return [(base, False), (base.rsplit("/", 1)[1], False)]


SPEC = DatasetSpec("imagenet", read, names, ("image",),
                   "train/<wnid>/ class folders + val/ (class folders or LOC_val_solution.csv) -> labelled images")
