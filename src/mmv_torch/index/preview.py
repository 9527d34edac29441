"""Playable previews of videos a browser cannot play (AVI, MKV, MPEG-4 Part 2, ...).

:func:`browser_playable` says whether a file plays as it is in an HTML5 ``<video>`` (an MP4, MOV,
WebM or Ogg container with H.264, VP8, VP9, AV1 or Theora video). Any other indexed file is served as
**segments** of :data:`SEGMENT_S` seconds transcoded on demand by PyAV to H.264 MP4 (at most
:data:`MAX_HEIGHT` pixels high, AAC audio when the file has sound). Segments are cached in a folder
bounded in size (the least recently used go first) and each transcode is bounded in time; the files
themselves are looked up by the server among the index's files under its roots only.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

SEGMENT_S = 30.0
"""Length of a preview segment, seconds (segment ``n`` covers ``[n * SEGMENT_S, (n + 1) * SEGMENT_S)``)."""
MAX_HEIGHT = 360
"""Preview frames are scaled down to at most this height."""
BROWSER_CONTAINERS = {".mp4", ".m4v", ".mov", ".webm", ".ogv", ".ogg"}
BROWSER_CODECS = {"h264", "vp8", "vp9", "av1", "theora"}


class PreviewError(Exception):
    """A preview could not be made; ``str(e)`` says why, in one line."""


def browser_playable(path: str | Path) -> bool:
    """Whether ``path`` plays in a browser as it is (container and video codec, see the module docstring)."""
    import av

    if Path(path).suffix.lower() not in BROWSER_CONTAINERS:
        return False
    try:
        with av.open(str(path)) as c:
            return bool(c.streams.video) and c.streams.video[0].codec_context.name in BROWSER_CODECS
    except (av.FFmpegError, OSError):
        return False


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def transcode_segment(src: str | Path, dst: str | Path, start: float, length: float = SEGMENT_S,
                      max_height: int = MAX_HEIGHT, time_limit_s: float = 120.0) -> None:
    """Write ``length`` seconds of ``src`` from ``start`` to ``dst`` as H.264 MP4 (with AAC audio when
    ``src`` has an audio track). Raises :class:`PreviewError` (undecodable, nothing at ``start``,
    over ``time_limit_s``)."""
    import av

    deadline = time.monotonic() + time_limit_s
    try:
        inp = av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        raise PreviewError(f"cannot open {Path(src).name}: {e}") from None
    try:
        if not inp.streams.video:
            raise PreviewError(f"{Path(src).name} has no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        rate = Fraction(rate).limit_denominator(1000)
        w, h = vin.codec_context.width, vin.codec_context.height
        if h > max_height:
            w, h = w * max_height / h, max_height
        out = av.open(str(dst), "w", format="mp4")
        try:
            vout = out.add_stream("libx264", rate=rate)
            vout.width, vout.height, vout.pix_fmt = _even(w), _even(h), "yuv420p"
            vout.options = {"preset": "veryfast", "crf": "28"}
            aout = fifo = resampler = None
            if ain is not None:
                aout = out.add_stream("aac", rate=44100)
                aout.layout = "stereo"
                resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
                fifo = av.AudioFifo()
            if start > 0:
                inp.seek(int(start / vin.time_base) if vin.time_base else int(start * 1e6), stream=vin,
                         backward=True, any_frame=False)
            end = start + length
            n_video = 0
            a_pts = 0
            streams = [vin] + ([ain] if ain is not None else [])
            done = False
            for packet in inp.demux(*streams):
                if time.monotonic() > deadline:
                    raise PreviewError(f"the preview of {Path(src).name} took over {time_limit_s:g} s")
                try:
                    frames = packet.decode()
                except av.FFmpegError:  # a damaged packet: skipped, as players do
                    continue
                for frame in frames:
                    t = frame.time
                    if t is None or t < start - 1e-3:
                        continue
                    if t >= end:
                        done = done or isinstance(frame, av.VideoFrame)
                        continue
                    if isinstance(frame, av.VideoFrame):
                        f = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
                        f.pts, f.time_base = n_video, Fraction(1, 1) / rate
                        n_video += 1
                        out.mux(vout.encode(f))
                    elif aout is not None:
                        for r in resampler.resample(frame):
                            r.pts = None
                            fifo.write(r)
                        while fifo.samples >= 1024:
                            chunk = fifo.read(1024)
                            chunk.pts, chunk.time_base = a_pts, Fraction(1, 44100)
                            a_pts += 1024
                            out.mux(aout.encode(chunk))
                if done:
                    break
            if n_video == 0:
                raise PreviewError(f"{Path(src).name} has no frames from {start:g} s")
            out.mux(vout.encode(None))
            if aout is not None:
                out.mux(aout.encode(None))
        finally:
            out.close()
    except av.FFmpegError as e:
        raise PreviewError(f"cannot transcode {Path(src).name}: {e}") from None
    finally:
        inp.close()


class PreviewCache:
    """Transcoded segments in ``folder``, at most ``max_mb`` MB in all (least recently used removed
    first). Thread-safe; one transcode per segment at a time."""

    def __init__(self, folder: str | Path, max_mb: float = 512.0, time_limit_s: float = 120.0) -> None:
        self.folder = Path(folder)
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.time_limit_s = time_limit_s
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def segment(self, src: Path, segment: int) -> Path:
        """The cached MP4 of segment ``segment`` of ``src`` (made now when missing or when ``src``
        changed). Raises :class:`PreviewError`."""
        st = src.stat()
        key = hashlib.sha1(f"{src}|{st.st_size}|{st.st_mtime_ns}|{segment}".encode()).hexdigest()[:20]
        path = self.folder / f"{key}.mp4"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if path.is_file():
                os.utime(path)
                return path
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{key}.{os.getpid()}.{threading.get_ident()}.mp4"
            try:
                transcode_segment(src, tmp, segment * SEGMENT_S, SEGMENT_S, time_limit_s=self.time_limit_s)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        self._evict(keep=path)
        return path

    def _evict(self, keep: Path) -> None:
        files = sorted((p for p in self.folder.glob("*.mp4")), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.max_bytes:
                break
            if p != keep:
                total -= p.stat().st_size
                p.unlink(missing_ok=True)
