"""Tiny media files for the data tests, written in-process with PyAV.

Frame ``i`` of every generated video is a flat grey image of level :func:`frame_level` ``(i)``, so a
test can read back which source frame a decoder returned (:func:`frame_index_of`). Audio is a sine
of ``audio_freq`` Hz with the same amplitude on every channel.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVELS = 28


def frame_level(i: int) -> int:
    """Grey level of source frame ``i`` (levels repeat every :data:`LEVELS` frames)."""
    return 20 + 8 * (i % LEVELS)


def frame_index_of(frame: np.ndarray) -> int:
    """Source frame index (mod :data:`LEVELS`) of a decoded uint8 ``[H,W,3]`` frame."""
    return int(round((float(frame.mean()) - 20.0) / 8.0)) % LEVELS


def has_encoder(name: str) -> bool:
    """Whether this PyAV build can encode with codec ``name``."""
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


_AUDIO_FMT = {"aac": "fltp", "libmp3lame": "s16p", "pcm_s16le": "s16", "libopus": "s16", "mp2": "s16",
              "flac": "s16", "libvorbis": "fltp"}


def make_video(
    path: str | Path,
    *,
    num_frames: int = 25,
    fps: int = 25,
    size: tuple[int, int] = (64, 48),
    vcodec: str = "libx264",
    pix_fmt: str = "yuv420p",
    frame_times: list[float] | None = None,
    acodec: str | None = "aac",
    sample_rate: int = 16000,
    channels: int = 1,
    audio_seconds: float | None = None,
    audio_freq: float = 440.0,
    gop: int | None = None,
) -> Path:
    """Write a test video and return its path.

    ``size`` is (width, height). ``frame_times`` (seconds, increasing) gives a variable frame rate:
    frame ``i`` is shown from ``frame_times[i]``. ``acodec=None`` writes no audio stream.
    ``audio_seconds`` defaults to the video length.
    """
    path = Path(path)
    w, h = size
    cfr = frame_times is None
    if frame_times is None:
        frame_times = [i / fps for i in range(num_frames)]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        tb = Fraction(1, fps) if cfr else Fraction(1, 1000)
        vs.time_base = tb
        vs.codec_context.time_base = tb
        if gop is not None:
            vs.codec_context.gop_size = gop
        if vcodec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
        elif vcodec in ("mpeg4", "mjpeg"):
            vs.codec_context.max_b_frames = 0
            vs.codec_context.qmin = 1
            vs.codec_context.qmax = 3
        elif vcodec in ("libvpx-vp9", "libvpx"):
            vs.options = {"crf": "4", "b": "0", "deadline": "realtime", "cpu-used": "8"}
        aus = None
        if acodec is not None:
            layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
            aus = out.add_stream(acodec, rate=sample_rate, layout=layout)
        for i, t in enumerate(frame_times):
            img = np.full((h, w, 3), frame_level(i), np.uint8)
            fr = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
            fr.pts = int(round(t / tb))
            fr.time_base = tb
            for p in vs.encode(fr):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if aus is not None:
            secs = audio_seconds if audio_seconds is not None else frame_times[-1] + 1.0 / fps
            n = int(round(secs * sample_rate))
            tt = np.arange(n) / sample_rate
            sig = (0.5 * np.sin(2 * np.pi * audio_freq * tt)).astype(np.float32)
            fmt = _AUDIO_FMT.get(acodec, "fltp")
            chunk = 1024
            for s in range(0, n, chunk):
                part = np.repeat(sig[None, s:s + chunk], channels, 0)
                if fmt.startswith("s16"):
                    part = (part * 32767).astype(np.int16)
                if not fmt.endswith("p"):
                    part = part.T.reshape(1, -1)
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format=fmt, layout=aus.layout.name)
                fr.sample_rate = sample_rate
                fr.pts = s
                fr.time_base = Fraction(1, sample_rate)
                for p in aus.encode(fr):
                    out.mux(p)
            for p in aus.encode():
                out.mux(p)
    return path


def make_wav(path: str | Path, *, seconds: float = 1.0, sample_rate: int = 8000, channels: int = 1,
             freq: float = 440.0) -> Path:
    """Write a PCM WAV file (no video stream)."""
    path = Path(path)
    with av.open(str(path), "w") as out:
        layout = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}[channels]
        aus = out.add_stream("pcm_s16le", rate=sample_rate, layout=layout)
        n = int(seconds * sample_rate)
        sig = (0.5 * np.sin(2 * np.pi * freq * np.arange(n) / sample_rate) * 32767).astype(np.int16)
        part = np.repeat(sig[None], channels, 0).T.reshape(1, -1)
        fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="s16", layout=layout)
        fr.sample_rate = sample_rate
        fr.pts = 0
        for p in aus.encode(fr):
            out.mux(p)
        for p in aus.encode():
            out.mux(p)
    return path


def truncate(src: str | Path, dst: str | Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst``."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def textured_h264(path, num_frames=75, fps=25, gop=25, size=(96, 64)):
    """Moving random texture, x264 'veryfast' (B frames, some not referenced), key frame every ``gop``."""
    import av

    w, h = size
    rng = np.random.default_rng(1)
    tex = rng.integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.gop_size = gop
        vs.options = {"preset": "veryfast", "crf": "23"}
        for i in range(num_frames):
            img = np.ascontiguousarray(tex[(2 * i) % h:(2 * i) % h + h, (3 * i) % w:(3 * i) % w + w])
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = i
            for p in vs.encode(fr):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
    return path
