"""Shot boundaries from frame differences (:mod:`mmv_torch.data.media.shots`) on synthetic videos whose
cuts are known, and windows within shots (:func:`mmv_torch.index.embedding.shot_windows`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmv_torch.data.media.decode import DecodeError
from mmv_torch.data.media.shots import cuts_from_changes, detect_shots, frame_changes, shot_bounds


def shots_video(path: Path, cut_frames: list[int], num_frames: int = 40, fps: int = 10, seed: int = 0,
                flicker: bool = False) -> Path:
    """A 64x48 mpeg4 video: each shot a random picture of its own drifting one pixel a frame (a pan), cut at
    ``cut_frames``; with ``flicker`` every frame's brightness jumps by a random step too."""
    import av

    rng = np.random.default_rng(seed)
    edges = [0, *cut_frames, num_frames]
    with av.open(str(path), "w") as out:
        st = out.add_stream("mpeg4", rate=fps)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        for a, b in zip(edges, edges[1:]):
            scene = rng.integers(0, 256, (48, 128, 3), dtype=np.uint8)
            scene = np.repeat(np.repeat(scene[::8, ::8], 8, 0), 8, 1)  # blocks survive the encoder
            for i in range(b - a):
                img = scene[:, i:i + 64].astype(np.int16)
                if flicker:
                    img = img + int(rng.integers(-12, 13))
                frame = av.VideoFrame.from_ndarray(np.clip(img, 0, 255).astype(np.uint8), format="rgb24")
                for pkt in st.encode(frame):
                    out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    return path


def test_cuts_are_found_at_the_cut_frames(tmp_path: Path) -> None:
    video = shots_video(tmp_path / "three.mp4", [15, 27])
    shots = detect_shots(video, 4.0)
    assert [(round(a, 2), round(b, 2)) for a, b in shots] == [(0.0, 1.5), (1.5, 2.7), (2.7, 4.0)]


def test_a_pan_and_flicker_are_not_cuts(tmp_path: Path) -> None:
    video = shots_video(tmp_path / "one.mp4", [], flicker=True)
    times, changes = frame_changes(video)
    assert len(times) == 40 and changes[1:].max() > 0  # the frames do change
    assert detect_shots(video, 4.0) == [(0.0, 4.0)]


def test_cuts_closer_than_the_minimum_shot_are_merged() -> None:
    times = np.arange(20) / 10
    changes = np.full(20, 1.0)
    changes[[7, 9, 15]] = 50.0
    assert cuts_from_changes(times, changes, min_shot_s=0.6) == [0.7, 1.5]
    assert cuts_from_changes(times, changes, min_shot_s=0.1) == [0.7, 0.9, 1.5]
    assert shot_bounds([0.5, 1.5, 9.0], 2.0) == [(0.0, 0.5), (0.5, 1.5), (1.5, 2.0)]


def test_a_file_without_decodable_video_is_a_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError):
        detect_shots(bad, 1.0)


def test_windows_lie_within_shots_and_a_short_shot_gets_one_centred_window() -> None:
    from mmv_torch.index.embedding import shot_windows

    wins = shot_windows([(0.0, 2.7), (2.7, 3.2), (3.2, 5.2)], 5.2, 1.0, 1.0)
    assert [(w.start, w.end, w.decode_start) for w in wins] == [
        (0.0, 1.0, 0.0), (1.0, 2.0, 1.0), (1.7, 2.7, 1.7),  # the last one ends at the shot's end
        (2.7, 3.2, 2.45),  # shorter than a window: stands for the shot, its input centred on it
        (3.2, 4.2, 3.2), (4.2, 5.2, 4.2)]
    # a short shot at the video's end: the input stays within the video
    assert [(w.start, w.end, w.decode_start) for w in shot_windows([(0.0, 1.8), (1.8, 2.0)], 2.0, 1.0, 1.0)] == [
        (0.0, 1.0, 0.0), (0.8, 1.8, 0.8), (1.8, 2.0, 1.0)]
