"""The official split files of UCF101 and HMDB51 and ESC-50's fold table read into labelled entries."""

from __future__ import annotations

import csv
from pathlib import Path

from mmv_torch.data.manifests import LabelledEntry


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise ValueError(f"cannot read split file {path}: {e}") from e


def read_ucf101_split(split_dir: str | Path, video_root: str | Path, split: int = 1
                      ) -> tuple[list[LabelledEntry], list[str]]:
    """UCF101 official split ``split`` (1-3): ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``.

    Returns entries (train then test, paths under ``video_root``) and the class names in
    ``classInd.txt`` order (label index = position, 0-based as the official evaluation).
    """
    d, root = Path(split_dir), Path(video_root)
    classes: list[str] = []
    for ln in _read_lines(d / "classInd.txt"):
        idx, name = ln.split()
        if int(idx) != len(classes) + 1:
            raise ValueError(f"{d / 'classInd.txt'}: class indices must run 1, 2, ...; got {idx} for {name}")
        classes.append(name)
    out = []
    for kind in ("train", "test"):
        f = d / f"{kind}list0{split}.txt"
        for ln in _read_lines(f):
            rel = ln.split()[0]
            cls = rel.split("/")[0]
            if cls not in classes:
                raise ValueError(f"{f}: class {cls!r} of {rel} is not in classInd.txt")
            out.append(LabelledEntry(str(root / rel), "video", cls, kind))
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
        for ln in _read_lines(f):
            parts = ln.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{f}: expected 'video.avi 0|1|2', got {ln!r}")
            if parts[1] != "0":
                out.append(LabelledEntry(str(root / cls / parts[0]), "video", cls,
                                         "train" if parts[1] == "1" else "test"))
    return out, classes


def read_esc50(meta_csv: str | Path, audio_root: str | Path, test_fold: int = 1
               ) -> tuple[list[LabelledEntry], list[str]]:
    """ESC-50 ``meta/esc50.csv`` (filename, fold, target, category, ...); ``test_fold`` is the test split.

    Class names are ordered by the CSV's ``target`` index.
    """
    p, root = Path(meta_csv), Path(audio_root)
    try:
        rows = list(csv.DictReader(p.read_text(encoding="utf-8").splitlines()))
    except OSError as e:
        raise ValueError(f"cannot read {p}: {e}") from e
    need = {"filename", "fold", "target", "category"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{p}: needs columns {sorted(need)}")
    by_target = {int(r["target"]): r["category"] for r in rows}
    classes = [by_target[t] for t in sorted(by_target)]
    out = [LabelledEntry(str(root / r["filename"]), "audio", r["category"],
                         "test" if int(r["fold"]) == test_fold else "train") for r in rows]
    return out, classes
