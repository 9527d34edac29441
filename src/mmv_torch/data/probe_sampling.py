"""Clip sampling and augmentation of the linear-probe protocols.

A :class:`ProbeProtocol` says how a labelled video becomes probe inputs, in frame indices of the video
resampled to ``source_fps`` (the official scripts index the decoded frame sequence):

- training clip: ``num_frames`` frames at ``stride`` from a random offset, uniform in
  ``[0, L - (T-1)*stride)`` (``[0, L)`` when the video is shorter), looping past the end; then a random
  horizontal flip, the short side resized to ``resize_short`` and a random ``crop_size`` crop. No scale
  or colour jitter: those belong to pretraining (:func:`~mmv_torch.data.media.transforms.train_transform`).
- test clips: ``N`` windows at offsets ``int(linspace(0, max(0, L - T*stride), N))``, each with a centre
  ``crop_size`` crop after the short-side resize; the classifier's scores are averaged over them.

Protocols (:data:`PROTOCOLS`):

- ``official-ucf101``: the official MMV UCF101 script (``eval_ucf101.py``): 32 frames at stride 2 of
  the 25-fps video, short side 224, crop 224, flip; StandardScaler + LinearSVC(C=0.001).
- ``official-hmdb51``: DMVR's HMDB51 MMV example (``linear_mmv_hmdb.py``): 32 frames at stride 1 of
  frames extracted at 10 fps (DMVR's ``generate_from_file.py``), short side 224, crop 200, flip;
  C = 0.0003 (S3D-G), 0.0001 (TSM-ResNet50), 0.0003 (TSM-ResNet50x2), chosen from the backbone; other
  backbones get C by cross-validation on the training split.
- ``official-cv``: the UCF101 sampling and augmentation with C chosen by cross-validation on the
  training split from :data:`C_GRID` (for any other labelled set).
- ``config``: the checkpoint's own clip settings (``data.num_frames`` frames at ``data.fps``, short
  side ``data.resize_short``, crop ``data.eval_crop_size``) with the same probe augmentation and C
  grid: for networks trained on other clip lengths or sizes (e.g. the demo).

Audio probes: a random ``audio_seconds`` window in training; ``N`` linearly spaced windows at test
(``linspace(0, max(0, duration - audio_seconds), N)``; one window is centred).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from mmv_torch.config import DataConfig, VideoConfig
from mmv_torch.data.media.audio import log_mel_spectrogram
from mmv_torch.data.media.decode import Source, load_clips
from mmv_torch.data.media.transforms import (
    linspace_offsets,
    linspace_start_times,
    probe_test_transform,
    probe_train_transform,
    random_offset,
    temporal_indices,
)

C_GRID = (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 1e-1, 1.0)
"""LinearSVC C values tried by cross-validation when a protocol does not fix C."""

HMDB51_C = {("s3d", 1.0): 3e-4, ("tsm_resnet", 1.0): 1e-4, ("tsm_resnet", 2.0): 3e-4}
"""C of DMVR's HMDB51 MMV example per released backbone (S3D-G, TSM-ResNet50, TSM-ResNet50x2)."""

PROTOCOL_NAMES = ("official-ucf101", "official-hmdb51", "official-cv", "config")
"""Values of ``eval linear --protocol`` besides ``auto``."""


@dataclass(frozen=True)
class ProbeProtocol:
    """Sampling, augmentation and classifier regularisation of a linear probe (module doc)."""

    name: str
    source_fps: float
    """Frame rate the video is resampled to before frames are indexed."""
    num_frames: int
    stride: int
    resize_short: int
    crop_size: int
    """Random crop in training, centre crop at test."""
    flip: bool = True
    cs: tuple[float, ...] = C_GRID
    """One C (fixed by the protocol) or a grid (chosen by cross-validation on the training split)."""
    c_choice: str = "cross-validation on the training split"

    def frame_count(self, duration: float) -> int:
        """L, the number of frames of a ``duration``-second video at ``source_fps`` (at least 1)."""
        return max(1, int(math.floor(duration * self.source_fps + 1e-6)))

    def train_indices(self, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Frame indices int64 ``(T,)`` of a training clip of an ``length``-frame video."""
        off = random_offset(length, self.num_frames, self.stride, generator)
        return temporal_indices(length, self.num_frames, self.stride, off)

    def test_offsets(self, length: int, num_windows: int) -> list[int]:
        """First frames of the ``num_windows`` test clips of an ``length``-frame video."""
        return linspace_offsets(length, self.num_frames * self.stride, num_windows)

    def settings(self) -> dict[str, Any]:
        """What reports record about the protocol."""
        out = asdict(self)
        out["cs"] = [float(c) for c in self.cs]
        out["train_augmentation"] = (f"random {self.crop_size} crop" + (" + horizontal flip" if self.flip else "")
                                     + " (no scale or colour jitter)")
        out["test_crop"] = f"centre {self.crop_size}"
        return out


PROTOCOLS = {
    "official-ucf101": ProbeProtocol("official-ucf101", 25.0, 32, 2, 224, 224, cs=(1e-3,),
                                     c_choice="fixed by the official UCF101 script"),
    "official-hmdb51": ProbeProtocol("official-hmdb51", 10.0, 32, 1, 224, 200, cs=C_GRID),
    "official-cv": ProbeProtocol("official-cv", 25.0, 32, 2, 224, 224),
}


def config_protocol(cfg: DataConfig) -> ProbeProtocol:
    """The ``config`` protocol: the checkpoint's clip settings with probe augmentation and the C grid."""
    return ProbeProtocol("config", float(cfg.fps), cfg.num_frames, 1, cfg.resize_short, cfg.eval_crop_size,
                         flip=cfg.flip)


def hmdb51_c(video: VideoConfig) -> float | None:
    """DMVR's HMDB51 C for the backbone of ``video`` (None: not a released backbone)."""
    if video.backbone == "tsm_resnet" and video.depth != 50:
        return None
    return HMDB51_C.get((video.backbone, float(video.width_mult)))


def resolve_protocol(name: str, source_kind: str | None, data: DataConfig, video: VideoConfig) -> ProbeProtocol:
    """The protocol called ``name`` (``auto``: ``official-ucf101`` / ``official-hmdb51`` for a source of that
    kind, else ``official-cv``), with HMDB51's C taken from the backbone."""
    if name == "auto":
        name = {"ucf101": "official-ucf101", "hmdb51": "official-hmdb51"}.get(source_kind or "", "official-cv")
    if name == "config":
        return config_protocol(data)
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol {name!r} is not one of {['auto', *PROTOCOL_NAMES]}")
    proto = PROTOCOLS[name]
    if name == "official-hmdb51":
        c = hmdb51_c(video)
        if c is not None:
            return replace(proto, cs=(c,), c_choice=f"DMVR's HMDB51 value for the {video.backbone} backbone")
        return replace(proto, c_choice=f"cross-validation on the training split (backbone {video.backbone} "
                                       f"x{video.width_mult:g} has no official HMDB51 C)")
    return proto


def _audio(wave: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    return log_mel_spectrogram(wave, cfg.sample_rate, cfg.num_mel_bins, frontend=cfg.audio_frontend)[0]


def _clips(src: Source, proto: ProbeProtocol, offsets: Sequence[int], cfg: DataConfig, start: float = 0.0
           ) -> list[Any]:
    """Per offset, frames ``offset + i*stride`` (looping) of the video at ``source_fps`` counted from ``start``
    seconds, with the audio around them (one decoding pass for the windows that overlap)."""
    return load_clips(src, [start + off / proto.source_fps for off in offsets], proto.num_frames,
                      proto.source_fps / proto.stride, cfg.sample_rate, cfg.audio_seconds)


def probe_video_item(src: Source, duration: float, cfg: DataConfig, proto: ProbeProtocol, train: bool,
                     num_windows: int, generator: torch.Generator, start: float = 0.0) -> dict[str, torch.Tensor]:
    """A video item of a probe data set: ``video`` ``(3,T,S,S)`` for training or one test window,
    ``(N,3,T,S,S)`` for ``num_windows = N > 1``; ``audio`` alike; ``has_audio``. The clip's frames come
    from the ``duration`` seconds that begin at ``start`` (a manifest's window inside a longer file)."""
    length = proto.frame_count(duration)
    if train:
        offset = int(proto.train_indices(length, generator)[0])
        clip = _clips(src, proto, [offset], cfg, start)[0]
        video = probe_train_transform(clip.frames, proto.crop_size, proto.resize_short, proto.flip, generator)
        return {"video": video, "audio": _audio(clip.audio, cfg), "has_audio": torch.tensor(clip.has_audio)}
    vids, auds, has = [], [], False
    for clip in _clips(src, proto, proto.test_offsets(length, num_windows), cfg, start):
        vids.append(probe_test_transform(clip.frames, proto.crop_size, proto.resize_short))
        auds.append(_audio(clip.audio, cfg))
        has = clip.has_audio
    if num_windows == 1:
        return {"video": vids[0], "audio": auds[0], "has_audio": torch.tensor(has)}
    return {"video": torch.stack(vids), "audio": torch.stack(auds), "has_audio": torch.tensor(has)}


def audio_window_starts(duration: float, seconds: float, num_windows: int) -> list[float]:
    """Test windows of an audio probe: one centred window, or ``num_windows`` linearly spaced ones."""
    if num_windows == 1:
        return [max(0.0, (duration - seconds) / 2)]
    return linspace_start_times(duration, seconds, num_windows)


def stack_windows(items: list[torch.Tensor]) -> torch.Tensor:
    """One window as is, several stacked on a new first axis."""
    return items[0] if len(items) == 1 else torch.stack(items)
