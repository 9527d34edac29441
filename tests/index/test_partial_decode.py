"""A video whose video stream cannot be decoded but whose audio can is indexed with audio-only windows
(``has_video`` 0): searchable by sound, absent from video searches, without thumbnails; counted in the
build summary; an index older than the ``has_video`` column opens unchanged. And ``--windows shots``:
windows within shots, an index keeping its kind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.data.test_shots import shots_video
from tests.helpers.index_utils import damage_stream, synthetic_clips, tiny_checkpoint

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    from mmv_torch.index.build import build_index

    root = tmp_path_factory.mktemp("partial")
    clips = synthetic_clips(root / "clips", n=3)
    ckpt = tiny_checkpoint(root / "ckpt", clips)
    first = sorted(clips.glob("clip_*.mp4"))[0]
    no_video = damage_stream(first, clips / "no_video.mp4", "video")
    no_sound = damage_stream(first, clips / "no_sound.mp4", "audio", first=2, last=30)
    summary = build_index(ckpt, clips, root / "idx", progress=False)
    return root, ckpt, clips, no_video, no_sound, summary


def test_both_damaged_files_are_indexed_with_the_right_windows(made, capsys) -> None:
    from mmv_torch.data.media.decode import DecodeError, load_clips
    from mmv_torch.index.check import check_index
    from mmv_torch.index.embedding import window_starts
    from mmv_torch.index.store import IndexStore

    root, _, _, no_video, no_sound, summary = made
    for f in (no_video, no_sound):  # the files really are damaged
        with pytest.raises(DecodeError):
            load_clips(f, [0.0, 1.0], 8, 8.0, 16000, 1.0)
    assert summary["files"] == 5 and summary["bad_files"] == 0, summary
    assert summary["new_files_without_decodable_video"] == 1
    assert summary["new_files_without_decodable_audio"] == 1
    store = IndexStore(root / "idx")
    rows = {}
    for f in (no_video, no_sound):
        rec = store.file(f)
        assert rec.status == "done"
        rows[f.name] = store.db.execute("SELECT start, has_audio, has_video, thumb IS NULL FROM windows WHERE file = ? "
                                        "ORDER BY id", (rec.id,)).fetchall()
        assert [r[0] for r in rows[f.name]] == window_starts(rec.duration, 1.0, 1.0)
    assert {r[1:] for r in rows["no_video.mp4"]} == {(1, 0, 1)}  # sound, no video, no thumbnail
    assert {r[1:] for r in rows["no_sound.mp4"]} == {(0, 1, 0)}
    n = summary["windows"]
    n_av = len(rows["no_video.mp4"])
    assert store.committed_vectors("video_vt") == store.faiss_index("video_vt").ntotal == n - n_av
    assert store.committed_vectors("audio_va") == store.faiss_index("audio_va").ntotal == n - len(rows["no_sound.mp4"])
    assert check_index(root / "idx").ok


def test_audio_only_windows_are_found_by_sound_and_skipped_by_video_searches(made) -> None:
    import mmv_torch.index as mi
    from mmv_torch.index.store import IndexStore

    root, _, clips, no_video, _, _ = made
    index = mi.open(root / "idx")
    by_text = index.search(text="a ball", k=50)
    assert by_text.hits and no_video.name not in {Path(h.path).name for h in by_text.hits}
    assert all(h.has_video for h in by_text.hits)
    store = IndexStore(root / "idx")
    rec = store.file(no_video)
    wid = store.window_ids(rec.id, "audio_va")[0]
    assert store.window_ids(rec.id, "video_vt") == [] and store.thumbnail(wid) is None
    assert store.window_vector("video_va", wid) is None
    vec = store.window_vector("audio_va", wid)
    assert vec is not None and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    sounds = index.search(audio=no_video, k=50, target="audio")
    hit = next(h for h in sounds.hits if Path(h.path).name == no_video.name)
    assert not hit.has_video and hit.has_audio and hit.to_dict()["has_video"] is False
    with pytest.raises(ValueError, match="audio-only"):
        index.search(window=wid, k=3)


def test_the_server_gives_an_audio_only_hit_no_thumbnail(made) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmv_torch.index.api import open_index
    from mmv_torch.index.server import create_app

    root, _, _, no_video, _, _ = made
    client = TestClient(create_app(open_index(root / "idx")), base_url="http://localhost")
    with no_video.open("rb") as f:
        r = client.post("/api/search", data={"target": "audio", "k": "50"}, files={"audio": ("q.mp4", f, "video/mp4")})
    assert r.status_code == 200, r.text
    hit = next(h for h in r.json()["results"] if h["name"] == no_video.name)
    assert hit["has_video"] is False and hit["thumb_url"] is None
    with no_video.open("rb") as f:  # sound -> videos (S_va): audio-only windows have no video there
        r = client.post("/api/search", data={"k": "50"}, files={"audio": ("q.mp4", f, "video/mp4")})
    assert r.status_code == 200 and r.json()["results"]
    assert all(h["has_video"] and h["thumb_url"] for h in r.json()["results"])


def test_an_index_older_than_the_has_video_column_opens_unchanged(made, tmp_path) -> None:
    import shutil

    from mmv_torch.index.store import IndexStore

    root, *_ = made
    old = tmp_path / "old"
    shutil.copytree(root / "idx", old)
    with sqlite3.connect(old / "meta.sqlite") as db:
        db.execute("DELETE FROM windows WHERE has_video = 0")
        db.execute("ALTER TABLE windows DROP COLUMN has_video")
    reader = IndexStore(old)
    ids = [i for (i,) in reader.db.execute("SELECT DISTINCT file FROM windows")]
    assert all(reader.window_ids(i, "video_vt") for i in ids)
    assert reader.committed_vectors("video_vt") == reader.counts()["windows"]
    assert not any(r[1] == "has_video" for r in reader.db.execute("PRAGMA table_info(windows)"))  # read only
    writer = IndexStore(old, writer=True)
    assert {v for (v,) in writer.db.execute("SELECT has_video FROM windows")} == {1}
    writer.close()
    with sqlite3.connect(old / "meta.sqlite") as db:  # an audio-only window added after the migration ...
        db.execute("UPDATE windows SET has_video = 0 WHERE id = (SELECT MAX(id) FROM windows)")
    assert reader.committed_vectors("video_vt") == reader.counts()["windows"] - 1  # ... seen by the older reader


def test_shot_windows_lie_within_shots_and_an_index_keeps_its_kind(made, tmp_path) -> None:
    from mmv_torch.data.media.shots import detect_shots
    from mmv_torch.index.build import build_index
    from mmv_torch.index.store import IndexStore

    _, ckpt, *_ = made
    folder = tmp_path / "shots"
    folder.mkdir()
    video = shots_video(folder / "cuts.mp4", [16, 23, 30])  # shots 0-1.6, 1.6-2.3, 2.3-3.0, 3.0-4.0 s
    summary = build_index(ckpt, folder, tmp_path / "idx", windows="shots", progress=False)
    assert summary["window_kind"] == "shots" and summary["files"] == 1
    store = IndexStore(tmp_path / "idx")
    assert store.info()["window_kind"] == "shots"
    wins = [(round(s, 3), round(e, 3)) for s, e in store.db.execute("SELECT start, end FROM windows ORDER BY id")]
    assert wins == [(0.0, 1.0), (0.6, 1.6), (1.6, 2.3), (2.3, 3.0), (3.0, 4.0)]  # two shots shorter than a window
    shots = detect_shots(video, 4.0)
    assert all(any(a - 1e-6 <= s and e <= b + 1e-6 for a, b in shots) for s, e in wins)
    store.close()
    with pytest.raises(ValueError, match="window_kind"):
        build_index(ckpt, folder, tmp_path / "idx", windows="fixed", add=True, progress=False)
    again = build_index(ckpt, folder, tmp_path / "idx", windows="shots", add=True, progress=False)
    assert again["unchanged_files"] == 1


def test_index_add_keeps_the_window_kind_and_refuses_another(made, tmp_path, capsys) -> None:
    import json

    from mmv_torch.cli.main import main
    from mmv_torch.index.store import IndexStore

    _, ckpt, *_ = made
    folder = tmp_path / "v"
    folder.mkdir()
    shots_video(folder / "a.mp4", [16])
    idx = str(tmp_path / "idx")
    assert main(["index", "build", "--checkpoint", str(ckpt), "--videos", str(folder), "--out", idx, "--windows",
                 "shots", "--no-progress"]) == 0
    capsys.readouterr()
    shots_video(folder / "b.mp4", [15], seed=1)  # shots 0-1.5, 1.5-4.0 s (fixed windows: 0-1, 1-2, 2-3, 3-4)
    assert main(["index", "add", idx, "--videos", str(folder), "--no-progress"]) == 0  # the index's own kind
    out = json.loads(capsys.readouterr().out)
    assert out["window_kind"] == "shots" and out["new_files"] == 1
    b = IndexStore(idx).file(folder / "b.mp4")
    assert [(round(s, 2), round(e, 2)) for s, e in IndexStore(idx).db.execute(
        "SELECT start, end FROM windows WHERE file = ? ORDER BY id", (b.id,))] == [(0.0, 1.0), (1.5, 2.5), (2.5, 3.5)]
    assert main(["index", "add", idx, "--videos", str(folder), "--windows", "fixed", "--no-progress"]) == 2
    assert "window_kind" in capsys.readouterr().err
