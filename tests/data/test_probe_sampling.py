"""Tests for mmv_torch.data.probe_sampling: the linear-probe protocols' frame indices, crops and augmentation.

The expected values are written from the official UCF101 script's logic (``eval_ucf101.py``): training
offset uniform in ``[0, L - (T-1)*stride)``, test offsets ``int(linspace(0, max(0, L - T*stride), N))``,
frames ``offset + i*stride`` looping over the sequence, random flip + short side 224 + random 224 crop in
training, centre 224 crop at test.
"""

from __future__ import annotations

import wave
from dataclasses import replace

import numpy as np
import pytest
import torch

from mmv_torch.config import DataConfig, VideoConfig
from mmv_torch.data.datasets import LabelledDataset, audio_features
from mmv_torch.data.manifests import LabelledEntry
from mmv_torch.data.media.decode import load_audio
from mmv_torch.data.media.transforms import (
    probe_test_transform,
    probe_train_transform,
    resize_short_side,
    to_float_video,
)
from mmv_torch.data.probe_sampling import PROTOCOLS, probe_video_item, resolve_protocol
from tests.helpers.media_utils import LEVELS, frame_index_of, frame_level, make_video

CFG = DataConfig(num_frames=4, fps=8.0, crop_size=32, eval_crop_size=32, resize_short=36, audio_seconds=0.5,
                 num_mel_bins=20, max_skip_rate=0.5, color_jitter=0.4, scale_jitter=(0.8, 1.2))


def test_official_ucf101_and_hmdb51_settings():
    ucf = PROTOCOLS["official-ucf101"]
    assert (ucf.source_fps, ucf.num_frames, ucf.stride, ucf.resize_short, ucf.crop_size, ucf.flip, ucf.cs) == (
        25.0, 32, 2, 224, 224, True, (0.001,))
    s3d, tsm = VideoConfig(backbone="s3d"), VideoConfig(backbone="tsm_resnet")
    tsm2 = VideoConfig(backbone="tsm_resnet", width_mult=2)
    hmdb = resolve_protocol("official-hmdb51", None, CFG, s3d)
    assert (hmdb.num_frames, hmdb.stride, hmdb.crop_size, hmdb.cs) == (32, 1, 200, (0.0003,))
    assert resolve_protocol("official-hmdb51", None, CFG, tsm).cs == (0.0001,)
    assert resolve_protocol("official-hmdb51", None, CFG, tsm2).cs == (0.0003,)
    assert len(resolve_protocol("official-hmdb51", None, CFG, VideoConfig(backbone="s3d", width_mult=0.25)).cs) > 1
    # auto: the data source says which set it is; anything else gets C by cross-validation
    assert resolve_protocol("auto", "ucf101", CFG, s3d).name == "official-ucf101"
    assert resolve_protocol("auto", "hmdb51", CFG, tsm).cs == (0.0001,)
    other = resolve_protocol("auto", None, CFG, s3d)
    assert other.name == "official-cv" and len(other.cs) > 1 and (other.stride, other.crop_size) == (2, 224)
    with pytest.raises(ValueError, match="protocol"):
        resolve_protocol("kinetics", None, CFG, s3d)


def test_official_ucf101_frame_indices():
    ucf = PROTOCOLS["official-ucf101"]
    # test: L=90 frames, span T*stride = 64 -> offsets int(linspace(0, 26, 10))
    assert ucf.test_offsets(90, 10) == [0, 2, 5, 8, 11, 14, 17, 20, 23, 26]
    assert ucf.test_offsets(40, 10) == [0] * 10  # shorter than the span: every window starts at 0
    # training: offsets uniform over [0, L - (T-1)*stride) = [0, 28) for L = 90, frames offset + 2i
    g = torch.Generator().manual_seed(0)
    offs = set()
    for _ in range(400):
        idx = ucf.train_indices(90, g)
        assert torch.equal(idx, idx[0] + 2 * torch.arange(32))
        offs.add(int(idx[0]))
    assert offs == set(range(28))
    # a video shorter than the clip loops: offset uniform in [0, L), indices modulo L
    idx = ucf.train_indices(40, g)
    assert torch.equal(idx, (idx[0] + 2 * torch.arange(32)) % 40) and 0 <= int(idx[0]) < 40


@pytest.mark.parametrize("num_frames", [90, 40])
def test_decoded_test_windows_are_the_official_frames(tmp_path, num_frames):
    path = make_video(tmp_path / "v.mp4", num_frames=num_frames, fps=25, size=(40, 32), acodec=None)
    small = replace(PROTOCOLS["official-ucf101"], resize_short=32, crop_size=32)  # official sampling, small crops
    item = probe_video_item(str(path), num_frames / 25, CFG, small, False, 10, torch.Generator())
    assert item["video"].shape == (10, 3, 32, 32, 32)
    offsets = small.test_offsets(num_frames, 10)
    for w, off in enumerate(offsets):
        got = [frame_index_of((item["video"][w, :, t].permute(1, 2, 0) * 255).numpy()) for t in range(32)]
        want = [((off + 2 * t) % num_frames) % LEVELS for t in range(32)]
        assert got == want, (w, off)


def test_probe_train_transform_is_crop_and_flip_only():
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (2, 240, 320, 3), dtype=torch.uint8)
    resized = resize_short_side(to_float_video(frames), 224)
    assert resized.shape == (3, 2, 224, 298)
    lefts, flips = set(), 0
    for _ in range(30):
        out = probe_train_transform(frames, 224, 224, True, g)
        assert out.shape == (3, 2, 224, 224)
        matches = [(left, flip) for left in range(298 - 224 + 1) for flip in (False, True)
                   if torch.equal(out, (resized.flip(-1) if flip else resized)[..., left:left + 224])]
        assert len(matches) >= 1  # exactly a crop of the resized clip, maybe mirrored: no colour or scale change
        lefts.add(matches[0][0])
        flips += matches[0][1]
    assert len(lefts) > 5 and 5 < flips < 25
    test = probe_test_transform(frames, 224, 224)
    assert torch.equal(test, resized[..., 37:261])  # centre crop: (298 - 224) // 2 = 37


def test_probe_training_has_no_pretraining_jitter(tmp_path):
    path = make_video(tmp_path / "v.mp4", num_frames=30, fps=10, size=(48, 40), acodec=None)
    entries = [LabelledEntry(str(path), "video", "a", "train")]
    grid = np.array([frame_level(i) for i in range(LEVELS)], dtype=np.float64)
    for proto in (None, replace(PROTOCOLS["official-ucf101"], resize_short=36, crop_size=32)):
        ds = LabelledDataset(entries, CFG, "video", split="train", train=True, protocol=proto)
        for epoch in range(6):
            ds.set_epoch(epoch)
            video = ds[0]["video"]
            assert video.shape[-2:] == (32, 32)
            for t in range(video.shape[1]):
                level = float(video[:, t].mean()) * 255
                assert float(video[:, t].std()) * 255 < 1.5  # flat frames stay flat
                assert np.abs(grid - level).min() < 1.5, (proto, epoch, t, level)  # grey levels unchanged
    # fine-tuning keeps the pretraining augmentation when asked for it
    jittered = LabelledDataset(entries, CFG, "video", split="train", train=True, augmentation="pretraining")
    levels = [float(jittered[0]["video"][:, t].mean()) * 255 for t in range(4) for jittered.epoch in range(5)]
    assert max(np.abs(grid - v).min() for v in levels) > 1.5


def _chirp_wav(path, seconds=3.0, rate=16000):
    """A WAV whose pitch rises with time (200 Hz to 4 kHz), so windows at different times differ."""
    t = np.arange(int(seconds * rate)) / rate
    sig = 0.5 * np.sin(2 * np.pi * (200 * t + (3800 / (2 * seconds)) * t ** 2))
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((sig * 32767).astype("<i2").tobytes())
    return path


def test_audio_probe_windows_are_linearly_spaced(tmp_path):
    path = _chirp_wav(tmp_path / "s.wav")
    entries = [LabelledEntry(str(path), "audio", "a", "test")]
    cfg = replace(CFG, sample_rate=16000)
    item = LabelledDataset(entries, cfg, "audio", split="test", num_windows=5)[0]
    assert item["audio"].shape[0] == 5
    for n, start in enumerate([0.0, 0.625, 1.25, 1.875, 2.5]):  # linspace(0, 3.0 - 0.5, 5)
        want = audio_features(load_audio(str(path), start, 0.5, 16000), cfg)
        assert torch.allclose(item["audio"][n], want, atol=1e-5)
    assert all(not torch.allclose(item["audio"][n], item["audio"][n + 1]) for n in range(4))
    one = LabelledDataset(entries, cfg, "audio", split="test", num_windows=1)[0]["audio"]
    assert torch.allclose(one, audio_features(load_audio(str(path), 1.25, 0.5, 16000), cfg), atol=1e-5)  # centred
