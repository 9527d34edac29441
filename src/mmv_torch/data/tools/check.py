"""``mmv-torch data check``: scan a manifest or a folder and report, for every file, what decodes.

Two depths, named in the report (``"checked"``):

- ``"start+end"`` (the default, fast): the header (:func:`decode.probe`: duration, fps, size, codecs,
  sample rate, channels), a decoded clip at the start (video frames and audio samples), and the last
  two seconds of the video (to catch truncated files whose header promises more than the data holds).
  Damage in the middle of a file goes unnoticed.
- ``"full"`` (``full=True``): the same, and then every packet of the first video and the first audio
  stream is decoded (:func:`scan_full`). A problem is a packet that fails to decode (or a container
  that cannot be read on to its end), or a gap: more than :data:`GAP_FRAME_PERIODS` frame durations
  between the starts of two consecutive decoded frames (video: ``1/fps``; audio: the earlier frame's
  length), i.e. more than two frames missing in a row. Variable-frame-rate videos that hold a frame
  on screen for longer than that report gaps too. The file's report gives the number of decode errors
  and gaps and ``problem_at``, the time (seconds from the stream start) of the first problem.

A file is ``ok`` when its modality decodes (a video file needs decodable frames) and nothing failed:
a video file without an audio stream is fine, one whose audio fails to decode is not. A video file's two
streams are checked apart: one whose audio does not decode says ``audio: <reason>`` (``video`` true),
one whose video does not decode ``video: <reason>`` (``audio`` true when its sound decodes); the
report counts both (``num_without_decodable_audio``, ``num_without_decodable_video``): ``index
build`` keeps the first without sound and the second audio-only.

Narrations of a pretraining manifest are checked with the loader's own rules
(:func:`mmv_torch.data.narrations.validate_narrations`, bounded by the probed duration): the report
counts what the loader drops or clamps, per file (``"narrations"``) and in total
(``"narrations_dropped"``, ``"narrations_clamped"``). Noisy narrations do not make a file bad.

``check_path`` can write the report as JSON and a clean manifest holding only the good entries, their
narrations repaired.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmv_torch.data.manifests import MODALITIES, read_jsonl
from mmv_torch.data.media.decode import DecodeError, _open, _start_time, load_audio, load_clip, load_image, probe
from mmv_torch.data.media.suffixes import modality_of
from mmv_torch.data.narrations import validate_narrations
from mmv_torch.fileio import atomic_write_text

TRUNCATION_TOLERANCE_S = 1.0
"""A video whose last frame is more than this before the duration in its header counts as truncated."""

GAP_FRAME_PERIODS = 3.0
"""Full check: consecutive decoded frames whose starts lie more than this many frame durations apart
(video ``1/fps``, audio the earlier frame's length) count as a gap (frames lost in between)."""

CHECKED = {False: "start+end", True: "full"}
"""The report's ``"checked"`` value for ``full=False`` / ``full=True``."""


class StreamScan:
    """What :func:`scan_full` found in one stream: ``frames`` decoded, ``errors`` (packets that fail to
    decode), ``gaps``, ``first`` (seconds from the stream start of the first problem, or None) and
    ``stopped`` (where the container could not be read on, or None)."""

    def __init__(self, stream: Any, period: float) -> None:
        self.stream, self.origin, self.period = stream, _start_time(stream), period
        self.frames = self.errors = self.gaps = 0
        self.last: float | None = None  # start of the last decoded frame (seconds from the stream start)
        self.last_len = period
        self.first: float | None = None
        self.stopped: float | None = None

    def _problem(self, t: float) -> None:
        if self.first is None or t < self.first:
            self.first = t

    def packet_time(self, packet: Any) -> float:
        """Seconds from the stream start of ``packet`` (the last frame's end when it has no timestamp)."""
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is not None and packet.time_base is not None:
            return max(float(ts * packet.time_base) - self.origin, 0.0)
        return self.last + self.last_len if self.last is not None else 0.0

    def error(self, t: float) -> None:
        """A packet at ``t`` failed to decode."""
        self.errors += 1
        self._problem(t)

    def stop(self) -> None:
        """The container could not be read on after this stream's last frame (counts as an error)."""
        self.stopped = self.last + self.last_len if self.last is not None else 0.0
        self.error(self.stopped)

    def frame(self, frame: Any) -> None:
        """A decoded frame: count it and look for a gap since the previous one."""
        self.frames += 1
        length = frame.samples / frame.sample_rate if getattr(frame, "sample_rate", 0) else self.period
        if frame.time is None:
            return
        t = float(frame.time) - self.origin
        if self.last is not None and t - self.last > GAP_FRAME_PERIODS * self.last_len:
            self.gaps += 1
            self._problem(self.last + self.last_len)
        self.last, self.last_len = t, length or self.period

    def summary(self, kind: str) -> str | None:
        """One line for the report, or None when the stream decoded cleanly."""
        if not self.errors and not self.gaps:
            return None
        stop = f", unreadable after {self.stopped:.2f} s" if self.stopped is not None else ""
        return (f"{kind} corrupt: {self.errors} packet(s) fail to decode, {self.gaps} gap(s){stop} "
                f"(first problem at {self.first:.2f} s)")


def scan_full(path: str | Path, video: bool = True, audio: bool = True) -> dict[str, StreamScan]:
    """Decode every packet of the first video stream (with ``video``) and the first audio stream
    (with ``audio``) of ``path``.

    Returns ``{"video": scan, "audio": scan}`` for the streams the file has (see :class:`StreamScan`;
    gaps as :data:`GAP_FRAME_PERIODS` defines them). Frames are decoded but not converted. A
    container that cannot be read on stops the scan and counts as one error.
    """
    import av

    container = _open(str(path))
    try:
        tracks: dict[str, StreamScan] = {}
        if video and container.streams.video:
            vs = container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate or vs.base_rate
            tracks["video"] = StreamScan(vs, 1.0 / float(rate) if rate else 0.1)
        if audio and container.streams.audio:
            aus = container.streams.audio[0]
            tracks["audio"] = StreamScan(aus, 1024 / float(aus.codec_context.sample_rate or 16000))
        if not tracks:
            return tracks
        by_index = {t.stream.index: t for t in tracks.values()}
        demux = container.demux(*[t.stream for t in tracks.values()])
        current: StreamScan | None = None
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except (av.FFmpegError, OSError, EOFError):
                stuck = current or next(iter(tracks.values()), None)
                if stuck is not None:
                    stuck.stop()
                break
            current = by_index[packet.stream.index]
            try:
                for frame in packet.decode():
                    current.frame(frame)
            except av.FFmpegError:
                current.error(current.packet_time(packet))
        return tracks
    finally:
        container.close()


def _last_video_time(path: str, duration: float) -> float | None:
    """Timestamp (s, from the stream start) of the last decodable frame, decoding only the end."""
    import av

    container = _open(path)
    try:
        vs = container.streams.video[0]
        origin = _start_time(vs)
        container.seek(max(int((origin + max(duration - 2.0, 0.0)) / vs.time_base), 0), stream=vs,
                       backward=True, any_frame=False)
        last = None
        try:
            for frame in container.decode(vs):
                if frame.time is not None:
                    last = float(frame.time) - origin
        except av.FFmpegError:
            pass  # the data ends in the middle of a packet: `last` is where decoding stopped
        return last
    finally:
        container.close()


def _full_problems(path: str, rep: dict[str, Any], errors: list[str]) -> None:
    """Run :func:`scan_full` and record what it finds in ``rep`` and ``errors``."""
    tracks = scan_full(path, video=rep["modality"] != "audio")
    rep["decode_errors"] = sum(t.errors for t in tracks.values())
    rep["gaps"] = sum(t.gaps for t in tracks.values())
    rep["frames"] = tracks["video"].frames if "video" in tracks else None
    for kind, track in tracks.items():
        line = track.summary(kind)
        if line is not None:
            errors.append(line)
            rep[kind] = False
            _problem_at(rep, track.first)


def _problem_at(rep: dict[str, Any], t: float | None) -> None:
    if t is not None and (rep["problem_at"] is None or t < rep["problem_at"]):
        rep["problem_at"] = round(t, 3)


def check_file(path: str | Path, modality: str | None = None, full: bool = False) -> dict[str, Any]:
    """What of ``path`` decodes. Returns a dict with ``path``, ``modality``, ``ok``, ``video`` (frames
    decode), ``audio`` (audio decodes), ``duration``, ``fps``, ``width``, ``height``, codecs,
    ``sample_rate``, ``channels``, ``checked`` (``"start+end"`` or ``"full"``), ``problem_at``
    (seconds from the stream start of the first problem found, when known) and ``error`` (why not, or
    None). With ``full`` every packet is decoded (see the module docstring) and ``frames`` (decoded
    video frames), ``decode_errors`` and ``gaps`` are filled in; they are None otherwise."""
    p = str(path)
    mod = modality or modality_of(p) or "video"
    rep: dict[str, Any] = {"path": p, "modality": mod, "ok": False, "video": False, "audio": False,
                           "duration": None, "fps": None, "width": None, "height": None, "video_codec": None,
                           "audio_codec": None, "sample_rate": None, "channels": None, "checked": CHECKED[full],
                           "frames": None, "decode_errors": None, "gaps": None, "problem_at": None, "error": None}
    try:
        info = probe(p)
        rep.update(duration=info.duration, fps=info.fps or None, width=info.width or None,
                   height=info.height or None, video_codec=info.video_codec or None,
                   audio_codec=info.audio_codec or None, sample_rate=info.sample_rate or None,
                   channels=info.channels or None)
        errors = []
        if mod == "image":
            load_image(p)
            rep["video"] = True
        elif info.has_video:
            try:
                clip = load_clip(p, 0.0, 2, info.fps or 10.0, load_audio=False)
            except DecodeError as e:  # reported as a failed audio track is: the other stream is still checked
                errors.append(f"video: {e.reason}")
            else:
                rep["video"] = clip.frames.shape[0] == 2
                end = _last_video_time(p, info.duration)
                if end is not None and info.duration and end < info.duration - TRUNCATION_TOLERANCE_S:
                    errors.append(f"truncated: video frames end at {end:.2f} s of {info.duration:.2f} s")
                    rep["video"] = False
                    _problem_at(rep, end)
        elif mod == "video":
            errors.append("no video stream")
        if info.has_audio:
            try:
                load_audio(p, 0.0, min(1.0, info.duration or 1.0))
                rep["audio"] = True
            except DecodeError as e:
                errors.append(f"audio: {e.reason}")
        elif mod == "audio":
            errors.append("no audio stream")
        if full and mod != "image":
            _full_problems(p, rep, errors)
        rep["ok"] = (rep["video"] if mod in ("video", "image") else rep["audio"]) and not errors
        rep["error"] = "; ".join(errors) or None
    except DecodeError as e:
        rep["error"] = e.reason
    except Exception as e:  # a scan must report every file, whatever breaks
        rep["error"] = f"unexpected {type(e).__name__}: {e}"
    return rep


def _entries(path: Path) -> list[dict[str, Any]]:
    """(file, modality, manifest object) items to check."""
    if path.is_dir():
        out = []
        for root, _, files in os.walk(path):
            for f in sorted(files):
                mod = modality_of(f)
                if mod is not None:
                    out.append({"file": str(Path(root) / f), "modality": mod, "obj": None})
        return sorted(out, key=lambda e: e["file"])
    if path.suffix == ".jsonl":
        out = []
        for n, obj in read_jsonl(path):
            keys = [k for k in MODALITIES if isinstance(obj.get(k), str)]
            if len(keys) != 1:
                raise ValueError(f"{path}:{n}: needs exactly one string key of {list(MODALITIES)}")
            rel = obj[keys[0]]
            file = rel if os.path.isabs(rel) else str(path.parent / rel)
            out.append({"file": file, "modality": keys[0], "obj": obj, "key": keys[0]})
        return out
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if modality_of(path) is None:
        raise ValueError(f"{path}: not a .jsonl manifest, a folder or a media file (by its extension)"
                         + ("; a manifest has one JSON object per line and the suffix .jsonl"
                            if path.suffix.lower() == ".json" else ""))
    return [{"file": str(path), "modality": modality_of(path), "obj": None}]


def check_path(path: str | Path, json_out: str | Path | None = None, clean_manifest: str | Path | None = None,
               full: bool = False) -> dict[str, Any]:
    """Check every file of a folder (media files by extension, recursively) or of a JSONL manifest.

    ``full`` decodes every packet of every file (slow; see the module docstring) instead of the start
    and the end. Returns ``{"path", "checked", "num_files", "num_ok", "num_bad", "files":
    [check_file(...) per file]}`` (``checked``: ``"start+end"`` or ``"full"``); also written as JSON
    to ``json_out``. ``clean_manifest`` gets one JSONL line per good file: the
    manifest's own line (its path rewritten relative to the clean manifest's folder), or for a folder
    ``{"<modality>": path}``.
    """
    p = Path(path)
    items = _entries(p)
    files = [check_file(it["file"], it["modality"], full=full) for it in items]
    cleaned = [_check_narrations(it, rep) for it, rep in zip(items, files)]
    videos = [f for f in files if f["modality"] == "video" and f["video_codec"] and f["audio_codec"]]
    report = {"path": str(p), "checked": CHECKED[full], "num_files": len(files),
              "num_ok": sum(f["ok"] for f in files), "num_bad": sum(not f["ok"] for f in files),
              "num_without_decodable_audio": sum(f["video"] and not f["audio"] for f in videos),
              "num_without_decodable_video": sum(f["audio"] and not f["video"] for f in videos),
              "narrations_dropped": sum(f["narrations"]["dropped"] for f in files if f.get("narrations")),
              "narrations_clamped": sum(f["narrations"]["clamped"] for f in files if f.get("narrations")),
              "files": files}
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json_out, json.dumps(report, indent=2) + "\n")
    if clean_manifest is not None:
        out = Path(clean_manifest)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for it, rep, narrations in zip(items, files, cleaned):
            if not rep["ok"]:
                continue
            rel = os.path.relpath(os.path.abspath(it["file"]), os.path.abspath(out.parent))
            obj = dict(it["obj"]) if it["obj"] is not None else {}
            if narrations is not None:
                obj["narration"] = narrations
            obj[it.get("key", it["modality"])] = rel
            lines.append(json.dumps(obj) + "\n")
        atomic_write_text(out, "".join(lines))
    return report


def _check_narrations(item: dict[str, Any], rep: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Validate a manifest line's narrations as the loader does (bounded by the line's ``duration``, else
    the probed one); record the counts in ``rep["narrations"]`` and return the repaired list (None: the
    line has no ``narration``)."""
    obj = item.get("obj")
    if obj is None or "narration" not in obj:
        return None
    duration = obj.get("duration", rep.get("duration"))
    try:
        kept, issues = validate_narrations(obj["narration"], rep["path"],
                                           float(duration) if duration is not None else None)
    except ValueError as e:
        rep["narrations"] = {"kept": 0, "dropped": 0, "clamped": 0, "reasons": {str(e): 1}, "segments": []}
        rep["ok"], rep["error"] = False, "; ".join(x for x in (rep["error"], str(e)) if x)
        return None
    rep["narrations"] = {"kept": len(kept), **issues.as_dict()}
    return [{"start": n.start, "end": n.end, "text": n.text} for n in kept]


def format_report(report: dict[str, Any]) -> str:
    """A table: one line per file (status, duration, fps, video/audio, reason) and a summary."""
    rows = [f"{'status':6s} {'dur(s)':>7s} {'fps':>6s} {'video':5s} {'audio':5s}  path  [reason]"]
    for f in report["files"]:
        dur = f"{f['duration']:.2f}" if f["duration"] is not None else "-"
        fps = f"{f['fps']:.2f}" if f["fps"] else "-"
        why = f"  [{f['error']}]" if f["error"] else ""
        nar = f.get("narrations")
        if nar and (nar["dropped"] or nar["clamped"]):
            why += f"  [narrations: {nar['dropped']} dropped, {nar['clamped']} clamped: {nar['reasons']}]"
        rows.append(f"{'ok' if f['ok'] else 'BAD':6s} {dur:>7s} {fps:>6s} {'yes' if f['video'] else 'no':5s} "
                    f"{'yes' if f['audio'] else 'no':5s}  {f['path']}{why}")
    rows.append(f"{report['num_ok']} of {report['num_files']} files ok, {report['num_bad']} bad "
                f"(checked: {report['checked']})")
    if report.get("num_without_decodable_audio") or report.get("num_without_decodable_video"):
        rows.append(f"of the bad videos, {report['num_without_decodable_audio']} have no decodable audio "
                    f"(`index build` keeps their video windows, without sound) and "
                    f"{report['num_without_decodable_video']} no decodable video (indexed audio-only)")
    if report.get("narrations_dropped") or report.get("narrations_clamped"):
        rows.append(f"narrations: {report['narrations_dropped']} dropped, {report['narrations_clamped']} clamped "
                    "(as the loader does; --clean writes them repaired)")
    return "\n".join(rows)


def run_check(path: str, json_out: str | None = None, clean_manifest: str | None = None, full: bool = False
              ) -> dict[str, Any]:
    """``mmv-torch data check PATH [--json OUT] [--clean OUT] [--full]``: check, print the table, return
    the report. ``full`` decodes every packet of every file (see the module docstring)."""
    report = check_path(path, json_out, clean_manifest, full=full)
    print(format_report(report))
    return report
