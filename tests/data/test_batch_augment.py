"""The batch augmentation stage (data/batch_augment.py) against the per-clip DMVR path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from mmv_torch.config import DataConfig
from mmv_torch.data.datasets import PretrainDataset
from mmv_torch.data.media.batch_augment import (
    AUGMENT_FIELDS,
    BatchAugmentError,
    augment_batch,
    augment_frames,
    collate_samples,
    color_batch,
    deferred_augment,
    unpack_params,
)
from mmv_torch.data.media.transforms import DmvrColor, apply_dmvr_params, dmvr_color, sample_dmvr_params
from mmv_torch.train.loop import to_device
from tests.helpers.media_utils import make_video

CFG = DataConfig(num_frames=3, crop_size=24, resize_short=30)
SIZES = [(36, 48), (30, 30), (50, 26), (27, 41), (24, 70), (64, 64)]


def _clip(h: int, w: int, seed: int, t: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _float_reference(frames: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """The per-clip DMVR path with the resize done in float (no uint8 rounding): ``(3, T, crop, crop)``."""
    _, p, crop = unpack_params(row)
    x = F.interpolate(frames.permute(0, 3, 1, 2).double(), size=p.size, mode="bilinear", align_corners=False)
    x = x[:, :, p.top:p.top + crop, p.left:p.left + crop]
    x = (x.flip(-1) if p.flip else x).permute(1, 0, 2, 3).float() / 255.0
    return dmvr_color(x, p.color) if p.color is not None else x


def test_draws_equal_the_per_clip_path_over_many_seeds():
    flips = colors = 0
    for seed in range(300):
        h, w = SIZES[seed % len(SIZES)]
        frames = _clip(h, w, seed, t=1)
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        ref = sample_dmvr_params(h, w, CFG.crop_size, CFG.resize_short, CFG.scale_jitter, CFG.scale_prob, CFG.flip,
                                 CFG.color_prob, g1)
        row = deferred_augment(frames, CFG, g2)["augment"]
        (sh, sw), got, crop = unpack_params(row)
        assert (sh, sw, crop) == (h, w, CFG.crop_size)
        assert (got.size, got.top, got.left, got.flip) == (ref.size, ref.top, ref.left, ref.flip)
        assert (got.color is None) == (ref.color is None)
        if ref.color is not None:
            for f in ("brightness", "saturation", "contrast", "hue"):
                assert getattr(got.color, f) == pytest.approx(getattr(ref.color, f), rel=1e-6, abs=1e-7)
        assert torch.equal(g1.get_state(), g2.get_state())  # the same number of draws: later draws agree too
        flips += ref.flip
        colors += ref.color is not None
    assert 100 < flips < 200 and 200 < colors < 280  # both coins take both values


def test_geometry_equals_per_clip_resize_crop_flip_in_a_mixed_size_batch():
    cfg = replace(CFG, color_prob=0.0)
    samples, refs = [], []
    for seed in range(24):
        frames = _clip(*SIZES[seed % len(SIZES)], seed)
        s = deferred_augment(frames, cfg, torch.Generator().manual_seed(seed))
        samples.append(s)
        refs.append((frames, s["augment"]))
    batch = collate_samples(samples)
    assert batch["frames"].shape == (24, 3, 64, 70, 3)
    out = augment_frames(batch["frames"], batch["augment"], chunk=5, per_clip=False)  # the grid_sample path
    assert out.shape == (24, 3, 3, 24, 24) and out.dtype == torch.float32
    flipped = 0
    for i, (frames, row) in enumerate(refs):
        _, p, crop = unpack_params(row)
        flipped += p.flip
        assert (out[i] - _float_reference(frames, row)).abs().max() < 1e-5
        # The per-clip path rounds the resized frames to uint8: within one grey level.
        assert (out[i] - apply_dmvr_params(frames, p, crop)).abs().max() <= 1.0 / 255 + 1e-6
    assert 0 < flipped < 24


def test_colour_equals_dmvr_color_per_clip():
    g = torch.Generator().manual_seed(0)
    video = torch.rand((3, 5, 4, 9, 11), generator=g)
    video[:, 0, :, :3] = 0.0  # black pixels (v = 0) and grey ones (range 0)
    video[:, 1, :, 2:5] = 0.5
    video[:, 2, :, :, :4] = 0.0  # black pixels that a negative brightness makes negative (v < 0)
    video[0, 3, :, 5:] = video[1, 3, :, 5:]  # ties of the largest channel
    params = [DmvrColor(float(b), float(s), float(c), float(h)) for b, s, c, h in
              zip(torch.empty(5).uniform_(-0.125, 0.125, generator=g), torch.empty(5).uniform_(0.6, 1.4, generator=g),
                  torch.empty(5).uniform_(0.6, 1.4, generator=g), torch.empty(5).uniform_(-0.2, 0.2, generator=g))]
    params[2] = replace(params[2], brightness=-0.1)
    cols = [torch.tensor([getattr(p, f) for p in params]) for f in ("brightness", "saturation", "contrast", "hue")]
    out = color_batch(video, *cols)
    for b, p in enumerate(params):
        assert (out[:, b] - dmvr_color(video[:, b], p)).abs().max() < 1e-5


def test_full_augmentation_equals_the_float_per_clip_path():
    samples = [deferred_augment(_clip(*SIZES[s % len(SIZES)], s), CFG, torch.Generator().manual_seed(s))
               for s in range(12)]
    assert sum(bool(s["augment"][AUGMENT_FIELDS.index("color")]) for s in samples) not in (0, 12)
    batch = augment_batch(collate_samples(samples), per_clip=False)  # the grid_sample path of accelerators
    assert "frames" not in batch and "augment" not in batch
    for i, s in enumerate(samples):
        assert (batch["video"][i] - _float_reference(s["frames"], s["augment"])).abs().max() < 1e-4


def test_on_a_cpu_the_batch_stage_gives_the_worker_paths_pixels():
    # On a CPU the batch stage runs each clip through apply_dmvr_params (uint8 resize, as the worker path):
    # the clips of a mixed-size batch equal the per-clip transform of their own draw, not the grid_sample path's.
    samples = [deferred_augment(_clip(*SIZES[s % len(SIZES)], s), CFG, torch.Generator().manual_seed(s))
               for s in range(8)]
    batch = collate_samples(samples)
    out = augment_batch(batch)["video"]
    grid = augment_batch(batch, per_clip=False)["video"]
    for i, s in enumerate(samples):
        (h, w), p, crop = unpack_params(s["augment"])
        assert (out[i] - apply_dmvr_params(s["frames"], p, crop)).abs().max() < 1e-6
    assert (out - grid).abs().max() > 1e-3


def test_collate_without_frames_is_the_default_and_bad_frames_fail():
    a = {"video": torch.zeros(3, 2, 4, 4), "index": torch.tensor(0)}
    assert collate_samples([a, a])["video"].shape == (2, 3, 2, 4, 4)
    f = {"frames": torch.zeros(3, 4, 4, 3, dtype=torch.uint8), "augment": torch.zeros(13)}
    g = {"frames": torch.zeros(2, 4, 4, 3, dtype=torch.uint8), "augment": torch.zeros(13)}
    with pytest.raises(ValueError, match="cannot collate frames"):
        collate_samples([f, g])


def test_collate_in_loader_workers_pads_into_shared_memory():
    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return deferred_augment(_clip(*SIZES[i], i), CFG, torch.Generator().manual_seed(i))

    loader = torch.utils.data.DataLoader(Clips(), batch_size=4, num_workers=1, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert batch["frames"].shape == (4, 3, 50, 48, 3)
    for i in range(4):
        h, w = SIZES[i]
        assert torch.equal(batch["frames"][i, :, :h, :w], _clip(h, w, i))
        assert not batch["frames"][i, :, h:].any() and not batch["frames"][i, :, :, w:].any()


def test_bad_batches_are_clear_errors():
    s = deferred_augment(_clip(30, 40, 0), CFG, torch.Generator().manual_seed(0))
    frames, row = s["frames"][None], s["augment"][None]
    with pytest.raises(BatchAugmentError, match="augment must be"):
        augment_frames(frames, row[:, :5])
    with pytest.raises(BatchAugmentError, match="do not fit"):
        augment_frames(frames[:, :, :20], row)
    with pytest.raises(BatchAugmentError, match="uint8"):
        augment_frames(frames.float(), row)
    with pytest.raises(BatchAugmentError, match="needs 'augment'"):
        augment_batch({"frames": frames})
    with pytest.raises(BatchAugmentError, match="uint8"):
        deferred_augment(frames[0].float(), CFG, torch.Generator())
    with pytest.raises(ValueError, match="augment_on"):
        DataConfig(augment_on="gpu")
    # The 'default' augmentation has no batch stage: it runs in the workers whatever augment_on says.
    assert not DataConfig(augment_on="batch", augment="default").batch_augment
    assert DataConfig().batch_augment and not DataConfig(augment_on="worker").batch_augment


def test_to_device_applies_the_batch_stage():
    samples = [deferred_augment(_clip(30, 40, s), CFG, torch.Generator().manual_seed(s)) for s in range(2)]
    batch = collate_samples([{**s, "has_audio": torch.tensor(True)} for s in samples])
    out = to_device(batch, torch.device("cpu"), torch.float64, channels_last=True)
    assert out["video"].dtype == torch.float64 and out["video"].shape == (2, 3, 3, 24, 24)
    assert out["video"].is_contiguous(memory_format=torch.channels_last_3d)
    assert set(out) == {"video", "has_audio"}


def test_pretrain_dataset_batch_mode_draws_what_worker_mode_draws(tmp_path):
    lines = []
    for i, size in enumerate([(64, 48), (40, 56)]):
        make_video(tmp_path / f"v{i}.mp4", num_frames=30, fps=25, size=size, gop=10)
        lines.append(json.dumps({"video": f"v{i}.mp4"}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    cfg = DataConfig(num_frames=4, fps=10.0, crop_size=24, resize_short=30, audio_seconds=0.5, num_mel_bins=16)
    assert cfg.augment_on == "batch"  # the default
    worker = PretrainDataset(tmp_path / "m.jsonl", replace(cfg, augment_on="worker"), seed=3)
    batch = PretrainDataset(tmp_path / "m.jsonl", cfg, seed=3)
    items = [batch[i] for i in range(2)]
    assert items[0]["frames"].shape == (4, 48, 64, 3) and items[1]["frames"].shape == (4, 56, 40, 3)
    # The 'default' augmentation has no batch stage: under the default augment_on it still gives the "video".
    assert PretrainDataset(tmp_path / "m.jsonl", replace(cfg, augment="default"), seed=3)[0]["video"].shape == (
        3, 4, 24, 24)
    video = augment_batch(collate_samples(items))["video"]
    for i, item in enumerate(items):
        ref = worker[i]
        assert torch.equal(item["audio"], ref["audio"]) and torch.equal(item["index"], ref["index"])
        # Flat grey frames: resizing is exact, so the two paths agree up to float rounding.
        assert (video[i] - ref["video"]).abs().max() < 1e-4
