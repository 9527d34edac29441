"""Windows, decoding and embeddings shared by building an index and by queries.

A window is ``window_s`` seconds of a video: ``num_frames`` frames sampled over it (the checkpoint's
``data.num_frames``; at the checkpoint's own clip span this is its training fps) and the checkpoint's
``data.audio_seconds`` of audio centred on it. Embeddings are L2-normalised.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config
from mmv_torch.data.datasets import audio_features
from mmv_torch.data.media.decode import load_audio, load_clips, probe
from mmv_torch.data.media.transforms import eval_transform
from mmv_torch.extras import require


def window_starts(duration: float, window_s: float, stride_s: float) -> list[float]:
    """Start times of the windows covering ``duration`` seconds: every ``stride_s`` while a whole window
    fits, plus one ending at the end when more than half a stride would be left out; one window at 0
    for a video shorter than a window."""
    if window_s <= 0 or stride_s <= 0:
        raise ValueError(f"window and stride must be > 0 seconds, got {window_s}, {stride_s}")
    last = max(0.0, duration - window_s)
    starts = [i * stride_s for i in range(int(math.floor(last / stride_s + 1e-9)) + 1)]
    if last - starts[-1] > stride_s / 2:
        starts.append(last)
    return [round(s, 6) for s in starts]


def thumbnail_jpeg(frame: torch.Tensor, width: int = 160) -> bytes:
    """A small JPEG of one uint8 ``(H, W, 3)`` frame, ``width`` pixels wide."""
    Image = require("PIL.Image", "index thumbnails")

    img = Image.fromarray(frame.numpy())
    h = max(1, round(img.height * width / max(img.width, 1)))
    img = img.resize((width, h))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=75)
    return buf.getvalue()


WINDOW_KINDS = ("fixed", "shots")
"""How a video is cut into windows: ``fixed`` sliding windows over the whole video, or ``shots``: windows
within each shot (:func:`shot_windows`)."""


@dataclass(frozen=True)
class WindowSpan:
    """One window: the span it stands for (``start``..``end``, what a hit shows) and where its
    ``window_s`` seconds of model input begin (``decode_start``; the same as ``start`` except for a
    shot shorter than a window)."""

    start: float
    end: float
    decode_start: float


def fixed_windows(duration: float, window_s: float, stride_s: float) -> list[WindowSpan]:
    """Sliding windows over the whole video (:func:`window_starts`)."""
    return [WindowSpan(s, round(s + window_s, 6), s) for s in window_starts(duration, window_s, stride_s)]


def shot_windows(shots: list[tuple[float, float]], duration: float, window_s: float, stride_s: float
                 ) -> list[WindowSpan]:
    """Windows within shots ``[(start, end), ...]`` of a ``duration``-second video: in each shot at least
    as long as a window, windows from the shot's start every ``stride_s`` while a whole window fits, plus
    one ending at the shot's end when more than half a stride would be left out (:func:`window_starts`
    within the shot), so every window lies inside its shot. A shot shorter than a window gets one
    window standing for the whole shot (``start``, ``end``: the shot's) whose model input is the
    ``window_s`` seconds centred on the shot (moved to lie within the video)."""
    out = []
    for a, b in shots:
        if b - a >= window_s - 1e-6:
            out += [WindowSpan(round(a + s, 6), round(min(a + s + window_s, b), 6), round(a + s, 6))
                    for s in window_starts(b - a, window_s, stride_s)]
        else:
            centred = min(max(0.0, (a + b) / 2 - window_s / 2), max(0.0, duration - window_s))
            out.append(WindowSpan(round(a, 6), round(b, 6), round(centred, 6)))
    return out


@dataclass
class DecodedFile:
    """The windows of one file, decoded and transformed (or the reason it could not be)."""

    path: str
    duration: float = 0.0
    has_audio: bool = False
    starts: list[float] | None = None
    video: torch.Tensor | None = None
    """``(W, 3, T, H, W)`` model input (``None`` for a file whose video cannot be decoded)."""
    audio: torch.Tensor | None = None
    """``(W, 1, T', F)`` log-mel."""
    thumbs: list[bytes | None] | None = None
    error: str | None = None
    audio_error: str | None = None
    """Why the audio track could not be decoded (the video windows are kept, without sound)."""
    ends: list[float] | None = None
    """Each window's end (``start + window_s`` for fixed windows; within its shot for shot windows)."""
    has_video: bool = True
    """False for a file whose video cannot be decoded but whose audio can: audio-only windows."""
    video_error: str | None = None
    """Why the video could not be decoded (the windows are audio-only)."""

    def window_rows(self) -> list[tuple[float, float, bool, bytes | None, bool]]:
        """``(start, end, has_audio, thumbnail, has_video)`` per window, as :meth:`IndexStore.add_file`
        takes them."""
        starts = self.starts or []
        ends = self.ends or starts
        thumbs = self.thumbs or [None] * len(starts)
        return [(s, e, self.has_audio, t, self.has_video) for s, e, t in zip(starts, ends, thumbs)]


def _audio_only(path: str | Path, info: Any, cfg: Config, spans: list[WindowSpan], window_s: float,
                video_error: str) -> DecodedFile:
    """The audio of each window of a file whose video cannot be decoded (``data.audio_seconds`` centred on
    the window, as :func:`load_clips` places it). Raises ``DecodeError`` naming both failures when the
    audio cannot be decoded either."""
    from mmv_torch.data.media.decode import DecodeError

    d = cfg.data
    try:
        auds = [audio_features(load_audio(path, max(0.0, w.decode_start + window_s / 2 - d.audio_seconds / 2),
                                          d.audio_seconds, d.sample_rate), d) for w in spans]
    except DecodeError as e:
        raise DecodeError(str(path), f"video: {video_error}; audio: {e.reason}") from None
    return DecodedFile(str(path), float(info.duration), True, [w.start for w in spans], None, torch.stack(auds),
                       None, ends=[w.end for w in spans], has_video=False, video_error=video_error)


def decode_windows(path: str | Path, cfg: Config, window_s: float, stride_s: float,
                   starts: list[float] | None = None, thumbs: bool = True, windows: str = "fixed") -> DecodedFile:
    """Decode every window of a video (``windows``: ``fixed`` sliding windows or windows within
    ``shots``, see :data:`WINDOW_KINDS`; or the fixed windows at ``starts``) into model inputs and
    thumbnails. A file whose audio cannot be decoded keeps its video windows (``has_audio`` false, the
    reason in ``audio_error``); one whose video cannot be decoded but whose audio can gets audio-only
    windows (``has_video`` false, ``video`` None, the reason in ``video_error``; shot windows fall back
    to fixed ones, the shots being unknown). Raises ``DecodeError`` when neither decodes."""
    from mmv_torch.data.media.decode import DecodeError
    from mmv_torch.data.media.shots import detect_shots

    if windows not in WINDOW_KINDS:
        raise ValueError(f"windows must be one of {WINDOW_KINDS}, got {windows!r}")
    d = cfg.data
    info = probe(path)
    if not info.has_video:
        raise DecodeError(str(path), "no video stream")
    if starts is not None:
        spans = [WindowSpan(s, round(s + window_s, 6), s) for s in starts]
    elif windows == "shots":
        try:
            spans = shot_windows(detect_shots(path, info.duration), info.duration, window_s, stride_s)
        except DecodeError as e:
            if not info.has_audio:
                raise
            return _audio_only(path, info, cfg, fixed_windows(info.duration, window_s, stride_s), window_s, e.reason)
    else:
        spans = fixed_windows(info.duration, window_s, stride_s)
    at = [w.decode_start for w in spans]
    fps = d.num_frames / window_s
    vids, auds, pics, has_audio = [], [], [], False
    audio_error = None
    try:
        clips = load_clips(path, at, d.num_frames, fps, d.sample_rate, d.audio_seconds)
    except DecodeError as e:  # the audio or the video is damaged: keep what decodes
        if not info.has_audio:
            raise
        try:
            clips = load_clips(path, at, d.num_frames, fps, d.sample_rate, d.audio_seconds, load_audio=False)
        except DecodeError as v:
            return _audio_only(path, info, cfg, spans, window_s, v.reason)
        audio_error = e.reason
    for clip in clips:
        vids.append(eval_transform(clip.frames, d.eval_crop_size, d.resize_short))
        auds.append(audio_features(clip.audio, d))
        has_audio = clip.has_audio and audio_error is None
        if thumbs:
            pics.append(thumbnail_jpeg(clip.frames[clip.frames.shape[0] // 2]))
    return DecodedFile(str(path), float(info.duration), has_audio, [w.start for w in spans], torch.stack(vids),
                       torch.stack(auds), pics if thumbs else None, audio_error=audio_error,
                       ends=[w.end for w in spans])


def normalise(x: torch.Tensor) -> np.ndarray:
    """``x`` ``(B,D)`` L2-normalised along D, as float32 numpy."""
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32)


@torch.no_grad()
def forward_batch(model: Any, video: torch.Tensor | None, audio: torch.Tensor | None,
                  device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """``{"video_vt", "video_va"}`` of ``video`` ``(B,3,T,H,W)`` and ``"audio_va"`` of ``audio``
    ``(B',1,T',F)`` (the windows with sound; ``None``: none; ``video`` ``None`` for audio-only windows),
    each L2-normalised (the towers are independent: one forward pass with both); a space without input
    gets no rows. In float32 a window's vectors depend on the size of its batch and its place in it by
    ~1e-5 (the kernels' blocking); with batches of one they do not."""
    inputs = {k: x.to(device) for k, x in (("video", video), ("audio", audio)) if x is not None and x.shape[0]}
    if not inputs:
        raise ValueError("forward_batch needs video or audio windows")
    emb = model(**inputs)
    out = {}
    if "video" in inputs:
        out = {"video_vt": normalise(emb["video"]["vt"]), "video_va": normalise(emb["video"]["va"])}
    if "audio" in inputs:
        out["audio_va"] = normalise(emb["audio"]["va"])
    width = out["video_va" if "video_va" in out else "audio_va"].shape[1]  # audio and video share S_va
    return {k: out.get(k, np.zeros((0, width), np.float32)) for k in ("video_vt", "video_va", "audio_va")}


@torch.no_grad()
def embed_windows(model: Any, decoded: DecodedFile, device: str | torch.device = "cpu", batch_size: int = 16
                  ) -> dict[str, np.ndarray]:
    """``{"video_vt", "video_va", "audio_va"}`` embeddings ``(W, D)`` of one decoded file's windows in
    batches of ``batch_size`` (``audio_va`` empty for a file without an audio track; the video spaces empty
    for audio-only windows). A build batches across files instead
    (:class:`mmv_torch.index.pipeline.WindowBatcher`), with the same vectors."""
    assert decoded.audio is not None
    n = int(decoded.audio.shape[0])
    parts = []
    for i in range(0, n, batch_size):
        video = decoded.video[i:i + batch_size] if decoded.video is not None else None
        audio = decoded.audio[i:i + batch_size] if decoded.has_audio else None
        parts.append(forward_batch(model, video, audio, device))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("video_vt", "video_va", "audio_va")}


@torch.no_grad()
def embed_text(model: Any, tokenizer: Any, text: str, word_mask: bool, device: str | torch.device = "cpu"
               ) -> tuple[np.ndarray, int]:
    """The text-space embedding of ``text`` and how many of its words the vocabulary knows."""
    tok = tokenizer([text])
    known = tok.mask.clone()
    if tokenizer.vocab.unk_id is not None:
        known &= tok.ids != tokenizer.vocab.unk_id
    kwargs = {"word_mask": tok.mask.to(device)} if word_mask else {}
    emb = model(text=tok.ids.to(device), **kwargs)
    return normalise(emb["text"]["vt"])[0], int(known.sum())


@torch.no_grad()
def embed_audio_file(model: Any, cfg: Config, path: str | Path, max_windows: int = 8,
                     device: str | torch.device = "cpu") -> np.ndarray:
    """The S_va embedding of an audio file (or a video's audio track): up to ``max_windows`` windows of
    ``data.audio_seconds`` spread over it, embeddings averaged and normalised."""
    d = cfg.data
    duration = probe(path).duration
    starts = window_starts(duration, d.audio_seconds, d.audio_seconds)
    if len(starts) > max_windows:
        starts = [starts[round(i)] for i in np.linspace(0, len(starts) - 1, max_windows)]
    feats = torch.stack([audio_features(load_audio(path, s, d.audio_seconds, d.sample_rate), d) for s in starts])
    emb = torch.from_numpy(normalise(model(audio=feats.to(device))["audio"]["va"])).mean(0)
    return normalise(emb)


@torch.no_grad()
def embed_video_file(model: Any, cfg: Config, path: str | Path, start_s: float | None, window_s: float,
                     device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """``{"video_vt", "video_va"}`` of one window of a video: at ``start_s``, or the middle window."""
    duration = probe(path).duration
    start = max(0.0, (duration - window_s) / 2) if start_s is None else float(start_s)
    decoded = decode_windows(path, cfg, window_s, window_s, starts=[start], thumbs=False)
    if not decoded.has_video:
        from mmv_torch.data.media.decode import DecodeError

        raise DecodeError(str(path), f"its video cannot be decoded ({decoded.video_error})")
    emb = model(video=decoded.video.to(device))  # type: ignore[union-attr]
    return {"video_vt": normalise(emb["video"]["vt"])[0], "video_va": normalise(emb["video"]["va"])[0]}
