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


@dataclass
class DecodedFile:
    """The windows of one file, decoded and transformed (or the reason it could not be)."""

    path: str
    duration: float = 0.0
    has_audio: bool = False
    starts: list[float] | None = None
    video: torch.Tensor | None = None
    """``(W, 3, T, H, W)`` model input."""
    audio: torch.Tensor | None = None
    """``(W, 1, T', F)`` log-mel."""
    thumbs: list[bytes] | None = None
    error: str | None = None
    audio_error: str | None = None
    """Why the audio track could not be decoded (the video windows are kept, without sound)."""


def decode_windows(path: str | Path, cfg: Config, window_s: float, stride_s: float,
                   starts: list[float] | None = None, thumbs: bool = True) -> DecodedFile:
    """Decode every window of a video (or those at ``starts``) into model inputs and thumbnails.
    Raises ``DecodeError`` for a file whose video cannot be read; a file whose audio cannot be decoded
    keeps its video windows (``has_audio`` false, the reason in ``audio_error``)."""
    from mmv_torch.data.media.decode import DecodeError

    d = cfg.data
    info = probe(path)
    if not info.has_video:
        raise DecodeError(str(path), "no video stream")
    starts = window_starts(info.duration, window_s, stride_s) if starts is None else starts
    fps = d.num_frames / window_s
    vids, auds, pics, has_audio = [], [], [], False
    audio_error = None
    try:
        clips = load_clips(path, starts, d.num_frames, fps, d.sample_rate, d.audio_seconds)
    except DecodeError as e:  # a damaged audio track: the file keeps its video windows, marked without sound
        if not info.has_audio:
            raise
        clips = load_clips(path, starts, d.num_frames, fps, d.sample_rate, d.audio_seconds, load_audio=False)
        audio_error = e.reason
    for clip in clips:
        vids.append(eval_transform(clip.frames, d.eval_crop_size, d.resize_short))
        auds.append(audio_features(clip.audio, d))
        has_audio = clip.has_audio and audio_error is None
        if thumbs:
            pics.append(thumbnail_jpeg(clip.frames[clip.frames.shape[0] // 2]))
    return DecodedFile(str(path), float(info.duration), has_audio, starts, torch.stack(vids), torch.stack(auds),
                       pics if thumbs else None, audio_error=audio_error)


def normalise(x: torch.Tensor) -> np.ndarray:
    """``x`` ``(B,D)`` L2-normalised along D, as float32 numpy."""
    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32)


@torch.no_grad()
def forward_batch(model: Any, video: torch.Tensor, audio: torch.Tensor | None, device: str | torch.device = "cpu"
                  ) -> dict[str, np.ndarray]:
    """``{"video_vt", "video_va"}`` of ``video`` ``(B,3,T,H,W)`` and ``"audio_va"`` of ``audio``
    ``(B',1,T',F)`` (``B' <= B``: the windows with sound; ``None``: none), each L2-normalised (the towers
    are independent: one forward pass with both). In float32 a window's vectors depend on the size of
    its batch and its place in it by ~1e-5 (the kernels' blocking); with batches of one they do not."""
    n_audio = 0 if audio is None else audio.shape[0]
    emb = model(video=video.to(device), **({"audio": audio.to(device)} if n_audio else {}))  # type: ignore[union-attr]
    v_va = normalise(emb["video"]["va"])
    a_va = normalise(emb["audio"]["va"]) if n_audio else np.zeros((0, v_va.shape[1]), np.float32)
    return {"video_vt": normalise(emb["video"]["vt"]), "video_va": v_va, "audio_va": a_va}


@torch.no_grad()
def embed_windows(model: Any, decoded: DecodedFile, device: str | torch.device = "cpu", batch_size: int = 16
                  ) -> dict[str, np.ndarray]:
    """``{"video_vt", "video_va", "audio_va"}`` embeddings ``(W, D)`` of one decoded file's windows in
    batches of ``batch_size`` (``audio_va`` empty for a file without an audio track). A build batches
    across files instead (:class:`mmv_torch.index.pipeline.WindowBatcher`), with the same vectors."""
    assert decoded.video is not None and decoded.audio is not None
    parts = []
    for i in range(0, decoded.video.shape[0], batch_size):
        audio = decoded.audio[i:i + batch_size] if decoded.has_audio else None
        parts.append(forward_batch(model, decoded.video[i:i + batch_size], audio, device))
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
    emb = model(video=decoded.video.to(device))  # type: ignore[union-attr]
    return {"video_vt": normalise(emb["video"]["vt"])[0], "video_va": normalise(emb["video"]["va"])[0]}
