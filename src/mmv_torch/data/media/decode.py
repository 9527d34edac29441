"""Decoding video clips and their audio with PyAV.

:func:`load_clip` reads ``num_frames`` frames sampled by timestamp at a target frame rate, starting at
``start_s`` seconds, plus mono float32 audio of a window centred on the clip, at a target sample rate:

- frames: uint8 ``[T, H, W, 3]`` (RGB). Frame ``i`` is the source frame *shown* at time
  ``start_s + i / fps`` (the last frame whose timestamp is ``<=`` that time), so variable frame rate
  sources are sampled correctly and any source rate maps to the target rate.
- audio: float32 ``[S]`` with ``S = round(audio_seconds * sample_rate)``; channels are averaged
  (1-8 channels, any layout), any source rate is resampled (band-limited, by FFT). Without an audio
  stream the audio is zeros and ``has_audio`` is False.
- Clips running past the end of the video loop back to its start, as the official sampler tiles a
  frame sequence that is too short; audio loops the same way.
- Decoding seeks to the key frame before ``start_s``; it never decodes the whole file. Frames that
  no other frame references (e.g. H.264 non-reference B frames) and that are not shown at any
  sampled time are discarded by the decoder unseen (``skip_frame``); the picked frames are checked
  afterwards and the span is decoded again in full in the rare case a discarded frame would have
  been picked, so the result is always the frame-exact one.
- Only the picked frames are converted to RGB, by one libswscale context per thread (creating a
  context per frame costs more than the conversion), straight into the clip's uint8 tensor. Frames
  keep the source size: resizing is left to the transforms (libswscale's bilinear scaler measured
  ~10x slower than torch's uint8 bilinear kernel on 320x240 -> 299x224).
- :func:`load_clips` returns the clips of several starts of one file from one opened container, bit-equal to
  :func:`load_clip` per start: windows at most ``MAX_GAP_S`` apart share one decoding pass.
- :func:`stage_times` collects the seconds spent per stage (``open_seek``, ``video_decode``,
  ``convert``, ``audio_decode``) for benchmarks.

Errors (missing, empty, corrupt, truncated files, files without a video stream or without a
decodable frame) raise :class:`DecodeError`, which names the file and the reason.
``src`` may be a path or the encoded file's bytes (as read from a tar shard).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.data.media.audio_frames import MonoMix

Source = str | os.PathLike | bytes
logger = logging.getLogger(__name__)
_EPS = 1e-4  # seconds: a frame stamped this little after a target time still counts as shown at it
_STAGES: dict[str, float] | None = None  # stage -> seconds, while stage_times() is active
_LOCAL = threading.local()  # one libswscale context per thread
_WHOLE_FILE_WARNED: set[str] = set()  # files whose window starts after their end (warned once)


@contextlib.contextmanager
def stage_times() -> Iterator[dict[str, float]]:
    """Within the block, accumulate the seconds this process spends per decoding stage into the yielded dict.

    Stages: ``open_seek`` (opening the container, seeking), ``video_decode`` (demuxing and decoding
    video packets), ``convert`` (RGB conversion of the picked frames into the clip tensor),
    ``audio_decode`` (audio seek, decode, mono mix and resampling). Callers may add their own stages
    with :func:`add_stage_time`. Not thread-safe: meant for single-threaded benchmark loops.
    """
    global _STAGES
    previous, _STAGES = _STAGES, {}
    try:
        yield _STAGES
    finally:
        _STAGES = previous


def add_stage_time(stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage`` when a :func:`stage_times` block is active (else do nothing)."""
    if _STAGES is not None:
        _STAGES[stage] = _STAGES.get(stage, 0.0) + seconds


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Count the wall time of the block towards ``stage`` (see :func:`stage_times`)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        add_stage_time(stage, time.perf_counter() - t0)


class DecodeError(Exception):
    """A media file cannot be decoded. ``path`` names the file, ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across DataLoader workers
        return (DecodeError, (self.path, self.reason))


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` finds in a file's headers (no frame decoded)."""

    duration: float
    """Seconds (container duration, else the longest stream's); 0.0 when unknown."""
    fps: float
    """Average video frame rate; 0.0 when there is no video stream."""
    has_video: bool
    """The file has a video stream."""
    has_audio: bool
    """The file has an audio stream."""
    width: int = 0
    """Video width in pixels."""
    height: int = 0
    """Video height in pixels."""
    video_codec: str = ""
    """Video codec name."""
    audio_codec: str = ""
    """Audio codec name."""
    sample_rate: int = 0
    """Audio sample rate in Hz."""
    channels: int = 0
    """Audio channels."""


@dataclass(frozen=True)
class Clip:
    """A decoded clip. ``frames`` uint8 ``[T,H,W,3]``; ``audio`` float32 ``[S]`` (mono)."""

    frames: torch.Tensor
    audio: torch.Tensor
    has_audio: bool
    start_s: float
    """Clip start in seconds (from the first video timestamp; audio times use the same origin)."""
    fps: float
    """Frame rate the frames were sampled at."""
    sample_rate: int
    """Audio sample rate."""
    audio_start_s: float
    """Start of the audio window in seconds."""


def _name(src: Source) -> str:
    if isinstance(src, bytes | bytearray):
        return f"<{len(src)} bytes>"
    return str(src)


@contextlib.contextmanager
def _decode_errors(label: str, container: Any) -> Iterator[None]:
    """Turn PyAV, EOF and OS errors inside the block into :class:`DecodeError`; always close ``container``."""
    import av

    try:
        yield
    except (av.FFmpegError, EOFError, OSError) as e:
        raise DecodeError(label, f"{type(e).__name__}: {e}") from e
    finally:
        container.close()


def _open(src: Source, name: str | None = None) -> Any:
    """Open ``src`` with PyAV, raising :class:`DecodeError` for unreadable input."""
    import av

    label = name or _name(src)
    if isinstance(src, bytes | bytearray):
        if len(src) == 0:
            raise DecodeError(label, "empty file (0 bytes)")
        file: Any = io.BytesIO(bytes(src))
    else:
        p = Path(src)
        if not p.exists():
            raise DecodeError(label, "file does not exist")
        if p.is_dir():
            raise DecodeError(label, "is a directory")
        if p.stat().st_size == 0:
            raise DecodeError(label, "empty file (0 bytes)")
        file = str(p)
    try:
        return av.open(file, "r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise DecodeError(label, f"cannot open container: {e}") from e


def probe(src: Source, name: str | None = None) -> MediaInfo:
    """Read a media file's headers: duration, frame rate, audio presence, sizes and codecs."""
    container = _open(src, name)
    try:
        return _info(container)
    finally:
        container.close()


def _stream_seconds(stream: Any) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return 0.0


def _info(container: Any) -> MediaInfo:
    vs = container.streams.video[0] if container.streams.video else None
    aus = container.streams.audio[0] if container.streams.audio else None
    duration = container.duration / 1e6 if container.duration else 0.0
    if duration <= 0:
        duration = max([_stream_seconds(s) for s in container.streams] + [0.0])
    fps = 0.0
    if vs is not None:
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
    return MediaInfo(
        duration=float(duration),
        fps=fps,
        has_video=vs is not None,
        has_audio=aus is not None,
        width=int(vs.codec_context.width) if vs is not None else 0,
        height=int(vs.codec_context.height) if vs is not None else 0,
        video_codec=vs.codec_context.name if vs is not None else "",
        audio_codec=aus.codec_context.name if aus is not None else "",
        sample_rate=int(aus.codec_context.sample_rate or 0) if aus is not None else 0,
        channels=int(aus.codec_context.channels or 0) if aus is not None else 0,
    )


def _start_time(stream: Any) -> float:
    if stream.start_time is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _seek(container: Any, stream: Any, t_abs: float) -> None:
    """Seek ``stream`` to the key frame at or before absolute time ``t_abs`` seconds."""
    offset = int(math.floor(t_abs / stream.time_base)) if stream.time_base else 0
    container.seek(max(offset, 0), stream=stream, backward=True, any_frame=False)


def _packets_decoded(container: Any, stream: Any, times: list[float], origin: float, skipped: list[float]
                     ) -> Iterator[Any]:
    """Decoded frames of ``stream`` from the current position; non-reference frames that show at none
    of ``times`` are discarded by the decoder, and their times (relative to ``origin``) go to ``skipped``
    (frames that turn out to be references are decoded anyway: check against the output)."""
    ctx = stream.codec_context
    tb = float(stream.time_base) if stream.time_base else 0.0  # float: Fraction arithmetic per packet is slow
    default_gap = 1.0 / float(stream.average_rate) if stream.average_rate else 0.04
    mode = "DEFAULT"
    try:
        for packet in container.demux(stream):
            want = "DEFAULT"
            if packet.pts is not None and tb:
                t = packet.pts * tb - origin
                gap = packet.duration * tb if packet.duration else default_gap
                i = bisect.bisect_left(times, t - _EPS)
                if not (i < len(times) and times[i] <= t + 1.5 * gap):  # shown at no sampled time
                    want = "NONREF"
                    skipped.append(t)
            if want != mode:
                ctx.skip_frame = mode = want
            yield from packet.decode()
    finally:
        if mode != "DEFAULT":
            ctx.skip_frame = "DEFAULT"


def _sample_video(container: Any, stream: Any, times: list[float], origin: float, skip: bool = True
                  ) -> tuple[list[Any], float | None]:
    """Frames shown at each of the increasing relative ``times`` (seconds after ``origin``).

    Returns one entry per time (a decoded frame, or None when the time is past the end of the
    video) and the video's end time when the end was reached (else None). With ``skip``, frames
    shown at no sampled time are not decoded where the codec allows; if one of them would have been
    picked (possible only with irregular timestamps), the span is decoded again without skipping.
    """
    out: list[Any] = [None] * len(times)
    picked = [math.inf] * len(times)
    with timed("open_seek"):
        _seek(container, stream, origin + times[0])
    t_start = time.perf_counter()
    skipped: list[float] = []
    frames = (_packets_decoded(container, stream, times, origin, skipped) if skip
              else container.decode(stream))
    seen: set[float] = set()
    j = 0
    prev = None
    prev_t = 0.0
    last_gap = 0.0
    end: float | None = None
    tb = float(stream.time_base) if stream.time_base else 0.0  # as in _packets_decoded: equal floats
    for frame in frames:
        if frame.pts is None:
            continue
        t = frame.pts * tb - origin if tb else float(frame.time) - origin
        seen.add(t)
        while j < len(times) and times[j] < t - _EPS:
            out[j], picked[j] = (prev, prev_t) if prev is not None else (frame, t)  # seek landed late: first frame
            j += 1
        if prev is not None and t > prev_t:
            last_gap = t - prev_t
        prev, prev_t = frame, t
        if j == len(times):
            break
    else:
        if prev is not None:
            dur = float(prev.duration * prev.time_base) if prev.duration and prev.time_base else 0.0
            end = prev_t + (dur or last_gap or (1.0 / float(stream.average_rate) if stream.average_rate else 0.04))
            while j < len(times) and times[j] < end:
                out[j], picked[j] = prev, prev_t
                j += 1
    if skip:
        frames.close()  # restores skip_frame now, before any other decoding of this stream
    add_stage_time("video_decode", time.perf_counter() - t_start)
    missing = [s for s in skipped if s not in seen]
    if missing and (end is not None or _better_frame_skipped(times, picked, missing)):
        return _sample_video(container, stream, times, origin, skip=False)
    return out, end


def _better_frame_skipped(times: list[float], picked: list[float], skipped: list[float]) -> bool:
    """Whether a skipped frame time would have been picked instead of ``picked[j]`` for some ``times[j]``."""
    for t, p in zip(times, picked):
        for s in skipped:
            if s <= t + _EPS and (p > t + _EPS or s > p):
                return True
    return False


def _rgb(frame: Any, width: int, height: int) -> np.ndarray:
    """``frame`` as uint8 RGB ``[height, width, 3]`` through this thread's libswscale context."""
    # One thread (no libswscale thread pool: a pool copied into a forked DataLoader worker deadlocks
    # there), and a fresh context in every new process for the same reason.
    cached = getattr(_LOCAL, "reformatter", None)
    if cached is None or cached[0] != os.getpid():
        from av.video.reformatter import VideoReformatter

        cached = _LOCAL.reformatter = (os.getpid(), VideoReformatter())
    return cached[1].reformat(frame, width, height, format="rgb24", threads=1).to_ndarray()


def _window_groups(wins: list[list[float]], max_gap: float) -> list[list[float]]:
    """Sorted unique times of windows that one decoding pass serves: a window joins the previous group when
    its first time is at most ``max_gap`` seconds after the group's last time."""
    groups: list[list[float]] = []
    for w in sorted(wins, key=lambda ts: ts[0]):
        if groups and w[0] <= groups[-1][-1] + max_gap:
            groups[-1] = sorted(set(groups[-1]) | set(w))
        else:
            groups.append(sorted(set(w)))
    return groups


def _load_frames(container: Any, stream: Any, name: str, starts: Sequence[float], num_frames: int, fps: float,
                 max_gap: float) -> list[torch.Tensor]:
    """Each window's frames (uint8 ``[T,H,W,3]``); near windows share one decoding pass (:func:`load_clips`)."""
    origin = _start_time(stream)
    wins = [[s + i / fps for i in range(num_frames)] for s in starts]
    lookup: dict[float, Any] = {}
    for times in _window_groups(wins, max_gap):
        frames, end = _sample_video(container, stream, times, origin)
        lookup.update(zip(times, frames))
        missing = [t for t, f in zip(times, frames) if f is None]
        if missing:
            if end is None or end <= 0:
                raise DecodeError(name, "no decodable video frame")
            # Past the end: loop back to the start, like the official sampler tiles short sequences.
            wrapped = sorted({t % end for t in missing})
            again = dict(zip(wrapped, _sample_video(container, stream, wrapped, origin)[0]))
            lookup.update((t, again[t % end]) for t in missing)
            if any(lookup[t] is None for t in missing):
                raise DecodeError(name, "no decodable video frame after seeking back to the start")
    out = []
    with timed("convert"):
        rgb: dict[int, np.ndarray] = {}  # frame -> its RGB pixels, converted once for all windows
        for times in wins:
            frames = [lookup[t] for t in times]
            width, height = frames[0].width, frames[0].height  # a mid-clip size change is scaled to the first
            clip = torch.empty((num_frames, height, width, 3), dtype=torch.uint8)
            dst = clip.numpy()
            for i, f in enumerate(frames):
                px = rgb.get(id(f))
                if px is None or px.shape[:2] != (height, width):
                    px = rgb[id(f)] = _rgb(f, width, height)
                dst[i] = px
            out.append(clip)
    return out


def _read_audio(container: Any, stream: Any, t0: float, t1: float | None, origin: float | None = None
                ) -> tuple[np.ndarray, float, int]:
    """Mono samples from about time ``t0`` to ``t1`` (None: to the end), in seconds after ``origin``
    (default: the audio stream's start; ``load_clip`` passes the video stream's start, so audio and
    frames share one clock).

    Returns (samples float32 [S], time of the first sample, native sample rate).
    """
    origin = _start_time(stream) if origin is None else origin
    _seek(container, stream, origin + max(t0, 0.0))
    mix = MonoMix()
    first_t: float | None = None
    rate = int(stream.codec_context.sample_rate or 0)
    expected_t: float | None = None
    for frame in container.decode(stream):
        rate = frame.sample_rate or rate
        t = float(frame.time) - origin if frame.time is not None else expected_t
        if t is None:
            t = 0.0
        mix.add(frame)
        if first_t is None:
            first_t = t
        expected_t = t + frame.samples / rate
        if t1 is not None and expected_t >= t1:
            break
    if first_t is None:
        return np.zeros(0, np.float32), 0.0, rate
    return mix.result(), first_t, rate


def resample(x: np.ndarray, rate_in: int, rate_out: int, num_out: int | None = None) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by FFT (truncating or zero-padding the spectrum).

    ``x`` float ``[S]`` at ``rate_in`` → float32 ``[num_out]`` (default ``round(S*rate_out/rate_in)``).
    The signal is treated as periodic, so the first and last few samples may ring slightly.
    """
    n_in = len(x)
    n_out = int(round(n_in * rate_out / rate_in)) if num_out is None else int(num_out)
    if n_in == 0 or n_out == 0:
        return np.zeros(n_out, np.float32)
    if n_out == n_in:
        return x.astype(np.float32)
    spec = np.fft.rfft(x.astype(np.float64))
    k_out = n_out // 2 + 1
    new = np.zeros(k_out, np.complex128)
    k = min(k_out, len(spec))
    new[:k] = spec[:k]
    # The Nyquist bin of an even-length signal is shared: halve it when it is cut or created.
    if n_out < n_in and n_out % 2 == 0:
        new[k_out - 1] = new[k_out - 1].real
    if n_in < n_out and n_in % 2 == 0:
        new[len(spec) - 1] *= 0.5
    y = np.fft.irfft(new, n_out) * (n_out / n_in)
    return y.astype(np.float32)


def _load_audio(container: Any, stream: Any, a_start: float, seconds: float, sample_rate: int,
                origin: float | None = None) -> np.ndarray:
    n_out = int(round(seconds * sample_rate))
    samples, first_t, rate = _read_audio(container, stream, a_start, a_start + seconds, origin)
    if rate <= 0:
        return np.zeros(n_out, np.float32)
    n_native = int(round(seconds * rate))
    off = int(round((a_start - first_t) * rate))
    window = samples[max(off, 0):max(off, 0) + n_native]
    if off < 0:  # stream starts after the window start: leading silence
        window = np.concatenate([np.zeros(-off, np.float32), samples[: n_native + off]])
    if len(window) < n_native:
        # Past the end of the audio: loop from the start of the track, like the video frames.
        track, t_first, _ = _read_audio(container, stream, 0.0, None, origin)
        lead = int(round(t_first * rate))  # make track[0] the sample at time 0
        track = np.concatenate([np.zeros(lead, np.float32), track]) if lead >= 0 else track[-lead:]
        if len(track) == 0:
            return np.zeros(n_out, np.float32)
        start = int(round(a_start * rate))
        idx = (start + np.arange(n_native)) % len(track)
        window = track[idx]
    return resample(window, rate, sample_rate, n_out)


def _window_audio(container: Any, src: Source, label: str, a_start: float, seconds: float, sample_rate: int,
                  origin: float) -> np.ndarray:
    """A window's audio from ``container``, or (None) from a freshly opened one. Audio decoders (AAC, MP3) keep
    state across a seek and containers with millisecond timestamps place the samples by the first frame
    decoded, so only a fresh container gives, bit for bit, what :func:`load_clip` gives."""
    if container is not None:
        with timed("audio_decode"):
            return _load_audio(container, container.streams.audio[0], a_start, seconds, sample_rate, origin=origin)
    with timed("open_seek"):
        fresh = _open(src, label)
    with _decode_errors(label, fresh), timed("audio_decode"):
        return _load_audio(fresh, fresh.streams.audio[0], a_start, seconds, sample_rate, origin=origin)


def load_clip(
    src: Source,
    start_s: float,
    num_frames: int,
    fps: float,
    sample_rate: int = 16000,
    audio_seconds: float | None = None,
    load_audio: bool = True,
    name: str | None = None,
    threads: int = 1,
) -> Clip:
    """Decode ``num_frames`` frames at ``fps`` from ``start_s`` seconds, and the audio around them.

    Args:
        src: file path or the file's bytes.
        start_s: clip start, seconds after the first video timestamp (>= 0).
        num_frames: T, frames to return.
        fps: sampling rate of the frames (source frames are picked by timestamp).
        sample_rate: audio rate of the returned samples.
        audio_seconds: audio window length; None means the clip length ``num_frames / fps``. The
            window is centred on the clip, moved right so that it starts at 0 or later.
        load_audio: False skips audio decoding (audio zeros; ``has_audio`` still tells whether
            the file has an audio stream).
        name: how to call the file in errors (default: the path).
        threads: decoder threads for the video stream.

    Returns:
        :class:`Clip` with frames uint8 ``[T,H,W,3]`` and audio float32 ``[S]``,
        ``S = round(audio_seconds * sample_rate)``.

    Raises:
        DecodeError: the file is missing, empty, corrupt, truncated, has no video stream or no
            decodable frame.
        ValueError: invalid arguments.
    """
    return load_clips(src, [start_s], num_frames, fps, sample_rate, audio_seconds, load_audio, name, threads)[0]


MAX_GAP_S = 2.0
""":func:`load_clips` decodes on from one window to the next when the gap between them is at most this many
seconds, and seeks otherwise: decoding 2 s of frames costs about what the run-up from a key frame costs in
sources with 2-s or longer key frame intervals."""


def load_clips(
    src: Source,
    starts: Sequence[float],
    num_frames: int,
    fps: float,
    sample_rate: int = 16000,
    audio_seconds: float | None = None,
    load_audio: bool = True,
    name: str | None = None,
    threads: int = 1,
    max_gap: float = MAX_GAP_S,
) -> list[Clip]:
    """Several clips of one file, one per start (in the given order): the clips that :func:`load_clip`
    would return for each start, bit for bit, from one opened container. Windows that overlap or lie at
    most ``max_gap`` seconds apart are decoded in one pass (frames they share are decoded and converted
    once); farther ones are reached by seeking. The audio of each window after the first is read through a
    freshly opened container (see :func:`_window_audio`). Arguments and errors as :func:`load_clip`."""
    if num_frames <= 0 or fps <= 0 or sample_rate <= 0:
        raise ValueError(f"num_frames, fps and sample_rate must be > 0, got {num_frames}, {fps}, {sample_rate}")
    starts = [float(s) for s in starts]
    if not starts or any(s < 0 or not math.isfinite(s) for s in starts):
        raise ValueError(f"starts must be one or more finite numbers >= 0, got {starts}")
    label = name or _name(src)
    span = num_frames / fps
    a_secs = span if audio_seconds is None else float(audio_seconds)
    if a_secs <= 0:
        raise ValueError(f"audio_seconds must be > 0, got {audio_seconds}")
    with timed("open_seek"):
        container = _open(src, label)
    with _decode_errors(label, container):
        if not container.streams.video:
            raise DecodeError(label, "no video stream")
        vs = container.streams.video[0]
        vs.thread_type = "AUTO" if threads > 1 else "SLICE"
        vs.codec_context.thread_count = threads
        videos = _load_frames(container, vs, label, starts, num_frames, fps, max_gap)
        has_audio = bool(container.streams.audio)
        clips = []
        for k, (start_s, frames) in enumerate(zip(starts, videos)):
            a_start = max(0.0, start_s + span / 2 - a_secs / 2)
            audio = np.zeros(int(round(a_secs * sample_rate)), np.float32)
            if has_audio and load_audio:
                audio = _window_audio(container if k == 0 else None, src, label, a_start, a_secs, sample_rate,
                                      _start_time(vs))
            clips.append(Clip(frames=frames, audio=torch.from_numpy(np.ascontiguousarray(audio)), has_audio=has_audio,
                              start_s=start_s, fps=float(fps), sample_rate=int(sample_rate),
                              audio_start_s=float(a_start)))
    return clips


def load_audio(
    src: Source,
    start_s: float,
    seconds: float,
    sample_rate: int = 16000,
    name: str | None = None,
) -> torch.Tensor:
    """Mono float32 audio ``[S]``, ``S = round(seconds * sample_rate)``, from ``start_s`` of a file's
    first audio stream (audio-only files such as WAV included); loops past the end of the track.

    Raises :class:`DecodeError` when the file cannot be read or has no audio stream.
    """

    if seconds <= 0 or sample_rate <= 0 or start_s < 0:
        raise ValueError(f"need seconds > 0, sample_rate > 0, start_s >= 0; got {seconds}, {sample_rate}, "
                         f"{start_s}")
    label = name or _name(src)
    container = _open(src, label)
    with _decode_errors(label, container):
        if not container.streams.audio:
            raise DecodeError(label, "no audio stream")
        stream = container.streams.audio[0]
        audio = _load_audio(container, stream, float(start_s), float(seconds), int(sample_rate))
        if not np.any(audio) and _read_audio(container, stream, 0.0, None)[0].size == 0:
            raise DecodeError(label, "no decodable audio")
    return torch.from_numpy(np.ascontiguousarray(audio))


def load_image(src: Source, name: str | None = None) -> torch.Tensor:
    """Decode a still image (any format FFmpeg reads) to uint8 ``[H,W,3]``."""

    label = name or _name(src)
    container = _open(src, label)
    with _decode_errors(label, container):
        if not container.streams.video:
            raise DecodeError(label, "no image stream")
        for frame in container.decode(video=0):
            return torch.from_numpy(frame.to_ndarray(format="rgb24"))
        raise DecodeError(label, "no decodable image")


def window_span(duration: float, window: tuple[float, float] | None, where: str = "") -> tuple[float, float]:
    """``(offset, length)`` seconds of the part of a ``duration``-second file that samples come from: the
    manifest's window clipped to the file, or the whole file (also when the window starts at or after
    the file's end: the file is then taken as the segment, already cut; logged once per ``where``)."""
    if window is None:
        return 0.0, duration
    if window[0] >= duration:
        if where not in _WHOLE_FILE_WARNED:
            _WHOLE_FILE_WARNED.add(where)
            logger.warning("%s: the window %.2f-%.2f s starts after the file's end (%.2f s): the whole file is "
                           "taken as the segment (a pre-cut file?)", where or "a file", window[0], window[1],
                           duration)
        return 0.0, duration
    return window[0], min(window[1], duration) - window[0]
