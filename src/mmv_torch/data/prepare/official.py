"""UCF101, HMDB51 and ESC-50 through the split readers of :mod:`mmv_torch.data.datasets`
(``--annotations``: the split folder, or ESC-50's ``meta/esc50.csv``; ``--split``: the official split
1-3, or ESC-50's test fold 1-5, default 1) -> labelled manifests with ``label`` and ``split`` (ESC-50 adds
``fold`` for ``eval linear --folds``).

A file is found at its path under the media root, or by its name in any sub-folder with any media
extension (videos re-encoded to ``.mp4``, ESC-50 as ``.flac``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.official_splits import read_esc50, read_esc50_table, read_hmdb51_split, read_ucf101_split
from mmv_torch.data.prepare.core import DatasetSpec, Options, PrepareReport, Row

_ROOT = Path("/__media_root__")  # the readers join paths to a root; rows keep the part below it


def _split_number(options: Options, most: int) -> int:
    try:
        n = int(options.split or 1)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise ValueError(f"--split is a number 1-{most} here, got {options.split!r}")
    return n


def _rows(entries: list[LabelledEntry], annotations: Path, folds: list[int] | None = None) -> Iterator[Row]:
    for i, e in enumerate(entries):
        try:
            rel = Path(e.path).relative_to(_ROOT).with_suffix("").as_posix()
        except ValueError:  # an absolute name in the split file: reported as malformed
            rel = Path(e.path).as_posix()
        fields = {"label": e.label, "split": e.split}
        if folds is not None:
            fields["fold"] = folds[i]
        yield Row(rel, e.where or f"{annotations}:{rel}", fields=fields)


def _reader(read: Callable[..., tuple[list[LabelledEntry], list[str]]], most: int
            ) -> Callable[[Path, Options, PrepareReport], Iterator[Row]]:
    def rows(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
        entries, _ = read(annotations, _ROOT, _split_number(options, most))
        return _rows(entries, annotations)

    return rows


def read_esc50_rows(annotations: Path, options: Options, report: PrepareReport) -> Iterator[Row]:
    """ESC-50 rows with their folds (the CSV's rows in order)."""
    entries, _ = read_esc50(annotations, _ROOT, _split_number(options, 5))
    folds = [int(r["fold"]) for _, r in read_esc50_table(annotations)]
    return _rows(entries, annotations, folds)


def names(row: Row) -> list[tuple[str, bool]]:
    """The path below the media root (any extension), then the file name in any folder."""
    return [(row.id, False)] + ([(row.id.rsplit("/", 1)[1], False)] if "/" in row.id else [])


UCF101 = DatasetSpec("ucf101", _reader(read_ucf101_split, 3), names, ("video",),
                     "ucfTrainTestlist folder -> labelled manifest of one official split")
HMDB51 = DatasetSpec("hmdb51", _reader(read_hmdb51_split, 3), names, ("video",),
                     "testTrainMulti split folder -> labelled manifest of one official split")
ESC50 = DatasetSpec("esc50", read_esc50_rows, names, ("audio", "video"),
                    "meta/esc50.csv -> labelled manifest with folds")
