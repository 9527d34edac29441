"""The official split files of UCF101 and HMDB51 and ESC-50's fold table read into labelled entries.

Files are UTF-8 (a byte order mark is dropped); a file that cannot be read or parsed is a ``ValueError``
that names it and the line."""

from __future__ import annotations

import csv
from pathlib import Path

from mmv_torch.data.manifests import LabelledEntry


def _read_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, stripped line)`` of the non-blank lines of a split file."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read split file {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None
    return [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def read_ucf101_split(split_dir: str | Path, video_root: str | Path, split: int = 1
                      ) -> tuple[list[LabelledEntry], list[str]]:
    """UCF101 official split ``split`` (1-3): ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.

    Returns entries (train then test, paths under ``video_root``) and the class names in
    ``classInd.txt`` order (label index = position, 0-based as the official evaluation).
    """
    d, root = Path(split_dir), Path(video_root)
    classes: list[str] = []
    class_file = d / "classInd.txt"
    for n, ln in _read_lines(class_file):
        parts = ln.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{class_file}:{n}: expected 'index name', got {ln!r}")
        idx, name = parts
        if int(idx) != len(classes) + 1:
            raise ValueError(f"{class_file}:{n}: class indices must run 1, 2, ...; got {idx} for {name}")
        classes.append(name)
    out = []
    for kind in ("train", "test"):
        f = d / f"{kind}list0{split}.txt"
        for n, ln in _read_lines(f):
            rel = ln.split()[0]
            cls = rel.split("/")[0]
            if cls not in classes:
                raise ValueError(f"{f}:{n}: class {cls!r} of {rel} is not in classInd.txt")
            out.append(LabelledEntry(str(root / rel), "video", cls, kind, where=f"{f}:{n}"))
    return out, classes


def read_hmdb51_split(split_dir: str | Path, video_root: str | Path, split: int = 1
                      ) -> tuple[list[LabelledEntry], list[str]]:
    """HMDB51 official split: ``<class>_test_split<N>.txt`` lines ``video.avi F`` (1 train, 2 test, 0 unused).

    Videos are at ``video_root/<class>/<video>``. Classes are sorted by name.
    """
    d, root = Path(split_dir), Path(video_root)
    suffix = f"_test_split{split}.txt"
    files = sorted(d.glob(f"*{suffix}"))
    if not files:
        raise ValueError(f"no *{suffix} files in {d}")
    classes = sorted(f.name[: -len(suffix)] for f in files)
    out = []
    for f in files:
        cls = f.name[: -len(suffix)]
        for n, ln in _read_lines(f):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{f}:{n}: expected 'video.avi 0|1|2', got {ln!r}")
            if parts[1] != "0":
                out.append(LabelledEntry(str(root / cls / parts[0]), "video", cls,
                                         "train" if parts[1] == "1" else "test", where=f"{f}:{n}"))
    return out, classes


def read_esc50_table(meta_csv: str | Path) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` of ESC-50's ``meta/esc50.csv`` with ``fold`` and ``target`` checked to be
    integers; a ``ValueError`` naming the file and line otherwise."""
    p = Path(meta_csv)
    numbered = _read_lines(p)
    need = {"filename", "fold", "target", "category"}
    try:
        records = list(csv.reader([ln for _, ln in numbered]))
    except csv.Error as e:
        raise ValueError(f"{p}: unreadable CSV: {e}") from None
    header = [h.strip() for h in records[0]] if records else []
    if not need <= set(header):
        raise ValueError(f"{p}: needs columns {sorted(need)} (the header is {','.join(header)!r})")
    rows = []
    for (n, _), fields in zip(numbered[1:], records[1:]):
        row = {h: (fields[i].strip() if i < len(fields) else "") for i, h in enumerate(header)}
        for key in ("fold", "target"):
            if not row[key].lstrip("-").isdigit():
                raise ValueError(f"{p}:{n}: {key} {row[key]!r} is not an integer")
        if not row["filename"] or not row["category"]:
            raise ValueError(f"{p}:{n}: empty filename or category")
        rows.append((n, row))
    return rows


def read_esc50(meta_csv: str | Path, audio_root: str | Path, test_fold: int = 1
               ) -> tuple[list[LabelledEntry], list[str]]:
    """ESC-50 ``meta/esc50.csv`` (filename, fold, target, category, ...); ``test_fold`` is the test split.

    Class names are ordered by the CSV's ``target`` index.
    """
    p, root = Path(meta_csv), Path(audio_root)
    rows = read_esc50_table(p)
    by_target = {int(r["target"]): r["category"] for _, r in rows}
    classes = [by_target[t] for t in sorted(by_target)]
    out = [LabelledEntry(str(root / r["filename"]), "audio", r["category"],
                         "test" if int(r["fold"]) == test_fold else "train", where=f"{p}:{n}") for n, r in rows]
    return out, classes
