"""Labelled data sources: everything that turns a manifest, a folder or an official split file into
entries, labels and loaders for evaluation and feature extraction.

A :class:`LabelledSource` is what ``--data`` (or ``--ucf101-splits``, ``--hmdb51-splits``,
``--esc50-meta``) names, in one form for every consumer (the command line, the demo, experiments):

- a labelled JSONL manifest (:func:`manifest_source`; see :mod:`mmv_torch.data.datasets`);
- Kinetics/ImageNet-style class folders, or any folder of media files searched recursively
  (:func:`folder_source`; entries of a plain folder are unlabelled);
- the official UCF101 / HMDB51 split files (:func:`official_split_source`) and ESC-50's meta CSV with
  its five folds (:func:`esc50_source`).

:func:`open_source` picks one of these from keyword options, :func:`class_labels` and
:func:`multilabel_targets` (with :func:`difficult_targets`) turn entries into probe targets,
:func:`make_loader` and :class:`EpochLoader` feed the data sets to the evaluation code.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmv_torch.data.manifests import LabelledEntry, read_class_folders, read_jsonl, read_labelled_manifest
from mmv_torch.data.media.suffixes import (
    MEDIA_SUFFIXES as MEDIA_KINDS,  # suffix -> modality of the files a folder source picks up
)
from mmv_torch.data.official_splits import read_esc50, read_hmdb51_split, read_ucf101_split


@dataclass
class LabelledSource:
    """Entries of a labelled data source with what the source adds (aligned lists)."""

    entries: list[LabelledEntry]
    """One entry per file."""
    records: list[dict[str, Any]]
    """Per entry, what feature indexes and reports show (the manifest line, or the split file's facts)."""
    source: str
    """Where the entries came from, for settings and messages."""
    classes: list[str] | None = None
    """Class order when the source defines one (official split files, class folders)."""
    folds: list[Any] | None = None
    """Per entry, its cross-validation fold (ESC-50 meta CSV)."""
    kind: str | None = None
    """Which benchmark the source is when it says so: 'ucf101', 'hmdb51' (official split files), 'esc50', or a
    manifest's ``dataset`` (the ``data prepare`` name)."""

    def rows(self, ds: Any) -> list[int]:
        """Position in ``entries`` of every item of a ``LabelledDataset`` built from them."""
        pos = {id(e): i for i, e in enumerate(self.entries)}
        return [pos[id(e)] for e in ds.entries]

    def as_modality(self, modality: str) -> LabelledSource:
        """For ``modality == 'audio'``: video entries become audio entries (their audio track), in place."""
        if modality == "audio":
            self.entries = [replace(e, modality="audio") if e.modality == "video" else e for e in self.entries]
        return self


def manifest_source(path: str | Path) -> LabelledSource:
    """A labelled JSONL manifest; ``records`` are its lines. Its ``kind`` is the ``dataset`` field of its lines
    when they all name the same one (``data prepare`` writes it)."""
    p = Path(path)
    entries = read_labelled_manifest(p)
    records = [obj for _, obj in read_jsonl(p)]
    kinds = {str(r["dataset"]) if r.get("dataset") is not None else None for r in records}
    return LabelledSource(entries, records, str(p), kind=kinds.pop() if len(kinds) == 1 else None)


def _has_class_folders(root: Path) -> bool:
    """Whether ``root`` is laid out as class folders: no media file at the top, and sub-folders (or
    ``train``/``val|test`` splits) whose files are media."""
    if any(f.is_file() and f.suffix.lower() in MEDIA_KINDS for f in root.iterdir()):
        return False
    subs = [d for d in root.iterdir() if d.is_dir()]
    if (root / "train").is_dir() and any((root / n).is_dir() for n in ("val", "test")):
        subs = [d for s in ("train", "val", "test") if (root / s).is_dir() for d in (root / s).iterdir() if d.is_dir()]
    return any(f.is_file() and f.suffix.lower() in MEDIA_KINDS for d in subs for f in d.iterdir())


def read_media_folder(root: str | Path) -> list[LabelledEntry]:
    """Every image, video or audio file under ``root`` (searched recursively, hidden files and folders
    skipped, sorted by path), as unlabelled entries."""
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"media folder {r} does not exist")
    found = []
    for dirpath, dirnames, filenames in os.walk(r):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            kind = MEDIA_KINDS.get(Path(name).suffix.lower())
            if kind is not None and not name.startswith("."):
                found.append(LabelledEntry(str(Path(dirpath) / name), kind, "", None))
    if not found:
        raise ValueError(f"{r} holds no image, video or audio files (suffixes {sorted(MEDIA_KINDS)})")
    return sorted(found, key=lambda e: e.path)


def folder_source(root: str | Path) -> LabelledSource:
    """Class folders (``root/<class>/*`` or ``root/train|val|test/<class>/*``) when ``root`` is laid out
    so; otherwise every media file under ``root``, unlabelled (e.g. a folder of one's own videos)."""
    r = Path(root)
    if not r.is_dir():
        raise ValueError(f"--data {r}: no such folder")
    if _has_class_folders(r):
        entries, classes = read_class_folders(r)
    else:
        entries, classes = read_media_folder(r), None
    records = [{e.modality: e.path, "label": e.label, "split": e.split} for e in entries]
    return LabelledSource(entries, records, str(r), classes)


def esc50_source(meta_csv: str | Path, audio_root: str | Path, test_fold: int = 1) -> LabelledSource:
    """ESC-50's ``meta/esc50.csv``: ``test_fold`` is the test split; every entry knows its fold (1..5)."""
    entries, classes = read_esc50(meta_csv, audio_root, test_fold=test_fold)
    folds: list[Any] = [None] * len(entries)
    for k in range(1, 6):  # an entry is in fold k where it is the test split
        for i, e in enumerate(read_esc50(meta_csv, audio_root, test_fold=k)[0]):
            if e.split == "test":
                folds[i] = k
    if any(f is None for f in folds):
        raise ValueError(f"{meta_csv}: some rows have a fold outside 1..5")
    records = [{"audio": e.path, "label": e.label, "split": e.split, "fold": f} for e, f in zip(entries, folds)]
    return LabelledSource(entries, records, str(meta_csv), classes, folds, kind="esc50")


def official_split_source(dataset: str, split_dir: str | Path, video_root: str | Path, split: int = 1
                          ) -> LabelledSource:
    """UCF101 (``dataset='ucf101'``) or HMDB51 (``'hmdb51'``) official split ``split`` (1-3)."""
    readers = {"ucf101": read_ucf101_split, "hmdb51": read_hmdb51_split}
    if dataset not in readers:
        raise ValueError(f"official splits exist for {sorted(readers)}, not {dataset!r}")
    entries, classes = readers[dataset](split_dir, video_root, split)
    records = [{"video": e.path, "label": e.label, "split": e.split} for e in entries]
    return LabelledSource(entries, records, str(split_dir), classes, kind=dataset)


def open_source(modality: str, data: str | Path | None = None, ucf101_splits: str | Path | None = None,
                hmdb51_splits: str | Path | None = None, video_root: str | Path | None = None,
                esc50_meta: str | Path | None = None, audio_root: str | Path | None = None,
                split: int = 1) -> LabelledSource:
    """The source named by exactly one of ``data`` (manifest or folder), ``ucf101_splits``,
    ``hmdb51_splits`` (with ``video_root``) or ``esc50_meta`` (with ``audio_root``). Video files give
    audio entries for ``modality == 'audio'`` (their audio track)."""
    given = {"data": data, "ucf101_splits": ucf101_splits, "hmdb51_splits": hmdb51_splits, "esc50_meta": esc50_meta}
    named = [k for k, v in given.items() if v]
    if len(named) != 1:
        raise ValueError("give exactly one of --data, --ucf101-splits, --hmdb51-splits, --esc50-meta; got "
                         f"{['--' + g.replace('_', '-') for g in named] or 'none'}")
    if data:
        src = folder_source(data) if Path(data).is_dir() else manifest_source(data)
    elif esc50_meta:
        if not audio_root:
            raise ValueError("--esc50-meta needs --audio-root (the folder of the ESC-50 .wav files)")
        src = esc50_source(esc50_meta, audio_root, split)
    else:
        if not video_root:
            raise ValueError("--ucf101-splits / --hmdb51-splits need --video-root (the folder of the videos)")
        kind, split_dir = ("ucf101", ucf101_splits) if ucf101_splits else ("hmdb51", hmdb51_splits)
        src = official_split_source(kind, split_dir, video_root, split)  # type: ignore[arg-type]
    return src.as_modality(modality)


def class_labels(ds: Any, source: LabelledSource) -> np.ndarray:
    """Integer label per row of a ``LabelledDataset`` (``ds.classes`` order); an unlabelled entry is an error."""
    index = {c: i for i, c in enumerate(ds.classes)}
    missing = [e.path for e in ds.entries if e.label not in index]
    if missing:
        raise ValueError(f"{source.source}: {len(missing)} entries have no label, e.g. {missing[0]}")
    return np.array([index[e.label] for e in ds.entries], dtype=np.int64)


def _name_lists(source: LabelledSource, key: str, required: bool) -> list[list[str]]:
    lists = []
    for i, rec in enumerate(source.records):
        names = rec.get(key, rec.get("label")) if key == "labels" else rec.get(key, [])
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ValueError(f"{source.source}: entry {i} needs {key!r} (a list of class names)"
                             + (" for --multilabel" if required else ""))
        lists.append(names)
    return lists


def _hot(lists: list[list[str]], classes: list[str], source: str, key: str) -> np.ndarray:
    col = {c: j for j, c in enumerate(classes)}
    unknown = sorted({x for names in lists for x in names if x not in col})
    if unknown:
        raise ValueError(f"{source}: {key!r} names classes outside the protocol's {len(classes)}: {unknown[:5]}")
    hot = np.zeros((len(lists), len(classes)), dtype=np.float32)
    for i, names in enumerate(lists):
        hot[i, [col[x] for x in names]] = 1.0
    return hot


def multilabel_targets(source: LabelledSource, classes: list[str] | tuple[str, ...] | None = None
                       ) -> tuple[list[str], np.ndarray]:
    """Multi-hot labels from the records' ``"labels"`` (or list-valued ``"label"``) fields: (classes
    sorted, or ``classes`` when given (other names are an error), float32 (N, C) per entry). The
    entries' labels are cleared (they are not class names)."""
    lists = _name_lists(source, "labels", True)
    names = list(classes) if classes is not None else sorted({x for labels in lists for x in labels})
    hot = _hot(lists, names, source.source, "labels")
    source.entries = [replace(e, label="") for e in source.entries]
    return names, hot


def difficult_targets(source: LabelledSource, classes: list[str]) -> np.ndarray:
    """Bool (N, C): the classes each record lists under ``"difficult"`` (PASCAL VOC: present only as
    objects marked difficult; a record without the field has none)."""
    return _hot(_name_lists(source, "difficult", False), classes, source.source, "difficult") > 0


def default_workers(limit: int = 4) -> int:
    """Data-loading processes by default: at most ``limit``, never more than the cores this process may
    use, minus one for the main process (0 on one core: load in the main process)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(0, min(limit, cores - 1)) if cores > 1 else 0


def make_loader(ds: Any, batch_size: int, workers: int, shuffle: bool = False, distributed: bool = False) -> Any:
    """A ``DataLoader`` over ``ds``; with ``distributed`` under several processes, each rank reads its
    share (``DistributedSampler``, no shuffling)."""
    import torch

    from mmv_torch import dist
    from mmv_torch.runs import ignore_stop_signals

    sampler = None
    if distributed and dist.world_size() > 1:
        sampler = torch.utils.data.DistributedSampler(ds, shuffle=False)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler,
                                       num_workers=workers, worker_init_fn=ignore_stop_signals)


class EpochLoader:
    """Iterate ``loader`` once per ``iter()``, calling ``dataset.set_epoch(e)`` before pass ``e``.

    The labelled data sets seed their augmentation from (seed, epoch, index), so without this every
    pass of a multi-epoch feature extraction or fine-tuning would see the same crops.
    """

    def __init__(self, loader: Any, dataset: Any, start_epoch: int = 0) -> None:
        self.loader, self.dataset, self.epoch = loader, dataset, start_epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return iter(self.loader)

