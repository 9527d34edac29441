"""Tests for mmv_torch.data.media.decode on small files written by tests/helpers/media_utils.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmv_torch.data.media.decode import DecodeError, load_clip, load_image, probe, resample
from tests.helpers.media_utils import frame_index_of, has_encoder, make_video, make_wav, textured_h264, truncate

CASES = [
    # (file name, video codec, pix_fmt, audio codec, sample rate, channels)
    ("h264_aac_mono_16k.mp4", "libx264", "yuv420p", "aac", 16000, 1),
    ("h264_aac_stereo_48k.mov", "libx264", "yuv420p", "aac", 48000, 2),
    ("mpeg4_pcm_51_44k.mkv", "mpeg4", "yuv420p", "pcm_s16le", 44100, 6),
    ("mpeg4_mp3_stereo_22k.mkv", "mpeg4", "yuv420p", "libmp3lame", 22050, 2),
    ("mjpeg_pcm_71_8k.avi", "mjpeg", "yuvj420p", "pcm_s16le", 8000, 8),
    ("vp9_opus_stereo_48k.webm", "libvpx-vp9", "yuv420p", "libopus", 48000, 2),
    ("h264_noaudio.mp4", "libx264", "yuv420p", None, 0, 0),
]


@pytest.mark.parametrize("name,vcodec,pix_fmt,acodec,rate,channels", CASES)
def test_codecs_and_containers(tmp_path, name, vcodec, pix_fmt, acodec, rate, channels):
    for codec in (vcodec, acodec):
        if codec is not None and not has_encoder(codec):
            pytest.skip(f"PyAV build lacks the {codec} encoder")
    kw = {"sample_rate": rate, "channels": channels} if acodec else {}
    path = make_video(tmp_path / name, num_frames=25, fps=25, vcodec=vcodec, pix_fmt=pix_fmt, acodec=acodec, **kw)
    info = probe(path)
    assert info.has_video and info.has_audio == (acodec is not None)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.0, abs=0.1)
    assert (info.width, info.height) == (64, 48)
    if acodec:
        assert info.channels == channels and info.sample_rate == rate

    clip = load_clip(path, 0.2, 6, 10.0, sample_rate=16000, audio_seconds=0.5)
    assert clip.frames.dtype == torch.uint8 and clip.frames.shape == (6, 48, 64, 3)
    # 10 fps from 25 fps: times 0.2, 0.3, ... are shown by source frames floor(25 t).
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [5, 7, 10, 12, 15, 17]
    assert clip.audio.dtype == torch.float32 and clip.audio.shape == (8000,)
    assert clip.has_audio == (acodec is not None)
    if acodec:
        # A 440 Hz sine of amplitude 0.5 on every channel: mono mix keeps amplitude and pitch.
        a = clip.audio.numpy()[1000:7000]
        assert 0.35 < np.abs(a).max() < 0.65
        spec = np.abs(np.fft.rfft(a))
        assert abs(np.argmax(spec) * 16000 / len(a) - 440) < 10
    else:
        assert not clip.audio.any()


def test_audio_window_timing_exact(tmp_path):
    # PCM at the target rate: the audio window must be the analytic sine at the right times.
    path = make_video(tmp_path / "pcm.mkv", num_frames=50, fps=25, vcodec="mpeg4", acodec="pcm_s16le",
                      sample_rate=16000, channels=2, audio_freq=123.0)
    clip = load_clip(path, 0.5, 8, 10.0, sample_rate=16000, audio_seconds=0.4)
    # Clip 0.5..1.3 s, centre 0.9 s, 0.4 s window starts at 0.7 s.
    assert clip.audio_start_s == pytest.approx(0.7)
    t = 0.7 + np.arange(6400) / 16000
    want = 0.5 * np.sin(2 * np.pi * 123.0 * t)
    np.testing.assert_allclose(clip.audio.numpy(), want, atol=2e-4)


def test_audio_window_moves_right_at_start(tmp_path):
    path = make_video(tmp_path / "a.mkv", num_frames=50, fps=25, vcodec="mpeg4", acodec="pcm_s16le",
                      sample_rate=8000, audio_freq=50.0)
    clip = load_clip(path, 0.0, 4, 10.0, sample_rate=8000, audio_seconds=1.0)
    assert clip.audio_start_s == 0.0
    want = 0.5 * np.sin(2 * np.pi * 50.0 * np.arange(8000) / 8000)
    np.testing.assert_allclose(clip.audio.numpy(), want, atol=2e-4)


def test_vfr_sampled_by_timestamp(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.52, 0.9, 1.4, 1.5]
    path = make_video(tmp_path / "vfr.mp4", frame_times=times, acodec=None)
    clip = load_clip(path, 0.0, 16, 10.0)
    got = [frame_index_of(f.numpy()) for f in clip.frames]
    want = [max(i for i, s in enumerate(times) if s <= k / 10 + 1e-9) for k in range(16)]
    assert got == want


def test_short_clip_loops_like_official_tiling(tmp_path):
    path = make_video(tmp_path / "short.mp4", num_frames=5, fps=10, acodec="aac")  # 0.5 s
    clip = load_clip(path, 0.0, 12, 10.0, sample_rate=16000)
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [i % 5 for i in range(12)]
    assert clip.audio.shape == (19200,)
    # Audio loops too: no silent tail after the track ends at 0.5 s.
    tail = clip.audio.numpy()[12000:]
    assert np.abs(tail).max() > 0.3


def test_start_past_middle_wraps(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=25, fps=25, acodec=None)
    clip = load_clip(path, 0.8, 4, 10.0)
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [20, 22, 0, 2]  # 0.8, 0.9, then 1.0 -> 0.0, 1.1 -> 0.1


def test_seek_does_not_decode_from_start(tmp_path):
    # Key frame every 10 frames; a clip near the end must be right (seek + decode forward).
    path = make_video(tmp_path / "long.mp4", num_frames=100, fps=25, acodec=None, gop=10)
    clip = load_clip(path, 3.0, 4, 25.0)
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [75 % 28, 76 % 28, 77 % 28, 78 % 28]


def test_bytes_source(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=10, fps=10)
    clip = load_clip(path.read_bytes(), 0.0, 3, 10.0, name="mem.mp4")
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [0, 1, 2]
    assert clip.has_audio


def test_broken_files_raise_decode_error(tmp_path):
    good = make_video(tmp_path / "good.mp4", num_frames=10, fps=10)
    truncate(good, tmp_path / "trunc.mp4", 0.5)
    (tmp_path / "zero.mp4").write_bytes(b"")
    (tmp_path / "junk.mkv").write_bytes(b"\x1aE\xdf\xa3" + b"garbage" * 50)
    make_wav(tmp_path / "audio_only.wav")
    expect = {"trunc.mp4": "", "zero.mp4": "empty", "junk.mkv": "", "audio_only.wav": "no video stream",
              "missing.mp4": "does not exist"}
    for name, reason in expect.items():
        with pytest.raises(DecodeError) as info:
            load_clip(tmp_path / name, 0.0, 4, 10.0)
        assert info.value.path.endswith(name)
        assert reason in info.value.reason
    with pytest.raises(DecodeError, match="empty"):
        load_clip(b"", 0.0, 4, 10.0)


def test_truncated_stream_container_still_decodes_what_is_there(tmp_path):
    # Matroska has its index up front: a cut file opens and the frames before the cut decode.
    good = make_video(tmp_path / "good.mkv", num_frames=50, fps=25, vcodec="mpeg4", acodec=None)
    cut = truncate(good, tmp_path / "cut.mkv", 0.5)
    clip = load_clip(cut, 0.0, 5, 25.0)
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [0, 1, 2, 3, 4]


def test_bad_arguments(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=5, fps=10)
    with pytest.raises(ValueError):
        load_clip(path, -1.0, 4, 10.0)
    with pytest.raises(ValueError):
        load_clip(path, 0.0, 0, 10.0)


def test_resample_sine():
    rate_in, rate_out = 44100, 16000
    t = np.arange(44100) / rate_in
    y = resample(np.sin(2 * np.pi * 1000 * t), rate_in, rate_out)
    assert y.shape == (16000,)
    want = np.sin(2 * np.pi * 1000 * np.arange(16000) / rate_out)
    np.testing.assert_allclose(y[100:-100], want[100:-100], atol=1e-3)
    # Content above the new Nyquist frequency is removed, not aliased.
    z = resample(np.sin(2 * np.pi * 12000 * t), rate_in, rate_out)
    assert np.abs(z[100:-100]).max() < 1e-2


def test_load_image(tmp_path):
    import av

    path = tmp_path / "img.png"
    with av.open(str(path), "w", format="image2") as out:
        s = out.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 8, 6, "rgb24"
        img = np.zeros((6, 8, 3), np.uint8)
        img[:, :, 0] = 200
        for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
        for p in s.encode():
            out.mux(p)
    got = load_image(path)
    assert got.shape == (6, 8, 3) and int(got[..., 0].min()) == 200


def test_audio_shares_the_video_clock(tmp_path):
    # Video starts 0.5 s after the audio: times are counted from the first video frame for both.
    times = [0.5 + i / 10 for i in range(10)]
    path = make_video(tmp_path / "late.mkv", frame_times=times, fps=10, vcodec="mpeg4", acodec="pcm_s16le",
                      sample_rate=8000, audio_seconds=1.5, audio_freq=37.0)
    clip = load_clip(path, 0.2, 4, 10.0, sample_rate=8000, audio_seconds=0.4)
    assert [frame_index_of(f.numpy()) for f in clip.frames] == [2, 3, 4, 5]
    t = 0.5 + 0.2 + np.arange(3200) / 8000  # clip 0.2..0.6 s after the first frame = 0.7..1.1 s of audio
    np.testing.assert_allclose(clip.audio.numpy(), 0.5 * np.sin(2 * np.pi * 37.0 * t), atol=2e-4)




def _reference_frames(path):
    """Every frame decoded from the start and converted with PyAV's own per-frame conversion: (times, rgb)."""
    import av

    with av.open(str(path)) as c:
        decoded = [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return np.array([t for t, _ in decoded]), [a for _, a in decoded]


def test_fast_path_frames_equal_full_decode(tmp_path):
    # The seek + skip + shared-converter path returns bit-identical frames at the same timestamps as
    # decoding everything and converting each frame on its own (no resize: no interpolation tolerance).
    if not has_encoder("libx264"):
        pytest.skip("PyAV build lacks libx264")
    path = textured_h264(tmp_path / "tex.mp4")
    times, ref = _reference_frames(path)
    for start, n, fps in [(0.0, 8, 10.0), (0.37, 10, 10.0), (1.05, 6, 7.0), (1.6, 12, 25.0), (2.5, 8, 10.0)]:
        clip = load_clip(path, start, n, fps)
        want = [int(np.searchsorted(times, (start + i / fps) % 3.0 + 1e-4, side="right")) - 1 for i in range(n)]
        got = clip.frames.numpy()
        assert got.shape == (n, 64, 96, 3)
        for i, k in enumerate(want):
            np.testing.assert_array_equal(got[i], ref[k], err_msg=f"start {start}, frame {i} (source {k})")


def test_unneeded_non_reference_frames_are_not_decoded(tmp_path):
    import av

    from mmv_torch.data.media import decode

    if not has_encoder("libx264"):
        pytest.skip("PyAV build lacks libx264")
    path = textured_h264(tmp_path / "tex.mp4")
    times = [1.0 + i / 5 for i in range(5)]  # 5 fps from 25 fps: most frames are not needed
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        decode._seek(c, vs, 0.0)
        skipped: list[float] = []
        out = [float(f.time) for f in decode._packets_decoded(c, vs, times, 0.0, skipped)]
    # Reference frames are decoded even when sent for skipping; the others never appear.
    never = {round(t, 6) for t in skipped} - {round(t, 6) for t in out}
    assert never and len(out) + len(never) >= 75 > len(out)
    # The frame shown at each sampled time was decoded.
    assert all(any(abs(t - o) < 1e-6 for o in out) for t in times)


def test_skipped_frame_that_was_needed_is_decoded_again(tmp_path, monkeypatch):
    from mmv_torch.data.media import decode

    if not has_encoder("libx264"):
        pytest.skip("PyAV build lacks libx264")
    path = textured_h264(tmp_path / "tex.mp4")
    times, ref = _reference_frames(path)
    original = decode._packets_decoded
    # Pretend no frame is needed: every non-reference frame is discarded, so picks must be redone.
    monkeypatch.setattr(decode, "_packets_decoded", lambda c, s, t, o, skipped: original(c, s, [], o, skipped))
    clip = load_clip(path, 0.5, 16, 25.0)
    for i in range(16):
        np.testing.assert_array_equal(clip.frames[i].numpy(), ref[12 + i])  # 0.5 s: frame 12 (0.48 s)


def test_better_frame_skipped():
    from mmv_torch.data.media.decode import _better_frame_skipped

    assert _better_frame_skipped([0.5], [0.4], [0.48])  # skipped 0.48 is shown at 0.5, not 0.4
    assert not _better_frame_skipped([0.5], [0.48], [0.4])  # an older frame: not shown
    assert not _better_frame_skipped([0.5], [0.48], [0.52])  # a later frame: not shown yet
    assert _better_frame_skipped([0.5], [0.6], [0.3])  # pick fell back to a later frame; 0.3 was shown


def test_stage_times_cover_the_decoding_stages(tmp_path):
    from mmv_torch.data.media.decode import stage_times

    path = make_video(tmp_path / "v.mp4", num_frames=25, fps=25)
    load_clip(path, 0.0, 4, 10.0)  # outside a block: nothing collected, no error
    with stage_times() as st:
        load_clip(path, 0.2, 4, 10.0)
    assert set(st) == {"open_seek", "video_decode", "convert", "audio_decode"}
    assert all(v > 0 for v in st.values())


def _frame_indices(path):
    return [frame_index_of(f.numpy()) for f in load_clip(path, 0.2, 3, 10.0).frames]


def test_decoding_in_a_forked_child_after_the_parent_decoded(tmp_path):
    # The parent's cached conversion context must not carry threads into a forked DataLoader worker.
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    path = make_video(tmp_path / "v.mp4", num_frames=25, fps=25)
    assert _frame_indices(path) == [5, 7, 10]
    with mp.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_frame_indices, (path,)).get(timeout=60) == [5, 7, 10]


def test_window_after_the_files_end_takes_the_whole_file_and_says_so_once(caplog):
    import logging

    from mmv_torch.data.media.decode import window_span

    assert window_span(10.0, (2.0, 4.0), "a.mp4") == (2.0, 2.0)
    assert window_span(10.0, (8.0, 14.0), "a.mp4") == (8.0, 2.0)  # clipped to the file
    assert window_span(10.0, None, "a.mp4") == (0.0, 10.0)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="mmv_torch.data"):
        assert window_span(10.0, (30.0, 40.0), "precut.mp4") == (0.0, 10.0)
        assert window_span(10.0, (30.0, 40.0), "precut.mp4") == (0.0, 10.0)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "precut.mp4" in logged[0] and "starts after the file's end" in logged[0]
