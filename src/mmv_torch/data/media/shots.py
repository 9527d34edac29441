"""Shot boundaries of a video from PyAV frame differences.

Every frame of the first video stream is decoded and scaled to a small ``(SIZE x SIZE)`` picture in
HSV-like terms (its luma and two chroma planes: ``yuv444p``); a frame's *content change* is the mean
absolute difference of those planes from the previous frame's, on 0..255. A cut lies before a frame
whose change is above ``threshold`` and above ``ratio`` times the median change of the frames around it
(so that a fast pan or a flickering scene, where every frame differs a lot, is not cut at every frame),
and at least ``min_shot_s`` after the previous cut. This is PySceneDetect's content detector with an
adaptive term (its ``AdaptiveDetector``), measured against it in ``docs/search.md``
(``benchmarks/bench_shots.py``): on seven sample videos it finds the same 17 cuts (and one more in a
damaged file), without OpenCV, in about the same time or less.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmv_torch.data.media.decode import DecodeError, _decode_errors, _open, _start_time

SIZE = 32
"""Frames are compared as ``SIZE x SIZE`` pictures."""
THRESHOLD = 10.0
"""A cut needs a content change above this (0..255)."""
RATIO = 3.0
"""... and above this many times the median change of the :data:`CONTEXT` frames on either side."""
CONTEXT = 6
MIN_SHOT_S = 0.6
"""A cut closer than this to the previous one (or to the first frame) is dropped."""


def frame_changes(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(times, changes)``: each decoded frame's time (seconds from the stream start) and its content
    change from the previous frame (0 for the first), both ``(N,)``. Raises :class:`DecodeError` for a
    file without a decodable video frame."""
    label = str(path)
    container = _open(path, label)
    times: list[float] = []
    changes: list[float] = []
    with _decode_errors(label, container):
        if not container.streams.video:
            raise DecodeError(label, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO"
        origin = _start_time(vs)
        prev: np.ndarray | None = None
        for frame in container.decode(vs):
            if frame.pts is None:
                continue
            planes = frame.reformat(width=SIZE, height=SIZE, format="yuv444p").to_ndarray().astype(np.int16)
            changes.append(0.0 if prev is None else float(np.abs(planes - prev).mean()))
            times.append(float(frame.pts * vs.time_base) - origin)
            prev = planes
    if not times:
        raise DecodeError(label, "no decodable video frame")
    order = np.argsort(times, kind="stable")
    return np.asarray(times)[order], np.asarray(changes)[order]


def cuts_from_changes(times: np.ndarray, changes: np.ndarray, threshold: float = THRESHOLD, ratio: float = RATIO,
                      min_shot_s: float = MIN_SHOT_S) -> list[float]:
    """The cut times (seconds, ascending) that ``changes`` (``(N,)``, one per frame at ``times``) show by the
    rule of the module docstring."""
    cuts: list[float] = []
    last = float(times[0]) if len(times) else 0.0
    for i in range(1, len(changes)):
        c = float(changes[i])
        if c <= threshold:
            continue
        around = np.concatenate([changes[max(1, i - CONTEXT):i], changes[i + 1:i + 1 + CONTEXT]])
        if around.size and c <= ratio * float(np.median(around)):
            continue
        if times[i] - last >= min_shot_s:
            cuts.append(round(float(times[i]), 6))
            last = float(times[i])
    return cuts


def shot_bounds(cuts: list[float], duration: float) -> list[tuple[float, float]]:
    """``[(start, end), ...]``: the shots of a ``duration``-second video cut at ``cuts`` (one shot, the
    whole video, without cuts)."""
    edges = [0.0] + [c for c in cuts if 0.0 < c < duration] + [float(duration)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def detect_shots(path: str | Path, duration: float, threshold: float = THRESHOLD, ratio: float = RATIO,
                 min_shot_s: float = MIN_SHOT_S) -> list[tuple[float, float]]:
    """The shots ``[(start, end), ...]`` (seconds from the first video frame, covering ``[0, duration]``)
    of the video at ``path``. Raises :class:`DecodeError` when its video cannot be decoded."""
    times, changes = frame_changes(path)
    return shot_bounds(cuts_from_changes(times, changes, threshold, ratio, min_shot_s), duration)
