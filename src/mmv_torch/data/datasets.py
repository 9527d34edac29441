"""Data sets: pretraining samples and labelled clips from manifest entries, with robust loading.

The manifests themselves (JSONL files, class folders) are read by :mod:`mmv_torch.data.manifests`.

Sample format of :class:`PretrainDataset` (and of the shard reader in ``shards.py``), a dict of tensors
that the default collate stacks into a batch:

==============  ========================  ====================================================
key             dtype, shape              meaning
==============  ========================  ====================================================
``video``       float32 ``(3, T, H, W)``  frames in [0, 1] (T = ``num_frames``, H = W = crop)
``audio``       float32 ``(1, T', F)``    log-mel of the audio window (F = ``num_mel_bins``)
``has_audio``   bool ``()``               False: the file has no audio stream (audio is silence)
``text``        int64 ``(K, N)``          word ids of the K narrations nearest the clip (pad 0)
``text_mask``   bool ``(K,)``             which of the K candidates are real narrations
``word_mask``   bool ``(K, N)``           which positions hold words
``index``       int64 ``()``              the item's index (after skips: the item really loaded)
==============  ========================  ====================================================

:class:`LabelledDataset` serves labelled entries (:class:`~mmv_torch.data.manifests.LabelledEntry`) to
the probes and retrieval.

Robustness: a file that cannot be decoded is skipped (another item is loaded instead), counted and
logged (logger ``mmv_torch.data``) with its path and reason. :class:`SkipRateExceeded` is raised only
when, after ``min_attempts`` loads, the fraction of skipped loads passes ``max_skip_rate``
(``DataConfig.max_skip_rate``). Counts are per process (each DataLoader worker counts its own loads).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from mmv_torch.config import DataConfig
from mmv_torch.data.manifests import MODALITIES, LabelledEntry, VideoEntry, class_names, read_pretrain_manifest
from mmv_torch.data.media.audio import log_mel_spectrogram
from mmv_torch.data.media.batch_augment import deferred_augment
from mmv_torch.data.media.decode import DecodeError, Source, load_audio, load_clips, load_image, probe, window_span
from mmv_torch.data.media.transforms import dmvr_train_transform, eval_transform, random_start_time, train_transform
from mmv_torch.data.narrations import (
    Narration,
    Tokenize,
    encode_narrations,
    nearest_narrations,
    validate_narrations,
)
from mmv_torch.data.probe_sampling import (
    ProbeProtocol,
    audio_window_starts,
    config_protocol,
    probe_video_item,
    stack_windows,
)

logger = logging.getLogger("mmv_torch.data")



class SkipRateExceeded(RuntimeError):
    """Too many files failed to decode (the skip rate passed ``max_skip_rate``)."""














# ------------------------------------------------------------------------------------------------
# Skips


class SkipTracker:
    """Counts loads and skips of one process; logs each skip; raises when the skip rate is too high.

    Two limits, both ``max_skip_rate``: skipped loads over all loads (once ``min_attempts`` loads were made),
    and, when the data set's ``size`` (number of files) is known, distinct bad files over ``size``. A bad
    file is never loaded again, so the first rate falls as the good files keep loading; the second one
    stops a small data set (2 bad files of 3) that the first would let train on what is left."""

    def __init__(self, max_skip_rate: float, min_attempts: int = 20, keep: int = 1000, size: int | None = None
                 ) -> None:
        self.max_skip_rate = float(max_skip_rate)
        self.min_attempts = int(min_attempts)
        self.keep = keep
        self.size = size
        self.attempts = 0
        self.skips = 0
        self.skipped: list[tuple[str, str]] = []
        """``(path, reason)`` of the most recent skips (at most ``keep``)."""
        self.bad_files: set[str] = set()

    @property
    def rate(self) -> float:
        """Skipped loads / all loads so far."""
        return self.skips / self.attempts if self.attempts else 0.0

    def ok(self) -> None:
        """Count a successful load."""
        self.attempts += 1

    def skip(self, path: str, reason: str) -> None:
        """Count, log and remember a failed load; raise :class:`SkipRateExceeded` past the limit."""
        self.attempts += 1
        self.skips += 1
        self.bad_files.add(path)
        self.skipped.append((path, reason))
        del self.skipped[: -self.keep]
        logger.warning("skipping %s: %s (%d of %d loads skipped in pid %d)", path, reason, self.skips,
                       self.attempts, os.getpid())
        recent = "; ".join(f"{p}: {r}" for p, r in self.skipped[-5:])
        if self.size and len(self.bad_files) > self.max_skip_rate * self.size:
            raise SkipRateExceeded(
                f"{len(self.bad_files)} of the data set's {self.size} files failed to decode "
                f"({len(self.bad_files) / self.size:.1%} > max_skip_rate {self.max_skip_rate:.1%}); run `mmv-torch "
                f"data check` on the data. Last failures: {recent}")
        if self.attempts >= self.min_attempts and self.rate > self.max_skip_rate:
            raise SkipRateExceeded(
                f"{self.skips} of {self.attempts} loads failed ({self.rate:.1%} > max_skip_rate "
                f"{self.max_skip_rate:.1%}); run `mmv-torch data check` on the data. Last failures: {recent}")


def _decode_reason(e: Exception) -> str:
    return e.reason if isinstance(e, DecodeError) else f"unexpected {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------------
# Pretraining samples


def clip_span(cfg: DataConfig) -> float:
    """Seconds covered by a clip's frames: ``num_frames / fps``."""
    return cfg.num_frames / cfg.fps


def audio_features(waveform: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """``(S,)`` waveform -> ``(1, T', F)`` log-mel with the front-end of ``cfg.audio_frontend``."""
    return log_mel_spectrogram(waveform, cfg.sample_rate, cfg.num_mel_bins, frontend=cfg.audio_frontend)[0]


def make_sample(src: Source, name: str, narrations: Sequence[Narration], duration: float, cfg: DataConfig,
                tokenize: Tokenize | None, train: bool, generator: torch.Generator, index: int,
                threads: int = 1, window: tuple[float, float] | None = None, batch_augment: bool = False
                ) -> dict[str, torch.Tensor]:
    """Decode and transform one clip into the sample format of the module doc.

    Training: random start in ``[0, duration - span]`` and random augmentation (``cfg.augment``: DMVR's or
    the previous default; ``batch_augment``: only drawn, see data/batch_augment.py); evaluation: the middle
    of the video, centre crop of ``eval_crop_size``. ``window`` (seconds in the file): the clip comes from
    that segment. Raises :class:`DecodeError`.
    """
    return make_samples(src, name, narrations, duration, cfg, tokenize, train, generator, index, threads, window,
                        batch_augment)[0]


def make_samples(src: Source, name: str, narrations: Sequence[Narration], duration: float, cfg: DataConfig,
                 tokenize: Tokenize | None, train: bool, generator: torch.Generator, index: int,
                 threads: int = 1, window: tuple[float, float] | None = None, batch_augment: bool = False,
                 count: int = 1) -> list[dict[str, torch.Tensor]]:
    """``count`` samples of one file as :func:`make_sample` makes one (all with ``index``): the starts are drawn
    first (each uniform, independent), then each clip's augmentation; the clips come from one opened container
    (:func:`~mmv_torch.data.media.decode.load_clips`). ``count = 1`` draws exactly what :func:`make_sample` draws."""
    span = clip_span(cfg)
    offset, length = window_span(duration, window, name)
    starts = [offset + (random_start_time(length, span, generator) if train else max(0.0, (length - span) / 2))
              for _ in range(count)]
    clips = load_clips(src, starts, cfg.num_frames, cfg.fps, cfg.sample_rate, cfg.audio_seconds, name=name,
                       threads=threads)
    samples = []
    for start, clip in zip(starts, clips):
        if train and batch_augment and cfg.augment == "dmvr":  # "frames" + "augment", not "video": batch_augment.py
            views = deferred_augment(clip.frames, cfg, generator)
        elif train and cfg.augment == "dmvr":
            views = {"video": dmvr_train_transform(clip.frames, cfg.crop_size, cfg.resize_short, cfg.scale_jitter,
                                                   cfg.scale_prob, cfg.flip, cfg.color_prob, generator)}
        elif train:
            views = {"video": train_transform(clip.frames, cfg.crop_size, cfg.resize_short, cfg.scale_jitter,
                                              cfg.flip, cfg.color_jitter, generator)}
        else:
            views = {"video": eval_transform(clip.frames, cfg.eval_crop_size, cfg.resize_short)}
        near = nearest_narrations(narrations, start, start + span, cfg.num_candidates)
        text, text_mask, word_mask = encode_narrations(near, tokenize, cfg.num_candidates, cfg.max_words)
        samples.append({**views, "audio": audio_features(clip.audio, cfg), "has_audio": torch.tensor(clip.has_audio),
                        "text": text, "text_mask": text_mask, "word_mask": word_mask,
                        "index": torch.tensor(index, dtype=torch.int64)})
    return samples


def _as_list(x: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [x] if isinstance(x, str | Path) else list(x)


class PretrainDataset(Dataset):
    """Clips from one or several pretraining manifests (sample format: module doc).

    Args:
        manifests: one manifest path or several (their entries are concatenated).
        cfg: clip, augmentation, audio and text settings; ``cfg.max_skip_rate`` bounds the skips.
        tokenize: narration → (ids (N,), word mask (N,)); None gives no text (all masked).
        weights: per-manifest sampling weights for :meth:`sampler` (default: by size, i.e. uniform
            over videos).
        train: random clips and augmentation (True) or the middle clip, centre crop (False).
        seed: base seed; item ``i`` in epoch ``e`` uses a generator seeded from (seed, e, i).
        min_attempts: loads before the skip rate is checked.
        max_retries: consecutive failed loads of one item before giving up with an error.
    """

    def __init__(self, manifests: str | Path | Sequence[str | Path], cfg: DataConfig,
                 tokenize: Tokenize | None = None, weights: Sequence[float] | None = None, train: bool = True,
                 seed: int = 0, min_attempts: int = 20, max_retries: int = 50) -> None:
        paths = _as_list(manifests)
        if not paths:
            raise ValueError("PretrainDataset needs at least one manifest")
        self.entries: list[VideoEntry] = []
        self.bounds = [0]
        for p in paths:
            self.entries += read_pretrain_manifest(p)
            self.bounds.append(len(self.entries))
        if not self.entries:
            raise ValueError(f"the manifests {[str(p) for p in paths]} list no videos")
        if weights is None:
            weights = [float(b - a) for a, b in zip(self.bounds, self.bounds[1:])]
        if len(weights) != len(paths) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be {len(paths)} non-negative numbers with a positive sum, got "
                             f"{list(weights)}")
        self.weights = [float(w) for w in weights]
        self.cfg = cfg
        self.tokenize = tokenize
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.max_retries = max_retries
        self.tracker = SkipTracker(cfg.max_skip_rate, min_attempts, size=len({e.path for e in self.entries}))
        self._durations: dict[str, float] = {}
        self._checked: dict[int, tuple[Narration, ...]] = {}
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Use fresh random clips and augmentations for ``epoch``."""
        self.epoch = int(epoch)

    def manifest_of(self, index: int) -> int:
        """Which manifest (position in ``manifests``) item ``index`` comes from."""
        return bisect.bisect_right(self.bounds, index) - 1

    def sample_weights(self) -> torch.Tensor:
        """Per-item float64 ``(len,)`` weights giving each manifest its share of ``weights``."""
        w = torch.zeros(len(self.entries), dtype=torch.float64)
        for m, (a, b) in enumerate(zip(self.bounds, self.bounds[1:])):
            if b > a:
                w[a:b] = self.weights[m] / (b - a)
        return w

    def sampler(self, num_samples: int, generator: torch.Generator | None = None) -> WeightedRandomSampler:
        """A sampler drawing ``num_samples`` items with replacement, manifests mixed by ``weights``."""
        return WeightedRandomSampler(self.sample_weights(), num_samples, replacement=True, generator=generator)

    def _duration(self, entry: VideoEntry) -> float:
        if entry.duration is not None:
            return entry.duration
        if entry.path not in self._durations:
            self._durations[entry.path] = probe(entry.path).duration
        return self._durations[entry.path]

    def _narrations(self, i: int, duration: float) -> tuple[Narration, ...]:
        """Entry ``i``'s narrations checked against the probed ``duration`` (once; problems logged)."""
        e = self.entries[i]
        if e.duration is not None or not e.narrations:
            return e.narrations
        if i not in self._checked:
            kept, issues = validate_narrations(e.raw.get("narration"), e.where, duration)
            if len(issues) > len(e.issues or ()):
                logger.warning("%s: narrations outside the %.2f-s video: %s", e.where, duration, issues.reasons())
            self._checked[i] = kept
        return self._checked[i]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Item ``index``: one sample, or in training with ``cfg.clips_per_video = K > 1`` a list of K samples of
        one video (the training loader flattens them into the batch)."""
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFFFFFFFFFFFFFF)
        i = int(index)
        k = self.cfg.clips_per_video if self.train else 1  # evaluation takes the one middle clip
        for _ in range(self.max_retries):
            if i not in self._bad:
                e = self.entries[i]
                try:
                    dur = self._duration(e)
                    samples = make_samples(e.path, e.path, self._narrations(i, dur), dur, self.cfg, self.tokenize,
                                           self.train, g, i, window=e.window,
                                           batch_augment=self.cfg.batch_augment, count=k)
                except (DecodeError, av_errors()) as err:
                    self._bad.add(i)
                    self.tracker.skip(e.path, _decode_reason(err))
                else:
                    self.tracker.ok()
                    return samples if k > 1 else samples[0]
            if len(self._bad) >= len(self.entries):
                raise SkipRateExceeded(f"every file of the data set failed to decode ({len(self._bad)} files)")
            i = int(torch.randint(len(self.entries), (), generator=g))
        raise SkipRateExceeded(f"{self.max_retries} files in a row failed to decode while loading item {index}")


def av_errors() -> type[Exception]:
    """PyAV's base error type (imported lazily so that ``import mmv_torch`` does not need PyAV)."""
    import av

    return av.FFmpegError


# ------------------------------------------------------------------------------------------------
# Labelled data












class LabelledDataset(Dataset):
    """Labelled clips for linear probes and retrieval, one modality per data set.

    Items are dicts: ``"label"`` int64 ``()`` (-1 when the entry has no label), ``"index"`` int64 ``()``,
    and per modality:

    - video: ``"video"`` float32 ``(3,T,H,W)`` (train: random clip with the probe augmentation, random
      crop + flip only; eval: middle clip, or ``(N,3,T,H,W)`` with ``num_windows = N > 1`` linearly spaced
      clips), ``"audio"`` ``(1,T',F)`` (``(N,1,T',F)``) and ``"has_audio"``;
    - audio: ``"audio"`` float32 ``(1,T',F)`` of ``cfg.audio_seconds`` (random start in training;
      otherwise centred, or ``(N,1,T',F)`` for ``N > 1`` linearly spaced windows);
    - image: ``"image"`` float32 ``(3,H,W)`` (resize short side + centre crop of ``eval_crop_size``).

    ``protocol`` (a :class:`~mmv_torch.data.probe_sampling.ProbeProtocol`) samples video clips by frame index
    as the official linear evaluations do; without it clips follow ``cfg`` (``num_frames`` at ``fps``,
    training crops of ``eval_crop_size``). ``augmentation="pretraining"`` gives training clips the
    pretraining augmentation instead (scale and colour jitter; fine-tuning). Broken files are skipped as
    in :class:`PretrainDataset`.
    """

    def __init__(self, entries: Sequence[LabelledEntry], cfg: DataConfig, modality: str = "video",
                 split: str | None = None, classes: Sequence[str] | None = None, train: bool = False,
                 num_windows: int = 1, seed: int = 0, min_attempts: int = 20, protocol: ProbeProtocol | None = None,
                 augmentation: str = "probe") -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality={modality!r} is not one of {list(MODALITIES)}")
        if augmentation not in ("probe", "pretraining"):
            raise ValueError(f"augmentation must be 'probe' or 'pretraining', got {augmentation!r}")
        self.entries = [e for e in entries if e.modality == modality and (split is None or e.split == split)]
        if not self.entries:
            raise ValueError(f"no {modality} entries" + (f" in split {split!r}" if split else ""))
        self.classes = list(classes) if classes is not None else class_names(entries)
        self._class_index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({e.label for e in self.entries if e.label and e.label not in self._class_index})
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not in classes")
        self.cfg, self.modality, self.train, self.seed = cfg, modality, train, seed
        self.num_windows = int(num_windows)
        self.protocol, self.augmentation = protocol, augmentation
        self.epoch = 0
        self.tracker = SkipTracker(cfg.max_skip_rate, min_attempts, size=len({e.path for e in self.entries}))
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        """Fresh augmentation for ``epoch``."""
        self.epoch = int(epoch)

    def _load(self, e: LabelledEntry, g: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.modality == "image":
            img = eval_transform(load_image(e.path)[None], cfg.eval_crop_size, cfg.resize_short)
            return {"image": img[:, 0]}
        if self.modality == "audio":
            offset, dur = window_span(probe(e.path).duration, e.window, e.path)
            starts = ([random_start_time(dur, cfg.audio_seconds, g)] if self.train
                      else audio_window_starts(dur, cfg.audio_seconds, self.num_windows))
            return {"audio": stack_windows([audio_features(load_audio(e.path, offset + st, cfg.audio_seconds,
                                                                      cfg.sample_rate), cfg) for st in starts])}
        full = probe(e.path).duration
        span = clip_span(cfg)
        if self.train and self.augmentation == "pretraining":
            s = make_sample(e.path, e.path, (), full, cfg, None, True, g, 0, window=e.window)
            return {k: s[k] for k in ("video", "audio", "has_audio")}
        offset, dur = window_span(full, e.window, e.path)
        if self.train or self.protocol is not None:
            proto = self.protocol or config_protocol(cfg)
            return probe_video_item(e.path, dur, cfg, proto, self.train, self.num_windows, g, start=offset)
        starts = ([offset + max(0.0, (dur - span) / 2)] if self.num_windows == 1
                  else [offset + float(v) for v in np.linspace(0.0, max(0.0, dur - span), self.num_windows)])
        vids, auds, has = [], [], False
        try:
            clips = load_clips(e.path, starts, cfg.num_frames, cfg.fps, cfg.sample_rate, cfg.audio_seconds)
        except DecodeError as err:  # a damaged audio track: the video is kept without sound (a damaged video raises)
            clips = load_clips(e.path, starts, cfg.num_frames, cfg.fps, cfg.sample_rate, cfg.audio_seconds,
                               load_audio=False)
            clips = [dataclasses.replace(c, has_audio=False) for c in clips]
            logger.warning("audio of %s not decoded (%s): its video is embedded without sound", e.path, err.reason)
        for clip in clips:
            vids.append(eval_transform(clip.frames, cfg.eval_crop_size, cfg.resize_short))
            auds.append(audio_features(clip.audio, cfg))
            has = clip.has_audio
        if self.num_windows == 1:
            return {"video": vids[0], "audio": auds[0], "has_audio": torch.tensor(has)}
        return {"video": torch.stack(vids), "audio": torch.stack(auds), "has_audio": torch.tensor(has)}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, int(index))) & 0x7FFFFFFFFFFFFFFF)
        i = int(index)
        for _ in range(50):
            if i not in self._bad:
                e = self.entries[i]
                try:
                    out = self._load(e, g)
                except (DecodeError, av_errors()) as err:
                    self._bad.add(i)
                    self.tracker.skip(e.path, _decode_reason(err))
                else:
                    self.tracker.ok()
                    out["label"] = torch.tensor(self._class_index.get(e.label, -1), dtype=torch.int64)
                    out["index"] = torch.tensor(i, dtype=torch.int64)
                    return out
            if len(self._bad) >= len(self.entries):
                raise SkipRateExceeded(f"every file of the data set failed to decode ({len(self._bad)} files)")
            i = int(torch.randint(len(self.entries), (), generator=g))
        raise SkipRateExceeded(f"50 files in a row failed to decode while loading item {index}")
