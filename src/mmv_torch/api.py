"""One-line use: ``model, preprocess, tokenizer = mmv_torch.load(checkpoint)``.

``checkpoint`` is anything ``--checkpoint`` takes (a training run folder, its ``export/``, a ``mmv-torch
convert`` or ``fetch`` folder, a training checkpoint ``.pt``, ``hf-hub:ORG/NAME``;
:func:`mmv_torch.weights.resolve.resolve_checkpoint`). :class:`Preprocess` turns media files or arrays into
the model's inputs following the checkpoint's recorded input contract (its ``data`` config: frames, fps,
crop, sample rate, audio seconds, log-mel front-end), with the evaluation transforms of the data pipeline;
:class:`TextTokenizer` is the checkpoint's tokenizer with its word-mask convention. The model's
``encode_video`` / ``encode_audio`` / ``encode_text`` (:class:`~mmv_torch.models.mmv.MMV`) return
``{space: (B, D)}`` embeddings, L2-normalised::

    model, preprocess, tokenizer = mmv_torch.load("runs/demo/run")
    v = model.encode_video(preprocess.video("clip.mp4"))     # {"va": (1, 512), "vt": (1, 256)}
    a = model.encode_audio(preprocess.audio("bark.wav"))     # {"va": ..., "at": ...}
    t = model.encode_text(tokenizer(["a dog barks"]))        # {"vt": ..., "at": ...}
    v["vt"] @ t["vt"].T, v["va"] @ a["va"].T                 # cosine similarities

Heavy packages (PyAV) are imported by the functions that decode files, so ``import mmv_torch`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmv_torch.config import Config, DataConfig
from mmv_torch.models.mmv import MMV

MediaInput = str | Path | np.ndarray | torch.Tensor
"""A media file's path, or decoded frames ``(T, H, W, 3)`` / a waveform ``(S,)``."""


def _batch(items: MediaInput | Sequence[MediaInput]) -> list[MediaInput]:
    if isinstance(items, (str, Path, np.ndarray, torch.Tensor)):
        return [items]
    out = list(items)
    if not out:
        raise ValueError("preprocess: no inputs given")
    return out


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


@dataclass(frozen=True)
class Preprocess:
    """Media -> model inputs under a checkpoint's input contract (``data``: :class:`DataConfig`).

    ``video(x)`` -> ``(B, 3, T, H, W)``: ``data.num_frames`` frames at ``data.fps`` from the middle of a
    file (or from ``start`` seconds), short side resized to ``data.resize_short``, centre crop of
    ``data.eval_crop_size``, RGB in [0, 1] (the evaluation transform). ``audio(x)`` -> ``(B, 1, T', F)``:
    ``data.audio_seconds`` of mono audio at ``data.sample_rate`` from the middle of a file (a WAV, or a
    video's audio track), log-mel with ``data.num_mel_bins`` bins and ``data.audio_frontend``'s front-end.
    Both take one input or a list (one row each).
    """

    data: DataConfig

    def contract(self) -> dict[str, Any]:
        """The input contract in plain values (what a model card records)."""
        d = self.data
        return {"num_frames": d.num_frames, "fps": d.fps, "resize_short": d.resize_short,
                "crop_size": d.eval_crop_size, "sample_rate": d.sample_rate, "audio_seconds": d.audio_seconds,
                "num_mel_bins": d.num_mel_bins, "audio_frontend": d.audio_frontend, "tokenizer": d.tokenizer,
                "max_words": d.max_words}

    def _frames(self, x: MediaInput, start: float | None) -> torch.Tensor:
        """``(T, H, W, 3)`` uint8 frames of the clip: decoded from a file, or the middle ``num_frames`` of
        given frames (taken as sampled at ``data.fps``; looped when there are fewer)."""
        from mmv_torch.data.media.transforms import temporal_indices

        d = self.data
        if isinstance(x, (str, Path)):
            from mmv_torch.data.media.decode import DecodeError, load_clips, probe

            info = probe(x)
            if not info.has_video:
                raise DecodeError(str(x), "no video stream")
            span = d.num_frames / d.fps
            t0 = max(0.0, (info.duration - span) / 2) if start is None else float(start)
            return load_clips(x, [t0], d.num_frames, d.fps, load_audio=False)[0].frames
        frames = _tensor(x)
        if frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"video frames must be (T, H, W, 3) RGB, got shape {tuple(frames.shape)}")
        length = frames.shape[0]
        offset = max(0, (length - d.num_frames) // 2) if start is None else int(round(float(start) * d.fps))
        return frames[temporal_indices(length, d.num_frames, 1, offset)]

    def video(self, x: MediaInput | Sequence[MediaInput], start: float | None = None) -> torch.Tensor:
        """Video files or frame arrays ``(T, H, W, 3)`` (uint8 0..255 or float 0..1) -> float32
        ``(B, 3, num_frames, crop, crop)``. ``start``: the clip's first second (default: the middle clip)."""
        from mmv_torch.data.media.transforms import eval_transform

        d = self.data
        return torch.stack([eval_transform(self._frames(v, start), d.eval_crop_size, d.resize_short)
                            for v in _batch(x)])

    def _waveform(self, x: MediaInput, start: float | None, sample_rate: int | None) -> torch.Tensor:
        d = self.data
        n = round(d.audio_seconds * d.sample_rate)
        if isinstance(x, (str, Path)):
            from mmv_torch.data.media.decode import load_audio, probe

            t0 = max(0.0, (probe(x).duration - d.audio_seconds) / 2) if start is None else float(start)
            return load_audio(x, t0, d.audio_seconds, d.sample_rate)
        from mmv_torch.data.media.decode import resample

        wave = _tensor(x).detach().cpu().float().numpy()
        if wave.ndim == 2:  # (channels, S) -> mono
            wave = wave.mean(0)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"a waveform must be (S,) or (channels, S) samples, got shape {tuple(wave.shape)}")
        rate = d.sample_rate if sample_rate is None else int(sample_rate)
        if rate != d.sample_rate:
            wave = resample(wave, rate, d.sample_rate)
        offset = max(0, (wave.size - n) // 2) if start is None else int(round(float(start) * d.sample_rate))
        idx = (offset + np.arange(n)) % wave.size  # loops a short waveform, as file decoding does
        return torch.from_numpy(wave[idx].astype(np.float32))

    def audio(self, x: MediaInput | Sequence[MediaInput], start: float | None = None,
              sample_rate: int | None = None) -> torch.Tensor:
        """Audio files (or videos' audio tracks) or waveforms ``(S,)`` / ``(channels, S)`` at
        ``sample_rate`` (default: the checkpoint's; others are resampled) -> log-mel ``(B, 1, T', F)``."""
        from mmv_torch.data.datasets import audio_features

        return torch.stack([audio_features(self._waveform(a, start, sample_rate), self.data) for a in _batch(x)])


class TextTokenizer:
    """The checkpoint's tokenizer: ``tokenizer(["a sentence", ...])`` -> ``TokenizedText`` (``ids``
    ``(B, N)``, ``mask`` ``(B, N)``), ready for ``model.encode_text``.

    ``word_mask`` is the checkpoint's pooling convention: True (checkpoints trained here) max-pools over
    the real words only; False (DeepMind's released weights) over every position, padding included, so
    the mask returned is all True. Without a word list the tokenizer raises on use, naming the fix."""

    def __init__(self, tokenizer: Any | None, word_mask: bool, missing: str = "") -> None:
        self.tokenizer = tokenizer
        self.word_mask = word_mask
        self._missing = missing

    @property
    def vocab(self) -> Any:
        """The vocabulary (``None`` without a word list)."""
        return None if self.tokenizer is None else self.tokenizer.vocab

    def __call__(self, texts: str | Sequence[str]) -> Any:
        from mmv_torch.data.text.tokenizer import MissingVocabularyError

        if self.tokenizer is None:
            raise MissingVocabularyError(self._missing)
        tok = self.tokenizer([texts] if isinstance(texts, str) else list(texts))
        if not self.word_mask:
            tok.mask = torch.ones_like(tok.mask)
        return tok


def checkpoint_text(resolved: Any, cfg: Config, vocab: str | Path | None = None,
                    word_mask: bool | None = None) -> TextTokenizer:
    """The :class:`TextTokenizer` of a resolved checkpoint (``vocab``: a word list or DMVR vocabulary
    instead of its own). ``word_mask`` default: True for a checkpoint with its own word list, else False
    (as ``--word-mask auto``)."""
    from mmv_torch.data.text.tokenizer import MissingVocabularyError
    from mmv_torch.weights.resolve import checkpoint_tokenizer

    mask = resolved.words is not None if word_mask is None else bool(word_mask)
    try:
        return TextTokenizer(checkpoint_tokenizer(resolved, cfg, vocab)[0], mask)
    except MissingVocabularyError:
        return TextTokenizer(None, mask, f"checkpoint {resolved.path} has no vocab.txt: pass "
                                         "mmv_torch.load(..., vocab=FILE) (`mmv-torch vocab match` recovers one)")


def load(checkpoint: str | Path, device: str | torch.device = "cpu", vocab: str | Path | None = None,
         word_mask: bool | None = None) -> tuple[MMV, Preprocess, TextTokenizer]:
    """``(model, preprocess, tokenizer)`` of a checkpoint: the model for inference (eval mode, on ``device``,
    parameters frozen: ``model.requires_grad_(True)`` before fine-tuning it), the
    :class:`Preprocess` of its input contract and its :class:`TextTokenizer` (``vocab``: another word
    list or DMVR vocabulary; ``word_mask``: override the pooling convention). ``checkpoint``: a run
    folder, an export, a converted or fetched folder, a ``.pt`` or ``hf-hub:ORG/NAME``."""
    from mmv_torch.weights.resolve import resolve_checkpoint

    resolved = resolve_checkpoint(checkpoint)
    cfg = resolved.config
    model = resolved.load_model(device).requires_grad_(False)
    return model, Preprocess(cfg.data), checkpoint_text(resolved, cfg, vocab, word_mask)
