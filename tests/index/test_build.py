"""Index build, add, resume, corrupt files and search (tiny random model, three synthetic clips)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mmv_torch.index.build import build_index
from mmv_torch.index.embedding import window_starts
from mmv_torch.index.query import merge_hits, open_searcher
from mmv_torch.index.store import IndexStore, build_faiss
from tests.helpers.index_faults import assert_same_index, index_snapshot
from tests.helpers.index_utils import clip_caption, plant_vectors, synthetic_clips, tiny_checkpoint


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict]:
    root = tmp_path_factory.mktemp("index")
    clips = synthetic_clips(root / "clips")
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    summary = build_index(ckpt, clips, root / "idx", progress=False)
    return root, ckpt, clips, summary


def test_window_starts_cover_the_video() -> None:
    assert window_starts(3.0, 1.0, 1.0) == [0.0, 1.0, 2.0]
    assert window_starts(3.7, 1.0, 1.0) == [0.0, 1.0, 2.0, 2.7]  # the end is covered
    assert window_starts(3.2, 1.0, 1.0) == [0.0, 1.0, 2.0]  # less than half a stride left out
    assert window_starts(0.5, 1.0, 1.0) == [0.0]
    assert window_starts(2.0, 1.0, 0.5) == [0.0, 0.5, 1.0]


def test_build_indexes_every_window_and_logs_corrupt_files(built, capsys) -> None:
    root, _, clips, summary = built
    store = IndexStore(root / "idx")
    assert summary["files"] == 3 and summary["bad_files"] == 1
    assert [Path(p).name for p, _ in store.bad_files()] == ["broken.mp4"]
    assert summary["nn_index"]["video_vt"]["type"] == "exact"
    info = store.info()
    assert info["window_s"] == 1.0 and info["nn_index"]["audio_va"]["type"] == "exact"
    for video in sorted(clips.glob("clip_*.mp4")):
        rec = store.file(video)
        assert rec is not None and rec.has_audio
        wins = store.db.execute("SELECT start, end, thumb FROM windows WHERE file = ? ORDER BY id",
                                (rec.id,)).fetchall()
        assert [w[0] for w in wins] == window_starts(rec.duration, 1.0, 1.0)
        assert all(w[2][:2] == b"\xff\xd8" for w in wins)  # JPEG thumbnails
    total = summary["windows"]
    for space in ("video_vt", "video_va", "audio_va"):
        vecs, ids = store.vectors(space)
        assert len(ids) == total and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        assert store.faiss_index(space).ntotal == total


def test_add_skips_unchanged_files_and_indexes_new_ones(built, tmp_path) -> None:
    root, ckpt, clips, _ = built
    idx = shutil.copytree(root / "idx", tmp_path / "idx")
    again = build_index(ckpt, clips, idx, progress=False, add=True)
    assert again["unchanged_files"] == 4 and again["new_files"] == 0 and again["files"] == 3
    synthetic_clips(tmp_path / "more", n=1, seed=5)
    newer = build_index(ckpt, tmp_path / "more", idx, progress=False, add=True)
    assert newer["new_files"] == 1 and newer["files"] == 4
    assert IndexStore(idx).faiss_index("video_vt").ntotal == newer["windows"]


def test_add_needs_an_index_and_same_settings(built, tmp_path) -> None:
    root, ckpt, clips, _ = built
    with pytest.raises(ValueError, match="not an index"):
        build_index(ckpt, clips, tmp_path / "none", progress=False, add=True)
    idx = shutil.copytree(root / "idx", tmp_path / "idx")
    with pytest.raises(ValueError, match="other settings"):
        build_index(ckpt, clips, idx, window_s=2.0, progress=False)


def test_a_killed_build_resumes_without_redoing_finished_files(built, tmp_path, monkeypatch) -> None:
    root, ckpt, clips, summary = built
    import mmv_torch.index.pipeline as pipeline_mod

    first = IndexStore(root / "idx").file(sorted(clips.glob("clip_*.mp4"))[0])
    assert first is not None
    first_windows = len(window_starts(first.duration, 1.0, 1.0))
    real = pipeline_mod.forward_batch
    windows = []

    def dies_after_the_first_file(model, video, *args):
        if len(windows) == first_windows:
            raise KeyboardInterrupt
        windows.extend([0] * video.shape[0])
        return real(model, video, *args)

    monkeypatch.setattr(pipeline_mod, "forward_batch", dies_after_the_first_file)
    with pytest.raises(KeyboardInterrupt):
        build_index(ckpt, clips, tmp_path / "idx", progress=False, batch_size=1, group_files=1)
    assert IndexStore(tmp_path / "idx").counts()["files"] == 1
    windows.clear()
    monkeypatch.setattr(pipeline_mod, "forward_batch", lambda m, v, *args: (windows.extend([0] * v.shape[0]),
                                                                             real(m, v, *args))[1])
    resumed = build_index(ckpt, clips, tmp_path / "idx", progress=False, batch_size=1)
    assert len(windows) == summary["windows"] - first_windows
    assert resumed["files"] == 3 and resumed["windows"] == summary["windows"]
    monkeypatch.setattr(pipeline_mod, "forward_batch", real)
    build_index(ckpt, clips, tmp_path / "ref", progress=False, batch_size=1)  # the same batches, uninterrupted
    assert_same_index(index_snapshot(tmp_path / "idx"), index_snapshot(tmp_path / "ref"))


def test_merge_hits_joins_adjacent_windows_of_one_file() -> None:
    windows = {1: {"file": 7, "path": "a", "root": 1, "start": 0.0, "end": 1.0},
               2: {"file": 7, "path": "a", "root": 1, "start": 1.0, "end": 2.0},
               3: {"file": 7, "path": "a", "root": 1, "start": 5.0, "end": 6.0},
               4: {"file": 8, "path": "b", "root": 1, "start": 0.0, "end": 1.0}}
    hits = merge_hits(np.array([0.9, 0.8, 0.7, 0.95]), np.array([1, 2, 3, 4]), windows, 1.0, 10)
    assert [(h["path"], h["start"], h["end"], h["score"]) for h in hits] == [
        ("b", 0.0, 1.0, 0.95), ("a", 0.0, 2.0, 0.9), ("a", 5.0, 6.0, 0.7)]
    assert len(merge_hits(np.array([0.9, 0.8, 0.7, 0.95]), np.array([1, 2, 3, 4]), windows, 1.0, 2)) == 2


def test_text_audio_and_video_queries_find_the_planted_clip(built, tmp_path) -> None:
    root, ckpt, clips, _ = built
    idx = shutil.copytree(root / "idx", tmp_path / "idx")
    target = sorted(clips.glob("clip_*.mp4"))[1]
    searcher = open_searcher(idx)
    text = clip_caption(target)
    plant_vectors(idx, target, "video_vt", searcher.embed("text", text=text))
    plant_vectors(idx, target, "video_va", searcher.embed("audio", path=target))
    searcher = open_searcher(idx)
    for mode, query in (("text", {"text": text}), ("audio", {"path": target})):
        hits = searcher.search(mode, k=2, **query)
        assert Path(hits[0]["path"]) == target.resolve() and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert hits[0]["start"] == 0.0 and hits[0]["windows"] > 1  # its windows merged into one hit
    with pytest.raises(ValueError, match="vocabulary"):
        searcher.search("text", text="zzzz qqqq")


def test_exact_and_approximate_indexes_are_chosen_by_size() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    vecs = (centres[rng.integers(0, 20, 3000)] + 0.1 * rng.normal(size=(3000, 16))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) + 100
    index, kind = build_faiss(vecs, ids, exact_limit=5000)
    assert kind["type"] == "exact"
    index, kind = build_faiss(vecs, ids, exact_limit=1000)
    assert kind["type"] == "ivf" and kind["recall_at_10"] >= 0.95 and 1 <= kind["nprobe"] <= kind["nlist"]
    _, got = index.search(vecs[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist()


def test_a_window_of_an_indexed_clip_finds_itself(built) -> None:
    root, _, clips, summary = built
    searcher = open_searcher(root / "idx")
    target = sorted(clips.glob("clip_*.mp4"))[2]
    hits = searcher.search("video", k=3, path=target, start_s=1.0)  # the same frames as its second window
    assert Path(hits[0]["path"]) == target.resolve() and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["start"] <= 1.0 < hits[0]["end"] and len(hits) == 3
    audio_hits = searcher.search("video-audio", k=10, path=target)
    assert len(audio_hits) == 3 and all(h["score"] <= 1.0 + 1e-5 for h in audio_hits)  # one hit per clip


def test_command_line_search_add_and_errors(built, tmp_path, capsys) -> None:
    import json

    from mmv_torch.cli.main import main

    root, _, clips, _ = built
    idx = shutil.copytree(root / "idx", tmp_path / "idx")
    target = sorted(clips.glob("clip_*.mp4"))[0]
    assert main(["index", "search", str(idx), "--video", str(target), "--start", "0", "-k", "2", "--include-self",
                 "--json", str(tmp_path / "hits.json"), "--device", "cpu"]) == 0
    hits = json.loads((tmp_path / "hits.json").read_text())["results"]
    assert len(hits) == 2 and Path(hits[0]["path"]) == target.resolve()
    assert str(target.resolve()) in capsys.readouterr().out.splitlines()[0]
    assert main(["index", "add", str(idx), "--videos", str(clips), "--no-progress", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["unchanged_files"] == 4
    assert main(["index", "search", str(tmp_path), "--text", "ball", "--device", "cpu"]) == 2
    assert "not an index" in capsys.readouterr().err
    assert main(["index", "search", str(idx), "--audio", str(tmp_path / "missing.wav"), "--device", "cpu"]) == 2
