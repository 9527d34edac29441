"""Labelled data sources: manifests, class folders, plain media folders, official splits, loaders."""

import json
import os

import numpy as np
import pytest

from mmv_torch.data import sources
from mmv_torch.data.sources import (
    EpochLoader,
    LabelledSource,
    class_labels,
    default_workers,
    folder_source,
    multilabel_targets,
    open_source,
    read_media_folder,
)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_plain_folder_is_searched_recursively(tmp_path):
    a = _touch(tmp_path / "trip" / "day1" / "a.MP4")
    b = _touch(tmp_path / "b.wav")
    c = _touch(tmp_path / "c.jpg")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden" / "x.mp4")
    _touch(tmp_path / ".y.mp4")
    src = folder_source(tmp_path)
    assert [e.path for e in src.entries] == sorted(str(x) for x in (a, b, c))
    assert {e.path: e.modality for e in src.entries} == {str(a): "video", str(b): "audio", str(c): "image"}
    assert all(e.label == "" and e.split is None for e in src.entries) and src.classes is None
    assert src.records[-1] == {"video": str(a), "label": "", "split": None}


def test_class_folders_stay_class_folders(tmp_path):
    for cls in ("cat", "dog"):
        _touch(tmp_path / "train" / cls / "1.jpg")
        _touch(tmp_path / "val" / cls / "2.jpg")
    src = folder_source(tmp_path)
    assert src.classes == ["cat", "dog"]
    assert sorted((e.label, e.split) for e in src.entries) == [("cat", "test"), ("cat", "train"), ("dog", "test"),
                                                               ("dog", "train")]
    flat = tmp_path / "flat"
    _touch(flat / "run" / "v.mp4")
    assert folder_source(flat).classes == ["run"]


def test_empty_or_missing_folders_are_clear_errors(tmp_path):
    _touch(tmp_path / "readme.txt")
    with pytest.raises(ValueError, match="holds no image, video or audio"):
        read_media_folder(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        folder_source(tmp_path / "missing")


def test_open_source_needs_exactly_one_option(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --data"):
        open_source("video")
    with pytest.raises(ValueError, match="exactly one of --data"):
        open_source("video", data="a.jsonl", esc50_meta="b.csv")
    with pytest.raises(ValueError, match="--audio-root"):
        open_source("audio", esc50_meta="b.csv")
    with pytest.raises(ValueError, match="--video-root"):
        open_source("video", ucf101_splits=str(tmp_path))


def test_manifest_video_entries_give_audio_entries(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text("\n".join(json.dumps(x) for x in (
        {"video": "a.mp4", "label": "x", "split": "train"},
        {"audio": "b.wav", "label": "y", "split": "test"})) + "\n")
    src = open_source("audio", data=str(m))
    assert [e.modality for e in src.entries] == ["audio", "audio"]
    assert src.records[0]["video"] == "a.mp4" and src.source == str(m)


def test_labels_and_multilabel_targets():
    entries = [sources.LabelledEntry(f"/{i}.mp4", "video", lab, "train") for i, lab in enumerate(["b", "a", ""])]

    class DS:
        classes = ["a", "b"]

    ds = DS()
    ds.entries = entries[:2]
    src = LabelledSource(list(entries), [{"labels": ["a", "c"]}, {"label": "b"}, {"labels": []}], "m")
    assert class_labels(ds, src).tolist() == [1, 0]
    ds.entries = entries
    with pytest.raises(ValueError, match="1 entries have no label"):
        class_labels(ds, src)
    classes, hot = multilabel_targets(src)
    assert classes == ["a", "b", "c"]
    np.testing.assert_array_equal(hot, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    assert all(e.label == "" for e in src.entries)
    bad = LabelledSource(list(entries[:1]), [{"labels": 3}], "m")
    with pytest.raises(ValueError, match="entry 0 needs 'labels'"):
        multilabel_targets(bad)


def test_epoch_loader_reseeds_each_pass():
    class Recorder:
        epochs = []

        def set_epoch(self, e):
            self.epochs.append(e)

    ds = Recorder()
    loader = EpochLoader([1, 2], ds, start_epoch=3)
    assert [list(loader), list(loader)] == [[1, 2], [1, 2]] and ds.epochs == [3, 4] and len(loader) == 2


def test_default_workers_never_exceed_the_cores(monkeypatch):
    for cores, want in ((1, 0), (2, 1), (3, 2), (16, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert default_workers() == want
