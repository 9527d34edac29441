"""load_clips: several windows of one file from one opened container, equal to load_clip per window."""

from __future__ import annotations

import numpy as np
import pytest

from mmv_torch.data.media import decode
from mmv_torch.data.media.decode import load_clip, load_clips
from tests.helpers.media_utils import frame_index_of, has_encoder, make_video, textured_h264


def _assert_same(clips, path, starts, n, fps, **kw):
    assert len(clips) == len(starts)
    for s, got in zip(starts, clips):
        want = load_clip(path, s, n, fps, **kw)
        assert got.start_s == want.start_s and got.audio_start_s == want.audio_start_s
        assert got.has_audio == want.has_audio
        np.testing.assert_array_equal(got.frames.numpy(), want.frames.numpy(), err_msg=f"start {s}")
        np.testing.assert_array_equal(got.audio.numpy(), want.audio.numpy(), err_msg=f"audio, start {s}")


def _count_passes(monkeypatch):
    calls = {"passes": 0, "opens": 0}
    sample, open_ = decode._sample_video, decode._open

    def counted_sample(*a, **k):
        calls["passes"] += 1
        return sample(*a, **k)

    def counted_open(*a, **k):
        calls["opens"] += 1
        return open_(*a, **k)

    monkeypatch.setattr(decode, "_sample_video", counted_sample)
    monkeypatch.setattr(decode, "_open", counted_open)
    return calls


@pytest.mark.parametrize("starts", [
    [0.3, 0.9],             # overlapping
    [2.0, 0.1, 1.0],        # out of order, near
    [0.5, 0.5],             # the same window twice
    [0.2, 6.0],             # farther apart than max_gap: two passes
    [6.5, 0.4, 7.2],        # past the end: both wrap to the start
])
def test_equal_to_one_clip_at_a_time(tmp_path, starts):
    if not has_encoder("libx264"):
        pytest.skip("PyAV build lacks libx264")
    path = textured_h264(tmp_path / "tex.mp4", num_frames=200, gop=25)  # 8 s, B frames, key frame every 1 s
    clips = load_clips(path, starts, 10, 10.0)
    _assert_same(clips, path, starts, 10, 10.0)


def test_audio_and_wrapping_equal_to_one_clip_at_a_time(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=50, fps=25, acodec="aac", sample_rate=16000, gop=10)  # 2 s
    starts = [1.5, 0.2, 0.25, 1.9]
    clips = load_clips(path, starts, 8, 10.0, sample_rate=16000, audio_seconds=1.0)
    _assert_same(clips, path, starts, 8, 10.0, sample_rate=16000, audio_seconds=1.0)
    # 1.9 s + 0.7 s runs past the 2-s end: frames 47, 0, 2, ...
    assert [frame_index_of(f.numpy()) for f in clips[3].frames][:3] == [47 % 28, 0, 2]  # indices are coded mod 28


def test_variable_frame_rate_windows(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.4, 1.5, 2.2, 2.3, 3.0]
    path = make_video(tmp_path / "vfr.mp4", frame_times=times, acodec=None)
    starts = [0.05, 0.6, 1.45]
    _assert_same(load_clips(path, starts, 6, 10.0), path, starts, 6, 10.0)


def test_near_windows_share_one_open_and_one_pass(tmp_path, monkeypatch):
    if not has_encoder("libx264"):
        pytest.skip("PyAV build lacks libx264")
    path = textured_h264(tmp_path / "tex.mp4", num_frames=200, gop=25)
    calls = _count_passes(monkeypatch)
    load_clips(path, [0.2, 1.0, 2.5], 10, 10.0)  # gaps below 2 s: one pass
    assert calls == {"passes": 1, "opens": 1}
    calls.update(passes=0, opens=0)
    load_clips(path, [0.2, 5.0], 10, 10.0)  # 1.2 s -> 5.0 s: a 3.8-s gap, seek instead
    assert calls == {"passes": 2, "opens": 1}
    calls.update(passes=0, opens=0)
    load_clips(path, [0.2, 1.5], 10, 10.0, max_gap=0.0)  # 0.2-1.1 and 1.5-2.4 do not touch: two passes
    assert calls == {"passes": 2, "opens": 1}


def test_shared_frames_are_converted_once(tmp_path, monkeypatch):
    path = make_video(tmp_path / "v.mp4", num_frames=50, fps=25, acodec=None)
    converted = []
    rgb = decode._rgb
    monkeypatch.setattr(decode, "_rgb", lambda f, w, h: converted.append(f.pts) or rgb(f, w, h))
    load_clips(path, [0.0, 0.0, 0.1], 5, 10.0)  # times 0.0-0.4 (twice) and 0.1-0.5: 6 distinct frames
    assert len(converted) == 6


def test_window_groups():
    wins = [[3.0, 3.5], [0.0, 0.5], [1.0, 1.5], [9.0]]
    assert decode._window_groups(wins, 1.0) == [[0.0, 0.5, 1.0, 1.5], [3.0, 3.5], [9.0]]
    assert decode._window_groups(wins, 2.0) == [[0.0, 0.5, 1.0, 1.5, 3.0, 3.5], [9.0]]


@pytest.mark.parametrize("starts", [[], [-0.5], [0.0, float("nan")]])
def test_bad_starts(tmp_path, starts):
    path = make_video(tmp_path / "v.mp4", num_frames=10, fps=10, acodec=None)
    with pytest.raises(ValueError, match="starts"):
        load_clips(path, starts, 4, 10.0)


def test_stage_times_count_each_second_once(tmp_path):
    # Windows after the first read their audio through a fresh container: its opening is open_seek, not
    # audio_decode as well (the stages must not add up to more than the wall time).
    import time

    path = make_video(tmp_path / "v.mp4", num_frames=50, fps=25, acodec="aac", sample_rate=16000)
    with decode.stage_times() as st:
        t0 = time.perf_counter()
        load_clips(path, [0.0, 0.5, 1.0, 1.2], 4, 10.0)
        wall = time.perf_counter() - t0
    assert set(st) == {"open_seek", "video_decode", "convert", "audio_decode"}
    assert sum(st.values()) <= wall
