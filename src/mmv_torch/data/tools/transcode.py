"""``mmv-torch data transcode``: re-encode the videos of a manifest for fast training-time decoding.

Every video of a JSONL manifest (pretraining or labelled, key ``"video"``) is re-encoded to H.264 in
MP4 (libx264, as shipped with PyAV): the short side scaled down to ``short_side`` (never up; even
sizes), optionally a new constant frame rate, and a key frame every ``keyframe_interval`` seconds.
Random clip sampling seeks to the key frame before each clip and decodes every frame from there, so
dense key frames cut the decode work per clip (and a smaller frame cuts the rest).

Timestamps are kept (a frame shown at ``t`` in the source is shown at ``t`` in the output; with a new
frame rate, each output frame repeats the source frame of its time slot), so ``start``/``end``
windows and narration times of the manifest stay valid. Audio is copied when it is AAC or MP3, else
re-encoded to AAC at its source rate and channel layout.

Outputs mirror the manifest's relative paths under the output folder (suffix ``.mp4``; files outside
the manifest's folder go to ``_external/``). Each output is written atomically and stamped (MP4
``comment`` metadata) with the options and the source's size and modification time: a rerun skips
outputs whose stamp matches, so a killed run resumes where it stopped, and changed options or
sources are redone. Files that cannot be decoded are reported and left out of the new manifest.
The new manifest (same file name, in the output folder, paths relative to it) and a JSON report
are written at the end.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mmv_torch.fileio import atomic_write, atomic_write_text, remove_temporaries

COPY_AUDIO = ("aac", "mp3")
"""Audio codecs copied as they are (MP4 holds them); any other is re-encoded to AAC."""

REPORT_NAME = "transcode_report.json"


@dataclass(frozen=True)
class TranscodeOptions:
    """What the outputs look like: ``short_side`` pixels (None: keep the size), ``fps`` (None: keep the
    source's frame times), a key frame every ``keyframe_interval`` seconds, libx264 ``crf`` and
    ``preset``."""

    short_side: int | None = 256
    fps: float | None = None
    keyframe_interval: float = 0.5
    crf: int = 23
    preset: str = "veryfast"

    def __post_init__(self) -> None:
        if self.short_side is not None and self.short_side < 2:
            raise ValueError(f"short side {self.short_side} must be at least 2 pixels")
        if self.fps is not None and not 0 < self.fps <= 240:
            raise ValueError(f"fps {self.fps} must be in (0, 240]")
        if not 0 < self.keyframe_interval <= 60:
            raise ValueError(f"key frame interval {self.keyframe_interval} s must be in (0, 60]")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf {self.crf} must be in [0, 51]")
        presets = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
        if self.preset not in presets:
            raise ValueError(f"unknown x264 preset {self.preset!r}; valid: {list(presets)}")


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled down to ``short_side`` (never up), both even."""
    scale = 1.0 if short_side is None else min(1.0, short_side / min(width, height))
    w, h = (max(2, int(round(n * scale / 2)) * 2) for n in (width, height))
    return w, h


def _stamp(src: Path, opts: TranscodeOptions) -> str:
    st = src.stat()
    return json.dumps({"mmv_torch_transcode": asdict(opts), "source_bytes": st.st_size,
                       "source_mtime_ns": st.st_mtime_ns}, sort_keys=True)


def is_done(src: Path, dst: Path, opts: TranscodeOptions) -> bool:
    """Whether ``dst`` is a complete output of ``src`` with ``opts`` (its stamp matches)."""
    import av

    if not dst.is_file():
        return False
    try:
        with av.open(str(dst)) as c:
            return c.metadata.get("comment") == _stamp(src, opts)
    except (av.FFmpegError, OSError, ValueError):
        return False


class _FrameRate:
    """Constant-rate output: each slot ``k`` (time ``t0 + k/rate``) shows the last source frame whose
    time rounds to a slot ``<= k``. Feed frames in order with :meth:`push`, then :meth:`flush`."""

    def __init__(self, rate: Fraction) -> None:
        self.rate = rate
        self.t0: float | None = None
        self.next_slot = 0
        self.pending: Any = None

    def push(self, frame: Any, t: float) -> list[tuple[Any, int]]:
        if self.t0 is None:
            self.t0 = t
        slot = int(round((t - self.t0) * self.rate))
        out = []
        while self.pending is not None and self.next_slot < slot:
            out.append((self.pending, self.next_slot))
            self.next_slot += 1
        self.pending = frame
        return out

    def flush(self, end: float) -> list[tuple[Any, int]]:
        """The last frame for the remaining slots before ``end`` (seconds; the source's last frame time +
        its duration); a one-frame source still gives one frame."""
        if self.pending is None or self.t0 is None:
            return []
        out = []
        while (self.next_slot == 0 and not out) or self.t0 + self.next_slot / self.rate < end - 1e-6:
            out.append((self.pending, self.next_slot))
            self.next_slot += 1
        return out

    def pts(self, slot: int) -> int:
        """The slot's pts in time base ``1/rate``, keeping the first frame's time."""
        return slot + int(round((self.t0 or 0.0) * self.rate))


def _add_video(out: Any, vin: Any, opts: TranscodeOptions, threads: int,
               src_rate: Fraction) -> tuple[Any, Fraction, Fraction | None]:
    """The H.264 output stream; returns it, its nominal rate and the forced rate (None: source times).
    Frames are timed in the encoder's time base (``vs.codec_context.time_base``; the muxer may change
    the stream's)."""
    rate = Fraction(opts.fps).limit_denominator(1001) if opts.fps else None
    nominal = rate or Fraction(src_rate)
    vs = out.add_stream("libx264", rate=nominal)
    w, h = output_size(vin.codec_context.width, vin.codec_context.height, opts.short_side)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    tb = Fraction(1, 1) / rate if rate else vin.time_base
    vs.time_base = tb
    vs.codec_context.time_base = tb
    gop = max(1, math.floor(opts.keyframe_interval * nominal + 1e-9))  # key frames never further apart
    vs.codec_context.gop_size = gop
    vs.codec_context.thread_count = threads
    vs.options = {"crf": str(opts.crf), "preset": opts.preset,
                  "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    return vs, nominal, rate


def _encode_frame(vs: Any, out: Any, frame: Any, pts: int) -> None:
    import av

    new = frame.reformat(width=vs.width, height=vs.height, format="yuv420p", interpolation="AREA")
    new.pts, new.time_base = pts, vs.codec_context.time_base
    new.pict_type = av.video.frame.PictureType.NONE  # the encoder places the key frames
    for p in vs.encode(new):
        out.mux(p)


def _write(src: Path, tmp: Path, opts: TranscodeOptions, threads: int, stamp: str) -> dict[str, Any]:
    """Transcode ``src`` into ``tmp`` (MP4); returns facts about the output."""
    import av

    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise ValueError("no video stream")
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        with av.open(str(tmp), "w", format="mp4") as out:
            out.metadata["comment"] = stamp
            src_rate = Fraction(vin.average_rate or vin.guessed_rate or 25)
            vs, nominal, rate = _add_video(out, vin, opts, threads, src_rate)
            audio_mode, aus = "none", None
            if ain is not None:
                if ain.codec_context.name in COPY_AUDIO:
                    audio_mode, aus = "copy", out.add_stream_from_template(ain)
                else:
                    audio_mode = "aac"
                    aus = out.add_stream("aac", rate=ain.codec_context.sample_rate, layout=ain.layout.name)
            fr = _FrameRate(rate) if rate else None
            frames, last = 0, 0.0
            for packet in inp.demux(*([vin] + ([ain] if ain is not None else []))):
                if packet.stream is vin:
                    for frame in packet.decode():
                        if fr is None:
                            if frame.pts is None:
                                raise ValueError("a video frame has no timestamp")
                            todo = [(frame, frame.pts)]
                        else:
                            last = float(frame.time or 0.0)
                            todo = [(f, fr.pts(k)) for f, k in fr.push(frame, last)]
                        for f, pts in todo:
                            _encode_frame(vs, out, f, pts)
                            frames += 1
                elif audio_mode == "copy":
                    if packet.dts is not None:
                        packet.stream = aus
                        out.mux(packet)
                else:
                    for frame in packet.decode():
                        for p in aus.encode(frame):
                            out.mux(p)
            for f, k in fr.flush(last + float(1 / src_rate)) if fr is not None else []:
                _encode_frame(vs, out, f, fr.pts(k))
                frames += 1
            for p in vs.encode():
                out.mux(p)
            if audio_mode == "aac":
                for p in aus.encode():
                    out.mux(p)
    if frames == 0:
        raise ValueError("no video frame decoded")
    return {"width": vs.width, "height": vs.height, "fps": float(nominal), "frames": frames, "audio": audio_mode}


def transcode_file(src: str | Path, dst: str | Path, opts: TranscodeOptions, threads: int = 0) -> dict[str, Any]:
    """Re-encode one file atomically (see the module doc); returns a report record.

    ``status`` is ``"done"`` (written now), ``"skipped"`` (a complete output with the same options was
    there) or ``"failed"`` (with ``reason``; no output is written). ``threads``: x264 threads (0: auto).
    """
    import av

    src, dst = Path(src), Path(dst)
    rec: dict[str, Any] = {"source": str(src), "output": str(dst)}
    t0 = time.perf_counter()
    try:
        if is_done(src, dst, opts):
            return {**rec, "status": "skipped", "out_bytes": dst.stat().st_size}
        stamp = _stamp(src, opts)
        dst.parent.mkdir(parents=True, exist_ok=True)
        facts: dict[str, Any] = {}
        atomic_write(dst, lambda tmp: facts.update(_write(src, tmp, opts, threads, stamp)), fsync=False)
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return {**rec, "status": "failed", "reason": f"{type(e).__name__}: {reason}"}
    return {**rec, "status": "done", "seconds": round(time.perf_counter() - t0, 3), **facts,
            "in_bytes": src.stat().st_size, "out_bytes": dst.stat().st_size}


@dataclass(frozen=True)
class _Plan:
    lines: list[dict[str, Any]]
    jobs: dict[str, tuple[Path, Path]]  # source (resolved) -> (source, output)


def _output_rel(manifest_dir: Path, src: Path) -> Path:
    try:
        rel = src.relative_to(manifest_dir)
    except ValueError:
        import hashlib

        tag = hashlib.sha1(str(src).encode()).hexdigest()[:10]
        rel = Path("_external") / f"{tag}_{src.name}"
    return rel.with_suffix(".mp4")


def plan_transcode(manifest: str | Path, out_dir: str | Path) -> _Plan:
    """Read ``manifest`` and map each distinct video to its output under ``out_dir``.

    Raises ``ValueError`` when the manifest lists no video, when two sources would share an output
    (``a.mkv`` and ``a.mp4`` in one folder), or when an output or the new manifest would overwrite an input.
    """
    from mmv_torch.data.manifests import read_jsonl

    mpath = Path(manifest).resolve()
    base, out = mpath.parent, Path(out_dir).resolve()
    lines = [obj for _, obj in read_jsonl(mpath)]
    jobs: dict[str, tuple[Path, Path]] = {}
    owner: dict[Path, Path] = {}
    for n, obj in enumerate(lines, 1):
        video = obj.get("video")
        if video is None:
            continue
        if not isinstance(video, str) or not video:
            raise ValueError(f"{mpath}:{n}: 'video' must be a non-empty path string")
        src = (base / video).resolve()
        if str(src) in jobs:
            continue
        dst = out / _output_rel(base, src)
        if owner.setdefault(dst, src) != src:
            raise ValueError(f"{owner[dst]} and {src} would both be written to {dst}; rename one of them")
        if dst == src:
            raise ValueError(f"the output {dst} would overwrite its source; choose another --out folder")
        jobs[str(src)] = (src, dst)
    if not jobs:
        raise ValueError(f"{mpath} lists no video (no line has a 'video' key)")
    if out / mpath.name == mpath:
        raise ValueError(f"the new manifest would overwrite {mpath}; choose another --out folder")
    return _Plan(lines, jobs)


def _new_manifest(plan: _Plan, manifest: Path, out: Path, failed: set[str]) -> tuple[str, int]:
    """The new manifest's text and its line count: videos point at their outputs, failed ones are left out,
    other media paths point at the original files (relative to ``out``)."""
    base = manifest.resolve().parent
    rows = []
    for obj in plan.lines:
        obj = dict(obj)
        if "video" in obj:
            src = str((base / obj["video"]).resolve())
            if src in failed:
                continue
            obj["video"] = plan.jobs[src][1].relative_to(out).as_posix()
        for key in ("audio", "image"):
            if isinstance(obj.get(key), str) and not os.path.isabs(obj[key]):
                obj[key] = os.path.relpath(base / obj[key], out)
        rows.append(json.dumps(obj))
    return "".join(r + "\n" for r in rows), len(rows)


def run_transcode(manifest: str | Path, out_dir: str | Path, opts: TranscodeOptions, workers: int = 1,
                  json_out: str | Path | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Transcode every video of ``manifest`` into ``out_dir`` with ``workers`` processes; write the new
    manifest and the JSON report (default ``out_dir/transcode_report.json``); return the report."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    plan = plan_transcode(manifest, out_dir)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for folder in {dst.parent for _, dst in plan.jobs.values()}:
        remove_temporaries(folder)  # left by a killed run
    threads = 0 if workers == 1 else max(1, (os.cpu_count() or 1) // workers)
    t0 = time.perf_counter()
    records = []
    todo = list(plan.jobs.values())

    def done(rec: dict[str, Any]) -> None:
        records.append(rec)
        if log is not None:
            extra = f" ({rec['reason']})" if rec["status"] == "failed" else ""
            log(f"[{len(records)}/{len(todo)}] {rec['status']}: {rec['source']}{extra}")

    if workers == 1:
        for src, dst in todo:
            done(transcode_file(src, dst, opts, threads))
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(transcode_file, src, dst, opts, threads) for src, dst in todo]
            for fut in as_completed(futures):
                done(fut.result())
    failed = {r["source"] for r in records if r["status"] == "failed"}
    new_manifest = out / Path(manifest).name
    text, kept = _new_manifest(plan, Path(manifest), out, failed)
    atomic_write_text(new_manifest, text)
    count = {s: sum(r["status"] == s for r in records) for s in ("done", "skipped", "failed")}
    report = {"manifest": str(Path(manifest).resolve()), "out_manifest": str(new_manifest), "lines": kept,
              "options": asdict(opts), "workers": workers, "elapsed_s": round(time.perf_counter() - t0, 3),
              **{f"num_{s}": c for s, c in count.items()},
              "in_bytes": sum(r.get("in_bytes", 0) for r in records if r["status"] == "done"),
              "out_bytes": sum(r.get("out_bytes", 0) for r in records if r["status"] != "failed"),
              "files": sorted(records, key=lambda r: r["source"])}
    atomic_write_text(Path(json_out) if json_out else out / REPORT_NAME, json.dumps(report, indent=1) + "\n")
    return report


def format_summary(report: dict[str, Any]) -> str:
    """One line per failed file, then the totals."""
    lines = [f"failed: {r['source']}: {r['reason']}" for r in report["files"] if r["status"] == "failed"]
    lines.append(f"{report['num_done']} transcoded, {report['num_skipped']} already done, {report['num_failed']} "
                 f"failed in {report['elapsed_s']:.1f} s; {report['out_bytes'] / 1e6:.1f} MB of outputs; "
                 f"manifest {report['out_manifest']} ({report['lines']} lines)")
    return "\n".join(lines)
