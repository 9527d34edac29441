"""``mmv-torch data check``: scan a manifest or a folder and report, for every file, what decodes.

For each file: the header (:func:`decode.probe`: duration, fps, size, codecs, sample rate, channels),
a decoded clip at the start (video frames and audio samples), and the last second of the video (to
catch truncated files whose header promises more than the data holds). A file is ``ok`` when its
modality decodes (a video file needs decodable frames; its audio is reported but optional).

``check_path`` can write the report as JSON and a clean manifest holding only the good entries.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .datasets import MODALITIES, read_jsonl
from .decode import DecodeError, _open, _start_time, load_audio, load_clip, load_image, probe
from .media import modality_of

TRUNCATION_TOLERANCE_S = 1.0
"""A video whose last frame is more than this before the duration in its header counts as truncated."""


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


def check_file(path: str | Path, modality: str | None = None) -> dict[str, Any]:
    """What of ``path`` decodes. Returns a dict with ``path``, ``modality``, ``ok``, ``video`` (frames
    decode), ``audio`` (audio decodes), ``duration``, ``fps``, ``width``, ``height``, codecs,
    ``sample_rate``, ``channels``, and ``error`` (why not, or None)."""
    p = str(path)
    mod = modality or modality_of(p) or "video"
    rep: dict[str, Any] = {"path": p, "modality": mod, "ok": False, "video": False, "audio": False,
                           "duration": None, "fps": None, "width": None, "height": None, "video_codec": None,
                           "audio_codec": None, "sample_rate": None, "channels": None, "error": None}
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
            clip = load_clip(p, 0.0, 2, info.fps or 10.0, load_audio=False)
            rep["video"] = clip.frames.shape[0] == 2
            end = _last_video_time(p, info.duration)
            if end is not None and info.duration and end < info.duration - TRUNCATION_TOLERANCE_S:
                errors.append(f"truncated: video frames end at {end:.2f} s of {info.duration:.2f} s")
                rep["video"] = False
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
    if path.exists():
        return [{"file": str(path), "modality": modality_of(path) or "video", "obj": None}]
    raise ValueError(f"{path} is not a folder, a .jsonl manifest or a file")


def check_path(path: str | Path, json_out: str | Path | None = None, clean_manifest: str | Path | None = None
               ) -> dict[str, Any]:
    """Check every file of a folder (media files by extension, recursively) or of a JSONL manifest.

    Returns ``{"path", "num_files", "num_ok", "num_bad", "files": [check_file(...) per file]}``; also
    written as JSON to ``json_out``. ``clean_manifest`` gets one JSONL line per good file: the
    manifest's own line (its path rewritten relative to the clean manifest's folder), or for a folder
    ``{"<modality>": path}``.
    """
    p = Path(path)
    items = _entries(p)
    files = [check_file(it["file"], it["modality"]) for it in items]
    report = {"path": str(p), "num_files": len(files), "num_ok": sum(f["ok"] for f in files),
              "num_bad": sum(not f["ok"] for f in files), "files": files}
    if json_out is not None:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2) + "\n")
    if clean_manifest is not None:
        out = Path(clean_manifest)
        out.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for it, rep in zip(items, files):
            if not rep["ok"]:
                continue
            rel = os.path.relpath(os.path.abspath(it["file"]), os.path.abspath(out.parent))
            obj = dict(it["obj"]) if it["obj"] is not None else {}
            obj[it.get("key", it["modality"])] = rel
            lines.append(json.dumps(obj) + "\n")
        out.write_text("".join(lines))
    return report


def format_report(report: dict[str, Any]) -> str:
    """A table: one line per file (status, duration, fps, video/audio, reason) and a summary."""
    rows = [f"{'status':6s} {'dur(s)':>7s} {'fps':>6s} {'video':5s} {'audio':5s}  path  [reason]"]
    for f in report["files"]:
        dur = f"{f['duration']:.2f}" if f["duration"] is not None else "-"
        fps = f"{f['fps']:.2f}" if f["fps"] else "-"
        why = f"  [{f['error']}]" if f["error"] else ""
        rows.append(f"{'ok' if f['ok'] else 'BAD':6s} {dur:>7s} {fps:>6s} {'yes' if f['video'] else 'no':5s} "
                    f"{'yes' if f['audio'] else 'no':5s}  {f['path']}{why}")
    rows.append(f"{report['num_ok']} of {report['num_files']} files ok, {report['num_bad']} bad")
    return "\n".join(rows)


def run_check(path: str, json_out: str | None = None, clean_manifest: str | None = None) -> dict[str, Any]:
    """``mmv-torch data check PATH [--json OUT] [--clean OUT]``: check, print the table, return the report."""
    report = check_path(path, json_out, clean_manifest)
    print(format_report(report))
    return report
